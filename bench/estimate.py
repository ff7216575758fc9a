"""A rough wall-clock estimate of a sweep before it starts, and the guard that asks first.

Per case: the operators' cost models (FLOPs and bytes of prepare + attend) at an assumed
device throughput give one call's time; the harness then warms up and times three phases
(at least ``min_time_s`` and ``min_calls`` samples each), computes fidelity on up to
``max_rows`` query rows against dense weights, and (on CPU) measures memory in a child
process. The throughputs below are deliberately modest, so the estimate errs long; it is an
order of magnitude to decide whether to start, not a prediction (calibrated against the
committed ``results/cpu`` quick run: 103 cases in 44 s on the 2-vCPU development VM).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .config import Case, SweepConfig

# assumed sustained throughput (FLOP/s) per device kind and dtype, and bytes/s
CPU_FLOPS_PER_THREAD = {"fp32": 2.0e10, "fp64": 1.0e10, "fp16": 2.0e9, "bf16": 4.0e9}
CUDA_FLOPS = {"fp32": 2.0e13, "fp64": 1.0e13, "fp16": 2.0e14, "bf16": 2.0e14}
CPU_BYTES_PER_S, CUDA_BYTES_PER_S = 1.0e10, 1.5e12
CASE_OVERHEAD_S = {"cpu": 0.25, "cuda": 0.15}  # inputs, the memory child, bookkeeping
ASK_ABOVE_S = 300.0  # "a few minutes": larger sweeps ask first (or need --yes)


@dataclass(frozen=True)
class Estimate:
    cases: int
    seconds: float
    largest_n: int
    dtypes: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"{self.cases} cases (N up to {self.largest_n:,}, {'/'.join(self.dtypes)}); "
            f"rough estimate {_human(self.seconds)}"
        )


def _human(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def case_seconds(case: Case, cfg: SweepConfig, threads: int = 1) -> float:
    """Rough seconds the harness spends on one case."""
    import attention_impls as ai
    from attention_impls import Shape, dtype_from_name

    cuda = case.device.startswith("cuda")
    dt = dtype_from_name(case.dtype)
    shape = Shape(case.batch, case.heads, case.n, case.m, case.d, case.dv, case.setting == "self")
    try:
        op = ai.get(case.method, **case.params_dict)
        cost = op.cost_prepare(shape, dt) + op.cost_attend(shape, dt)
        dense = ai.get("dense").cost_attend(shape, dt)
    except (ValueError, TypeError):
        return CASE_OVERHEAD_S["cuda" if cuda else "cpu"]  # unsupported cases end early
    flops_rate = (
        CUDA_FLOPS.get(case.dtype, 2e13)
        if cuda
        else CPU_FLOPS_PER_THREAD.get(case.dtype, 2e9) * max(1, threads)
    )
    bw = CUDA_BYTES_PER_S if cuda else CPU_BYTES_PER_S
    call = cost.flops / flops_rate + cost.bytes / bw + (1e-5 if cuda else 2e-6)
    t = cfg.timing
    warm = min(t.warmup_time_s, max(t.warmup_min, 3) * call)
    timed = max(t.min_time_s, t.min_calls * call)
    phases = 3 * (warm + timed)
    # fidelity: dense weights for up to max_rows query rows (fp32), once per case
    rows = (
        min(cfg.fidelity.max_rows, case.m * case.batch * case.heads) if cfg.fidelity.enabled else 0
    )
    fid = 0.0
    if rows:
        per_row = dense.flops / max(1, case.m * case.batch * case.heads)
        fid = 4 * rows * per_row / (CUDA_FLOPS["fp32"] if cuda else CPU_FLOPS_PER_THREAD["fp32"])
    mem = 3 * call if cfg.memory.enabled else 0.0
    return CASE_OVERHEAD_S["cuda" if cuda else "cpu"] + phases + fid + mem


def estimate(cases: list[Case], cfg: SweepConfig, threads: int = 1) -> Estimate:
    secs = sum(case_seconds(c, cfg, threads) for c in cases)
    return Estimate(
        len(cases),
        secs,
        max((c.n for c in cases), default=0),
        tuple(sorted({c.dtype for c in cases})),
    )


def refusal(
    est: Estimate, preset: str | None, device: str, yes: bool, time_budget_min: float | None = None
) -> str | None:
    """Why the sweep should not start without ``--yes`` (None: go ahead). A time budget
    bounds the run, so only ``--preset paper`` on a CPU still needs ``--yes`` then."""
    if yes:
        return None
    if preset == "paper" and not device.startswith("cuda"):
        return (
            f"--preset paper is the papers' GPU regime ({est.describe()} on this CPU). "
            "bf16/fp16 matmuls have no fast CPU kernels and N reaches 64k, so the sweep "
            "would take far longer than on a GPU and measure something else. Use --preset "
            "quick on a CPU, or pass --yes to run it anyway."
        )
    if est.seconds > ASK_ABOVE_S and time_budget_min is None:
        return (
            f"this sweep is large for this machine: {est.describe()}. Pass --yes to start it "
            "(it resumes when re-run), --time-budget MINUTES to stop cleanly, or "
            "--dry-run to list the cases."
        )
    return None


def confirm(reason: str, stream=None) -> bool:
    """Ask on a terminal; never on a pipe (then the answer is no)."""
    stream = stream or sys.stdin
    if not stream.isatty():
        return False
    print(reason, file=sys.stderr)
    try:
        return input("Start it? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
