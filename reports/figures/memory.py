"""Section 3 figure: peak memory vs N, measured (solid) and modelled (dashed)."""

from __future__ import annotations

import pandas as pd

from ..derive import inputs_note, measured_mem
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
from .timing import _caption_bits, _m_title, bench_slice


def memory_vs_n(ok: pd.DataFrame, device: str, dtype: str, setting: str, key: str) -> Fig | None:
    d, reps, notes = bench_slice(ok, device, dtype, setting)
    if d.empty:
        return None
    d = d.assign(mem_measured=measured_mem(d))
    if d["mem_measured"].notna().sum() == 0 and d["mem_model_bytes"].notna().sum() == 0:
        return None
    d, dmode = at_modal_d(d)
    agg = (
        d.groupby(["method", "label", "m", "n"], dropna=False)[["mem_measured", "mem_model_bytes"]]
        .median()
        .reset_index()
    )
    ms = sorted(agg["m"].unique())
    fig, axes, ncols, panels = panel_grid(len(ms), row_h=2.8)
    for idx, ax in enumerate(panels):
        sub = agg[agg["m"] == ms[idx]]
        for method in method_order(sub["method"]):
            s = sub[sub["method"] == method].sort_values("n")
            c = method_color(method)
            meas = s[s["mem_measured"] > 0]
            if not meas.empty:
                ax.plot(
                    meas["n"],
                    meas["mem_measured"] / 2**20,
                    marker="o",
                    ms=3,
                    lw=1.6,
                    color=c,
                    label=reps[method],
                )
            mod = s[s["mem_model_bytes"] > 0]
            if not mod.empty:
                ax.plot(
                    mod["n"],
                    mod["mem_model_bytes"] / 2**20,
                    lw=1.2,
                    ls="--",
                    color=c,
                    alpha=0.8,
                    label=reps[method] if meas.empty else "_model",
                )
        if sub.empty:
            empty_note(ax)
        log2_axis(ax, "x")
        ax.set_yscale("log")
        ax.set_title(_m_title(ms[idx]))
        ax.set_xlabel("N (behaviours)")
        if idx % ncols == 0:
            ax.set_ylabel("peak memory (MiB)")
    how = ", ".join(sorted(d["mem_method"].dropna().astype(str).unique())) or "not stated"
    title = f"Peak memory vs N - {device}, {dtype}, {setting}, d = {dmode:g} - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    axes[0, 0].plot([], [], color="#555", lw=1.6, marker="o", ms=3, label="solid: measured")
    axes[0, 0].plot([], [], color="#555", lw=1.2, ls="--", label="dashed: modelled")
    legend_below(fig, axes, ncol=4)
    cap = (
        "Solid: measured peak above the inputs during forward (GPU: allocator peak; CPU: process "
        f"measure; method: {how}). Dashed: the analytic model (MODELLED, not measured). "
        + _caption_bits(d, reps, notes)
    )
    return Fig(key, title, cap, fig)
