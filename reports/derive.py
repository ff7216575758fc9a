"""Quantities computed from the bench table: slices, crossover N, Pareto fronts.

Pure pandas; no figure code here so the numbers can be tested on their own.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bench.summary import first_from

METHOD_ORDER = ["dense", "svd_exact", "svd_tokens", "linrec", "lrea", "performer"]
# Case parameters that must match before two timings are compared.
CASE_KEYS = [
    "device",
    "dtype",
    "setting",
    "causal",
    "batch",
    "heads",
    "m",
    "d",
    "padding",
    "query_scale",
]
SECONDARY = ("batch", "heads", "causal", "padding", "query_scale")


def method_sort_key(name: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER), name)


def sorted_methods(names) -> list[str]:
    return sorted({str(x) for x in names}, key=method_sort_key)


def inputs_note(df: pd.DataFrame) -> str:
    """'synthetic inputs (family a, b)' / 'real data (dataset x)' / both, for titles."""
    parts = []
    syn = df[df["synthetic"]] if "synthetic" in df.columns else df
    real = df[~df["synthetic"]] if "synthetic" in df.columns else df.iloc[0:0]
    if len(syn):
        fams = ", ".join(sorted(syn["family"].dropna().astype(str).unique()))
        parts.append(f"synthetic inputs (family {fams})")
    if len(real):
        ds = ", ".join(sorted(real["dataset"].dropna().astype(str).unique())) or "?"
        parts.append(f"real data (dataset {ds})")
    return "; ".join(parts) if parts else "no inputs"


def mode_value(s: pd.Series):
    s = s.dropna()
    return s.mode().iloc[0] if len(s) else np.nan


def fix_secondary(df: pd.DataFrame, cols=SECONDARY) -> tuple[pd.DataFrame, list[str]]:
    """Keep the most common value of secondary case params; say what was dropped."""
    notes = []
    for col in cols:
        if col not in df.columns or df[col].nunique(dropna=True) <= 1:
            continue
        v = mode_value(df[col])
        notes.append(f"{col}={v:g}" if isinstance(v, (int, float, np.number)) else f"{col}={v}")
        df = df[df[col] == v]
    return df, notes


def representative_labels(
    ok: pd.DataFrame, target_rank: float = 16, target_features: float = 256
) -> dict[str, str]:
    """One label per method for 'one line per method' plots.

    The label with the most measured rows wins; ties go to rank nearest 16, then
    features nearest 256, then the faster median.
    """
    out: dict[str, str] = {}
    for method, g in ok.groupby("method"):
        stats = g.groupby("label").agg(
            count=("forward_ms_median", lambda s: s.notna().sum()),
            rank=("rank", "first"),
            features=("features", "first"),
            t=("forward_ms_median", "median"),
        )
        stats["rdist"] = (np.log2(stats["rank"].fillna(target_rank)) - np.log2(target_rank)).abs()
        stats["fdist"] = (
            np.log2(stats["features"].fillna(target_features)) - np.log2(target_features)
        ).abs()
        stats = stats.sort_values(
            ["count", "rdist", "fdist", "t"], ascending=[False, True, True, True]
        )
        out[str(method)] = str(stats.index[0])
    return out


def aggregate_time(ok: pd.DataFrame, value: str, keys: list[str]) -> pd.DataFrame:
    """Median of `value` over rows that differ only in input family / seed."""
    d = ok[ok[value].notna()]
    if d.empty:
        return d
    return d.groupby(keys, dropna=False, observed=True)[value].median().reset_index()


def _crossover(ns: np.ndarray, mine: np.ndarray, ref: np.ndarray) -> str:
    faster = mine < ref
    if not faster.any():
        return "none in range"
    # the smallest N from which the method stays faster up to the largest N measured (the
    # harness's rule, bench.summary.first_from)
    idx = first_from(faster)
    if idx is None:
        first = int(ns[np.argmax(faster)])
        return f"{first} (not at largest N)"
    if idx == 0:
        return f"<= {int(ns[0])}"
    return str(int(ns[idx]))


def m_text(m) -> str:
    """'M = 1024', or 'self (M = N)' for self-attention rows (crossover_table stores M = -1)."""
    try:
        m = float(m)
    except (TypeError, ValueError):
        return f"M = {m}"
    return "self (M = N)" if m < 0 else f"M = {m:g}"


def crossover_table(ok: pd.DataFrame, min_ns: int = 2) -> pd.DataFrame:
    """For each label x case (device, dtype, M, d, ...): the N where it overtakes dense.

    Forward and attend times are compared separately, each against dense's median at
    exactly the same case parameters (median over input families).
    """
    keys = [k for k in CASE_KEYS if k in ok.columns]
    ok = ok.copy()
    ok.loc[ok["setting"] == "self", "m"] = -1.0  # self-attention: M = N, one case per N
    rows = []
    dense = ok[ok["method"] == "dense"]
    if dense.empty:
        return pd.DataFrame()
    dense_label = representative_labels(dense).get("dense")
    dense = dense[dense["label"] == dense_label]
    for kind in ("forward", "attend"):
        col = f"{kind}_ms_median"
        ref = aggregate_time(dense, col, keys + ["n"])
        mine = aggregate_time(ok[ok["method"] != "dense"], col, keys + ["method", "label", "n"])
        if ref.empty or mine.empty:
            continue
        merged = mine.merge(ref, on=keys + ["n"], suffixes=("", "_dense"))
        for gk, g in merged.groupby(keys + ["method", "label"], dropna=False):
            g = g.sort_values("n")
            if g["n"].nunique() < min_ns:
                continue
            rec = dict(zip(keys + ["method", "label"], gk, strict=False))
            rec["kind"] = kind
            rec["crossover_n"] = _crossover(
                g["n"].to_numpy(), g[col].to_numpy(), g[col + "_dense"].to_numpy()
            )
            rec["n_range"] = f"{int(g['n'].min())}-{int(g['n'].max())}"
            rec["speedup_at_max_n"] = (
                float(g[col + "_dense"].iloc[-1] / g[col].iloc[-1])
                if g[col].iloc[-1] > 0
                else np.nan
            )
            rows.append(rec)
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    idx = keys + ["method", "label", "n_range"]
    t[idx] = t[idx].astype(object).where(t[idx].notna(), "-")
    wide = t.set_index(idx + ["kind"])[["crossover_n", "speedup_at_max_n"]].unstack("kind")
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    wide = wide.reset_index()
    wide["_o"] = wide["method"].map(lambda m: method_sort_key(m))
    wide = wide.sort_values(["device", "dtype", "_o", "label", "m", "d"]).drop(columns="_o")
    return wide


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Non-dominated points (smaller x and smaller y are better), sorted by x."""
    p = points.dropna(subset=[x, y]).sort_values([x, y])
    front = []
    best = np.inf
    for _, row in p.iterrows():
        if row[y] < best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def status_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """Rows that did not produce numbers (oom / unsupported / error / unknown)."""
    bad = bench[bench["status"] != "ok"]
    cols = [
        c
        for c in ["device", "status", "method", "label", "family", "n", "m", "d", "dtype", "reason"]
        if c in bad.columns
    ]
    return bad[cols].sort_values(["device", "status", "method"]).reset_index(drop=True)


