"""Environment of a run (device, versions, git commit) and NVML snapshots.

Every NVML call is guarded: no GPU, no driver or no pynvml -> empty fields, never an error.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from functools import lru_cache
from typing import Any

import torch

NVML_FIELDS = ("sm_clock_mhz", "temp_c", "power_w", "throttle")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the source tree (+ "-dirty"); where git cannot tell (a copy sent to a GPU
    machine without git or .git), the value of BENCH_GIT_COMMIT, else None."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fallback = os.environ.get("BENCH_GIT_COMMIT") or None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return fallback
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


# ----------------------------------------------------------------------------- NVML


class _Nvml:
    """Lazily initialised NVML handle; ``ok`` False when NVML is absent."""

    def __init__(self) -> None:
        self.ok = False
        self.mod: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.mod = pynvml
            self.ok = True
        except Exception:  # no library, no driver, no GPU
            self.ok = False

    def handle(self, index: int) -> Any:
        if not self.ok:
            return None
        try:
            return self.mod.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            return None


@lru_cache(maxsize=1)
def nvml() -> _Nvml:
    return _Nvml()


def _guard(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def nvml_snapshot(device_index: int | None = 0, lib: Any = None) -> dict[str, Any]:
    """SM clock, temperature, power and throttle reasons; None fields when unavailable."""
    out: dict[str, Any] = {k: None for k in NVML_FIELDS}
    if device_index is None:
        return out
    nv = lib if lib is not None else nvml()
    if not getattr(nv, "ok", False):
        return out
    h = nv.handle(device_index)
    if h is None:
        return out
    m = nv.mod
    out["sm_clock_mhz"] = _guard(m.nvmlDeviceGetClockInfo, h, getattr(m, "NVML_CLOCK_SM", 1))
    out["temp_c"] = _guard(m.nvmlDeviceGetTemperature, h, getattr(m, "NVML_TEMPERATURE_GPU", 0))
    mw = _guard(m.nvmlDeviceGetPowerUsage, h)
    out["power_w"] = None if mw is None else mw / 1000.0
    reasons = _guard(m.nvmlDeviceGetCurrentClocksThrottleReasons, h)
    if reasons is None:
        reasons = _guard(getattr(m, "nvmlDeviceGetCurrentClocksEventReasons", lambda _h: None), h)
    out["throttle"] = None if reasons is None else hex(int(reasons))
    return out


def nvml_memory_used(device_index: int | None = 0) -> int | None:
    """Device memory in use (bytes) as NVML sees it, or None."""
    nv = nvml()
    if device_index is None or not nv.ok:
        return None
    h = nv.handle(device_index)
    info = None if h is None else _guard(nv.mod.nvmlDeviceGetMemoryInfo, h)
    return None if info is None else int(info.used)


def nvml_driver() -> str | None:
    nv = nvml()
    if not nv.ok:
        return None
    v = _guard(nv.mod.nvmlSystemGetDriverVersion)
    return v.decode() if isinstance(v, bytes) else v


# ----------------------------------------------------------------------------- environment


def device_index(device: str | torch.device) -> int | None:
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return dev.index if dev.index is not None else torch.cuda.current_device()


def device_name(device: str | torch.device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_model()


def environment(device: str | torch.device) -> dict[str, Any]:
    """Columns that describe where a row was measured (constant over a run)."""
    dev = torch.device(device)
    return {
        "device": dev.type,
        "device_name": device_name(dev),
        "driver": nvml_driver() if dev.type == "cuda" else None,
        "cuda_version": torch.version.cuda,
        "torch_version": torch.__version__,
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
    }


def timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
