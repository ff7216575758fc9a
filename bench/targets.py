"""The GPU issue's targets, evaluated on a results table: ``python -m bench targets DIR``.

1. Attend at the target case (N = 10000, M = 2048, d = 64, bf16, B 4 x H 2, power-law keys,
   rank 16, Performer features 256): method attend median / dense attend median;
   ``svd_exact`` <= 0.5 (the best of its solvers' rows), ``svd_tokens``, ``linrec``, ``lrea``
   <= 0.05; Performer shown without a target.
2. Roofline use of each method's largest case (max B x H x N x M among its ok rows; ties: bf16,
   then default parameters): ``roofline_fraction_attend`` and ``roofline_fraction_forward``
   >= 0.5, with ``roofline_bound_attend``.
3. Timing noise: for every ok case, the largest ``<phase>_ms_iqr_rel`` (IQR / median; from
   ``_ms_iqr`` / ``_ms_median`` where the column is absent) must be < 0.03.

Each target row says what was compared, the value, the goal, ``pass`` / ``fail`` /
``not measured`` (the table lacks the case) / ``not recorded`` (the table lacks the column) /
``no target``, and the device and commit the numbers come from. Nothing is estimated: a
value is read from the table or the row says it is missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import store
from .errors import ResultsFileError

PHASES = ("prepare", "attend", "forward")


def _phases(df: pd.DataFrame) -> tuple[str, ...]:
    """The timed phases a table has: the three, plus ``attend_graph`` on CUDA tables."""
    return PHASES + (("attend_graph",) if "attend_graph_ms_median" in df.columns else ())


NOISE_LIMIT = 0.03
ROOFLINE_MIN = 0.5
TARGET_CASE: dict[str, Any] = {
    "n": 10000,
    "m": 2048,
    "d": 64,
    "dtype": "bf16",
    "batch": 4,
    "heads": 2,
    "family": "powerlaw",
    "setting": "target",
}
TARGET_RANK = 16
TARGET_FEATURES = 256
# method -> attend ratio goal (None: shown without a target)
ATTEND_RATIO_GOALS: dict[str, float | None] = {
    "svd_exact": 0.5,
    "svd_tokens": 0.05,
    "linrec": 0.05,
    "lrea": 0.05,
    "performer": None,
}
TARGETS_CSV = "targets.csv"

PASS, FAIL, NOT_MEASURED, NOT_RECORDED, NO_TARGET = (
    "pass",
    "fail",
    "not measured",
    "not recorded",
    "no target",
)


# ----------------------------------------------------------------------------- reading


def read_results(path: str | Path) -> tuple[pd.DataFrame, Path]:
    """A results table and the directory it lives in. ``path``: a run directory (its
    results.csv, else its results.parquet), or a .csv / .parquet file."""
    p = Path(path)
    if p.is_dir():
        csv, pq = p / store.TABLE_NAME, p / Path(store.TABLE_NAME).with_suffix(".parquet").name
        if csv.is_file():
            return store.read_table(p), p
        if pq.is_file():
            return _read_parquet(pq), p
        raise ResultsFileError(f"{p}: no {csv.name} or {pq.name} in this directory")
    if not p.is_file():
        raise ResultsFileError(f"{p}: no such results table or run directory")
    if p.suffix == ".parquet":
        return _read_parquet(p), p.parent
    return store.read_table(p), p.parent


def _read_parquet(p: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise ResultsFileError(f"{p}: not a readable results table ({exc})") from None
    for c in df.columns:  # the parquet twin stores mixed columns as strings
        if df[c].dtype == object:
            conv = pd.to_numeric(df[c], errors="coerce")
            if conv.notna().sum() == df[c].notna().sum() and df[c].notna().any():
                df[c] = conv
    return df


# ----------------------------------------------------------------------------- helpers


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df.iloc[0:0]


def _uniq(rows: pd.DataFrame, col: str) -> str | None:
    if col not in rows.columns:
        return None
    vals = sorted({str(v) for v in rows[col].dropna()})
    return ",".join(vals) if vals else None


def _check(value: float | None, op: str, limit: float | None, missing: str) -> str:
    if value is None:
        return missing
    if limit is None:
        return NO_TARGET
    ok = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
    return PASS if ok else FAIL


def _row(
    target: str,
    what: str,
    method: str | None,
    value: float | None,
    op: str,
    limit: float | None,
    status: str,
    rows: pd.DataFrame,
    case: str = "",
    detail: str = "",
) -> dict[str, Any]:
    return {
        "target": target,
        "what": what,
        "method": method,
        "value": value,
        "goal": "" if limit is None else f"{op} {limit:g}",
        "op": op,
        "limit": limit,
        "status": status,
        "device_name": _uniq(rows, "device_name"),
        "commit": _uniq(rows, "git_commit"),
        "case": case,
        "detail": detail,
    }


def _case_label(r: pd.Series) -> str:
    parts = [str(r.get("label") or r.get("method"))]
    for k, fmt in (("batch", "B{}"), ("heads", "H{}"), ("n", "N{}"), ("m", "M{}"), ("d", "d{}")):
        v = _num(r.get(k))
        if v is not None:
            parts.append(fmt.format(int(v)))
    for k in ("dtype", "setting", "family"):
        if isinstance(r.get(k), str):
            parts.append(r[k])
    return " ".join(parts)


def _match(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for k, v in spec.items():
        if k not in df.columns:
            return df.iloc[0:0]
        col = df[k]
        if isinstance(v, str):
            mask &= col.astype(str) == v
        else:
            mask &= pd.to_numeric(col, errors="coerce") == v
    return df[mask]


# ----------------------------------------------------------------------------- 1. attend ratios


def attend_ratio_targets(df: pd.DataFrame, phase: str = "attend") -> list[dict[str, Any]]:
    """Ratios of ``<phase>_ms_median``: ``attend`` (eager calls, the host's launch cost
    included) or ``attend_graph`` (replayed from a CUDA graph, device time only); both sides
    of a ratio come from the same phase."""
    ok = _ok(df)
    case = _match(ok, TARGET_CASE)
    desc = (
        f"N={TARGET_CASE['n']}, M={TARGET_CASE['m']}, d={TARGET_CASE['d']}, {TARGET_CASE['dtype']}, "
        f"B{TARGET_CASE['batch']} x H{TARGET_CASE['heads']}, {TARGET_CASE['family']}"
    )
    col_ms = f"{phase}_ms_median"
    tag = "attend_ratio" if phase == "attend" else f"{phase}_ratio"
    how = "" if phase == "attend" else " (CUDA graph replay)"
    has_col = col_ms in case.columns
    dense = case[case["method"] == "dense"] if "method" in case.columns else case
    if "backend" in dense.columns and (dense["backend"] == "torch").any():
        dense = dense[dense["backend"] == "torch"]  # the baseline is SDPA, not the suite's kernel
    dense_ms = [x for x in (_num(v) for v in dense.get(col_ms, [])) if x is not None]
    dense_med = float(np.median(dense_ms)) if dense_ms else None
    out = []
    for method, goal in ATTEND_RATIO_GOALS.items():
        rows = case[case["method"] == method] if "method" in case.columns else case
        sel = rows
        for col, want in (("rank", TARGET_RANK), ("features", TARGET_FEATURES)):
            if col in sel.columns and pd.to_numeric(sel[col], errors="coerce").notna().any():
                sel = _match(sel, {col: want})  # only methods with that parameter
        what = f"attend{how} {method} / dense at the target case"
        ratios = []
        for _, r in sel.iterrows():
            t = _num(r.get(col_ms))
            if t is not None and dense_med:
                ratios.append((t / dense_med, str(r.get("label") or method), r.get("solver")))
        if not has_col or dense_med is None or not ratios:
            why = (
                f"no {col_ms} column"
                if not has_col
                else "no ok dense row at this case"
                if dense_med is None
                else f"no ok {method} row at this case"
            )
            out.append(
                _row(
                    f"{tag}.{method}",
                    what,
                    method,
                    None,
                    "<=",
                    goal,
                    NOT_MEASURED,
                    pd.concat([dense, sel]),
                    desc,
                    why,
                )
            )
            continue
        best = min(ratios)
        detail = f"dense {phase} {dense_med:.4g} ms"
        if len(ratios) > 1:
            detail += "; " + "; ".join(
                f"{lab}: {x:.3g}" for x, lab, _ in sorted(ratios, key=lambda t: t[1])
            )
            detail += f"; best: {best[1]}"
        out.append(
            _row(
                f"{tag}.{method}",
                what,
                method,
                best[0],
                "<=",
                goal,
                _check(best[0], "<=", goal, NOT_MEASURED),
                pd.concat([dense, sel]),
                desc,
                detail,
            )
        )
    return out


# ----------------------------------------------------------------------------- 2. roofline


def _default_mismatches(method: str, params: Any) -> int:
    try:
        import attention_impls as ai

        defaults = ai.method_class(method).PARAMS
    except Exception:  # noqa: BLE001 - a method this checkout does not know
        return 0
    try:
        p = json.loads(params) if isinstance(params, str) else dict(params or {})
    except (TypeError, ValueError):
        return 0
    return sum(1 for k, v in p.items() if k in defaults and defaults[k] != v)


def largest_cases(df: pd.DataFrame) -> pd.DataFrame:
    """Each method's largest ok case: max B x H x N x M; ties: bf16, then default parameters,
    then larger d, then power-law keys, then case id."""
    ok = _ok(df)
    if not len(ok) or not {"method", "batch", "heads", "n", "m"} <= set(ok.columns):
        return ok.iloc[0:0]
    ok = ok.copy()
    size = 1.0
    for c in ("batch", "heads", "n", "m"):
        size = size * pd.to_numeric(ok[c], errors="coerce").fillna(0)
    ok["_size"] = size
    ok["_not_bf16"] = (ok["dtype"].astype(str) != "bf16") if "dtype" in ok.columns else True
    ok["_mis"] = [
        _default_mismatches(m, p)
        for m, p in zip(ok["method"], ok.get("params", [None] * len(ok)), strict=True)
    ]
    ok["_d"] = pd.to_numeric(ok["d"], errors="coerce").fillna(0) if "d" in ok.columns else 0
    ok["_not_pl"] = (ok["family"].astype(str) != "powerlaw") if "family" in ok.columns else True
    ok["_id"] = ok["case_id"].astype(str) if "case_id" in ok.columns else ""
    ok = ok.sort_values(
        ["method", "_size", "_not_bf16", "_mis", "_d", "_not_pl", "_id"],
        ascending=[True, False, True, True, False, True, True],
    )
    return (
        ok.groupby("method", sort=True)
        .head(1)
        .drop(columns=["_size", "_not_bf16", "_mis", "_d", "_not_pl", "_id"])
    )


def roofline_targets(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    big = largest_cases(df)
    if not len(big):
        return [
            _row(
                "roofline",
                "roofline fraction of each method's largest case",
                None,
                None,
                ">=",
                ROOFLINE_MIN,
                NOT_MEASURED,
                big,
                "",
                "no ok rows",
            )
        ]
    for _, r in big.iterrows():
        method = str(r["method"])
        one = big[big["method"] == method]
        bound = r.get("roofline_bound_attend") if "roofline_bound_attend" in big.columns else None
        bound_txt = (
            f"attend bound: {bound}"
            if isinstance(bound, str) and bound
            else "attend bound: not recorded"
        )
        for phase in ("attend", "forward"):
            col = f"roofline_fraction_{phase}"
            what = f"roofline_fraction_{phase} of {method}'s largest case"
            if col not in big.columns:
                out.append(
                    _row(
                        f"roofline.{phase}.{method}",
                        what,
                        method,
                        None,
                        ">=",
                        ROOFLINE_MIN,
                        NOT_RECORDED,
                        one,
                        _case_label(r),
                        f"no {col} column; {bound_txt}",
                    )
                )
                continue
            v = _num(r.get(col))
            out.append(
                _row(
                    f"roofline.{phase}.{method}",
                    what,
                    method,
                    v,
                    ">=",
                    ROOFLINE_MIN,
                    _check(v, ">=", ROOFLINE_MIN, NOT_RECORDED),
                    one,
                    _case_label(r),
                    bound_txt if v is not None else f"{col} empty in this row; {bound_txt}",
                )
            )
    return out


# ----------------------------------------------------------------------------- 3. noise


def noise_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per ok row: ``iqr_rel_<phase>`` (the table's column, else IQR / median), ``noise_max``
    over phases and ``noise_phase`` (which phase)."""
    ok = _ok(df)
    out = pd.DataFrame(index=ok.index)
    for c in (
        "case_id",
        "method",
        "label",
        "batch",
        "heads",
        "n",
        "m",
        "d",
        "dtype",
        "setting",
        "family",
    ):
        if c in ok.columns:
            out[c] = ok[c]
    for p in _phases(ok):
        rel = (
            pd.to_numeric(ok[f"{p}_ms_iqr_rel"], errors="coerce")
            if f"{p}_ms_iqr_rel" in ok.columns
            else pd.Series(np.nan, index=ok.index)
        )
        if f"{p}_ms_iqr" in ok.columns and f"{p}_ms_median" in ok.columns:
            med = pd.to_numeric(ok[f"{p}_ms_median"], errors="coerce")
            derived = pd.to_numeric(ok[f"{p}_ms_iqr"], errors="coerce") / med.where(med > 0)
            rel = rel.fillna(derived)
        out[f"iqr_rel_{p}"] = rel
    rel_cols = [f"iqr_rel_{p}" for p in _phases(ok)]
    vals = out[rel_cols]
    out["noise_max"] = vals.max(axis=1, skipna=True)
    has = vals.notna().any(axis=1)
    out["noise_phase"] = None
    if has.any():
        out.loc[has, "noise_phase"] = (
            vals[has].idxmax(axis=1).str.replace("iqr_rel_", "", regex=False)
        )
    return out


