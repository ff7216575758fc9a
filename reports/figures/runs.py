"""Section 2 figure: two or more runs of one device kind overlaid (colour = method, line
style = run), so `--results A --results B` shows what changed between them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..derive import aggregate_time, fix_secondary, representative_labels
from .common import (
    Fig,
    at_modal_d,
    empty_note,
    legend_below,
    log2_axis,
    method_color,
    method_order,
    panel_grid,
)

STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D"]


def overlay_groups(ok: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(device kind, dtype, setting) groups measured by more than one run at two or more N."""
    if "device_kind" not in ok.columns:
        return []
    out = []
    for (kind, dt, st), g in ok.groupby(["device_kind", "dtype", "setting"], dropna=False):
        runs = [r for r, gr in g.groupby("device") if gr["n"].nunique() >= 2]
        if len(runs) >= 2:
            out.append((str(kind), str(dt), str(st)))
    return out


def runs_overlay(ok: pd.DataFrame, kind: str, dtype: str, setting: str, key: str) -> Fig | None:
    d = ok[(ok["device_kind"] == kind) & (ok["dtype"] == dtype) & (ok["setting"] == setting)]
    d, notes = fix_secondary(d)
    if d.empty:
        return None
    reps = representative_labels(d)
    d = d[d["label"].isin(list(reps.values()))].copy()
    d, dmode = at_modal_d(d)
    if setting == "self":
        d["m"] = -1.0
    agg = aggregate_time(d, "forward_ms_median", ["device", "method", "label", "m", "n"])
    runs = sorted(agg["device"].unique())
    if len(runs) < 2:
        return None
    ms = sorted(agg["m"].unique())[-3:]  # the largest M values: where the methods differ most
    fig, axes, ncols, panels = panel_grid(len(ms), row_h=3.4, sharey=True)
    for r, run in enumerate(runs):  # legend entries for the runs (line style), once
        panels[0].plot(
            [],
            [],
            color="#333",
            ls=STYLES[r % len(STYLES)],
            marker=MARKERS[r % len(MARKERS)],
            ms=3,
            lw=1.4,
            label=f"run: {run}",
        )
    for idx, ax in enumerate(panels):
        sub = agg[agg["m"] == ms[idx]]
        for r, run in enumerate(runs):
            for method in method_order(sub["method"]):
                s = sub[(sub["device"] == run) & (sub["method"] == method)].sort_values("n")
                if s.empty:
                    continue
                ax.plot(
                    s["n"],
                    s["forward_ms_median"],
                    ls=STYLES[r % len(STYLES)],
                    marker=MARKERS[r % len(MARKERS)],
                    ms=3,
                    lw=1.4,
                    color=method_color(method),
                    label=reps[method],
                )
        if sub.empty:
            empty_note(ax)
        log2_axis(ax, "x")
        ax.set_yscale("log")
        m = ms[idx]
        ax.set_title(
            "self (M = N)" if isinstance(m, float) and not np.isnan(m) and m < 0 else f"M = {m:g}"
        )
        ax.set_xlabel("N (behaviours)")
        if idx % ncols == 0:
            ax.set_ylabel("forward time (ms)")
    title = f"Runs compared - {kind}, {dtype}, {setting}, d = {dmode:g}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes, ncol=4)
    styles = "; ".join(f"{STYLES[i % len(STYLES)]!s} {run}" for i, run in enumerate(runs))
    cap = (
        f"The same cases measured by {len(runs)} runs of one device kind, overlaid: colour = "
        f"method, line style = run ({styles}). Runs are told apart by commit, threads and "
        "folder; `python -m bench compare A B` gives per-case ratios with intervals."
        + (f" Fixed: {', '.join(notes)}." if notes else "")
    )
    return Fig(key, title, cap, fig)
