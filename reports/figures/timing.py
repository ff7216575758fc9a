"""Section 2 figures: time vs N (faceted by M and d), prepare/attend split, speedup."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..derive import aggregate_time, fix_secondary, inputs_note, representative_labels
from .common import (
    Fig,
    at_modal_d,
    empty_note,
    grid,
    legend_below,
    log2_axis,
    method_color,
    method_order,
    panel_grid,
)


def bench_slice(ok: pd.DataFrame, device: str, dtype: str, setting: str):
    """Rows of one device/dtype/setting, one label per method, secondary params fixed."""
    d = ok[(ok["device"] == device) & (ok["dtype"] == dtype) & (ok["setting"] == setting)]
    d, notes = fix_secondary(d)
    reps = representative_labels(d) if not d.empty else {}
    d = d[d["label"].isin(list(reps.values()))].copy()
    if setting == "self":
        d["m"] = -1.0  # M = N: one facet
    return d, reps, notes


def _m_title(m: float) -> str:
    return "M = N (self-attention)" if m < 0 else f"M = {m:g}"


def _caption_bits(d: pd.DataFrame, reps: dict[str, str], notes: list[str]) -> str:
    bits = "Lines: " + ", ".join(reps[m] for m in method_order(reps)) + "."
    if notes:
        bits += " Fixed: " + ", ".join(notes) + "."
    if d["family"].nunique() > 1:
        bits += " Values are the median over input families (timing does not depend on the values)."
    return bits


def time_vs_n(ok: pd.DataFrame, device: str, dtype: str, setting: str, key: str) -> Fig | None:
    d, reps, notes = bench_slice(ok, device, dtype, setting)
    agg = aggregate_time(d, "forward_ms_median", ["method", "label", "m", "d", "n"])
    if agg.empty or agg["n"].nunique() < 2:
        return None  # a single N is a table row, not a line
    ms = sorted(agg["m"].unique())
    ds = sorted(agg["d"].dropna().unique()) or [np.nan]
    fig, axes = grid(len(ds), len(ms), row_h=2.6 if len(ds) > 1 else 3.2)
    for i, dd in enumerate(ds):
        for j, mm in enumerate(ms):
            ax = axes[i, j]
            sub = agg[(agg["m"] == mm) & ((agg["d"] == dd) | (np.isnan(dd)))]
            for method in method_order(sub["method"]):
                s = sub[sub["method"] == method].sort_values("n")
                ax.plot(
                    s["n"],
                    s["forward_ms_median"],
                    marker="o",
                    ms=3,
                    lw=1.6,
                    ls="--" if method == "dense" else "-",
                    color=method_color(method),
                    label=reps[method],
                )
            if sub.empty:
                empty_note(ax)
            log2_axis(ax, "x")
            ax.set_yscale("log")
            ax.set_title(f"{_m_title(mm)}, d = {dd:g}")
            if j == 0:
                ax.set_ylabel("forward time (ms)")
            if i == len(ds) - 1:
                ax.set_xlabel("N (behaviours)")
    title = f"Forward time vs N - {device}, {dtype}, {setting} - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        f"Median forward time (prepare + attend) per call, log-log, faceted by M (columns) and d "
        f"(rows). {_caption_bits(d, reps, notes)}"
    )
    return Fig(key, title, cap, fig)


def prepare_attend_split(
    ok: pd.DataFrame, device: str, dtype: str, setting: str, key: str
) -> Fig | None:
    d, reps, notes = bench_slice(ok, device, dtype, setting)
    if d.empty or (
        d["prepare_ms_median"].notna().sum() == 0 and d["attend_ms_median"].notna().sum() == 0
    ):
        return None
    d, dmode = at_modal_d(d)
    prep = aggregate_time(d, "prepare_ms_median", ["method", "label", "n"])
    att = aggregate_time(d, "attend_ms_median", ["method", "label", "m", "n"])
    ms = sorted(att["m"].unique()) if not att.empty else []
    facets = [("prepare", None)] + [("attend", m) for m in ms]
    fig, axes, ncols, panels = panel_grid(len(facets), row_h=2.7, sharey=True)
    for idx, ax in enumerate(panels):
        kind, mm = facets[idx]
        sub = prep if kind == "prepare" else att[att["m"] == mm]
        col = f"{kind}_ms_median"
        for method in method_order(sub["method"]):
            s = sub[(sub["method"] == method) & (sub[col] > 0)].sort_values("n")
            if s.empty:
                continue
            ax.plot(
                s["n"],
                s[col],
                marker="o",
                ms=3,
                lw=1.6,
                ls="--" if method == "dense" else "-",
                color=method_color(method),
                label=reps[method],
            )
        if sub.empty:
            empty_note(ax)
        log2_axis(ax, "x")
        ax.set_yscale("log")
        ax.set_title("prepare (once per user)" if kind == "prepare" else f"attend, {_m_title(mm)}")
        ax.set_xlabel("N (behaviours)")
        if idx % ncols == 0:
            ax.set_ylabel("median time (ms)")
    title = f"Prepare vs attend - {device}, {dtype}, {setting}, d = {dmode:g} - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "Prepare is the per-user work (SVD, compression, feature maps), done once and reusable "
        "for every candidate batch; attend is the per-candidate-batch work. Dense has next to no "
        f"prepare step (not drawn where zero or empty). {_caption_bits(d, reps, notes)}"
    )
    return Fig(key, title, cap, fig)


def speedup_vs_n(ok: pd.DataFrame, device: str, dtype: str, setting: str, key: str) -> Fig | None:
    d, reps, notes = bench_slice(ok, device, dtype, setting)
    if "dense" not in reps:
        return None
    d, dmode = at_modal_d(d)
    agg = aggregate_time(d, "forward_ms_median", ["method", "label", "m", "n"])
    ref = agg[agg["method"] == "dense"][["m", "n", "forward_ms_median"]].rename(
        columns={"forward_ms_median": "dense_ms"}
    )
    agg = agg[agg["method"] != "dense"].merge(ref, on=["m", "n"])
    if agg.empty:
        return None
    agg["speedup"] = agg["dense_ms"] / agg["forward_ms_median"]
    ms = sorted(agg["m"].unique())
    fig, axes, ncols, panels = panel_grid(len(ms), row_h=2.7)
    for idx, ax in enumerate(panels):
        sub = agg[agg["m"] == ms[idx]]
        for method in method_order(sub["method"]):
            s = sub[sub["method"] == method].sort_values("n")
            ax.plot(
                s["n"],
                s["speedup"],
                marker="o",
                ms=3,
                lw=1.6,
                color=method_color(method),
                label=reps[method],
            )
        ax.axhline(1.0, color="#222", lw=1, ls="--", label="dense (= 1)")
        log2_axis(ax, "x")
        ax.set_yscale("log")
        ax.set_title(_m_title(ms[idx]))
        ax.set_xlabel("N (behaviours)")
        if idx % ncols == 0:
            ax.set_ylabel("speedup over dense (x)")
    title = (
        f"Speedup over dense vs N - {device}, {dtype}, {setting}, d = {dmode:g} - {inputs_note(d)}"
    )
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "Dense forward time divided by the method's forward time at the same case; above the "
        "dashed line the method is faster. The crossover table lists where each line crosses 1. "
        + _caption_bits(d, reps, notes)
    )
    return Fig(key, title, cap, fig)