def noise_targets(
    df: pd.DataFrame, limit: float = NOISE_LIMIT, worst: int = 5
) -> list[dict[str, Any]]:
    nt = noise_table(df)
    ok = _ok(df)
    out = []
    for p in _phases(ok):
        col = nt[f"iqr_rel_{p}"].dropna()
        what = f"timing noise {p}: largest IQR/median over ok cases"
        if not len(col):
            out.append(
                _row(
                    f"noise.{p}",
                    what,
                    None,
                    None,
                    "<",
                    limit,
                    NOT_MEASURED,
                    ok,
                    "",
                    f"no {p} timings",
                )
            )
            continue
        i = col.idxmax()
        over = int((col >= limit).sum())
        out.append(
            _row(
                f"noise.{p}",
                what,
                None,
                float(col[i]),
                "<",
                limit,
                _check(float(col[i]), "<", limit, NOT_MEASURED),
                ok,
                _case_label(ok.loc[i]),
                f"{over} of {len(col)} cases at or over {limit:g}",
            )
        )
    allv = nt["noise_max"].dropna()
    what = "timing noise: max over phases of IQR/median, every ok case"
    if not len(allv):
        out.append(
            _row("noise.all", what, None, None, "<", limit, NOT_MEASURED, ok, "", "no timings")
        )
        return out
    over = nt.loc[allv.index][allv >= limit].sort_values("noise_max", ascending=False)
    worst_rows = nt.loc[allv.sort_values(ascending=False).index[:worst]]
    listing = "; ".join(
        f"{_case_label(ok.loc[i])} ({r['noise_phase']}) {r['noise_max']:.3g}"
        for i, r in worst_rows.iterrows()
    )
    out.append(
        _row(
            "noise.all",
            what,
            None,
            float(allv.max()),
            "<",
            limit,
            _check(float(allv.max()), "<", limit, NOT_MEASURED),
            ok,
            f"{len(allv)} ok cases",
            f"{len(over)} of {len(allv)} cases at or over {limit:g}; worst: {listing}",
        )
    )
    return out


