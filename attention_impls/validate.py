"""Checks of operator parameters, prepared states, memory and outputs (issue 12).

Kept apart from ``base.py``'s tensor checks so each rule is one small function:
- parameters: ``check_int`` / ``check_float`` / ``check_choice`` (bools are not numbers,
  NaN and inf are rejected, every range is stated in the message);
- states: ``check_state`` (made by this method with these parameters, for q's batch/heads);
- memory: ``check_memory`` (estimate first, ``InsufficientMemoryError`` if it does not fit);
- outputs: ``check_output`` (a non-finite output from finite inputs is a ``ValueError``
  naming the dtype's range, never a silent NaN).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from .errors import InsufficientMemoryError

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit seed
# Below this estimate no free-memory query is made (the query reads /proc or the driver).
MEMORY_CHECK_FLOOR = 64 * 2**20


def check_int(op: str, key: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer (not a bool) in [lo, hi]; returns it as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{op}: {key} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{op}: {key} must be {rng}, got {value}")
    return value


def check_float(
    op: str,
    key: str,
    value: Any,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite real number (not a bool) in the interval; returns it as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{op}: {key} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if not math.isfinite(value) or below or above:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{op}: {key} must be a finite number in {rng}, got {value!r}")
    return value


def check_choice(op: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{op}: unknown {key} {value!r}; use one of {', '.join(choices)}")
    return value


def check_seed(op: str, value: Any) -> int:
    return check_int(op, "seed", value, 0, SEED_MAX)


# ----------------------------------------------------------------------------- devices


def check_not_meta(name: str, t: torch.Tensor) -> None:
    """Meta tensors have shapes but no data: every operator needs values."""
    if t.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device (shape {tuple(t.shape)}, no data); operators need "
            "tensors with values on cpu or cuda"
        )


# ----------------------------------------------------------------------------- states


def state_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a state depends on: all but ``backend`` (either backend attends any
    state of its method)."""
    return {k: v for k, v in params.items() if k != "backend"}


def check_state(op: Any, state: Any, q: torch.Tensor) -> None:
    """``state`` was prepared by ``op``'s method with ``op``'s parameters, for q's batch/heads."""
    made_by = getattr(state, "method", "")
    if made_by != op.name:
        raise ValueError(
            f"this state was prepared by {made_by or 'an unknown method'!r}; "
            f"{op.name}.attend needs a state from {op.name}.prepare()"
        )
    theirs, ours = state.params, state_params(op.params)
    if theirs != ours:
        diff = ", ".join(
            f"{k}={theirs.get(k)!r} (this operator: {ours.get(k)!r})"
            for k in sorted(set(theirs) | set(ours))
            if theirs.get(k) != ours.get(k)
        )
        raise ValueError(f"{op.name}: this state was prepared with other parameters: {diff}")
    if tuple(q.shape[:2]) != (state.batch, state.heads):
        raise ValueError(
            f"{op.name}: q has [batch, heads] = {list(q.shape[:2])} but the state was prepared for "
            f"[batch, heads] = {[state.batch, state.heads]} (one state row per user; no broadcasting)"
        )


# ----------------------------------------------------------------------------- memory


def free_bytes(device: torch.device) -> int:
    """Bytes that can be allocated now on ``device`` (CPU: psutil's available memory;
    CUDA: driver free memory plus blocks torch has cached but not handed out)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(
    what: str | Callable[[], str], estimate_bytes: float, device: torch.device
) -> None:
    """Raise ``InsufficientMemoryError`` when ``estimate_bytes`` exceeds what is free
    (``what`` may be a callable: the name is then only built for the error)."""
    if estimate_bytes < MEMORY_CHECK_FLOOR or device.type not in ("cpu", "cuda"):
        return
    free = free_bytes(device)
    if estimate_bytes > free:
        raise InsufficientMemoryError(
            what() if callable(what) else what, int(estimate_bytes), free, str(device)
        )


# ----------------------------------------------------------------------------- outputs


def all_finite_fast(t: torch.Tensor) -> bool:
    """True proves every value of ``t`` finite; False means "maybe not" (check exactly).

    The sum runs in t's own dtype (torch accumulates fp16/bf16 in fp32 and rounds once at
    the end; a cast to fp32 first cost 20x more). fp16's total overflows at 65,504, so an
    fp16 tensor whose total does gets a second, still cheap try: the sums of its rows."""
    if t.dim() == 0:  # a scalar witness: no reduction to run
        return math.isfinite(t.item())
    if math.isfinite(t.sum().item()):  # .item(): one sync, no isfinite kernel (7 us less on CPU)
        return True
    return t.dtype == torch.float16 and t.dim() > 1 and bool(torch.isfinite(t.sum(dim=-1)).all())


def check_output(
    op_label: str | Callable[[], str],
    out: torch.Tensor,
    q: torch.Tensor,
    working_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Finite inputs (already checked) must give a finite output, else a ValueError that
    names the cause: an intermediate left the working dtype's range (``working_dtype``:
    the dtype the intermediates had, when ``out`` was widened, e.g. fp32 implied weights)."""
    if all_finite_fast(out) or bool(torch.isfinite(out).all()):
        return out
    if callable(op_label):
        op_label = op_label()
    bad = int((~torch.isfinite(out)).sum())
    fi = torch.finfo(working_dtype or out.dtype)
    qmax = float(q.abs().amax().float())
    raise ValueError(
        f"{op_label}: {bad} of {out.numel()} output values are not finite in {working_dtype or out.dtype} although "
        f"q, k and v are finite: an intermediate exceeded the dtype's range (largest finite "
        f"{fi.max:.4g}; max |q| = {qmax:.4g}). Scale the inputs down or use a wider dtype "
        "(bf16 or fp32 instead of fp16, fp32 instead of bf16)"
    )
