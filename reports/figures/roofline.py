"""Section 5 figure: achieved FLOP/s vs arithmetic intensity against the device peaks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..derive import inputs_note
from .common import Fig, grid, legend_below, method_color, method_order


def roofline_points(ok: pd.DataFrame) -> pd.DataFrame:
    """FLOP/s and intensity per row, derived from flops/bytes/time where not given."""
    d = ok.copy()
    t = d["forward_ms_median"] / 1e3
    d["flops_per_s"] = d["flops_per_s"].where(d["flops_per_s"].notna(), d["flops"] / t)
    d["arithmetic_intensity"] = d["arithmetic_intensity"].where(
        d["arithmetic_intensity"].notna(), d["flops"] / d["bytes"])
    return d[(d["flops_per_s"] > 0) & (d["arithmetic_intensity"] > 0)]


def roofline(ok: pd.DataFrame, key: str) -> Fig | None:
    d = roofline_points(ok)
    if d.empty:
        return None
    devices = sorted(d["device"].unique())
    fig, axes = grid(1, len(devices), row_h=4.2, sharey=False, sharex=False)
    for j, dev in enumerate(devices):
        ax = axes[0, j]
        sub = d[d["device"] == dev]
        for method in method_order(sub["method"]):
            s = sub[sub["method"] == method]
            ax.scatter(s["arithmetic_intensity"], s["flops_per_s"] / 1e9, s=np.clip(np.log2(s["n"].fillna(256)) * 2, 6, 40),
                       alpha=0.6, color=method_color(method), label=method, edgecolor="none")
        ai = np.logspace(np.log10(sub["arithmetic_intensity"].min() / 2),
                         np.log10(sub["arithmetic_intensity"].max() * 2), 100)
        pf = sub["peak_flops"].median()
        pb = sub["peak_bytes_per_s"].median()
        if pf == pf and pb == pb:
            ax.plot(ai, np.minimum(pf, pb * ai) / 1e9, color="#000", lw=1.5, label="roofline (device peaks)")
        elif pf == pf:
            ax.axhline(pf / 1e9, color="#000", lw=1.5, label="peak FLOP/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        peaks = []
        if pf == pf:
            peaks.append(f"{pf / 1e9:.0f} GFLOP/s")
        if pb == pb:
            peaks.append(f"{pb / 1e9:.0f} GB/s")
        ax.set_title(f"{dev}" + (f" (peaks {', '.join(peaks)})" if peaks else " (no peaks in table)"))
        ax.set_xlabel("arithmetic intensity (FLOP / byte, modelled)")
        if j == 0:
            ax.set_ylabel("achieved GFLOP/s")
    title = f"Roofline - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes, ncol=7)
    cap = ("Each point is one forward measurement: the analytic FLOP count divided by the measured "
           "median time, against the analytic FLOPs per byte moved. The black line is min(peak FLOP/s, "
           "peak bandwidth x intensity) for the device (CPU peak from a matmul probe). Marker size grows "
           "with N.")
    return Fig(key, title, cap, fig)
