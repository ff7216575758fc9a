"""Results on disk: an append-only JSON Lines log plus the tidy table rewritten atomically.

``DIR/rows.jsonl``: one complete JSON object per line, each appended with a single
``os.write`` and an ``fsync``, so a crash (even ``kill -9``) leaves whole rows and at most a
truncated last line, which is detected, dropped with a warning and cut from the file.
``DIR/results.csv`` (+ ``results.parquet``): the tidy table, written to a temporary file and
``os.replace``-d into place. Rows are keyed by ``case_id``; a re-run with the same DIR
resumes (finished cases are kept once).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ResultsFileError
from .schema import COLUMNS, ENV_COLUMNS, apply_types, check_bench_table  # noqa: F401 (re-exported)

LOG_NAME = "rows.jsonl"
TABLE_NAME = "results.csv"

# The columns, their order and types live in bench/schema.py (one place for bench, analysis
# and reports); re-exported here for the writers.


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else str(value)
    return value


def append_row(path: str | Path, row: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Append row(s), one line each, with a single write + fsync (atomic for our purposes)."""
    rows = row if isinstance(row, list) else [row]
    line = "".join(
        json.dumps({k: _clean(v) for k, v in r.items()}, default=str) + "\n" for r in rows
    ).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: str | Path, repair: bool = True) -> list[dict[str, Any]]:
    """Rows of a JSON Lines log. A truncated last line is dropped (and cut when ``repair``);
    anything else that does not parse raises :class:`ResultsFileError` naming file and line."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    rows: list[dict[str, Any]] = []
    good_end = 0
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if last and raw == b"":
            break
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            if last:  # no newline after it: a write cut short by a crash
                warnings.warn(
                    f"{p}: dropping a truncated last line (line {i + 1}, {len(raw)} bytes)",
                    stacklevel=2,
                )
                if repair:
                    with open(p, "r+b") as fh:
                        fh.truncate(good_end)
                break
            raise ResultsFileError(
                f"{p}, line {i + 1}: not a valid result row ({exc}); the file is corrupt. "
                "Move it away (or fix that line) and re-run to measure again."
            ) from None
        if last:  # valid JSON but no trailing newline: complete it
            if repair:
                with open(p, "ab") as fh:
                    fh.write(b"\n")
        rows.append(obj)
        good_end += len(raw) + 1
    return rows


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case_id, the latest (a case is only re-measured when its earlier row said
    its input was unavailable); order of first appearance is kept."""
    latest: dict[Any, dict[str, Any]] = {}
    for r in rows:
        latest[r.get("case_id")] = r
    return list(latest.values())


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Tidy table with the contract's columns first (missing measurements stay empty)."""
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df.reindex(columns=COLUMNS + extra)


def _atomic_write(path: Path, writer: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_table(
    df: pd.DataFrame, out_dir: str | Path, name: str = TABLE_NAME, parquet: bool = True
) -> Path:
    """Write ``DIR/name`` (CSV) and its parquet twin atomically; returns the CSV path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / name
    _atomic_write(csv_path, lambda t: df.to_csv(t, index=False))
    if parquet:
        try:
            pq = apply_types(df)  # the schema's types: parquet keeps ints, floats, bools
            for c in pq.columns:  # columns the schema does not know: mixed objects -> strings
                if pq[c].dtype == object:
                    pq[c] = pq[c].map(lambda v: None if v is None else str(v))
            _atomic_write(csv_path.with_suffix(".parquet"), lambda t: pq.to_parquet(t, index=False))
        except Exception as exc:  # parquet is a convenience; the CSV is the record
            warnings.warn(f"parquet not written: {exc}", stacklevel=2)
    return csv_path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a results CSV (or a run directory containing results.csv); a table that is not a
    bench results table (no case_id, method, n or status column) raises ``ResultsFileError``
    naming what is missing and what it has that the schema does not know."""
    p = Path(path)
    if p.is_dir():
        p = p / TABLE_NAME
    try:
        df = pd.read_csv(p, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{p}: not a readable results table ({str(exc).strip()})") from None
    check_bench_table(df, str(p))
    return df
