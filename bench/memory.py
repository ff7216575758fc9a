"""Peak memory of one forward call, measured (CUDA allocator, NVML, or a CPU child process).

CPU: the forward runs once in a child forked from a forkserver that has imported torch but
never run a parallel region (forking the parent itself would deadlock OpenMP). The child
rebuilds the inputs (seeded), warms the thread pool on a tiny op, trims malloc, resets the
kernel's peak-RSS mark (/proc/self/clear_refs), reads its RSS, runs the forward and reports
peak RSS - RSS: the measured peak above the inputs.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
from collections.abc import Callable
from typing import Any

import torch

from .config import Case
from .env import device_index, nvml_memory_used

_CTX: Any = None
METHOD = "child_process_peak_rss_above_inputs"


def _context() -> Any:
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(["torch", "attention_impls", "bench.inputs", "bench.memory"])
    return _CTX


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _child(case_json: dict, threads: int, conn: Any) -> None:
    try:
        import resource

        import psutil

        import attention_impls as ai
        from bench.config import Case as _Case
        from bench.inputs import build_inputs

        torch.set_num_threads(threads)
        case = _Case.from_json(case_json)
        op = ai.get(case.method, **case.params_dict)
        inp = build_inputs(case)
        with torch.inference_mode():
            torch.ones(64, 64) @ torch.ones(64, 64)  # start the thread pool before the baseline
            gc.collect()
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            reset = _reset_peak_rss()  # forget the peak of building the inputs
            base = psutil.Process().memory_info().rss
            out = op.attend_unchecked(
                op.prepare_unchecked(inp.k, inp.v, inp.key_mask), inp.q, case.causal
            )
            del out
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        conn.send(("ok", (max(0, peak - base), reset)))
    except MemoryError:
        conn.send(("oom", "MemoryError in the memory child"))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def cpu_peak_bytes(case: Case, timeout_s: float = 120.0) -> tuple[int | None, str | None, str]:
    """(peak bytes above the inputs, error, method label) of one forward in a child process."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(case.to_json(), torch.get_num_threads(), send))
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout_s):
            proc.kill()
            return None, f"memory child timed out after {timeout_s:.0f} s", METHOD
        status, value = recv.recv()
    except EOFError:
        status, value = "error", f"memory child died (exit code {proc.exitcode})"
    finally:
        proc.join(5)
        recv.close()
    if status == "ok":
        peak, reset = value
        return int(peak), None, METHOD if reset else METHOD + "_no_peak_reset(includes input build)"
    return None, str(value), METHOD


def cuda_peak_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[int, int | None]:
    """(allocator peak above memory allocated before the call, NVML growth of device memory)."""
    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.empty_cache()
    idx = device_index(device)
    nvml_before = nvml_memory_used(idx)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    nvml_after = nvml_memory_used(idx)
    del out
    nv = None if nvml_before is None or nvml_after is None else max(0, nvml_after - nvml_before)
    return int(peak), nv
