"""``AttentionLayer``: any operator of the suite as a ``torch.nn.Module`` inside a model.

    layer = AttentionLayer("performer", features=64)
    out = layer(q, k, v, key_mask=mask, causal=True)   # [B,H,M,dv]; autograd flows

The layer holds the operator and the operator's learned parameters, so they train, move
with ``.to()`` and live in ``state_dict``. Only LREA has learned parameters: its paper
learns W_comp (N x r) and W_decomp (r x N), so ``AttentionLayer("lrea", n=N, rank=r)``
owns them as ``nn.Parameter``s and both forms use them. ``init`` sets their start:
``"segments"`` (the default) = the operator's own default projection (``segment_basis``: r
contiguous segments, 1/sqrt(n_s) on each, non-negative, so the absorbed form is exact from
the first step); ``"random"`` = a random orthonormal basis drawn from ``seed`` (entries of
size 1/sqrt(n) with mixed signs); or fit it to sample keys afterwards with
``init_lrea_from``.
Every other method's state is derived from k / v in each call (Performer's features are
redrawn from ``seed``, not stored).

Rules for training (``docs/operators.md``): the Triton kernels have no backward, so a call
autograd records runs the torch path (``backend_used(..., requires_grad=True)`` says so);
``svd_exact`` / ``svd_tokens`` train only with ``solver="gram"``; causal ``svd_exact``
needs the full rank; LREA needs ``n``, the longest history it will see.

LREA's projection is positional and right-aligned: an input of N <= n behaviours uses the
projection's last N positions (position j of the input is position n - N + j), which is
exactly what left-padding the input to n with masked slots computes (masked keys and values
are zeroed before C = K^T W_comp and W_decomp V), without computing on the padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .lrea import segment_basis
from .registry import get

LREA_INITS = ("segments", "random")


def lrea_init(init: str | None) -> str:
    """The start of an LREA layer's projection: ``init``, or ``"segments"`` when None; an
    unknown name is a ValueError listing the choices."""
    init = "segments" if init is None else init
    if init not in LREA_INITS:
        raise ValueError(f"lrea: unknown init {init!r}; choose one of {list(LREA_INITS)}")
    return init


class AttentionLayer(nn.Module):
    """One attention method as a module: ``forward(q, k, v, key_mask=None, causal=False)``."""

    def __init__(
        self, method: str, n: int | None = None, init: str | None = None, **params: Any
    ) -> None:
        super().__init__()
        self.method = method
        self.op = get(method, **params)
        self.init = init
        self.w_comp: nn.Parameter | None = None
        self.w_decomp: nn.Parameter | None = None
        if method == "lrea":
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(
                    f"lrea learns W_comp (N x r) and W_decomp (r x N): pass n = the number of "
                    f"behaviours N as a positive int, got n={n!r}"
                )
            rank = self.op.params["rank"]
            if rank > n:
                raise ValueError(f"lrea: rank {rank} is larger than n = {n}")
            self.init = lrea_init(init)
            if self.init == "segments":
                basis = segment_basis(n, rank)
            else:  # "random"
                gen = torch.Generator().manual_seed(int(self.op.params["seed"]))
                basis, _ = torch.linalg.qr(torch.randn(n, rank, generator=gen))
            self.w_comp = nn.Parameter(basis.clone())
            self.w_decomp = nn.Parameter(basis.T.clone())
        elif n is not None or init is not None:
            raise ValueError(
                f"n and init are only used by lrea (its learned N x r projection); "
                f"{method} takes neither"
            )

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.op.params)

    def extra_repr(self) -> str:
        return repr(self.op) + ("" if self.init is None else f", init={self.init!r}")

    @torch.no_grad()
    def init_lrea_from(
        self, k: torch.Tensor, key_mask: torch.Tensor | None = None, **fit_args: Any
    ) -> dict[str, float]:
        """Set W_comp / W_decomp to LREA's fit on sample keys k [B,H,N,d] (principal positions,
        optionally Adam steps: ``fit_args`` go to ``LreaAttention.fit``)."""
        if self.w_comp is None or self.w_decomp is None:
            raise ValueError(f"init_lrea_from is for lrea layers, this one is {self.method}")
        with torch.enable_grad():
            terms = self.op.fit(k.detach(), key_mask, **fit_args)
        self.w_comp.copy_(self.op.w_comp)
        self.w_decomp.copy_(self.op.w_decomp)
        return terms

    def backend_used(
        self,
        device: torch.device | str,
        dtype: torch.dtype | str | None = None,
        requires_grad: bool = False,
        causal: bool = False,
    ) -> str:
        """``torch`` or ``triton``: what a call on ``device`` runs (torch whenever grad is needed)."""
        return self.op.backend_used(device, dtype, requires_grad=requires_grad, causal=causal)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        if self.w_comp is not None and self.w_decomp is not None:
            # the operator reads its projection from these attributes; assigning the
            # parameters (fp32 view, no copy for fp32) keeps them in the autograd graph
            wc, wd = self.w_comp, self.w_decomp
            n, n_in = wc.shape[0], k.shape[-2] if k.dim() >= 2 else 0
            if n_in > n:
                raise ValueError(
                    f"lrea: the input has N = {n_in} behaviours, more than this layer's "
                    f"n = {n} (its learned projection covers {n} positions)"
                )
            if 0 < n_in < n:  # right-aligned: = left-padding to n with masked slots
                wc, wd = wc[n - n_in :], wd[:, n - n_in :]
            self.op.w_comp, self.op.w_decomp = wc.float(), wd.float()
        return self.op.forward(q, k, v, key_mask, causal=causal)
