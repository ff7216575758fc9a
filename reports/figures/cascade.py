"""Section 6 figure: prepare cost amortised over candidate stages."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..derive import method_sort_key
from .common import Fig, grid, series_colors


def cascade(cas: pd.DataFrame, device: str, key: str) -> Fig | None:
    d = cas[cas["device"] == device]
    if "status" in d.columns:
        d = d[d["status"].fillna("ok").astype(str) == "ok"]
    if d.empty or d["attend_ms_median"].notna().sum() == 0:
        return None
    ns = sorted(d["n"].dropna().unique())[-4:] or [np.nan]
    stages = list(dict.fromkeys(d.sort_values("m", ascending=False)["stage"].astype(str)))
    colors = series_colors(stages)
    labels = sorted(d["label"].unique(), key=lambda lab: (method_sort_key(lab.split("[")[0]), lab))
    fig, axes = grid(1, len(ns), row_h=0.32 * len(labels) + 1.4, sharey=True, sharex=False)
    for j, n in enumerate(ns):
        ax = axes[0, j]
        sub = d[(d["n"] == n) | (np.isnan(n))]
        for i, lab in enumerate(labels):
            s = sub[sub["label"] == lab]
            left = 0.0
            prep = s["prepare_ms_median"].dropna()
            p = float(prep.iloc[0]) if len(prep) else 0.0
            ax.barh(
                i,
                p,
                left=left,
                color="#bbbbbb",
                hatch="///",
                edgecolor="#777",
                lw=0.4,
                label="prepare (once per user)",
            )
            left += p
            for st in stages:
                a = s.loc[s["stage"].astype(str) == st, "attend_ms_median"].dropna()
                if len(a):
                    m = s.loc[s["stage"].astype(str) == st, "m"].iloc[0]
                    name = f"stage {st}" if st.isdigit() else st
                    ax.barh(
                        i,
                        float(a.iloc[0]),
                        left=left,
                        color=colors[st],
                        label=f"attend, {name} (M={m:g})" if m == m else f"attend, {name}",
                    )
                    left += float(a.iloc[0])
            ax.text(left, i, f" {left:.3g}", va="center", fontsize=7)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"N = {n:g}")
        ax.set_xlabel("time per request (ms)")
        ax.margins(x=0.15)
    title = f"Cascade: prepare once, attend per stage - {device}"
    fig.suptitle(title, fontsize=11)
    seen = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            seen.setdefault(lab, h)
    fig.legend(
        list(seen.values()),
        list(seen.keys()),
        loc="outside lower center",
        ncol=4,
        frameon=False,
        fontsize=8.5,
    )
    cap = (
        "One request runs every candidate stage; the per-user prepare work (hatched) is paid once and "
        "amortised over all stages, the attend work (coloured) is paid per stage. Bar ends give the "
        "total per request."
    )
    return Fig(key, title, cap, fig)
