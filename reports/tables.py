"""Turn result frames into display strings (shared by the HTML and PDF writers)."""

from __future__ import annotations

import math

import pandas as pd


def fmt_cell(v) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v == 0:
            return "0"
        if float(v).is_integer() and abs(v) < 1e9:
            return str(int(v))
        if 1e-3 <= abs(v) < 1e5:
            return f"{v:.3g}"
        return f"{v:.2e}"
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    return str(v)


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as a short string; numbers to 3 significant digits."""
    out = df.copy()
    out.columns = [
        str(c).replace("_", " ") if c == c.lower() and "_" in str(c) else str(c)
        for c in out.columns
    ]
    for c in out.columns:
        out[c] = [fmt_cell(v.item() if hasattr(v, "item") else v) for v in out[c].tolist()]
    return out.reset_index(drop=True)