def family_rank(params) -> float:
    """Read the true rank r* from an exact_rank family's JSON parameters."""
    if params is None or (isinstance(params, float) and np.isnan(params)) or params is pd.NA:
        return np.nan
    try:
        obj = json.loads(str(params))
    except (ValueError, TypeError):
        return np.nan
    if not isinstance(obj, dict):
        return np.nan
    for key in ("rank", "r_star", "true_rank", "r", "rstar"):
        if key in obj:
            try:
                return float(obj[key])
            except (TypeError, ValueError):
                return np.nan
    return np.nan


def measured_mem(df: pd.DataFrame) -> pd.Series:
    """Measured peak memory: allocator peak on GPU, process measure on CPU."""
    out = df["peak_mem_alloc_bytes"].copy()
    out = out.where(out.notna(), df["peak_mem_cpu_bytes"])
    return out


# ---------------------------------------------------------------- roofline (three bounds)
ROOFLINE_PHASES = ("prepare", "attend", "forward")
ROOFLINE_BOUNDS = ("matmul", "memory", "exp")
EXP_NOT_RECORDED = "exp floor not recorded in this table"
# work columns of each phase: (FLOPs, bytes, exponentials)
PHASE_WORK = {
    "prepare": ("flops_prepare", "bytes_prepare", "exps_prepare"),
    "attend": ("flops_attend", "bytes_attend", "exps_attend"),
    "forward": ("flops", "bytes", "exps"),
}


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce")
    return pd.Series(np.nan, index=df.index, dtype=float)


