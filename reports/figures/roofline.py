"""Section 5 figure: achieved FLOP/s vs arithmetic intensity against the device peaks, marked by
the bound of the three-bound floor, and the attend fraction of the floor vs N."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..derive import (
    EXP_NOT_RECORDED,
    ROOFLINE_BOUNDS,
    fix_secondary,
    inputs_note,
    mode_value,
    representative_labels,
    roofline_phases,
)
from .common import (
    Fig,
    at_modal_d,
    empty_note,
    grid,
    legend_below,
    log2_axis,
    method_color,
    method_order,
)


def roofline_points(ok: pd.DataFrame) -> pd.DataFrame:
    """FLOP/s and intensity per row, derived from flops/bytes/time where not given."""
    d = ok.copy()
    t = d["forward_ms_median"] / 1e3
    d["flops_per_s"] = d["flops_per_s"].where(d["flops_per_s"].notna(), d["flops"] / t)
    d["arithmetic_intensity"] = d["arithmetic_intensity"].where(
        d["arithmetic_intensity"].notna(), d["flops"] / d["bytes"]
    )
    return d[(d["flops_per_s"] > 0) & (d["arithmetic_intensity"] > 0)]


BOUND_MARKERS = {"matmul": "o", "memory": "s", "exp": "^"}
NO_BOUND_MARKER = "x"


def _marker(bound) -> str:
    return BOUND_MARKERS.get(bound, NO_BOUND_MARKER) if isinstance(bound, str) else NO_BOUND_MARKER


def attend_fraction_points(ph: pd.DataFrame, dev: str) -> pd.DataFrame:
    """Attend fraction of the floor vs N on ``dev``: the device's most measured (dtype,
    setting), each method's representative variant at its largest M and the modal d, the
    median over input families per N (bound: the most common one)."""
    g = ph[(ph["device"] == dev) & ph["roofline_fraction_attend"].notna()]
    if g.empty:
        return g
    main = g.groupby(["dtype", "setting"]).size().sort_values(ascending=False).index[0]
    g = g[(g["dtype"] == main[0]) & (g["setting"] == main[1])]
    g, _ = fix_secondary(g)
    g, _ = at_modal_d(g)
    reps = representative_labels(g)
    parts = []
    for method, label in reps.items():
        sub = g[g["label"] == label]
        sub = sub[sub["m"] == sub["m"].max()]
        agg = (
            sub.groupby("n")
            .agg(
                fraction=("roofline_fraction_attend", "median"),
                bound=("roofline_bound_attend", lambda b: mode_value(b.astype(object))),
                m=("m", "first"),
            )
            .reset_index()
        )
        agg["method"] = method
        parts.append(agg)
    return pd.concat(parts, ignore_index=True) if parts else g.iloc[0:0]


def roofline(ok: pd.DataFrame, key: str) -> Fig | None:
    ph = roofline_phases(ok)
    d = roofline_points(ph)
    if d.empty:
        return None
    devices = sorted(d["device"].unique())
    attend = {dev: attend_fraction_points(ph, dev) for dev in devices}
    two_rows = any(not a.empty for a in attend.values())
    fig, axes = grid(2 if two_rows else 1, len(devices), row_h=4.2, sharey=False, sharex=False)
    bounds_seen: set[str] = set()
    for j, dev in enumerate(devices):
        ax = axes[0, j]
        sub = d[d["device"] == dev]
        for method in method_order(sub["method"]):
            s = sub[sub["method"] == method]
            for bound, sb in s.groupby(
                s["roofline_bound_forward"].astype(object).fillna("none"), dropna=False
            ):
                bounds_seen.add(str(bound))
                ax.scatter(
                    sb["arithmetic_intensity"],
                    sb["flops_per_s"] / 1e9,
                    s=np.clip(np.log2(sb["n"].fillna(256)) * 2.5, 8, 45),
                    alpha=0.6,
                    color=method_color(method),
                    marker=_marker(bound),
                    edgecolor="none" if _marker(bound) != NO_BOUND_MARKER else None,
                )
        ai = np.logspace(
            np.log10(sub["arithmetic_intensity"].min() / 2),
            np.log10(sub["arithmetic_intensity"].max() * 2),
            100,
        )
        pf = sub["peak_flops"].median()
        pb = sub["peak_bytes_per_s"].median()
        if pf == pf and pb == pb:
            ax.plot(
                ai,
                np.minimum(pf, pb * ai) / 1e9,
                color="#000",
                lw=1.5,
                label="roofline (matmul, memory)",
            )
        elif pf == pf:
            ax.axhline(pf / 1e9, color="#000", lw=1.5, label="peak FLOP/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        peaks = []
        if pf == pf:
            peaks.append(f"{pf / 1e9:.0f} GFLOP/s")
        if pb == pb:
            peaks.append(f"{pb / 1e9:.0f} GB/s")
        pe = sub["peak_exp_per_s"].median() if "peak_exp_per_s" in sub.columns else np.nan
        if pe == pe:
            peaks.append(f"{pe / 1e12:.3g} Texp/s" if pe >= 1e12 else f"{pe / 1e9:.3g} Gexp/s")
        ax.set_title(
            f"{dev} forward" + (f" (peaks {', '.join(peaks)})" if peaks else " (no peaks in table)")
        )
        ax.set_xlabel("arithmetic intensity (FLOP / byte, modelled)")
        if j == 0:
            ax.set_ylabel("achieved GFLOP/s")
        if not two_rows:
            continue
        ax2 = axes[1, j]
        a = attend[dev]
        if a.empty:
            ax2.set_xticks([])
            ax2.set_yticks([])
            empty_note(
                ax2,
                EXP_NOT_RECORDED
                if (ph.loc[ph["device"] == dev, "roofline_exp_attend"] != "recorded").all()
                else "no attend floor",
            )
            continue
        for method in method_order(a["method"]):
            s = a[a["method"] == method].sort_values("n")
            ax2.plot(s["n"], s["fraction"], color=method_color(method), lw=1.2, alpha=0.8)
            for bound, sb in s.groupby(s["bound"].astype(object).fillna("none"), dropna=False):
                bounds_seen.add(str(bound))
                ax2.scatter(
                    sb["n"],
                    sb["fraction"],
                    color=method_color(method),
                    marker=_marker(bound),
                    s=30,
                    zorder=3,
                    edgecolor="none" if _marker(bound) != NO_BOUND_MARKER else None,
                )
        ax2.axhline(1.0, color="#000", lw=1, ls="--", label="at the floor")
        log2_axis(ax2, "x")
        ax2.set_yscale("log")
        ax2.set_xlabel("N (behaviours); each method at its largest M")
        ax2.set_title(f"{dev} attend: fraction of the roofline floor")
        if j == 0:
            ax2.set_ylabel("floor / measured time")
    for method in method_order(d["method"]):  # legend: colour = method, shape = bound
        axes[0, 0].plot([], [], color=method_color(method), lw=3, label=method)
    for bound in ROOFLINE_BOUNDS + ("none",):
        if bound in bounds_seen:
            axes[0, 0].scatter(
                [],
                [],
                marker=_marker(bound),
                color="#777",
                label=f"bound: {bound}" if bound != "none" else "bound: unknown",
            )
    title = f"Roofline - {inputs_note(d)}"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes, ncol=7)
    exp_missing = (d["roofline_exp_forward"] == EXP_NOT_RECORDED).any()
    cap = (
        "Top: each point is one forward measurement, the analytic FLOP count divided by the measured "
        "median time, against the analytic FLOPs per byte moved; the black line is min(peak FLOP/s, "
        "peak bandwidth x intensity). The marker shape is the bound that sets the roofline floor, "
        "max(FLOPs / peak FLOP/s, bytes / peak bytes/s, exps / peak exp/s): circle matmul, square "
        "memory, triangle exp (exp-bound points can sit far below the two-bound line). Marker size "
        "grows with N."
    )
    if two_rows:
        cap += (
            " Bottom: attend time at the floor over the measured attend time vs N (1 = at the floor; above "
            "1 would mean the cost model undercounts), each method's representative variant at its "
            "largest M, median over input families; markers as above."
        )
    if exp_missing:
        cap += f" Rows from an older harness: {EXP_NOT_RECORDED}; their bound is matmul or memory only."
    return Fig(key, title, cap, fig)
