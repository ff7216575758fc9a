"""Which parts of the operators have a backward, and the clear errors where one has not.

Measured in fp64 gradcheck (tests/test_operators_grad.py): through the decompositions of
[K | V], only the fp64 Gram eigendecomposition (solvers ``gram`` and ``gram_fp64``; svd_exact
and svd_tokens use it for the backward of both) gives finite, correct gradients when a user is padded
(padding makes singular values zero or repeated: ``svd`` and ``gram_lowrank`` gave NaN,
``lowrank`` NaN or ~1e49). So ``svd`` / ``lowrank`` / ``gram_lowrank`` refuse a call that
autograd would record instead of returning NaN gradients later. (LREA's default projection
is a constant segment-mean basis and its fitted one a set tensor: both have a backward.)
"""

from __future__ import annotations

import torch

BACKWARD_SOLVERS = ("gram", "gram_fp64")  # their backward goes through the fp64 Gram eigh (tested)


def records_grad(*tensors: torch.Tensor) -> bool:
    """True when autograd records an operation on any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def check_solver_backward(method: str, solver: str, k: torch.Tensor, v: torch.Tensor) -> None:
    """ValueError when k / v require grad and ``solver`` has no reliable backward."""
    if solver not in BACKWARD_SOLVERS and records_grad(k, v):
        raise ValueError(
            f"{method}: solver={solver!r} has no reliable backward (NaN or huge gradients when "
            f"singular values repeat, e.g. for padded users); k / v require grad: use "
            f"solver={BACKWARD_SOLVERS[0]!r} to train through it, or run under torch.no_grad()"
        )
