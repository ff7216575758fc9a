"""Checks on a bench results table before it is drawn: never a silent wrong number.

- a CSV whose last line is cut (no newline at the end: a copy or write interrupted) has that
  line dropped with a warning, instead of a short row read with empty columns;
- negative or infinite times, and ok rows without a forward time, are warned about and left
  out of the figures and tables (set to empty), with the count and the file in the warning.

Warnings go to ``ResultSet.warnings``: the build prints them and the report shows them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

TIME_SUFFIXES = ("_ms_median", "_ms_iqr", "_ms_min")


def read_csv_whole_lines(path: Path, warnings: list[str]) -> pd.DataFrame:
    """``pd.read_csv`` of the complete lines of ``path`` (a cut last line is dropped, warned)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        warnings.append(
            f"{path}: the last line is cut short (no newline at the end: an "
            "interrupted write or copy?); that row was dropped"
        )
        data = data[: cut + 1] if cut >= 0 else b""
    if not data.strip():
        return pd.DataFrame()
    return pd.read_csv(io.BytesIO(data), low_memory=False)


def bad_times(df: pd.DataFrame, source: Path | str, warnings: list[str]) -> pd.DataFrame:
    """Negative or infinite times -> empty (warned); ok rows without a forward time (warned)."""
    df = df.copy()
    no_time = None
    if "status" in df.columns and "forward_ms_median" in df.columns:  # before the cleaning below
        no_time = (df["status"] == "ok") & pd.to_numeric(
            df["forward_ms_median"], errors="coerce"
        ).isna()
    for col in [c for c in df.columns if c.endswith(TIME_SUFFIXES)]:
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = np.isinf(vals) | (vals < 0)
        if bad.any():
            warnings.append(
                f"{source}: {int(bad.sum())} value(s) of {col} are negative or infinite; "
                "left out of the figures and tables"
            )
            df.loc[bad, col] = np.nan
    if no_time is not None and no_time.any():
        warnings.append(
            f"{source}: {int(no_time.sum())} ok row(s) have no forward time "
            "(forward_ms_median empty or not a number)"
        )
    return df
