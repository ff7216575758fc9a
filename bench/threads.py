"""How many CPU threads each process gets, so that a pool never oversubscribes the machine.

torch's default is one intra-op thread per core, in *every* process, whatever else runs: a
pool of P workers on C cores then runs P x C threads, and on a busy machine even one
process's C threads fight the other jobs (OpenMP threads spin while they wait for each other;
on the shared 2-core development VM the main job's KL step took 854 s with torch's default
and 31 s with one thread). The default here:

    cores    = CPUs this process may run on (sched_getaffinity, capped by a cgroup quota)
    free     = cores not busy right now (per-CPU idle time of those CPUs over a short sample)
    workers  = min(pool size, cores)
    threads  = max(1, min(cores, free) // workers)       per process

so ``workers x threads <= cores`` always. An explicit ``--threads N`` (or a config's
``threads``) or an ``OMP_NUM_THREADS`` in the environment wins and is reported as such.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # per process
    workers: int  # processes running at once
    cores: int  # CPUs available to this process
    free: float | None  # cores idle at the probe (None: not probed)
    source: str  # "explicit", "OMP_NUM_THREADS" or "auto"

    @property
    def total(self) -> int:
        return self.threads * self.workers

    def describe(self) -> str:
        """One line for the progress output."""
        pool = f" x {self.workers} processes" if self.workers > 1 else ""
        free = f", {self.free:.1f} idle" if self.free is not None else ""
        why = {
            "explicit": "set by --threads or the config",
            "OMP_NUM_THREADS": "from OMP_NUM_THREADS",
            "auto": "auto: idle cores / processes; --threads N to override",
        }[self.source]
        warn = (
            "  (more threads than cores: expect slow, noisy timings)"
            if self.total > self.cores
            else ""
        )
        return f"threads: {self.threads} per process{pool} ({self.cores} cores available{free}; {why}){warn}"


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _cpu_times() -> dict[int, tuple[int, int]]:
    """{cpu: (idle + iowait jiffies, total jiffies)} from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals]
            out[int(name[3:])] = (v[3] + (v[4] if len(v) > 4 else 0), sum(v[:8]))
    return out


def idle_cores(sample_s: float = 0.25) -> float | None:
    """Idle CPUs among this process's affinity set over a short sample (None where unknown)."""
    try:
        cpus = os.sched_getaffinity(0)
        a = _cpu_times()
        time.sleep(sample_s)
        b = _cpu_times()
    except (AttributeError, OSError, ValueError):
        return None
    idle = 0.0
    for c in cpus:
        if c in a and c in b and b[c][1] > a[c][1]:
            idle += (b[c][0] - a[c][0]) / (b[c][1] - a[c][1])
    return idle


def plan_threads(
    workers: int = 1,
    requested: int | None = None,
    cores: int | None = None,
    free: float | None = None,
    env: dict[str, str] | None = None,
) -> ThreadPlan:
    """Threads per process for a pool of ``workers`` processes (pure given cores and free).

    ``requested`` (an explicit ``--threads``) wins, then ``OMP_NUM_THREADS``; otherwise the
    idle cores (all cores when ``free`` is None) are shared among the workers, at least one
    thread each, never more threads in total than ``cores``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cores = available_cores() if cores is None else max(1, int(cores))
    workers_now = min(workers, cores)
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return ThreadPlan(requested, workers_now, cores, free, "explicit")
    env = os.environ if env is None else env
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return ThreadPlan(int(omp), workers_now, cores, free, "OMP_NUM_THREADS")
    usable = cores if free is None else min(cores, max(1, int(free + 0.5)))
    return ThreadPlan(max(1, usable // workers_now), workers_now, cores, free, "auto")


def apply(plan: ThreadPlan) -> None:
    """Set torch's intra-op threads (and, where threadpoolctl is installed, the BLAS pools
    NumPy and SciPy use) to ``plan.threads`` in this process. Child processes that import
    NumPy afresh inherit ``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` (unless already set);
    ``OMP_NUM_THREADS`` is left alone, so a later plan can still tell it was the user's."""
    import torch

    torch.set_num_threads(plan.threads)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(plan.threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(plan.threads)


def choose(requested: int | None = None, workers: int = 1, probe: bool = True) -> ThreadPlan:
    """Plan for this machine now (probing idle cores unless told not to), applied."""
    free = idle_cores() if probe and requested is None else None
    plan = plan_threads(workers, requested, free=free)
    apply(plan)
    return plan
