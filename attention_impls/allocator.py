"""Opt-in glibc malloc tuning against allocator churn on CPU (issue 11, item 4).

torch's CPU allocator takes every tensor from glibc malloc. glibc serves blocks above its
mmap threshold (dynamic, from 128 KiB up to 32 MiB) with a fresh ``mmap`` and gives them back
with ``munmap`` on free, and trims the heap top above its trim threshold: so every call that
makes a large temporary (Performer's [N, m] features, ``svd_exact``'s factors, dense's
scores) page-faults on fresh pages again (7,168 minor faults per Performer forward at
N = 16384 in the issue), and the cost depends on the process's allocation history.

``tune_glibc_malloc`` raises both thresholds with ``mallopt`` so freed blocks stay in the
heap and are reused. It changes the whole process (and cannot be undone by this module:
glibc has no "reset"), keeps up to ``trim_threshold`` bytes of freed memory resident, and
does nothing, with a reason, where the C library is not glibc. Nothing calls it on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from dataclasses import dataclass

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit systems
MMAP_THRESHOLD_MAX = 32 * 2**20
DEFAULT_MMAP_THRESHOLD = MMAP_THRESHOLD_MAX
DEFAULT_TRIM_THRESHOLD = 1 * 2**30

_applied: MallocTuning | None = None


@dataclass(frozen=True)
class MallocTuning:
    """What ``tune_glibc_malloc`` did: ``applied`` True, or False with ``reason``."""

    applied: bool
    mmap_threshold: int | None = None
    trim_threshold: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if not self.applied:
            return f"glibc malloc not tuned: {self.reason}"
        return (
            f"glibc malloc tuned: mmap_threshold={self.mmap_threshold}, "
            f"trim_threshold={self.trim_threshold}"
        )


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    libc_ver = platform.libc_ver()[0]
    if libc_ver != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def glibc_available() -> tuple[bool, str]:
    """(True, "") where mallopt can be called, else (False, the reason)."""
    if platform.system() != "Linux":
        return False, f"not Linux ({platform.system()}): glibc's mallopt is not available"
    if platform.libc_ver()[0] != "glibc":
        return False, f"the C library is not glibc ({platform.libc_ver()[0] or 'unknown'})"
    if _libc() is None:
        return False, "libc could not be loaded with ctypes"
    return True, ""


def tune_glibc_malloc(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD
) -> MallocTuning:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    ``mmap_threshold`` in [0, 32 MiB] (blocks at or above it are still mmapped),
    ``trim_threshold`` >= 0 (freed memory kept at the heap top before it is returned)."""
    global _applied
    for name, value, hi in (
        ("mmap_threshold", mmap_threshold, MMAP_THRESHOLD_MAX),
        ("trim_threshold", trim_threshold, 2**62),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
            raise ValueError(
                f"tune_glibc_malloc: {name} must be an int in [0, {hi}], got {value!r}"
            )
    ok, reason = glibc_available()
    if not ok:
        return MallocTuning(False, reason=reason)
    libc = _libc()
    assert libc is not None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # the trim threshold goes through an int: clamp to what mallopt can take
    trim = min(trim_threshold, 2**31 - 1)
    if libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1:
        return MallocTuning(False, reason=f"mallopt(M_MMAP_THRESHOLD, {mmap_threshold}) failed")
    if libc.mallopt(M_TRIM_THRESHOLD, trim) != 1:
        return MallocTuning(False, reason=f"mallopt(M_TRIM_THRESHOLD, {trim}) failed")
    _applied = MallocTuning(True, mmap_threshold, trim)
    return _applied


def malloc_tuning() -> MallocTuning | None:
    """The tuning applied in this process by ``tune_glibc_malloc``, or None."""
    return _applied
