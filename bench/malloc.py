"""The harness's use of ``attention_impls.allocator`` (issue 11, item 4).

CPU runs tune glibc malloc once per process before measuring (freed large blocks stay in the
heap instead of being unmapped and page-faulted afresh on every call), unless the sweep
config says ``malloc_tune = false`` or the environment has ``BENCH_MALLOC_TUNE=0``. Every
row records what was done in its ``malloc_tuning`` column.
"""

from __future__ import annotations

import os
from typing import Any

from attention_impls.allocator import malloc_tuning, tune_glibc_malloc

OFF_VALUES = ("0", "off", "false", "no")


def env_allows() -> bool:
    return os.environ.get("BENCH_MALLOC_TUNE", "1").strip().lower() not in OFF_VALUES


def apply_malloc_tuning(enabled: bool, device: str) -> dict[str, Any]:
    """Tune malloc for a CPU run when enabled; returns the row column ``malloc_tuning``."""
    done = malloc_tuning()
    if done is not None:  # glibc has no reset: say so even when this run asked for "off"
        return {"malloc_tuning": f"on: {done.describe()}"}
    if not enabled:
        return {"malloc_tuning": "off: disabled by the sweep config (malloc_tune = false)"}
    if not env_allows():
        return {"malloc_tuning": "off: disabled by BENCH_MALLOC_TUNE=0"}
    if not str(device).startswith("cpu"):
        return {"malloc_tuning": "off: not a CPU run"}
    t = tune_glibc_malloc()
    return {"malloc_tuning": ("on: " if t.applied else "off: ") + t.describe()}
