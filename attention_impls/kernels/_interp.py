"""Whether the kernel modules were (or will be) decorated by Triton's interpreter.

``triton.jit`` decides at decoration time, so the answer is fixed by the environment at
the first import of a kernel module. Kept in its own module so asking does not import
Triton before the caller had the chance to set TRITON_INTERPRET.
"""

from __future__ import annotations

_STATE: dict[str, bool] = {}


def kernels_interpreted() -> bool:
    if "interpreted" not in _STATE:
        from triton import knobs

        _STATE["interpreted"] = bool(knobs.runtime.interpret)
    return _STATE["interpreted"]


def dot_in_fp32() -> bool:
    """Triton 3.6's interpreter computes tl.dot on bf16 operands wrongly (numpy has no
    bf16): under the interpreter, kernels upcast dot operands to fp32. Compiled kernels on
    CUDA keep bf16/fp16 tensor-core dots with fp32 accumulation."""
    return kernels_interpreted()


def numpy_blocks_interpreter() -> str | None:
    """Triton 3.6's interpreter calls int() on 1-element arrays for runtime loop bounds,
    which NumPy >= 2.4 rejects; say so instead of failing deep inside the interpreter."""
    import numpy as np

    major, minor = (int(x) for x in np.__version__.split(".")[:2])
    if (major, minor) >= (2, 4):
        return (
            f"Triton's interpreter needs numpy < 2.4 for kernel loops (found numpy "
            f"{np.__version__}); pip install 'numpy<2.4'"
        )
    return None
