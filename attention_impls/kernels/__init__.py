"""Hand-written Triton kernels behind the operators' ``backend`` parameter.

Every kernel here has a plain PyTorch reference beside it (the operator's ``torch``
backend) and tests that hold it to that reference. On CUDA the kernels compile as usual;
on CPU they run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before the
kernel modules are first imported), which is how CI exercises these GPU code paths.

Backends:
- ``torch``: the PyTorch path (SDPA / matmuls). Always available; the reference.
- ``triton``: the fused kernel. CUDA with Triton installed, or CPU under the interpreter.
- ``auto``: ``triton`` on CUDA when Triton imports, else ``torch``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

BACKENDS = ("auto", "torch", "triton")


@lru_cache(maxsize=1)
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_requested() -> bool:
    """True when TRITON_INTERPRET=1 is set (it must be set before kernels are imported)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def validate_backend(value: object, name: str) -> None:
    if value not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {value!r}; use one of {', '.join(BACKENDS)}")


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton backend cannot run on ``device`` (None when it can)."""
    if not triton_installed():
        return "Triton is not installed (pip install triton)"
    from . import _interp  # asking does not import Triton

    if device.type == "cuda":
        if _interp.kernels_interpreted():
            return "the Triton kernels were imported in interpreter mode (TRITON_INTERPRET=1); CUDA needs them compiled"
        return None
    if device.type == "cpu":
        if not _interp.kernels_interpreted():
            return (
                "Triton kernels run on CPU only under Triton's interpreter: set TRITON_INTERPRET=1 "
                "before the kernels are first imported"
            )
        return _interp.numpy_blocks_interpreter()
    return f"no Triton backend for device type {device.type!r}"


KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def resolve_backend(
    backend: str, device: torch.device | str, name: str, dtype: torch.dtype | None = None
) -> str:
    """``auto`` / ``torch`` / ``triton`` -> the backend that will run (``torch`` or ``triton``).

    An explicit ``triton`` that cannot run is a ValueError naming why; ``auto`` falls back
    to ``torch`` silently (the row's ``backend`` column records what ran). The kernels take
    fp16, bf16 and fp32 (fp64 stays on torch)."""
    dev = torch.device(device)
    if backend == "torch":
        return "torch"
    reason = triton_unavailable_reason(dev)
    if reason is None and dtype is not None and dtype not in KERNEL_DTYPES:
        reason = f"the Triton kernels take fp16, bf16 or fp32, not {dtype}"
    if backend == "triton":
        if reason is not None:
            raise ValueError(f"{name}: backend='triton' cannot run on {dev}: {reason}")
        return "triton"
    return "triton" if (reason is None and dev.type == "cuda") else "torch"
