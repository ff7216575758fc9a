"""Which lines of a results log are result rows of this harness, and which are foreign.

A line someone appended by hand, a row from another tool or one edited to ``"fast"`` must not
become a row of ``results.csv`` (nor crash the summary). A row is kept when it has a
``case_id`` that its own identity fields reproduce (so it was written by :func:`runner.run_case`
for that case) or that belongs to the sweep being run, a known ``status``, and numbers (or
null, or the strings ``"inf"``/``"-inf"`` that :mod:`bench.store` writes for infinities) in
the numeric columns. Everything else is skipped and counted by reason, never dropped silently.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import fields
from typing import Any

from .config import Case

STATUSES = ("ok", "oom", "error", "unsupported")
INT_COLUMNS = ("n", "m", "d", "dv", "batch", "heads", "seed")
NUMBER_COLUMNS = (
    ("query_scale", "padding")
    + tuple(
        f"{p}_{s}"
        for p in ("prepare", "attend", "forward", "attend_graph")
        for s in ("ms_median", "ms_iqr", "ms_min", "calls", "ms_iqr_rel")
    )
    + tuple(
        f"{m}_{s}"
        for m in ("kl", "tv", "js", "top10_recall", "out_err")
        for s in ("mean", "p50", "p99", "max")
    )
    + (
        "peak_mem_alloc_bytes",
        "peak_mem_nvml_bytes",
        "peak_mem_cpu_bytes",
        "mem_model_bytes",
        "flops",
        "bytes",
        "exps",
    )
)
_CASE_FIELDS = [f.name for f in fields(Case)]


def _is_number(v: Any) -> bool:
    if v is None or v in ("inf", "-inf"):
        return True
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _reproduces(row: dict[str, Any]) -> bool:
    """The row's identity fields give its case_id (device: the row's, or cuda:i for i < 16)."""
    try:
        ident = {k: row.get(k) for k in _CASE_FIELDS}
        ident["params"] = json.loads(row["params"])
        ident["family_params"] = json.loads(row["family_params"])
        devices = [row.get("device")]
        if row.get("device") == "cuda":
            devices += [f"cuda:{i}" for i in range(16)]
        for dev in devices:
            ident["device"] = dev
            if Case.from_json(ident).case_id == row["case_id"]:
                return True
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return False


def problem(row: dict[str, Any], known_ids: set[str] | frozenset[str] = frozenset()) -> str | None:
    """Why ``row`` is not a result row of this harness (None: it is)."""
    cid = row.get("case_id")
    if not isinstance(cid, str) or not cid:
        return "no case_id"
    if row.get("status") not in STATUSES:
        return f"status not one of {', '.join(STATUSES)}"
    for col in INT_COLUMNS:
        v = row.get(col)
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{col} is not an integer"
    for col in NUMBER_COLUMNS:
        if col in row and not _is_number(row[col]):
            return f"{col} is not a number"
    for col in ("query_scale", "padding"):
        if isinstance(row.get(col), float) and not math.isfinite(row[col]):
            return f"{col} is not finite"
    if cid not in known_ids and not _reproduces(row):
        return "unknown case_id (its fields do not give it)"
    return None


def split(
    rows: list[dict[str, Any]], known_ids: set[str] | frozenset[str] = frozenset()
) -> tuple[list[dict[str, Any]], Counter]:
    """(result rows, reason -> count of the lines skipped)."""
    good: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    for r in rows:
        why = problem(r, known_ids)
        if why is None:
            good.append(r)
        else:
            skipped[why] += 1
    return good, skipped


def describe(path: Any, skipped: Counter) -> str:
    """One line for the user: how many lines were skipped and why."""
    total = sum(skipped.values())
    reasons = "; ".join(f"{n} x {why}" for why, n in skipped.most_common())
    return (
        f"{path}: skipped {total} line(s) that are not result rows of this harness ({reasons}); "
        "they stay in the log but are not in results.csv"
    )
