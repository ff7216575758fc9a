"""Section 4 figures: KL vs r for the SVD readings, error vs N, error-vs-time Pareto."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..derive import family_rank, fix_secondary, inputs_note, pareto_front, representative_labels
from .common import (
    Fig,
    empty_note,
    grid,
    legend_below,
    log2_axis,
    method_color,
    method_order,
    series_colors,
)

FLOOR = 1e-10


def _richest(d: pd.DataFrame, col: str) -> tuple[float, float]:
    """The (N, M) with the most distinct values of `col`; ties go to the larger N."""
    c = d.groupby(["n", "m"])[col].nunique().reset_index().sort_values([col, "n", "m"])
    return float(c["n"].iloc[-1]), float(c["m"].iloc[-1])


def _main_case(
    d: pd.DataFrame, fix: tuple[str, ...] = ("m", "d")
) -> tuple[pd.DataFrame, list[str]]:
    """Fix dtype (prefer fp32), M and d at their most common values."""
    notes = []
    if d.empty:
        return d, notes
    dtypes = list(d["dtype"].dropna().unique())
    dt = next((x for x in ("fp32", "float32") if x in dtypes), None) or d["dtype"].mode().iloc[0]
    d = d[d["dtype"] == dt]
    notes.append(f"dtype={dt}")
    for col in fix:
        if d[col].notna().any():
            v = d[col].mode().iloc[0]
            d = d[d[col] == v]
            notes.append(f"{col.upper() if col == 'm' else col}={v:g}")
    d, more = fix_secondary(d)
    return d, notes + more


def kl_vs_rank(ok: pd.DataFrame, device: str, key: str) -> Fig | None:
    d = ok[
        (ok["device"] == device)
        & ok["method"].isin(["svd_exact", "svd_tokens"])
        & ok["rank"].notna()
        & (ok["kl_mean"].notna() | ok["out_err_mean"].notna())
    ]
    d, notes = _main_case(d, fix=("d",))
    if d.empty:
        return None
    n, m = _richest(d, "rank")
    d = d[(d["n"] == n) & (d["m"] == m)].copy()
    if d["rank"].nunique() < 2:
        return None  # one rank is a table row (fidelity table), not a curve
    notes.append(f"M={m:g}")
    d["r_star"] = d["family_params"].map(family_rank)
    d["fam"] = [
        f if not (f == "exact_rank" and r == r) else f"exact_rank (r*={r:g})"
        for f, r in zip(d["family"], d["r_star"], strict=False)
    ]
    methods = method_order(d["method"])
    fams = sorted(d["fam"].unique())
    colors = series_colors(fams)
    fig, axes = grid(2, len(methods), row_h=2.6, sharey="row")
    for j, method in enumerate(methods):
        for i, (col, ylab) in enumerate(
            [("kl_mean", "KL(P || P_r), mean"), ("out_err_mean", "output error, mean")]
        ):
            ax = axes[i, j]
            sub = d[d["method"] == method]
            for fam in fams:
                s = sub[sub["fam"] == fam].groupby("rank")[col].median().dropna()
                if s.empty:
                    continue
                ax.plot(
                    s.index,
                    np.maximum(s.values, FLOOR),
                    marker="o",
                    ms=3.5,
                    lw=1.6,
                    color=colors[fam],
                    label=fam,
                )
                rs = sub.loc[sub["fam"] == fam, "r_star"].dropna()
                if len(rs):
                    ax.axvline(rs.iloc[0], color=colors[fam], ls=":", lw=1)
            if sub[col].notna().sum() == 0:
                empty_note(ax)
            log2_axis(ax, "x")
            ax.set_yscale("log")
            ax.set_title(f"{method}: {col.split('_mean')[0]}")
            ax.set_xlabel("rank r")
            if j == 0:
                ax.set_ylabel(ylab)
    title = f"Fidelity vs rank r (SVD readings) - {device}, N = {n:g} - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "Mean over query rows of KL(P || P_r) and of the output error (relative to the RMS value "
        "norm) against the rank r. Dotted vertical lines mark the true rank r* of exact_rank inputs; "
        f"svd_exact should reach numerical zero for r >= r*. Values below {FLOOR:g} are drawn at "
        f"{FLOOR:g}. Fixed: " + ", ".join(notes) + "."
    )
    return Fig(key, title, cap, fig)


def error_vs_n(ok: pd.DataFrame, device: str, key: str) -> Fig | None:
    d = ok[(ok["device"] == device) & (ok["method"] != "dense")]
    d = d[d["kl_mean"].notna() | d["out_err_mean"].notna()]
    d, notes = _main_case(d)
    if d.empty:
        return None
    reps = representative_labels(d)
    d = d[d["label"].isin(list(reps.values()))]
    fams = sorted(d["family"].dropna().unique())[:4]
    fig, axes = grid(2, len(fams), row_h=2.6, sharey="row")
    for j, fam in enumerate(fams):
        for i, (col, ylab) in enumerate(
            [("kl_mean", "KL vs dense, mean"), ("out_err_mean", "output error, mean")]
        ):
            ax = axes[i, j]
            sub = d[d["family"] == fam]
            for method in method_order(sub["method"]):
                s = sub[sub["method"] == method].groupby("n")[col].median().dropna()
                if s.empty:
                    continue
                ax.plot(
                    s.index,
                    np.maximum(s.values, FLOOR),
                    marker="o",
                    ms=3,
                    lw=1.6,
                    color=method_color(method),
                    label=reps[method],
                )
            if sub[col].notna().sum() == 0:
                empty_note(ax)
            log2_axis(ax, "x")
            ax.set_yscale("log")
            ax.set_title(f"{fam}: {col.split('_mean')[0]}")
            ax.set_xlabel("N (behaviours)")
            if j == 0:
                ax.set_ylabel(ylab)
    title = f"Fidelity vs N per method - {device} - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "KL(P || Q) of each method's implied weights against dense softmax (signed weights: "
        "negatives clipped and renormalised, smoothed with a = 1e-6) and output error, per input "
        "family (columns). Fixed: " + ", ".join(notes) + "."
    )
    return Fig(key, title, cap, fig)


def pareto(ok: pd.DataFrame, device: str, key: str) -> Fig | None:
    d = ok[(ok["device"] == device) & ok["forward_ms_median"].notna()]
    d, notes = _main_case(d, fix=("d",))
    err = "out_err_mean" if d["out_err_mean"].notna().any() else "kl_mean"
    d = d[d[err].notna() | (d["method"] == "dense")]
    if d.empty or d["method"].nunique() < 2:
        return None
    n, m = _richest(d, "label")  # the case with the most configurations measured
    d = d[(d["n"] == n) & (d["m"] == m)].copy()
    notes.append(f"M={m:g}")
    d[err] = d[err].fillna(0.0)
    fams = sorted(d["family"].dropna().unique())[:4]
    fig, axes = grid(1, len(fams), row_h=3.6, sharey=True, sharex=True)
    floor = 1e-8
    for j, fam in enumerate(fams):
        ax = axes[0, j]
        sub = (
            d[d["family"] == fam]
            .groupby(["method", "label"])[["forward_ms_median", err]]
            .median()
            .reset_index()
        )
        sub["y"] = np.maximum(sub[err], floor)
        for method in method_order(sub["method"]):
            s = sub[sub["method"] == method]
            ax.scatter(
                s["forward_ms_median"],
                s["y"],
                s=28,
                color=method_color(method),
                label=method,
                zorder=3,
                edgecolor="white",
                linewidth=0.5,
            )
        front = pareto_front(sub, "forward_ms_median", "y")
        if not front.empty:
            ax.step(
                front["forward_ms_median"],
                front["y"],
                where="post",
                color="#555",
                lw=1,
                ls="--",
                label="Pareto front",
                zorder=2,
            )
            for _, r in front.iterrows():
                ax.annotate(
                    r["label"],
                    (r["forward_ms_median"], r["y"]),
                    fontsize=6.5,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color="#333",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(fam)
        ax.set_xlabel("forward time (ms)")
        if j == 0:
            ax.set_ylabel(err.replace("_mean", "") + f" (floor {floor:g})")
    title = f"Error vs time, Pareto front - {device}, N = {n:g} - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes, ncol=7)
    cap = (
        "Every configuration (all ranks / feature counts) of every method at one case; the dashed "
        "step is the Pareto front (nothing is both faster and more accurate) and its points are "
        f"labelled. Dense has zero error by definition and is drawn at the floor {floor:g}. "
        "Fixed: " + ", ".join(notes) + f", N={n:g}."
    )
    return Fig(key, title, cap, fig)
