"""Measured ceilings of a device: matmul FLOP/s, copy bytes/s and exponentials per second.

The three numbers behind the roofline floor (``bench.roofline.roofline_floor``):

- **matmul**: CUDA: a square ``size^3`` matmul in the case dtype (8192^3 by default), the
  median of several calls timed with CUDA events; CPU: ``bench.roofline.cpu_peaks`` (a
  1024^3 matmul, best of 5).
- **memory**: CUDA: a device-to-device copy of 1 GiB (20x an H100's L2), counting the bytes
  read plus the bytes written, median of several calls; CPU: a 128 MiB copy (``cpu_peaks``).
- **exp**: CUDA: a small Triton kernel (``exp_chain``) that loads one fp32 element per lane,
  keeps it in registers and runs a dependent chain of ``x = exp2(-x)`` (a contraction: it
  converges to x = 0.641 and never over- or underflows) many times before one store, so
  the time is the special-function (MUFU) throughput, not memory; exps/s = elements x
  chain length / median time. Triton is imported lazily; without Triton (or with the kernel
  in interpreter mode on a CUDA device) the exp ceiling falls back to the vendor table.
  CPU: ``torch.exp`` on a small in-cache tensor (best of several timed loops); the CPU
  path never uses the Triton interpreter (which would measure Python, not the hardware).

``ceilings()`` measures once per (device, device name, dtype, threads) in a process and
caches the result; the runner calls it at the end of every case, so a sweep measures once.
``BENCH_CEILINGS=table`` skips the CUDA probes and uses the vendor table.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from .roofline import cpu_peaks, gpu_exp_rate, gpu_peaks

MEASURED, TABLE, NONE = "measured", "table", "none"


@dataclass(frozen=True)
class Ceilings:
    """The three ceilings used for one device and dtype, where each came from, and the
    vendor-table values beside them (None where the device is not in the table)."""

    device: str
    dtype: str
    matmul_flops_per_s: float | None
    bytes_per_s: float | None
    exp_per_s: float | None
    matmul_source: str = NONE
    bytes_source: str = NONE
    exp_source: str = NONE
    table_flops_per_s: float | None = None
    table_bytes_per_s: float | None = None
    table_exp_per_s: float | None = None
    note: str = ""

    @property
    def source(self) -> str:
        """'measured', 'table', or e.g. 'measured (exp: table)' when they differ."""
        srcs = {"matmul": self.matmul_source, "memory": self.bytes_source, "exp": self.exp_source}
        known = {k: v for k, v in srcs.items() if v != NONE}
        if not known:
            return NONE
        kinds = set(known.values())
        if len(kinds) == 1:
            return kinds.pop()
        main = max(kinds, key=lambda v: list(known.values()).count(v))
        rest = ", ".join(f"{k}: {v}" for k, v in srcs.items() if v != main)
        return f"{main} ({rest})"

    def columns(self) -> dict[str, Any]:
        """The row's peak columns."""
        return {
            "peak_flops": self.matmul_flops_per_s,
            "peak_bytes_per_s": self.bytes_per_s,
            "peak_exp_per_s": self.exp_per_s,
            "peak_source": self.source,
            "peak_flops_table": self.table_flops_per_s,
            "peak_bytes_per_s_table": self.table_bytes_per_s,
            "peak_exp_per_s_table": self.table_exp_per_s,
        }


# ----------------------------------------------------------------------------- probes


