"""Per-N-bin summaries of the per-user table and scree (cumulative energy) curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .spectra import N_BIN_EDGES, N_BIN_LABELS, log_bins_label

MEASURES = ("r90", "r95", "r99", "effective_rank", "stable_rank")
KEYS = ["dataset", "route", "matrix", "centred"]


def summarise(users: pd.DataFrame, edges: tuple[int, ...] = N_BIN_EDGES) -> pd.DataFrame:
    """Count, median N, and median / mean / p10 / p90 of each rank measure per N bin (+ 'all')."""
    df = users.copy()
    df["n_bin"] = log_bins_label(df["n"].to_numpy(), edges)
    parts = [df, df.assign(n_bin="all")]
    df = pd.concat(parts, ignore_index=True)
    rows = []
    for key, g in df.groupby(KEYS + ["n_bin"], sort=False):
        row = dict(zip(KEYS + ["n_bin"], key, strict=True))
        row["users"] = len(g)
        row["n_median"] = float(g["n"].median())
        row["n_max"] = int(g["n"].max())
        if "n_distinct" in g:
            row["n_distinct_median"] = float(g["n_distinct"].median())
        row["dim"] = int(g["dim"].iloc[0])
        row["frac_rank_capped_by_n"] = (
            float((g["rank_cap"] < g["dim"]).mean())
            if "rank_cap" in g
            else float((g["n"] < g["dim"]).mean())
        )
        for m in MEASURES:
            v = g[m].to_numpy(dtype=np.float64)
            row[f"{m}_median"] = float(np.median(v))
            row[f"{m}_mean"] = float(v.mean())
            row[f"{m}_p10"] = float(np.quantile(v, 0.1))
            row[f"{m}_p90"] = float(np.quantile(v, 0.9))
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {b: i for i, b in enumerate(list(N_BIN_LABELS) + ["all"])}
    out["_o"] = out["n_bin"].map(order).fillna(99)
    return out.sort_values(KEYS + ["_o"]).drop(columns="_o").reset_index(drop=True)


def scree(
    spectra: np.ndarray,
    lengths: np.ndarray,
    route: str,
    matrix: str,
    centred: bool,
    edges: tuple[int, ...] = N_BIN_EDGES,
) -> pd.DataFrame:
    """Mean of s_i / s_1 and of the cumulative energy fraction per N bin (+ 'all'); index is 1-based."""
    s = np.asarray(spectra, dtype=np.float64)
    s1 = s[:, :1]
    ok = s1[:, 0] > 0
    norm = np.where(ok[:, None], s / np.where(s1 > 0, s1, 1.0), 0.0)
    e = s**2
    tot = e.sum(axis=1, keepdims=True)
    cum = np.where(ok[:, None], np.cumsum(e, axis=1) / np.where(tot > 0, tot, 1.0), 0.0)
    bins = log_bins_label(lengths, edges)
    rows = []
    for label in list(N_BIN_LABELS) + ["all"]:
        sel = ok & ((bins == label) if label != "all" else True)
        if not sel.any():
            continue
        sv = norm[sel].mean(axis=0)
        ec = cum[sel].mean(axis=0)
        rows.append(
            pd.DataFrame(
                {
                    "route": route,
                    "matrix": matrix,
                    "centred": centred,
                    "n_bin": label,
                    "users": int(sel.sum()),
                    "index": np.arange(1, s.shape[1] + 1),
                    "sv_mean": sv,
                    "energy_cum": ec,
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def headline(summary: pd.DataFrame, min_n_bin: str = "[1000,inf)") -> pd.DataFrame:
    """Median r99 (and effective rank) per route/matrix at the top N bin, uncentred and centred."""
    sel = summary[summary["n_bin"] == min_n_bin]
    cols = KEYS + [
        "users",
        "n_median",
        "r99_median",
        "r95_median",
        "effective_rank_median",
        "stable_rank_median",
    ]
    return sel[cols].reset_index(drop=True)
