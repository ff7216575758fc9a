"""LinRec's prepare and attend as ``torch.compile`` functions: ``linrec(backend="compiled")``.

Why: on a CPU the eager path spends as long in its elementwise passes (ELU, row norm,
division: three trips over the N x d keys) as in the K^T V product. Inductor fuses them into
one loop beside the product and, in the checked calls, folds K's sum and the smallest row
norm (the witnesses of ``linrec.py``) into the same loop. The eager ``torch`` path in
``linrec.py`` stays the reference; ``tests/test_linrec_compiled.py`` holds this to it.

Costs and limits: the first call compiles (seconds; ``dynamic=True``, so new lengths reuse
it), on a CPU it needs a C++ compiler, and a call autograd records runs the eager path (as
the Triton backend does). A build that fails is a RuntimeError naming the cause.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F


def prepare_math(
    k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, eps: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K^ ^T V * scale in fp32, K's sum, the smallest row norm of elu(K)): the eager
    ``LinRecAttention._prepare`` written as one function for the compiler."""
    y = F.elu(k.float())
    norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    kn = y / norms.clamp_min(eps)
    if mask is not None:
        kn = kn * mask[:, None, :, None].to(kn.dtype)
    kv = torch.matmul(kn.transpose(-1, -2), v.float()) * scale
    return kv, k.sum(), norms.amin()


def attend_math(q: torch.Tensor, kv: torch.Tensor, eps: float) -> torch.Tensor:
    """rownorm(elu(q)) @ kv, as the eager ``_attend`` computes it."""
    y = F.elu(q.float())
    norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    qn = y / norms.clamp_min(eps)
    return torch.matmul(qn.to(q.dtype), kv)


@cache
def _compiled(name: str) -> Any:
    fn = {"prepare": prepare_math, "attend": attend_math}[name]
    return torch.compile(fn, dynamic=True)


def run(name: str, *args: Any) -> Any:
    """Call the compiled ``prepare`` or ``attend``; a failed build says why in one line."""
    try:
        return _compiled(name)(*args)
    except Exception as exc:  # inductor's errors come from deep inside; name the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RuntimeError(
            f"linrec backend='compiled': torch.compile could not build or run the fused "
            f"{name} on {args[0].device} ({type(exc).__name__}: {first[:300]}); use "
            "backend='torch' (the same results) or install a C++ compiler for inductor"
        ) from exc