def _cuda_median_s(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2
) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, one pair of CUDA events per call."""
    with torch.cuda.device(device):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize(device)
        pairs = []
        for _ in range(repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            pairs.append((start, stop))
        torch.cuda.synchronize(device)
    return statistics.median(a.elapsed_time(b) for a, b in pairs) / 1e3


def cuda_matmul_flops(
    device: str | torch.device, dtype: str = "bf16", size: int = 8192, repeats: int = 10
) -> float:
    """FLOP/s of a ``size^3`` matmul in ``dtype`` (2 size^3 FLOPs per call, median of events)."""
    from attention_impls import dtype_from_name

    dev = torch.device(device)
    dt = dtype_from_name(dtype)
    with torch.inference_mode():
        a = torch.randn(size, size, device=dev).to(dt)
        b = torch.randn(size, size, device=dev).to(dt)
        c = torch.empty(size, size, device=dev, dtype=dt)
        sec = _cuda_median_s(lambda: torch.matmul(a, b, out=c), dev, repeats)
    return 2.0 * size**3 / sec


def cuda_copy_bytes(device: str | torch.device, nbytes: int = 2**30, repeats: int = 10) -> float:
    """Bytes/s of a device-to-device copy: (bytes read + bytes written) / median time."""
    dev = torch.device(device)
    with torch.inference_mode():
        src = torch.ones(nbytes // 4, device=dev)
        dst = torch.empty_like(src)
        sec = _cuda_median_s(lambda: dst.copy_(src), dev, repeats)
    return 2.0 * nbytes / sec


@lru_cache(maxsize=1)
def _exp_chain_kernel() -> Any:
    """The Triton kernel, built on first use (``triton.jit`` reads TRITON_INTERPRET here)."""
    import triton
    import triton.language as tl

    @triton.jit
    def exp_chain(x_ptr, y_ptr, n, OUTER: tl.constexpr, INNER: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        for _outer in range(OUTER):  # distinct names: Triton tracks loop-carried variables by name
            for _inner in tl.static_range(INNER):
                x = tl.exp2(-x)  # dependent: each exp waits for the last; stays in [0.5, 1]
        tl.store(y_ptr + offs, x, mask=mask)

    return exp_chain


def triton_exp_rate(
    device: str | torch.device = "cuda",
    n: int = 2**22,
    iters: int = 512,
    block: int = 1024,
    repeats: int = 5,
    num_warps: int = 4,
) -> float:
    """Exponentials per second of the ``exp_chain`` Triton kernel: n elements, ``iters``
    dependent exp2 each, ``n * iters / median time``.

    On CUDA the kernel is compiled and timed with events. On CPU it runs only under Triton's
    interpreter (TRITON_INTERPRET=1 when the kernel is first built) and the number is only a
    check that the kernel computes (it times the interpreter, not the hardware)."""
    dev = torch.device(device)
    inner = min(16, iters)
    outer = max(1, iters // inner)
    total = outer * inner
    kernel = _exp_chain_kernel()
    x = torch.rand(n, device=dev, dtype=torch.float32)
    y = torch.empty_like(x)
    grid = (triton_cdiv(n, block),)

    def call() -> None:
        kernel[grid](x, y, n, OUTER=outer, INNER=inner, BLOCK=block, num_warps=num_warps)

    if dev.type == "cuda":
        sec = _cuda_median_s(call, dev, repeats, warmup=1)
    else:
        call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
    if not bool(torch.isfinite(y).all()) or not bool(((y > 0.4) & (y < 1.01)).all()):
        raise RuntimeError(
            "exp_chain produced values outside [0.5, 1]: the kernel did not compute exp2(-x)"
        )
    return n * total / sec


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def cpu_exp_rate(
    dtype: str = "fp32", numel: int = 2**16, calls: int = 64, repeats: int = 5
) -> float:
    """Exponentials per second of ``torch.exp`` on this CPU (current torch threads): an
    in-cache tensor (256 KiB in fp32: large enough that the per-call dispatch is a few per
    cent, small enough for L2), ``calls`` calls per timed loop, best of ``repeats`` loops."""
    from attention_impls import dtype_from_name

    dt = dtype_from_name(dtype)
    x = (torch.rand(numel) * 2 - 1).to(dt)
    y = torch.empty_like(x)
    best = float("inf")
    with torch.inference_mode():
        torch.exp(x, out=y)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.exp(x, out=y)
            best = min(best, time.perf_counter() - t0)
    return numel * calls / best


# ----------------------------------------------------------------------------- ceilings


def _table_only() -> bool:
    return os.environ.get("BENCH_CEILINGS", "").strip().lower() == "table"


def _triton_usable_on_cuda() -> str | None:
    """Why the Triton exp probe cannot run compiled on CUDA (None when it can)."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: use the table
        return f"triton unavailable ({type(exc).__name__})"
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on"):
        return "TRITON_INTERPRET is set (the probe would time the interpreter)"
    return None


def measure_ceilings(device: str, device_name: str = "", dtype: str = "fp32") -> Ceilings:
    """Ceilings of ``device`` for ``dtype``: measured where a probe can run, else the table."""
    if not device.startswith("cuda"):
        flops, bw = cpu_peaks(dtype)
        return Ceilings(
            device,
            dtype,
            flops,
            bw,
            cpu_exp_rate(dtype),
            MEASURED,
            MEASURED,
            MEASURED,
            note="CPU: matmul, copy and torch.exp probes",
        )
    tf, tb = gpu_peaks(device_name, dtype)
    te = gpu_exp_rate(device_name)
    values: dict[str, float | None] = {"matmul": tf, "memory": tb, "exp": te}
    sources = {k: (TABLE if v else NONE) for k, v in values.items()}
    notes: list[str] = []
    if _table_only():
        notes.append("BENCH_CEILINGS=table")
    elif not torch.cuda.is_available():
        notes.append("CUDA not available: table values")
    else:
        reason = _triton_usable_on_cuda()
        probes: dict[str, Callable[[], float]] = {
            "matmul": lambda: cuda_matmul_flops(device, dtype),
            "memory": lambda: cuda_copy_bytes(device),
        }
        if reason is None:
            probes["exp"] = lambda: triton_exp_rate(device)
        else:
            notes.append(f"exp: {reason}")
        for key, probe in probes.items():
            try:
                val = probe()
            except Exception as exc:  # noqa: BLE001 - a failed probe falls back to the table
                notes.append(f"{key} probe failed: {type(exc).__name__}: {exc}"[:200])
                continue
            finally:
                torch.cuda.empty_cache()
            if val > 0 and val == val and val != float("inf"):
                values[key], sources[key] = val, MEASURED
    return Ceilings(
        device,
        dtype,
        values["matmul"],
        values["memory"],
        values["exp"],
        sources["matmul"],
        sources["memory"],
        sources["exp"],
        tf,
        tb,
        te,
        "; ".join(notes),
    )


@lru_cache(maxsize=32)
def _cached(device: str, device_name: str, dtype: str, threads: int, table_only: bool) -> Ceilings:
    return measure_ceilings(device, device_name, dtype)


def ceilings(device: str, device_name: str = "", dtype: str = "fp32") -> Ceilings:
    """Cached :func:`measure_ceilings` (per device, device name, dtype and CPU threads)."""
    threads = torch.get_num_threads() if not device.startswith("cuda") else 0
    return _cached(device, device_name, dtype, threads, _table_only())
