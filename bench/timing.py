"""Timing of one phase: warm-up until stable (bounded), then repeated calls.

CPU: ``time.perf_counter`` around each call. CUDA: one pair of CUDA events per call on the
current stream, L2 flushed (a buffer larger than L2 is written) before each call, and a
synchronise before any time is read. Never an unsynchronised GPU time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .config import Timing


def is_stable(times: list[float], window: int = 3, rtol: float = 0.1) -> bool:
    """True when the last ``window`` times lie within ``rtol`` of their median."""
    if len(times) < window:
        return False
    last = np.asarray(times[-window:], dtype=float)
    med = float(np.median(last))
    return bool(med > 0 and (last.max() - last.min()) <= rtol * med)


def summarise_times(times_ms: list[float], prefix: str) -> dict[str, Any]:
    """``{prefix}_ms_median, _ms_iqr, _ms_min, _calls``."""
    if not times_ms:
        return {f"{prefix}_ms_median": None, f"{prefix}_ms_iqr": None, f"{prefix}_ms_min": None,
                f"{prefix}_calls": 0}
    x = np.asarray(times_ms, dtype=float)
    q1, q3 = np.percentile(x, [25, 75])
    return {f"{prefix}_ms_median": float(np.median(x)), f"{prefix}_ms_iqr": float(q3 - q1),
            f"{prefix}_ms_min": float(x.min()), f"{prefix}_calls": int(x.size)}


def l2_flush_bytes(device: torch.device) -> int:
    """Twice the L2 size the device reports (128 MiB when it reports none)."""
    try:
        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
    except Exception:
        l2 = 0
    return 2 * l2 if l2 > 0 else 128 * 2**20


class PhaseTimer:
    """Times a zero-argument callable on one device with the settings of :class:`Timing`."""

    def __init__(self, device: str | torch.device, cfg: Timing) -> None:
        self.device = torch.device(device)
        self.cfg = cfg
        self.cuda = self.device.type == "cuda"
        self._flush_buf: torch.Tensor | None = None
        if self.cuda and cfg.flush_l2:
            self._flush_buf = torch.empty(l2_flush_bytes(self.device), dtype=torch.uint8,
                                          device=self.device)

    @property
    def name(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter"

    def _flush(self) -> None:
        if self._flush_buf is not None:
            self._flush_buf.fill_(1)

    def _one(self, fn: Callable[[], Any]) -> float:
        """One synchronised call, in ms."""
        if self.cuda:
            self._flush()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def _batch(self, fn: Callable[[], Any], calls: int) -> list[float]:
        """``calls`` calls with events recorded back to back, one synchronise at the end."""
        if not self.cuda:
            return [self._one(fn) for _ in range(calls)]
        pairs = []
        for _ in range(calls):
            self._flush()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            pairs.append((s, e))
        torch.cuda.synchronize(self.device)
        return [float(s.elapsed_time(e)) for s, e in pairs]

    def warmup(self, fn: Callable[[], Any]) -> list[float]:
        cfg, times, spent = self.cfg, [], 0.0
        while len(times) < cfg.warmup_max:
            times.append(self._one(fn))
            spent += times[-1] / 1e3
            if len(times) >= cfg.warmup_min and (
                is_stable(times, cfg.stable_window, cfg.stable_rtol) or spent >= cfg.warmup_time_s
            ):
                break
        return times

    def measure(self, fn: Callable[[], Any]) -> list[float]:
        """Warm up, then time at least ``min_calls`` calls and ``min_time_s`` seconds."""
        cfg = self.cfg
        warm = self.warmup(fn)
        per_call = max(float(np.median(warm[-cfg.stable_window:])) / 1e3, 1e-7)
        planned = int(min(cfg.max_calls, max(cfg.min_calls, np.ceil(cfg.min_time_s / per_call))))
        times = self._batch(fn, planned)
        return times
