"""Quality vs speed, the numbers: per task and dataset of `analysis quality` results, each
method x params with its headline metric (mean ± std over seeds), the difference to dense and
whether it exceeds the seed spread; and each method's attend time from the report's own bench
table at N = 10k, M = 2k (or the nearest benched case, said so). Reads files only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.quality_rows import config_summaries

BASELINES = ("mean_pool", "pop")
TARGET_N, TARGET_M = 10_000, 2_000


@dataclass
class QualityGroup:
    """One task x dataset: the per-method table and what the report says about it."""

    task: str
    dataset: str
    metric: str | None
    table: pd.DataFrame
    model_d: int | None  # the attention head dimension of the trained model, when recorded
    sources: list[str] = field(default_factory=list)
    machines: list[str] = field(default_factory=list)  # where the models were trained


def _head_dim(g: pd.DataFrame) -> int | None:
    if "dim" not in g.columns or g["dim"].dropna().empty:
        return None
    dim = int(pd.to_numeric(g["dim"]).dropna().mode().iloc[0])
    heads = (
        int(pd.to_numeric(g["heads"]).dropna().mode().iloc[0])
        if "heads" in g.columns and g["heads"].notna().any()
        else 1
    )
    return dim // max(heads, 1)


def summarise(q: pd.DataFrame) -> list[QualityGroup]:
    """Mean ± sample std over seeds per method x params, the difference to dense (method minus
    dense: positive = better) and 'beyond seed spread' = |Δ| > std(method) + std(dense); one
    group per task x dataset x preset (the dataset label names the preset when there are two)."""
    out = []
    n_presets = (
        q.assign(preset=q["preset"].fillna("") if "preset" in q else "")
        .groupby(["task", "dataset"])["preset"]
        .nunique()
    )
    for (task, ds, preset), g, metric, summaries in config_summaries(q):
        # each budget (preset) is its own comparison: dense of another preset is not a baseline
        if n_presets.get((task, ds), 1) > 1:
            ds = f"{ds}, preset {preset}"
        rows = [
            {
                **{k: v for k, v in s.items() if k not in ("by_seed", "config", "params")},
                "params": s["config"],
                "seeds": int(s["by_seed"].size),
                "reason": s["reason"] if s["status"] != "ok" else "",
            }
            for s in summaries
        ]
        t = pd.DataFrame(rows)
        t["anchor"] = [_anchor(g, s["method"], s["params"]) for s in summaries]
        dense = t[(t["method"] == "dense") & (t["status"] == "ok")]
        t["delta"] = math.nan
        t["beyond"] = None
        if len(dense) == 1:
            d = dense.iloc[0]
            t["delta"] = t["mean"] - d["mean"]
            spread = t["std"] + d["std"]
            t["spread"] = spread
            known = t["std"].notna() & pd.notna(d["std"]) & t["delta"].notna()
            t["beyond"] = pd.Series(
                [
                    (bool(abs(x) > s) if k else None)
                    for x, s, k in zip(t["delta"], spread, known, strict=True)
                ],
                index=t.index,
                dtype=object,
            )
            t.loc[t["method"] == "dense", "beyond"] = None
        srcs = sorted(g["source_dir"].astype(str).unique()) if "source_dir" in g.columns else []
        machines = (
            sorted(g["machine"].dropna().astype(str).unique()) if "machine" in g.columns else []
        )
        out.append(QualityGroup(str(task), str(ds), metric, t, _head_dim(g), srcs, machines))
    return out


ANCHOR_COL = "anchor_ndcg@10_filtered"


def _anchor(g: pd.DataFrame, method: str, params: object) -> str:
    """Mean ± std over seeds of the anchor-protocol NDCG@10 (gSASRec's own test input, on the
    users where it can be rebuilt) with the user count, or '' when the rows do not have it."""
    if ANCHOR_COL not in g.columns:
        return ""
    h = g[(g["status"] == "ok") & (g["method"] == method) & (g["params"] == params)]
    v = pd.to_numeric(h[ANCHOR_COL], errors="coerce").dropna()
    if v.empty:
        return ""
    users = int(pd.to_numeric(h["anchor_users"], errors="coerce").max())
    std = f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else " (one seed)"
    return f"{v.mean():.4f}{std} ({users} users)"


@dataclass
class Matched:
    """Attend times of one device's bench run at the case nearest N = 10k, M = 2k."""

    device: str
    n: int
    m: int
    d: int
    dtype: str
    batch: int
    heads: int
    exact: bool
    clock: str  # which time column: wall, or process CPU on a loaded run
    times: dict[tuple[str, str], float] = field(default_factory=dict)  # (method, params)
    notes: list[str] = field(default_factory=list)


