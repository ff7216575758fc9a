"""Write the paginated PDF with matplotlib only (no browser, no system libraries).

Text and tables are laid out on A4 pages by a small flow writer; each figure gets
its own page (landscape, or portrait for tall figures) with its caption below.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from .sections import Section, Table, anchor_titles, resolve_anchor  # noqa: E402
from .tables import display_frame  # noqa: E402

LANDSCAPE = (11.69, 8.27)
PORTRAIT = (8.27, 11.69)
MARGIN = 0.55  # inches
MONO_PT = 7.2
CHAR_IN = MONO_PT * 0.602 / 72  # DejaVu Sans Mono advance width


class Flow:
    """Top-to-bottom text layout on landscape pages."""

    def __init__(self, pdf: PdfPages, header: str, titles: dict[str, str] | None = None):
        self.pdf, self.header, self.titles = pdf, header, titles or {}
        self.fig = None
        self.y = 0.0
        self.page = 0

    def new_page(self) -> None:
        self.flush()
        self.page += 1
        w, h = LANDSCAPE
        self.fig = plt.figure(figsize=LANDSCAPE)
        self.fig.text(MARGIN / w, 1 - 0.3 / h, self.header, fontsize=7, color="#777", va="top")
        self.y = h - MARGIN - 0.1

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def need(self, height: float) -> None:
        if self.fig is None or self.y - height < MARGIN:
            self.new_page()

    def line(
        self,
        text: str,
        size: float = 9.5,
        weight: str = "normal",
        color: str = "#111",
        family: str = "sans-serif",
        gap: float = 1.35,
    ) -> None:
        h = size * gap / 72
        self.need(h)
        w, H = LANDSCAPE
        self.fig.text(
            MARGIN / w,
            self.y / H,
            text,
            fontsize=size,
            weight=weight,
            color=color,
            family=family,
            va="top",
        )
        self.y -= h

    def para(
        self, text: str, size: float = 9.5, color: str = "#111", weight: str = "normal"
    ) -> None:
        width = int((LANDSCAPE[0] - 2 * MARGIN) / (size * 0.5 / 72))
        for ln in textwrap.wrap(text, width) or [""]:
            self.line(ln, size=size, color=color, weight=weight)
        self.y -= 0.06

    def space(self, inches: float) -> None:
        self.y -= inches

    def table(self, t: Table) -> None:
        df = display_frame(t.df)
        # a long free-text column ("why ...") goes under its row at full width instead of being
        # squeezed into a narrow column (which made one row per page)
        note_col = next((c for c in df.columns if str(c).startswith("why")), None)
        notes = df.pop(note_col).tolist() if note_col is not None else None
        if "see" in df.columns:
            df["see"] = [
                self.titles.get(resolve_anchor(str(a), self.titles) or "", "-") for a in t.df["see"]
            ]
        limit = int((LANDSCAPE[0] - 2 * MARGIN) / CHAR_IN) - 2
        heads = [str(c) for c in df.columns]
        widths = [
            max([len(h) for h in heads[i].split()] + [len(str(v)) for v in df.iloc[:, i]] + [1])
            for i in range(len(heads))
        ]
        widths = [min(w, 60) for w in widths]
        while sum(widths) + 2 * (len(widths) - 1) > limit and max(widths) > 8:
            i = widths.index(max(widths))
            widths[i] -= 1
        # still too wide (many columns): shrink the font instead of cutting columns off
        need = sum(widths) + 2 * (len(widths) - 1)
        pt = MONO_PT if need <= limit else max(4.5, MONO_PT * limit / need)

        def render_row(cells: list[str]) -> list[str]:
            wrapped = [
                textwrap.wrap(c, w, break_long_words=True) or [""]
                for c, w in zip(cells, widths, strict=False)
            ]
            n = max(len(x) for x in wrapped)
            return [
                "  ".join(
                    (x[k] if k < len(x) else "").ljust(w)
                    for x, w in zip(wrapped, widths, strict=False)
                ).rstrip()
                for k in range(n)
            ]

        head_lines = render_row(heads)
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lh = pt * 1.3 / 72
        self.need(0.5 + lh * (len(head_lines) + 3))
        self.line(t.title, size=10.5, weight="bold")
        if t.caption:
            self.para(t.caption, size=8, color="#555")

        def header() -> None:
            for hl in head_lines:
                self.line(hl, size=pt, family="monospace", weight="bold", gap=1.3)
            self.line(rule, size=pt, family="monospace", gap=1.3, color="#777")

        header()
        for i, (_, row) in enumerate(df.iterrows()):
            lines = render_row([str(v) for v in row.tolist()])
            if notes is not None and notes[i]:
                lines += [
                    "    " + ln
                    for ln in textwrap.wrap(f"{note_col}: {notes[i]}", max(20, limit - 4))
                ]
            if self.y - lh * len(lines) < MARGIN:
                self.new_page()
                self.line(f"{t.title} (continued)", size=9, weight="bold")
                header()
            for ln in lines:
                self.line(ln, size=pt, family="monospace", gap=1.3)
        self.space(0.18)


def figure_page(pdf: PdfPages, fig, caption: str, header: str) -> None:
    w0, h0 = fig.get_size_inches()
    size = PORTRAIT if h0 / w0 > 0.85 else LANDSCAPE
    fig.set_size_inches(*size)
    cap_lines = textwrap.wrap(caption, int((size[0] - 2 * MARGIN) / (8 * 0.5 / 72)))
    cap_in = len(cap_lines) * 8 * 1.35 / 72 + 0.3
    # figure legends sit between the panels and the caption: re-anchor them there
    leg_in = 0.0
    for leg in list(fig.legends):
        handles, labels = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
        ncol = max(1, getattr(leg, "_ncols", 4))
        leg.remove()
        rows = -(-len(labels) // ncol)
        fig.legend(
            handles,
            labels,
            loc="lower center",
            bbox_to_anchor=(0.5, cap_in / size[1]),
            ncol=ncol,
            frameon=False,
            fontsize=8.5,
        )
        leg_in += rows * 0.2 + 0.12
    eng = fig.get_layout_engine()
    bottom = (cap_in + leg_in) / size[1]
    if eng is not None and hasattr(eng, "set"):
        eng.set(rect=(0.01, bottom, 0.98, 0.965 - bottom))
    fig.text(
        MARGIN / size[0],
        cap_in / size[1] - 0.12 / size[1],
        "\n".join(cap_lines),
        fontsize=8,
        va="top",
        color="#333",
    )
    fig.text(
        1 - MARGIN / size[0],
        0.1 / size[1],
        header,
        fontsize=7,
        color="#777",
        va="bottom",
        ha="right",
    )
    pdf.savefig(fig)


def write(sections: list[Section], out: Path, title: str, subtitle: str) -> Path:
    path = out / "report.pdf"
    with PdfPages(path, metadata={"Title": title, "Creator": "python -m reports build"}) as pdf:
        flow = Flow(pdf, title, anchor_titles(sections))
        flow.new_page()
        flow.space(0.3)
        flow.line(title, size=20, weight="bold", gap=1.6)
        flow.para(subtitle, size=10, color="#444")
        answer = [line for s in sections for line in s.answer]
        if answer:
            flow.space(0.2)
            flow.line(
                "The answer: which method, for which regime, on which device",
                size=12,
                weight="bold",
            )
            for a in answer:
                flow.para(a.strip(), size=9.5 if a.startswith("  ") else 10, color="#111")
        flow.space(0.2)
        flow.line("Contents", size=12, weight="bold")
        for s in sections:
            extra = (
                f"  ({len(s.figures)} figure{'s' if len(s.figures) > 1 else ''})"
                if s.figures
                else "  (missing inputs)"
                if s.missing
                else ""
            )
            flow.line(f"{s.num}. {s.title}{extra}", size=10)
        claims = next((t.df for s in sections for t in s.tables if t.key == "tbl-claims"), None)
        if claims is not None:
            flow.space(0.2)
            flow.line(
                "At a glance: what the seeds claim / what we measured", size=12, weight="bold"
            )
            colors = {"confirmed": "#1d6b32", "refuted": "#a3231f"}
            for _, r in claims.iterrows():
                flow.para(
                    f"{r['verdict']}: {r['claim']}",
                    size=10,
                    color=colors.get(r["verdict"], "#7a5a00"),
                )
        for s in sections:
            flow.new_page()
            flow.line(f"{s.num}. {s.title}", size=15, weight="bold", gap=1.6)
            if s.badge:
                flow.para(
                    "Inputs: " + s.badge,
                    size=9,
                    color="#7a4b00" if "synthetic" in s.badge else "#1d5e2c",
                )
            for p in s.intro:
                flow.para(p)
            for m in s.missing:
                flow.para("Missing: " + m, color="#a3231f")
            if s.figures:
                flow.para(
                    "Figures: "
                    + "; ".join(f"{s.num}.{i + 1} {f.title}" for i, f in enumerate(s.figures)),
                    size=8.5,
                    color="#444",
                )
            for t in s.tables:
                flow.table(t)
            flow.flush()
            for i, f in enumerate(s.figures):
                figure_page(
                    pdf,
                    f.fig,
                    f"Figure {s.num}.{i + 1}. {f.caption}",
                    f"{title} - {s.num}. {s.title}",
                )
        flow.flush()
    return path
