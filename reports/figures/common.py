"""Shared figure plumbing: style, method colours, facet grids, PNG export."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..derive import METHOD_ORDER  # noqa: E402

FIG_WIDTH = 11.0
_BASE = {
    "dense": "#222222",
    "svd_exact": "#1f77b4",
    "svd_tokens": "#17becf",
    "linrec": "#ff7f0e",
    "lrea": "#2ca02c",
    "performer": "#d62728",
}
_EXTRA = ["#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f"]


@dataclass
class Fig:
    """One report figure: an anchor key, a title, a caption and the matplotlib figure."""

    key: str
    title: str
    caption: str
    fig: Figure
    png: bytes | None = None


def setup_style() -> None:
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.05)
    # data labels are text, not TeX: a label such as "perf$x^{$" must not reach mathtext
    plt.rcParams.update(
        {"figure.dpi": 100, "svg.fonttype": "none", "axes.titlesize": 10, "text.parse_math": False}
    )


def method_color(method: str) -> str:
    if method in _BASE:
        return _BASE[method]
    return _EXTRA[hash(method) % len(_EXTRA)]


def series_colors(names: list[str]) -> dict[str, str]:
    """Distinct colours for arbitrary series names (routes, families, devices)."""
    pal = sns.color_palette("tab10", max(3, len(names)))
    return {n: matplotlib.colors.to_hex(pal[i % len(pal)]) for i, n in enumerate(names)}


def grid(
    nrows: int,
    ncols: int,
    *,
    row_h: float = 2.7,
    width: float = FIG_WIDTH,
    sharex: bool | str = True,
    sharey: bool | str = True,
    extra_h: float = 0.9,
):
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width, row_h * nrows + extra_h),
        squeeze=False,
        sharex=sharex,
        sharey=sharey,
        layout="constrained",
    )
    return fig, axes


def at_modal_d(d: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The rows at the most common head dim d (one d per figure), and that d (NaN if none)."""
    dmode = d["d"].mode().iloc[0] if d["d"].notna().any() else np.nan
    return (d if np.isnan(dmode) else d[d["d"] == dmode]), dmode


def panel_grid(n_panels: int, row_h: float, sharey: bool = False):
    """A grid of ``n_panels`` panels, four to a row, with the unused ones hidden.

    Returns (fig, axes, ncols, panels) where ``panels`` lists the visible axes in order."""
    ncols = max(1, min(4, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = grid(nrows, ncols, row_h=row_h, sharey=sharey)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes, ncols, flat[:n_panels]


def legend_below(fig: Figure, axes, ncol: int | None = None) -> None:
    """One legend for the whole figure, below the panels, without duplicates."""
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            if lab not in seen and not lab.startswith("_"):
                seen[lab] = h
    if seen:
        # columns that fit the figure width (about 11 characters per inch at this font size,
        # plus the marker), so long labels wrap onto more rows instead of running off the edge
        longest = max(len(lab) for lab in seen) + 6
        fit = max(1, int(fig.get_figwidth() * 11 // longest))
        n = min(ncol or 5, len(seen), fit)
        fig.legend(
            list(seen.values()),
            list(seen.keys()),
            loc="outside lower center",
            ncol=n,
            frameon=False,
            fontsize=8.5,
        )


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as a PNG with a 256-colour palette (median cut, no dithering).

    Why: the HTML report inlines every figure as base64; matplotlib's RGBA PNGs made most of a
    4.6 MB report. Plots use a few flat colours plus anti-aliasing, so the palette keeps them
    visually identical at about a third of the bytes. Deterministic for the same figure."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as im:
        pal = im.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    out = io.BytesIO()
    pal.save(out, format="PNG", optimize=True)
    return out.getvalue()


def fmt_n(v) -> str:
    v = float(v)
    if v >= 1024 and v % 1024 == 0:
        return f"{int(v // 1024)}k"
    return f"{v:g}"


def log2_axis(ax, axis: str = "x") -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    a.set_major_locator(LogLocator(base=2, numticks=6))
    a.set_major_formatter(FuncFormatter(lambda v, _: fmt_n(v) if v >= 1 else f"{v:g}"))


def empty_note(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888")


def method_order(names) -> list[str]:
    names = list(dict.fromkeys(str(n) for n in names))
    return sorted(names, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))


def _fmt_tick(v: float, _pos=None) -> str:
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:g}"
    m, e = f"{v:.0e}".split("e")
    return f"{m}e{int(e)}"


def tidy_log_axes(fig: Figure) -> None:
    """Readable base-10 log ticks: 1-2-5 steps on short ranges, decades on long ones, plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax in fig.axes:
        for axis, scale, lim in (
            (ax.xaxis, ax.get_xscale(), ax.get_xlim),
            (ax.yaxis, ax.get_yscale(), ax.get_ylim),
        ):
            if scale != "log" or getattr(axis.get_transform(), "base", 10) != 10:
                continue
            lo, hi = sorted(lim())
            if lo <= 0 or hi <= 0:
                continue
            span = np.log10(hi / lo)
            subs = (1.0, 2.0, 5.0) if span <= 2.5 else (1.0,)
            axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
            if span > 7:
                axis.set_major_locator(LogLocator(base=10, subs=(1.0,), numticks=6))
            axis.set_major_formatter(FuncFormatter(_fmt_tick))
            axis.set_minor_formatter(NullFormatter())
