"""Timing of one phase: warm-up until stable (bounded), then samples of back-to-back calls.

A *sample* is ``inner`` consecutive calls between one pair of timestamps (CUDA: a pair of
CUDA events on the current stream, one synchronise before any time is read; CPU:
``time.perf_counter``); the time reported per sample is sample / inner, the time of one call.
On CPU the same samples also record ``time.thread_time`` (the calling thread's CPU time: all
of a call's work when torch runs one thread) and ``time.process_time`` (every thread of the
process): on a shared machine wall time includes waiting for a core, CPU time does not
(issue 11: 12 min 39 s of wall time against 32.8 s of CPU time, IQR/median up to 2,775 %).
``machine_load`` and ``wall_warning`` say when wall times are unusable.
``inner`` is chosen from the warm-up so that a sample lasts at least ``sample_min_ms``
(capped by ``inner_max``): a 5 us kernel timed alone is mostly launch jitter, 200 of them
back to back are not.

Cold caches without flush kernels inside the timed window: the caller may hand several
callables (one per independent copy of the inputs, *input rotation*); consecutive calls
cycle through them, so with copies worth at least twice the L2 size no call finds its inputs
in L2 (see :func:`rotation_sets` and :func:`plan_rotation`). Without rotation, on CUDA with
``flush_l2`` and a working set that fits in twice the L2, the old behaviour holds: one call
per sample with the L2 flushed (a buffer of twice its size written) before each call.

The arithmetic (inner calls, samples, rotation sets) is in pure functions, tested on CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import Timing

PHASE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "prepare": ("kv",),  # k, v, key_mask
    "attend": ("state", "q"),
    "forward": ("kv", "q"),
}
SAMPLE_MIN_MS_DEFAULT = {"cuda": 1.0, "cpu": 0.2}
CALIBRATION_ROUNDS = 4

# how the caches were kept cold in a phase (column timing_cache_<phase>)
CACHE_ROTATION = "rotation"  # consecutive calls cycle through independent input copies
CACHE_FLUSH = "flush_per_call"  # one call per sample, L2 flushed before each (old behaviour)
CACHE_LARGE = "working_set"  # the inputs alone are >= 2x the cache: nothing to do
CACHE_WARM = "none"  # no measure taken (CPU default, or rotation refused / disabled)


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
        return {
            f"{prefix}_ms_median": None,
            f"{prefix}_ms_iqr": None,
            f"{prefix}_ms_min": None,
            f"{prefix}_calls": 0,
        }
    x = np.asarray(times_ms, dtype=float)
    q1, q3 = np.percentile(x, [25, 75])
    return {
        f"{prefix}_ms_median": float(np.median(x)),
        f"{prefix}_ms_iqr": float(q3 - q1),
        f"{prefix}_ms_min": float(x.min()),
        f"{prefix}_calls": int(x.size),
    }


def iqr_rel(iqr: float | None, median: float | None) -> float | None:
    """IQR / median (None when either is missing or the median is not positive)."""
    if iqr is None or median is None:
        return None
    try:
        iqr, median = float(iqr), float(median)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(iqr) and math.isfinite(median)) or median <= 0:
        return None
    return iqr / median


# ----------------------------------------------------------------------------- pure arithmetic


def sample_min_ms(cfg: Timing, cuda: bool) -> float:
    """The configured minimum sample length, or the device default (CUDA 1 ms, CPU 0.2 ms)."""
    if cfg.sample_min_ms is not None:
        return max(0.0, float(cfg.sample_min_ms))
    return SAMPLE_MIN_MS_DEFAULT["cuda" if cuda else "cpu"]


def choose_inner(per_call_ms: float, min_sample_ms: float, inner_max: int) -> int:
    """Calls per sample so that a sample lasts at least ``min_sample_ms``: in [1, inner_max]."""
    cap = max(1, int(inner_max))
    if min_sample_ms <= 0:
        return 1
    if not per_call_ms or per_call_ms <= 0 or not math.isfinite(per_call_ms):
        return cap
    return int(min(cap, max(1, math.ceil(min_sample_ms / per_call_ms))))


def grow_inner(inner: int, sample_ms: float, min_sample_ms: float, inner_max: int) -> int:
    """Next ``inner`` after a calibration sample of ``inner`` calls took ``sample_ms``: the
    same when it was long enough, else scaled up (10 % margin), at most ``inner_max``."""
    cap = max(1, int(inner_max))
    if sample_ms >= min_sample_ms or inner >= cap:
        return min(inner, cap)
    if sample_ms <= 0:
        return min(cap, max(inner + 1, inner * 10))
    return int(
        min(cap, max(inner + 1, math.ceil(round(inner * 1.1 * min_sample_ms / sample_ms, 6))))
    )


def plan_samples(per_call_ms: float, inner: int, cfg: Timing) -> int:
    """Samples to take: enough for ``min_time_s`` of timed calls, within [min_calls, max_calls]."""
    lo, hi = max(1, int(cfg.min_calls)), max(1, int(cfg.max_calls))
    sample_s = max(float(per_call_ms) * max(1, inner) / 1e3, 1e-9)
    return int(min(hi, max(lo, math.ceil(cfg.min_time_s / sample_s))))


def calls_per_graph(input_sets: int, calls_max: int) -> int:
    """Calls captured in one CUDA graph: a whole number of cycles through the input sets,
    as many as fit under ``calls_max`` (at least one cycle)."""
    sets = max(1, int(input_sets))
    return sets * max(1, int(calls_max) // sets)


def rotation_sets(
    working_set_bytes: float | None, cache_bytes: float | None, rotate_max: int
) -> int:
    """Input copies needed so that the calls of one cycle touch >= 2x the cache:
    ``min(rotate_max, ceil(2 cache / working set))``, 1 when one call alone already does."""
    if not working_set_bytes or working_set_bytes <= 0 or not cache_bytes or cache_bytes <= 0:
        return 1
    if working_set_bytes >= 2 * cache_bytes:
        return 1
    return int(max(1, min(int(rotate_max), math.ceil(2 * cache_bytes / working_set_bytes))))


@dataclass(frozen=True)
class RotationPlan:
    sets: dict[str, int]  # phase -> input sets its calls cycle through
    copies: dict[str, int]  # component (kv, q, state) -> copies to hold (the original included)
    working_set: dict[str, int]  # phase -> bytes one call reads (its inputs)
    extra_bytes: int  # memory the extra copies take
    note: str | None = None  # why rotation was reduced or skipped


def _copies(sets: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for phase, comps in PHASE_COMPONENTS.items():
        for c in comps:
            out[c] = max(out.get(c, 1), sets.get(phase, 1))
    return out


def _extra(copies: dict[str, int], comp_bytes: dict[str, int]) -> int:
    return int(sum((n - 1) * int(comp_bytes.get(c, 0)) for c, n in copies.items()))


def plan_rotation(
    comp_bytes: dict[str, int],
    cache_bytes: float | None,
    rotate_max: int,
    budget_bytes: float | None,
    enabled: bool = True,
) -> RotationPlan:
    """Input sets per phase from the bytes of each component (``kv``: k, v and the mask;
    ``q``; ``state``: the prepared state), the cache size and a memory budget for the extra
    copies. When the copies would not fit, the number of sets is capped at the largest that
    fits (no rotation when not even two do), and ``note`` says so."""
    ws = {
        p: int(sum(int(comp_bytes.get(c, 0)) for c in comps))
        for p, comps in PHASE_COMPONENTS.items()
    }
    if not enabled:
        sets = dict.fromkeys(PHASE_COMPONENTS, 1)
        return RotationPlan(sets, _copies(sets), ws, 0, None)
    wanted = {p: rotation_sets(ws[p], cache_bytes, rotate_max) for p in PHASE_COMPONENTS}
    note = None
    if budget_bytes is not None:
        cap = max(wanted.values())
        while (
            cap > 1
            and _extra(_copies({p: min(n, cap) for p, n in wanted.items()}), comp_bytes)
            > budget_bytes
        ):
            cap -= 1
        if cap < max(wanted.values()):
            full = _extra(_copies(wanted), comp_bytes)
            what = (
                f"rotation skipped: {max(wanted.values())} input sets"
                if cap <= 1
                else f"rotation capped at {cap} input set(s): {max(wanted.values())}"
            )
            note = (
                f"{what} would take {full / 2**20:.0f} MiB more, over the budget of "
                f"{budget_bytes / 2**20:.0f} MiB"
            )
        wanted = {p: min(n, cap) for p, n in wanted.items()}
    copies = _copies(wanted)
    return RotationPlan(wanted, copies, ws, _extra(copies, comp_bytes), note)


def cache_mode(
    cuda: bool,
    flush_l2: bool,
    sets: int,
    working_set_bytes: float | None,
    cache_bytes: float | None,
) -> str:
    """How a phase keeps caches cold: rotation, the old flush per call, a working set that is
    large enough by itself, or nothing."""
    if sets > 1:
        return CACHE_ROTATION
    if working_set_bytes and cache_bytes and working_set_bytes >= 2 * cache_bytes:
        return CACHE_LARGE
    if cuda and flush_l2:
        return CACHE_FLUSH
    return CACHE_WARM


# ----------------------------------------------------------------------------- device queries


def cuda_l2_bytes(device: torch.device) -> int:
    """The L2 size the CUDA device reports (0 when unknown)."""
    try:
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
    except Exception:
        return 0


def l2_flush_bytes(device: torch.device) -> int:
    """Twice the L2 size the device reports (128 MiB when it reports none)."""
    l2 = cuda_l2_bytes(device)
    return 2 * l2 if l2 > 0 else 128 * 2**20


def cpu_cache_bytes() -> int:
    """The largest CPU cache level Linux reports for cpu0 (0 when unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        try:
            with open(f"{base}/{name}/size") as fh:
                raw = fh.read().strip().upper()
        except OSError:
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(raw[-1:], 1)
        digits = raw[:-1] if raw[-1:] in "KMG" else raw
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best


def free_memory_bytes(device: torch.device) -> int | None:
    """Free device memory (CUDA) or available RAM (CPU); None when unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except Exception:
        return None
    return None


# ----------------------------------------------------------------------------- the timer


@dataclass
class PhaseTiming:
    """What one phase's measurement gave: per-call times (one per sample) and how."""

    times_ms: list[float]  # per call: sample time / inner
    inner: int = 1
    input_sets: int = 1
    cache: str = CACHE_WARM
    warmup_calls: int = 0
    sample_min_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    thread_cpu_ms: list[float] = field(default_factory=list)  # CPU only: per call, calling thread
    process_cpu_ms: list[float] = field(default_factory=list)  # CPU only: per call, all threads

    @property
    def samples(self) -> int:
        return len(self.times_ms)


def summarise_phase(pt: PhaseTiming, prefix: str) -> dict[str, Any]:
    """The phase's columns: ``{prefix}_ms_median/_iqr/_min`` (per call), ``_ms_iqr_rel``,
    ``_calls`` (calls timed = samples x inner), and ``timing_{inner_calls,samples,input_sets,
    cache}_{prefix}``."""
    out = summarise_times(pt.times_ms, prefix)
    out[f"{prefix}_calls"] = int(pt.samples * pt.inner)
    out[f"{prefix}_ms_iqr_rel"] = iqr_rel(out[f"{prefix}_ms_iqr"], out[f"{prefix}_ms_median"])
    out[f"timing_inner_calls_{prefix}"] = int(pt.inner)
    out[f"timing_samples_{prefix}"] = int(pt.samples)
    out[f"timing_input_sets_{prefix}"] = int(pt.input_sets)
    out[f"timing_cache_{prefix}"] = pt.cache
    out.update(summarise_cpu(pt, prefix))
    return out


def summarise_cpu(pt: PhaseTiming, prefix: str) -> dict[str, Any]:
    """``{prefix}_thread_cpu_ms_median/_iqr``, ``{prefix}_process_cpu_ms_median/_iqr`` (per
    call, from the same samples as the wall times) and ``{prefix}_wall_per_cpu`` = median wall
    / median process CPU time: about 1 / threads on an idle machine, far above when other
    processes take the cores. None on CUDA (device time is what counts there)."""
    out: dict[str, Any] = {}
    for name, xs in (("thread_cpu", pt.thread_cpu_ms), ("process_cpu", pt.process_cpu_ms)):
        s = summarise_times(xs, f"{prefix}_{name}")
        out[f"{prefix}_{name}_ms_median"] = s[f"{prefix}_{name}_ms_median"]
        out[f"{prefix}_{name}_ms_iqr"] = s[f"{prefix}_{name}_ms_iqr"]
    ratio = None
    if pt.times_ms and pt.process_cpu_ms:
        cpu = out[f"{prefix}_process_cpu_ms_median"]
        ratio = float(np.median(pt.times_ms)) / cpu if cpu and cpu > 0 else None
    out[f"{prefix}_wall_per_cpu"] = ratio
    return out


# ----------------------------------------------------------------------------- machine load

LOAD_PER_CORE_MAX = 1.0  # runnable tasks per core above which a timed call waits for a core
WALL_PER_CPU_MAX = 1.5  # single-thread wall / CPU above which a third of the wall time is waiting


def visible_cores() -> int:
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def machine_load() -> dict[str, Any]:
    """``load_avg_1m`` (os.getloadavg) and ``load_per_core`` (over the visible cores); None
    where the platform has no load average."""
    try:
        load = float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return {"load_avg_1m": None, "load_per_core": None}
    return {"load_avg_1m": load, "load_per_core": load / max(1, visible_cores())}


def wall_warning(
    load_per_core: float | None, wall_per_cpu: float | None, threads: int = 1
) -> str | None:
    """Why wall times of a CPU run are unusable, or None: the 1-minute load average exceeds the
    visible cores (our own process counts for ``threads`` of it), or wall time exceeds CPU
    time x threads by more than ``WALL_PER_CPU_MAX`` (the calls waited for a core)."""
    reasons = []
    if load_per_core is not None and load_per_core > LOAD_PER_CORE_MAX:
        reasons.append(f"load average {load_per_core:.2f} per core (> {LOAD_PER_CORE_MAX:g})")
    if wall_per_cpu is not None and wall_per_cpu * max(1, threads) > WALL_PER_CPU_MAX:
        reasons.append(
            f"wall time {wall_per_cpu * max(1, threads):.2f}x the CPU time per thread "
            f"(> {WALL_PER_CPU_MAX:g})"
        )
    return "; ".join(reasons) or None


class PhaseTimer:
    """Times callables on one device with the settings of :class:`Timing`."""

    def __init__(self, device: str | torch.device, cfg: Timing) -> None:
        self.device = torch.device(device)
        self.cfg = cfg
        self.cuda = self.device.type == "cuda"
        self._flush_buf: torch.Tensor | None = None
        if self.cuda and cfg.flush_l2:
            self._flush_buf = torch.empty(
                l2_flush_bytes(self.device), dtype=torch.uint8, device=self.device
            )

    @property
    def name(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter"

    @property
    def sample_min_ms(self) -> float:
        return sample_min_ms(self.cfg, self.cuda)

    @property
    def cache_bytes(self) -> int:
        """The cache that rotation must overflow: ``cache_bytes`` if configured, else the CUDA
        L2 size (CPU: the largest cache level)."""
        if self.cfg.cache_bytes is not None:
            return int(self.cfg.cache_bytes)
        return cuda_l2_bytes(self.device) if self.cuda else cpu_cache_bytes()

    @property
    def rotation_enabled(self) -> bool:
        """``rotate`` if set, else on for CUDA and off for CPU."""
        return bool(self.cuda if self.cfg.rotate is None else self.cfg.rotate)

    def rotation_plan(self, comp_bytes: dict[str, int]) -> RotationPlan:
        """Input sets per phase for these component sizes, within ``rotate_mem_fraction`` of
        the free memory."""
        enabled = self.rotation_enabled and self.cfg.rotate_max > 1
        free = free_memory_bytes(self.device) if enabled else None
        budget = None if free is None else self.cfg.rotate_mem_fraction * free
        return plan_rotation(comp_bytes, self.cache_bytes, self.cfg.rotate_max, budget, enabled)

    def _flush(self) -> None:
        if self._flush_buf is not None:
            self._flush_buf.fill_(1)

    # one sample: ``inner`` calls starting at input set ``start``; returns ms per call
    def _sample_cpu(self, fns: Sequence[Callable[[], Any]], start: int, inner: int) -> float:
        return self._sample_cpu_all(fns, start, inner)[0]

    @staticmethod
    def _sample_cpu_all(
        fns: Sequence[Callable[[], Any]], start: int, inner: int
    ) -> tuple[float, float, float]:
        """(wall, thread CPU, process CPU) ms per call of one sample."""
        r = len(fns)
        c0, p0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
        for j in range(inner):
            fns[(start + j) % r]()
        t1, p1, c1 = time.perf_counter(), time.process_time(), time.thread_time()
        return (t1 - t0) * 1e3 / inner, (c1 - c0) * 1e3 / inner, (p1 - p0) * 1e3 / inner

    def _samples(
        self, fns: Sequence[Callable[[], Any]], start: int, inner: int, count: int, flush: bool
    ) -> list[float]:
        """``count`` samples of ``inner`` calls, cycling through ``fns`` from ``start``; on CUDA
        the events of all samples are recorded back to back, one synchronise at the end."""
        r = len(fns)
        if not self.cuda:
            return [self._sample_cpu(fns, start + i * inner, inner) for i in range(count)]
        pairs = []
        for i in range(count):
            if flush:
                self._flush()  # before the start event: outside the timed window
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            base = start + i * inner
            for j in range(inner):
                fns[(base + j) % r]()
            e.record()
            pairs.append((s, e))
        torch.cuda.synchronize(self.device)
        return [float(s.elapsed_time(e)) / inner for s, e in pairs]

    def warmup(
        self, fn: Callable[[], Any] | Sequence[Callable[[], Any]], flush: bool | None = None
    ) -> list[float]:
        """Single calls (cycling through the input sets) until stable or out of budget."""
        fns = [fn] if callable(fn) else list(fn)
        flush = self.cfg.flush_l2 if flush is None else flush
        cfg, times, spent = self.cfg, [], 0.0
        while len(times) < max(1, cfg.warmup_max):
            times.append(self._samples(fns, len(times), 1, 1, flush)[0])
            spent += times[-1] / 1e3
            if len(times) >= cfg.warmup_min and (
                is_stable(times, cfg.stable_window, cfg.stable_rtol) or spent >= cfg.warmup_time_s
            ):
                break
        return times

    def run(
        self,
        fn: Callable[[], Any] | Sequence[Callable[[], Any]],
        working_set_bytes: float | None = None,
    ) -> PhaseTiming:
        """Warm up, choose ``inner``, then time samples: at least ``min_calls`` samples and
        ``min_time_s`` seconds of calls, at most ``max_calls`` samples.

        ``fn``: one zero-argument callable, or one per input set (calls cycle through them).
        ``working_set_bytes``: bytes one call reads (decides whether a flush is needed)."""
        fns = [fn] if callable(fn) else list(fn)
        if not fns:
            raise ValueError("nothing to time")
        cfg = self.cfg
        mode = cache_mode(self.cuda, cfg.flush_l2, len(fns), working_set_bytes, self.cache_bytes)
        flush = mode == CACHE_FLUSH
        min_ms = self.sample_min_ms
        warm = self.warmup(fns, flush)
        per_call = max(float(np.median(warm[-cfg.stable_window :])), 1e-6)
        calls = len(warm)
        if flush:
            inner = 1  # old configs keep their meaning: every timed call starts cold
        else:
            inner = choose_inner(per_call, min_ms, cfg.inner_max)
            for _ in range(CALIBRATION_ROUNDS if inner > 1 else 0):
                t = self._samples(fns, calls, inner, 1, False)[0]
                calls += inner
                per_call = t
                nxt = grow_inner(inner, t * inner, min_ms, cfg.inner_max)
                if nxt == inner:
                    break
                inner = nxt
        planned = plan_samples(per_call, inner, cfg)
        thread_ms: list[float] = []
        proc_ms: list[float] = []
        if self.cuda:
            times = self._samples(fns, calls, inner, planned, flush)
        else:  # CPU: thread and process CPU time of the same samples beside the wall time
            triples = [self._sample_cpu_all(fns, calls + i * inner, inner) for i in range(planned)]
            times = [t[0] for t in triples]
            thread_ms, proc_ms = [t[1] for t in triples], [t[2] for t in triples]
        return PhaseTiming(
            times,
            inner=inner,
            input_sets=len(fns),
            cache=mode,
            warmup_calls=calls,
            sample_min_ms=min_ms,
            thread_cpu_ms=thread_ms,
            process_cpu_ms=proc_ms,
        )

    def run_graph(
        self,
        fn: Callable[[], Any] | Sequence[Callable[[], Any]],
        working_set_bytes: float | None = None,
    ) -> PhaseTiming:
        """CUDA only: the same calls captured in one CUDA graph and timed by replaying it.

        Eager samples include the host's launch cost (Python, the launcher), which for a
        5 us kernel can be most of the time; a serving path that replays graphs pays only
        the device time, which this measures. ``calls_per_graph(len(fns))`` calls, cycling
        through the input sets, are captured once (after a warm-up on a side stream, as
        torch.cuda.graphs asks); a sample is enough replays to last ``sample_min_ms``.
        Raises whatever capture raises (e.g. an op that synchronises with the host)."""
        if not self.cuda:
            raise ValueError("CUDA graph timing needs a CUDA device")
        fns = [fn] if callable(fn) else list(fn)
        cfg, r = self.cfg, len(fns)
        n_calls = calls_per_graph(r, cfg.graph_calls_max)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for j in range(2 * r):
                fns[j % r]()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for j in range(n_calls):
                fns[j % r]()
        try:
            warm = self.warmup(graph.replay, flush=False)
            per_replay = max(float(np.median(warm[-cfg.stable_window :])), 1e-6)
            reps = choose_inner(per_replay, self.sample_min_ms, max(1, cfg.inner_max // n_calls))
            planned = plan_samples(per_replay, reps, cfg)
            times = [t / n_calls for t in self._samples([graph.replay], 0, reps, planned, False)]
        finally:
            graph.reset()  # give the graph's memory pool back
        mode = cache_mode(True, False, r, working_set_bytes, self.cache_bytes)
        return PhaseTiming(
            times,
            inner=reps * n_calls,
            input_sets=r,
            cache=mode,
            warmup_calls=len(warm) * n_calls,
            sample_min_ms=self.sample_min_ms,
            extra={"graph_calls": n_calls},
        )

    def measure(
        self,
        fn: Callable[[], Any] | Sequence[Callable[[], Any]],
        working_set_bytes: float | None = None,
    ) -> list[float]:
        """Per-call times in ms, one per sample (see :meth:`run`)."""
        return self.run(fn, working_set_bytes).times_ms
