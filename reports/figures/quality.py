"""Section 9 figure: trained quality difference to dense against attend time."""

from __future__ import annotations

import pandas as pd

from ..quality import Matched, QualityGroup
from .common import Fig, grid, legend_below, method_color, tidy_log_axes


def quality_vs_speed(g: QualityGroup, matched: list[Matched], key: str) -> Fig | None:
    """Δ metric vs dense (error bar: std(method) + std(dense), the seed-spread threshold) against
    the method's attend time at the matched bench case, one panel per device."""
    t = g.table
    if not matched or t["delta"].isna().all():
        return None
    fig, axes = grid(1, len(matched), row_h=3.6, sharex=False, sharey=True, extra_h=1.2)
    plotted = False
    for ax, mt in zip(axes[0], matched, strict=True):
        for r in t.itertuples():
            x = mt.times.get((r.method, r.params))
            if x is None or pd.isna(r.delta):
                continue
            err = 0.0 if r.method == "dense" or pd.isna(getattr(r, "spread", None)) else r.spread
            ax.errorbar(
                x,
                r.delta,
                yerr=err,
                fmt="s" if r.method == "dense" else "o",
                color=method_color(r.method),
                capsize=3,
                ms=6,
                label=f"{r.method} ({r.params})" if r.params != "default" else r.method,
            )
            plotted = True
        ax.axhline(0.0, color="#888", lw=0.8, ls="--")
        if mt.notes:
            ax.text(
                0.01,
                0.02,
                "no time: " + "; ".join(mt.notes),
                transform=ax.transAxes,
                fontsize=7,
                color="#666",
                va="bottom",
                wrap=True,
            )
        ax.set_xscale("log")
        exact = "" if mt.exact else " (nearest benched)"
        ax.set_xlabel(f"attend ms, N = {mt.n}, M = {mt.m}{exact}; {mt.dtype}, d = {mt.d}")
        ax.set_title(f"{mt.device} ({mt.clock})", fontsize=9)
        ax.margins(x=0.2)
    if not plotted:
        import matplotlib.pyplot as plt  # after common.py chose the Agg backend

        plt.close(fig)
        return None
    axes[0, 0].set_ylabel(f"Δ {g.metric} vs dense (method - dense)")
    legend_below(fig, axes)
    tidy_log_axes(fig)
    fig.suptitle(f"Trained quality vs attend time - {g.task}, {g.dataset}", fontsize=11)
    notes = [n for mt in matched for n in mt.notes]
    case = "; ".join(
        f"{mt.device}: N = {mt.n}, M = {mt.m}"
        + ("" if mt.exact else " (N = 10k, M = 2k not benched: nearest case)")
        + f", {mt.dtype}, d = {mt.d}, batch x heads = {mt.batch} x {mt.heads}"
        for mt in matched
    )
    cap = (
        f"y: the trained model's {g.metric} minus dense's (mean over seeds; error bars "
        "= std(method) + std(dense), the sample std over seeds, so a bar that crosses 0 means no "
        f"difference beyond the seed spread). x: attend time of the same method and rank / "
        f"features in this report's bench table (synthetic inputs, target setting) at {case}. "
        "Baselines (popularity, mean pooling) and unsupported methods have no attend time."
        + (" Not plotted: " + "; ".join(notes) + "." if notes else "")
    )
    return Fig(key, f"Quality vs speed - {g.task}, {g.dataset}", cap, fig)
