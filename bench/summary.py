"""Readings of a results table: the crossover N against dense, and the fidelity cost.

``crossover(df)`` is what the README and the reports quote: for each method variant and each
(M, d, dtype, batch, heads, family, setting) group, the smallest N from which the method's
forward time stays below dense's at the same case, with the speed-up and KL there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["m", "d", "dtype", "batch", "heads", "family", "setting"]
TIME_COLUMNS = {  # timing -> (forward column, attend column)
    "wall": ("forward_ms_median", "attend_ms_median"),
    "process_cpu": ("forward_process_cpu_ms_median", "attend_process_cpu_ms_median"),
}


def rank_by(df: pd.DataFrame) -> tuple[str, str]:
    """Which time ranks this table, and why, in words: process CPU time when any CPU row of it
    was measured on a loaded machine (its ``timing_rank_by`` says so and CPU times exist), else
    wall time (CUDA rows, older files without CPU-time columns, an idle machine)."""
    col = TIME_COLUMNS["process_cpu"][0]
    if "timing_rank_by" in df.columns and col in df.columns and df[col].notna().any():
        loaded = df[df["timing_rank_by"] == "process_cpu"]
        if len(loaded):
            why = (
                loaded["timing_wall_warning"].dropna()
                if "timing_wall_warning" in df.columns
                else []
            )
            detail = f" ({why.iloc[0]})" if len(why) else ""
            return "process_cpu", (
                f"ranked by process CPU time: {len(loaded)} of {len(df)} rows were timed on "
                f"a loaded machine, where wall times are unusable{detail}"
            )
    return "wall", "ranked by wall time (median per call)"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "status" not in df.columns or "forward_ms_median" not in df.columns:  # no ok row ever
        extra = [c for c in ("status", "forward_ms_median") if c not in df.columns]
        return df.iloc[0:0].reindex(columns=list(df.columns) + extra)
    return df[(df["status"] == "ok") & df["forward_ms_median"].notna()]


def first_from(faster: np.ndarray) -> int | None:
    """Smallest index from which every later entry is True (None if the last is False): the
    crossover rule of the harness and the reports (``reports.derive.crossover_table``)."""
    idx = None
    for i in range(len(faster) - 1, -1, -1):
        if not faster[i]:
            break
        idx = i
    return idx


def crossover(
    df: pd.DataFrame, time_col: str = "forward_ms_median", timing: str | None = None
) -> pd.DataFrame:
    """One row per (label, M, d, dtype, batch, heads, family, setting).

    Columns: ``crossover_n`` (smallest measured N from which the method's forward, prepare +
    attend, is faster than dense at every larger measured N; NaN if never),
    ``crossover_n_attend`` (the same for attend alone: the prepared user state reused, as in a
    cascade or a cached per-user state), ``n_values`` (the N measured), ``speedup_at_crossover``,
    ``speedup_at_max_n``, ``kl_mean_at_crossover``, ``kl_mean_median`` (over all N; the fidelity
    cost) and ``out_err_mean_median``. ``timing`` (``wall`` or ``process_cpu``, see
    :func:`rank_by`) picks the forward and attend columns instead of ``time_col``.
    """
    attend_col = "attend_ms_median"
    if timing is not None:
        time_col, attend_col = TIME_COLUMNS[timing]
    ok = _ok(df)
    group = [c for c in GROUP if c in ok.columns]
    dense = ok[ok["method"] == "dense"][group + ["n", time_col]].rename(
        columns={time_col: "dense_ms"}
    )
    dense = dense.groupby(group + ["n"], dropna=False, as_index=False)["dense_ms"].median()
    other = ok[ok["method"] != "dense"]
    merged = other.merge(dense, on=group + ["n"], how="inner")
    out = []
    attend = (
        ok[ok["method"] == "dense"][group + ["n", attend_col]].rename(
            columns={attend_col: "dense_attend_ms"}
        )
        if attend_col in ok
        else None
    )
    if attend is not None:
        attend = attend.groupby(group + ["n"], dropna=False, as_index=False)[
            "dense_attend_ms"
        ].median()
        merged = merged.merge(attend, on=group + ["n"], how="left")
    for key, g in merged.groupby(["method", "label"] + group, dropna=False):
        g = g.sort_values("n")
        ns = g["n"].to_numpy()
        cross_idx = first_from(g[time_col].to_numpy() < g["dense_ms"].to_numpy())
        att_idx = None
        if attend is not None:
            att_idx = first_from(g[attend_col].to_numpy() < g["dense_attend_ms"].to_numpy())
        speed = (g["dense_ms"] / g[time_col]).to_numpy()
        kl = g["kl_mean"].to_numpy(dtype=float) if "kl_mean" in g else np.full(len(g), np.nan)
        err = (
            g["out_err_mean"].to_numpy(dtype=float)
            if "out_err_mean" in g
            else np.full(len(g), np.nan)
        )
        rec = dict(zip(["method", "label"] + group, key, strict=True))
        rec.update(
            crossover_n=float(ns[cross_idx]) if cross_idx is not None else np.nan,
            crossover_n_attend=float(ns[att_idx]) if att_idx is not None else np.nan,
            n_values=",".join(str(int(x)) for x in ns),
            speedup_at_crossover=float(speed[cross_idx]) if cross_idx is not None else np.nan,
            speedup_at_max_n=float(speed[-1]),
            kl_mean_at_crossover=float(kl[cross_idx]) if cross_idx is not None else np.nan,
            kl_mean_median=float(np.nanmedian(kl)) if np.isfinite(kl).any() else np.nan,
            out_err_mean_median=float(np.nanmedian(err)) if np.isfinite(err).any() else np.nan,
        )
        out.append(rec)
    return pd.DataFrame(out)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Compact view printed at the end of a run."""
    cols = [
        "label",
        "setting",
        "family",
        "n",
        "m",
        "d",
        "dtype",
        "forward_ms_median",
        "forward_process_cpu_ms_median",
        "kl_mean",
        "status",
    ]
    cols = [c for c in cols if c in df.columns]
    out = df[cols].copy()
    if "forward_process_cpu_ms_median" in out and out["forward_process_cpu_ms_median"].isna().all():
        out = out.drop(columns="forward_process_cpu_ms_median")  # CUDA or an older file
    out = out.rename(
        columns={
            "forward_ms_median": "fwd_ms",
            "forward_process_cpu_ms_median": "fwd_cpu_ms",
            "kl_mean": "kl_mean",
        }
    )
    return out.sort_values(
        [c for c in ("setting", "family", "m", "n", "label") if c in out.columns]
    )
