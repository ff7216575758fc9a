"""pytest-benchmark JSON (``--benchmark-json``) -> the tidy table.

The benchmark tests put the row fields (case, memory, fidelity, work, environment) in
``extra_info``; the timing statistics of pytest-benchmark (seconds) become the
``forward_ms_*`` columns with ``timer = pytest-benchmark``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import store
from .errors import ResultsFileError


def rows_from_json(data: dict[str, Any], source: str = "json") -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ResultsFileError(f"{source}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    rows = []
    for b in data["benchmarks"]:
        row = dict(b.get("extra_info") or {})
        st = b.get("stats") or {}
        row.setdefault("label", b.get("name"))
        row["test_name"] = b.get("fullname") or b.get("name")
        if st:
            row.update(
                forward_ms_median=st.get("median", 0) * 1e3,
                forward_ms_iqr=st.get("iqr", 0) * 1e3,
                forward_ms_min=st.get("min", 0) * 1e3,
                forward_calls=(st.get("rounds") or 0) * (st.get("iterations") or 1),
                timer=row.get("timer") or "pytest-benchmark",
            )
            row.setdefault("timing_samples_forward", st.get("rounds"))
            row.setdefault("timing_inner_calls_forward", st.get("iterations") or 1)
            if row.get("flops") and st.get("median"):
                row["flops_per_s"] = row["flops"] / st["median"]
                if row.get("bytes"):
                    row["bytes_per_s"] = row["bytes"] / st["median"]
        row.setdefault("status", "ok")
        rows.append(row)
    return rows


def import_json(path: str | Path, out_dir: str | Path) -> Path:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"{p}: cannot read pytest-benchmark JSON ({exc})") from None
    return store.write_table(store.to_frame(rows_from_json(data, str(p))), out_dir)