def roofline_phases(ok: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``roofline_{floor_ms,bound,fraction}_<phase>`` for prepare, attend, forward.

    Recorded values (the harness writes them: docs/bench.md, "Roofline") are kept. Where a
    row lacks them (tables from an older harness), they are computed from the columns with
    the same formula, floor = max(flops / peak_flops, bytes / peak_bytes_per_s,
    exps / peak_exp_per_s): a phase needs its FLOPs and bytes and both peaks; the exp term is
    used only where the table has exps and peak_exp_per_s, and is never guessed.
    ``roofline_exp_<phase>`` says whether the exp term is in the floor ("recorded",
    "derived", or EXP_NOT_RECORDED); ``roofline_fraction`` of such rows becomes the forward
    fraction."""
    d = ok.copy()
    pf, pb, pe = _col(d, "peak_flops"), _col(d, "peak_bytes_per_s"), _col(d, "peak_exp_per_s")
    for phase in ROOFLINE_PHASES:
        fcol, bcol, ecol = PHASE_WORK[phase]
        floor_c, bound_c, frac_c = (
            f"roofline_floor_ms_{phase}",
            f"roofline_bound_{phase}",
            f"roofline_fraction_{phase}",
        )
        floor, frac = _col(d, floor_c), _col(d, frac_c)
        bound = (
            d[bound_c].astype(object)
            if bound_c in d.columns
            else pd.Series(None, index=d.index, dtype=object)
        )
        bound = bound.where(bound.notna() & bound.astype(str).isin(ROOFLINE_BOUNDS), None)
        recorded = floor.notna()
        terms = pd.DataFrame(
            {
                "matmul": _col(d, fcol) / pf,
                "memory": _col(d, bcol) / pb,
                "exp": _col(d, ecol) / pe,
            },
            index=d.index,
        )
        can = ~recorded & terms["matmul"].notna() & terms["memory"].notna()
        has_exp = terms["exp"].notna()
        t = terms[list(ROOFLINE_BOUNDS)].where(terms.notna(), -np.inf)
        best = t.max(axis=1)
        arg = t.idxmax(axis=1)
        der_floor = best * 1e3
        floor = floor.where(~can, der_floor)
        bound = bound.where(~can, arg.where(best > 0, None))
        ms = _col(d, f"{phase}_ms_median")
        der_frac = (der_floor / ms).where((ms > 0) & (best > 0))
        frac = frac.where(~can, der_frac)
        d[floor_c], d[bound_c], d[frac_c] = floor, bound, frac
        exp_state = pd.Series("", index=d.index, dtype=object)
        exp_state[recorded] = "recorded"
        exp_state[can & has_exp] = "derived"
        exp_state[can & ~has_exp] = EXP_NOT_RECORDED
        d[f"roofline_exp_{phase}"] = exp_state
    old = _col(d, "roofline_fraction")
    d["roofline_fraction"] = old.where(
        d["roofline_exp_forward"] == "recorded", d["roofline_fraction_forward"]
    )
    d["roofline_fraction"] = d["roofline_fraction"].where(d["roofline_fraction"].notna(), old)
    return d


def largest_cases(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per device and method: the method's largest case (largest B x H x N x M among
    its timed rows). Ties go to bf16, then the method's representative variant
    (``representative_labels``: most measured, then rank 16 and 256 features, the suite's
    defaults), then the larger d, then power-law keys, then the case id: the same order as
    ``python -m bench targets`` uses (it also checks the defaults exactly, which the report
    cannot: it never imports the operators)."""
    need = ok[ok["forward_ms_median"].notna() | ok["attend_ms_median"].notna()]
    if need.empty:
        return need
    out = []
    for _dev, g in need.groupby("device"):
        reps = representative_labels(g)
        g = g.copy()
        g["_size"] = g["n"] * g["m"].fillna(g["n"]) * g["batch"].fillna(1) * g["heads"].fillna(1)
        g["_not_bf16"] = g["dtype"].astype(str) != "bf16"
        g["_not_rep"] = g["label"].astype(str) != g["method"].map(reps).astype(str)
        g["_not_pl"] = g["family"].astype(str) != "powerlaw"
        g["_id"] = g["case_id"].astype(str)
        g = g.sort_values(
            ["_size", "_not_bf16", "_not_rep", "d", "_not_pl", "_id"],
            ascending=[False, True, True, False, True, True],
            na_position="last",
        )
        for method in sorted_methods(g["method"].unique()):
            out.append(
                g[g["method"] == method]
                .iloc[0]
                .drop(labels=["_size", "_not_bf16", "_not_rep", "_not_pl", "_id"])
            )
    return pd.DataFrame(out).reset_index(drop=True) if out else need.iloc[0:0]


def roofline_case_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Bound, fraction, floor and measured ms of attend and forward at each method's largest
    case (``largest_cases``), for the report's roofline tables. Expects ``roofline_phases``
    columns (it adds them if missing)."""
    if "roofline_exp_forward" not in ok.columns:
        ok = roofline_phases(ok)
    big = largest_cases(ok)
    if big.empty:
        return pd.DataFrame()
    rows = []
    for rd in big.to_dict("records"):
        rec = {
            "device": rd["device"],
            "method": rd["method"],
            "label": rd["label"],
            "dtype": rd["dtype"],
            "n": rd["n"],
            "m": rd["m"],
            "d": rd["d"],
            "B x H": f"{int(rd['batch'])} x {int(rd['heads'])}",
        }
        for phase in ("attend", "forward"):
            bound = rd.get(f"roofline_bound_{phase}")
            exp_state = rd.get(f"roofline_exp_{phase}") or ""
            floor = rd.get(f"roofline_floor_ms_{phase}")
            if exp_state == EXP_NOT_RECORDED and isinstance(bound, str):
                bound = f"{bound} (no exp term)"
            elif floor is None or floor != floor:
                bound = "not recorded"
            rec[f"{phase} bound"] = bound if isinstance(bound, str) else "-"
            rec[f"{phase} fraction"] = rd.get(f"roofline_fraction_{phase}")
            rec[f"{phase} floor ms"] = floor
            rec[f"{phase} measured ms"] = rd.get(f"{phase}_ms_median")
        rows.append(rec)
    return pd.DataFrame(rows)