def noise_summary_lines(df: pd.DataFrame, limit: float = NOISE_LIMIT) -> list[str]:
    """What ``bench run`` prints at the end: the worst IQR/median per phase and the count of
    ok cases at or over the limit."""
    nt = noise_table(df)
    if not len(nt) or nt["noise_max"].notna().sum() == 0:
        return ["timing noise: no ok timings"]
    ok = _ok(df)
    lines = [f"timing noise (IQR/median per case; target < {limit:.0%}):"]
    for p in _phases(ok):
        col = nt[f"iqr_rel_{p}"].dropna()
        if len(col):
            i = col.idxmax()
            lines.append(f"  worst {p:12s} {col[i]:7.2%}  {_case_label(ok.loc[i])}")
    allv = nt["noise_max"].dropna()
    lines.append(f"  {int((allv >= limit).sum())} of {len(allv)} ok cases at or over {limit:.0%}")
    return lines


# ----------------------------------------------------------------------------- all


def evaluate(df: pd.DataFrame) -> pd.DataFrame:
    """Every target row (tidy; the columns of ``targets.csv``)."""
    rows = attend_ratio_targets(df)
    if "attend_graph_ms_median" in df.columns:  # CUDA tables: device time without launch cost
        rows += attend_ratio_targets(df, "attend_graph")
    rows += roofline_targets(df) + noise_targets(df)
    return pd.DataFrame(
        rows,
        columns=[
            "target",
            "what",
            "method",
            "value",
            "goal",
            "op",
            "limit",
            "status",
            "device_name",
            "commit",
            "case",
            "detail",
        ],
    )