def _dist(n: float, m: float) -> float:
    return abs(math.log(n / TARGET_N)) + abs(math.log(max(m, 1) / TARGET_M))


def _time_col(rows: pd.DataFrame) -> tuple[str, str]:
    by = rows["timing_rank_by"].dropna().astype(str) if "timing_rank_by" in rows else pd.Series()
    if (by == "process_cpu").any() and "attend_process_cpu_ms_median" in rows.columns:
        return "attend_process_cpu_ms_median", "process CPU time (loaded run)"
    return "attend_ms_median", "wall time"


def attend_times(bench_ok: pd.DataFrame, table: pd.DataFrame, model_d: int | None) -> list[Matched]:
    """Per device kind: the run and target-setting case (N, M) nearest N = 10k, M = 2k that has
    dense, at the model's head dimension when benched (else the most benched d), fp32 when
    benched (else the most benched dtype); then each method's attend time at exactly that case
    and its trained rank / features. A method not benched there gets a note, not a time."""
    out: list[Matched] = []
    if bench_ok.empty:
        return out
    b = bench_ok[(bench_ok["setting"] == "target") & bench_ok["n"].notna() & bench_ok["m"].notna()]
    kind = "device_kind" if "device_kind" in b.columns else "device"
    for _kind, g in b.groupby(kind, sort=True):
        dense = g[g["method"] == "dense"]
        if dense.empty:
            continue
        d = (
            model_d
            if model_d is not None and (dense["d"] == model_d).any()
            else int(dense["d"].mode().iloc[0])
        )
        dense = dense[dense["d"] == d]
        dtype = "fp32" if (dense["dtype"] == "fp32").any() else str(dense["dtype"].mode().iloc[0])
        dense = dense[dense["dtype"] == dtype]
        best = dense.assign(_k=[_dist(n, m) for n, m in zip(dense["n"], dense["m"], strict=True)])
        best = best.sort_values(["_k", "n", "m"], ascending=[True, False, False]).iloc[0]
        run, n, m = str(best["device"]), int(best["n"]), int(best["m"])
        name = best.get("device_name")
        if isinstance(name, str) and name and name not in run:
            run = f"{run} ({name})"
        batch, heads = int(best["batch"]), int(best["heads"])
        case = g[
            (g["device"] == best["device"])
            & (g["n"] == n)
            & (g["m"] == m)
            & (g["d"] == d)
            & (g["dtype"] == dtype)
            & (g["batch"] == batch)
            & (g["heads"] == heads)
        ]
        col, clock = _time_col(case)
        mt = Matched(str(run), n, m, d, dtype, batch, heads, (n, m) == (TARGET_N, TARGET_M), clock)
        if model_d is not None and d != model_d:
            mt.notes.append(f"the trained model's head dim {model_d} is not benched; d = {d} used")
        for r in table.itertuples():
            if r.method in BASELINES or r.status != "ok":
                continue
            rows = case[case["method"] == r.method]
            for col_name, val in (("rank", r.rank), ("features", r.features)):
                if val is not None and not (isinstance(val, float) and math.isnan(val)):
                    rows = rows[pd.to_numeric(rows[col_name]) == float(val)]
            if r.method == "svd_exact" and "solver" in rows and (rows["solver"] == "gram").any():
                rows = rows[rows["solver"] == "gram"]
            t = pd.to_numeric(rows[col]).dropna() if col in rows.columns else pd.Series()
            if t.empty:
                mt.notes.append(f"{r.method} {r.params} not benched at N = {n}, M = {m}")
            else:
                mt.times[(r.method, r.params)] = float(np.median(t))
        out.append(mt)
    return out
