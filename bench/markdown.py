"""Markdown tables, one writer for bench, analysis and the committed result notes.

(``DataFrame.to_markdown`` would need ``tabulate``, which the suite does not otherwise use.)
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def cell(v: Any) -> str:
    """A table cell: empty for None/NaN, floats to 3-4 significant digits, pipes escaped."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """``df`` (or its ``columns``) as a GitHub markdown table, without a trailing newline."""
    cols = list(columns if columns is not None else df.columns)
    lines = [
        "| " + " | ".join(map(str, cols)) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in df[cols].itertuples(index=False)
    ]
    return "\n".join(lines)
