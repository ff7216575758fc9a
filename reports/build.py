"""Orchestrate one report build: load tables, make sections, write HTML, PDF and PNGs."""

from __future__ import annotations

import sys
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
        parts.append("presets: " + ", ".join(sorted(rs.bench["preset"].dropna().astype(str).unique())) or "-")
        commits = sorted(rs.bench["git_commit"].dropna().astype(str).str[:10].unique())
        if commits:
            parts.append("commit " + ", ".join(commits))
    if rs.spectra:
        parts.append("spectra (real data): " + ", ".join(rs.spectra))
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


def build(results: list[Path], out: Path, title: str = "Efficient attention for lifelong behaviour sequences",
          make_pdf: bool = True) -> dict[str, Path | list[Path]]:
    """Build OUT/index.html (+ OUT/report.pdf, README PNGs). Raises ReportInputError on bad inputs."""
    setup_style()
    writable_dir(out)  # before any work: a file, /dev/null or a read-only --out fails here
    rs = load(results)
    for w in rs.warnings:  # also in the report (the first section)
        print(f"warning: {w}", file=sys.stderr)
    sections = build_sections(rs)
    subtitle = _subtitle(rs)
    try:
        written: dict[str, Path | list[Path]] = {"html": html.write(sections, out, title, subtitle)}
        written["png"] = save_readme_figures(sections, out)
        if make_pdf:
            written["pdf"] = pdf.write(sections, out, title, subtitle)
    finally:
        for s in sections:
            for f in s.figures:
                plt.close(f.fig)
    return written
