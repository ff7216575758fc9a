"""Write the self-contained HTML report (inline CSS, figures as base64 PNG)."""

from __future__ import annotations

import base64
import html as html_mod
import re
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pandas.io.formats.style import Styler

from .figures.common import png_bytes, tidy_log_axes
from .sections import Section, Table, anchor_titles, resolve_anchor
from .tables import display_frame

TEMPLATES = Path(__file__).parent / "templates"
WRAP_ABOVE_CHARS = 16  # cells longer than this may wrap; shorter ones never do


def _verdict_class(v: str) -> str:
    if v.startswith("confirmed"):
        return "v-confirmed"
    if v.startswith("refuted"):
        return "v-refuted"
    return "v-not"


def table_html(t: Table, titles: dict[str, str]) -> str:
    d = display_frame(t.df)
    d = d.apply(lambda col: col.map(html_mod.escape))
    if "see" in d.columns:
        links = []
        for alts in t.df["see"]:
            k = resolve_anchor(str(alts), titles)
            links.append(
                f'<a href="#{k}">{html_mod.escape(titles[k])}</a>' if k else "(not drawn: no data)"
            )
        d["see"] = links
    if "verdict" in d.columns:
        d["verdict"] = [f'<span class="{_verdict_class(v)}">{v}</span>' for v in d["verdict"]]
    # Short cells (numbers, "4 x 2", "matmul") never wrap; long ones (labels, notes) wrap, and
    # variant labels may break after ",", so wide tables fit 1400 px without scrolling.
    wrap_cols = (
        [
            c
            for c in d.columns
            if c not in ("see", "verdict") and d[c].str.len().max() > WRAP_ABOVE_CHARS
        ]
        if len(d)
        else []
    )
    for c in wrap_cols:
        d[c] = d[c].str.replace(",", ",<wbr>", regex=False)
    classes = pd.DataFrame("", index=d.index, columns=d.columns)
    for c in wrap_cols + [c for c in ("see", "verdict") if c in d.columns]:
        classes[c] = "wrap"
    # a stable id per table (pandas picks a random one), so rebuilding a report from the same
    # tables only changes its build time
    uid = "".join(ch if ch.isalnum() else "_" for ch in t.key)
    # no per-cell ids (nothing addresses single cells): they were a third of a large report
    sty = (
        Styler(d, uuid=uid, cell_ids=False)
        .hide(axis="index")
        .set_td_classes(classes)
        .set_table_attributes('class="data"')
    )
    return compact_table_html(sty.to_html())


# pandas' per-cell classes ("data row3 col7", "col_heading level0 col7") that no style or
# script reads: the report's CSS addresses table.data, its th and td, and td.wrap only
_CELL_CLASSES = re.compile(r' class="(?:data row\d+ col\d+|col_heading level0 col\d+)( wrap)?"')


def compact_table_html(html: str) -> str:
    """A Styler table without its unused per-cell classes and indentation (same markup
    otherwise): they were a third of a large report's tables."""
    html = _CELL_CLASSES.sub(lambda m: ' class="wrap"' if m.group(1) else "", html)
    return "\n".join(line.strip() for line in html.splitlines())


def render(sections: list[Section], title: str, subtitle: str, dpi: int = 96) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"])
    )
    from markupsafe import Markup

    titles = anchor_titles(sections)
    views = []
    for s in sections:
        figs = []
        for f in s.figures:
            if f.png is None:
                tidy_log_axes(f.fig)
                f.png = png_bytes(f.fig, dpi=dpi)
            figs.append(
                {
                    "key": f.key,
                    "title": f.title,
                    "caption": f.caption,
                    "b64": base64.b64encode(f.png).decode("ascii"),
                }
            )
        tabs = [
            {
                "key": t.key,
                "title": t.title,
                "caption": t.caption,
                "html": Markup(table_html(t, titles)),
                "long": len(t.df) > 18 and not t.full,
            }
            for t in s.tables
        ]
        views.append(
            {
                "num": s.num,
                "key": s.key,
                "title": s.title,
                "badge": s.badge,
                "intro": s.intro,
                "missing": s.missing,
                "figures": figs,
                "tables": tabs,
            }
        )
    glance = []
    for s in sections:
        for t in s.tables:
            if t.key == "tbl-claims":
                glance = [
                    {
                        "verdict": r["verdict"],
                        "claim": r["claim"],
                        "cls": _verdict_class(r["verdict"]),
                    }
                    for _, r in t.df.iterrows()
                ]
    answer = [line for s in sections for line in s.answer]
    return env.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, sections=views, glance=glance, answer=answer
    )


def write(sections: list[Section], out: Path, title: str, subtitle: str) -> Path:
    path = out / "index.html"
    path.write_text(render(sections, title, subtitle), encoding="utf-8")
    return path