def _fmt(v: Any) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.3g}"


def _cell(s: Any) -> str:
    return (
        "" if s is None or (isinstance(s, float) and math.isnan(s)) else str(s).replace("|", "\\|")
    )


def to_markdown(targets: pd.DataFrame, source: str = "") -> str:
    lines = ["# Targets" + (f" of `{source}`" if source else ""), ""]
    counts = targets["status"].value_counts().to_dict()
    lines.append(
        ", ".join(
            f"{k}: {counts[k]}"
            for k in (PASS, FAIL, NOT_MEASURED, NOT_RECORDED, NO_TARGET)
            if k in counts
        )
    )
    lines += [
        "",
        "| target | value | goal | result | case | device | commit | detail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in targets.iterrows():
        lines.append(
            f"| {_cell(r['what'])} | {_fmt(r['value'])} | {_cell(r['goal']) or '-'} | "
            f"{_cell(r['status'])} | {_cell(r['case'])} | {_cell(r['device_name'])} | "
            f"{_cell(r['commit'])} | {_cell(r['detail'])} |"
        )
    return "\n".join(lines) + "\n"


def run_targets(
    path: str | Path, md_out: str | Path | None = None
) -> tuple[pd.DataFrame, str, Path]:
    """Read a table, evaluate, write ``targets.csv`` next to it (and the markdown to
    ``md_out``); returns (targets, markdown, csv path)."""
    df, where = read_results(path)
    t = evaluate(df)
    csv_path = where / TARGETS_CSV
    store._atomic_write(csv_path, lambda tmp: t.to_csv(tmp, index=False))
    md = to_markdown(t, str(path))
    if md_out is not None:
        Path(md_out).parent.mkdir(parents=True, exist_ok=True)
        Path(md_out).write_text(md)
    return t, md, csv_path
