"""Orchestrate one report build: load tables, make sections, write HTML, PDF and PNGs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt

from . import html, pdf
from .figures.common import png_bytes, setup_style
from .load import ResultSet, load
from .outdir import writable_dir
from .sections import Section, build_sections

# README figures: (file name, preferred figure keys in order)
README_FIGURES = {
    "fig_time_vs_n.png": ("fig-time-",),
    "fig_spectra.png": ("fig-spectra", "fig-ranks-vs-n", "fig-kl-real"),
}


def _subtitle(rs: ResultSet) -> str:
    parts = []
    if rs.has_bench:
        parts.append("devices: " + ", ".join(sorted(rs.bench["device"].astype(str).unique())))
        parts.append(
            "presets: " + ", ".join(sorted(rs.bench["preset"].dropna().astype(str).unique())) or "-"
        )
        commits = sorted(rs.bench["git_commit"].dropna().astype(str).str[:10].unique())
        if commits:
            parts.append("commit " + ", ".join(commits))
    if rs.spectra:
        parts.append("spectra (real data): " + ", ".join(rs.spectra))
    if rs.quality is not None:
        parts.append(
            "trained quality: " + ", ".join(sorted(rs.quality["dataset"].astype(str).unique()))
        )
    return " | ".join(parts) or "no inputs"


def save_readme_figures(sections: list[Section], out: Path, dpi: int = 110) -> list[Path]:
    figs = [f for s in sections for f in s.figures]
    written = []
    for name, prefixes in README_FIGURES.items():
        for p in prefixes:
            match = next((f for f in figs if f.key.startswith(p)), None)
            if match is not None:
                (out / name).write_bytes(png_bytes(match.fig, dpi=dpi))
                written.append(out / name)
                break
    return written


def build(
    results: list[Path],
    out: Path,
    title: str = "Efficient attention for lifelong behaviour sequences",
    make_pdf: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path | list[Path]]:
    """Build OUT/index.html (+ OUT/report.pdf, README PNGs). Raises ReportInputError on bad inputs.

    ``progress`` (e.g. ``print``) gets a line per step with its time: the build takes minutes
    on large result sets, most of it drawing figures."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    setup_style()
    writable_dir(out)  # before any work: a file, /dev/null or a read-only --out fails here
    rs = load(results)
    for w in rs.warnings:  # also in the report (the first section)
        logging.getLogger(__name__).warning(w)
    say(
        f"read {len(rs.bench)} bench rows, {len(rs.cascade)} cascade rows, {len(rs.spectra)} spectra "
        f"datasets ({time.perf_counter() - t0:.1f} s)"
    )
    sections = build_sections(rs, progress=say)
    subtitle = _subtitle(rs)
    try:
        t1 = time.perf_counter()
        say(
            f"rendering {sum(len(s.figures) for s in sections)} figures into {out / 'index.html'} ..."
        )
        written: dict[str, Path | list[Path]] = {"html": html.write(sections, out, title, subtitle)}
        written["png"] = save_readme_figures(sections, out)
        say(f"wrote {written['html']} ({time.perf_counter() - t1:.1f} s)")
        if make_pdf:
            t1 = time.perf_counter()
            written["pdf"] = pdf.write(sections, out, title, subtitle)
            say(f"wrote {written['pdf']} ({time.perf_counter() - t1:.1f} s)")
        say(f"report built in {time.perf_counter() - t0:.1f} s")
    finally:
        for s in sections:
            for f in s.figures:
                plt.close(f.fig)
    return written
