"""Dense softmax attention: the exact reference.

Fast path: ``torch.nn.functional.scaled_dot_product_attention`` (fused flash / memory-
efficient kernels on CUDA). Implied weights are the exact softmax computed in fp32.
``backend="triton"`` runs the suite's own fused kernel instead (it splits the key axis
when few query tiles would leave the GPU idle); the default stays SDPA, the reference every
other method is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    AttentionOperator,
    BaseState,
    Cost,
    Shape,
    causal_mask,
    element_size,
    inv_sqrt,
    masked_sdpa,
)
from .registry import register


@dataclass
class DenseState(BaseState):
    k: torch.Tensor = None  # type: ignore[assignment]
    v: torch.Tensor = None  # type: ignore[assignment]


def softmax_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    key_mask: torch.Tensor | None,
    scale: float,
    causal: bool = False,
    row_offset: int = 0,
) -> torch.Tensor:
    """Plain reference: softmax(q k^T * scale) in fp32 with padding/causal masks -> [B,H,M,N]."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    allowed = None
    if key_mask is not None:
        allowed = key_mask[:, None, None, :]
    if causal:
        cm = causal_mask(q.shape[2], k.shape[2], q.device, row_offset)[None, None]
        allowed = cm if allowed is None else (allowed & cm)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
        w = torch.softmax(scores, dim=-1)
        return torch.nan_to_num(w, nan=0.0)  # rows with nothing allowed -> 0
    return torch.softmax(scores, dim=-1)


@register
class DenseAttention(AttentionOperator):
    name = "dense"
    PARAMS: dict = {"backend": "torch"}
    supports_causal = True
    weights_are_distribution = True
    description = "exact softmax attention via torch SDPA (the reference)"

    def _prepare(self, k, v, key_mask):
        return DenseState(**self._base_state_kwargs(k, v, key_mask), k=k, v=v)

    def _attend(self, state: DenseState, q, causal):
        if self._backend(q, state) == "triton":
            from .kernels.flash_small_head import flash_small_head

            return flash_small_head(
                q, state.k, state.v, scale=inv_sqrt(state.d), key_mask=state.key_mask, causal=causal
            )
        return masked_sdpa(q, state.k, state.v, state.key_mask, state.empty_users, causal)

    def _implied_weights_chunk(self, state: DenseState, q, row_offset, causal):
        return softmax_weights(q, state.k, state.key_mask, inv_sqrt(state.d), causal, row_offset)

    def cost_prepare(self, shape: Shape, dtype=torch.float32) -> Cost:
        return Cost(0.0, 0.0, 0.0)

    def cost_attend(self, shape: Shape, dtype=torch.float32) -> Cost:
        es = element_size(dtype)
        frac = 0.5 if shape.causal else 1.0
        flops = (
            shape.bh
            * frac
            * (2 * shape.m * shape.n * shape.d + 2 * shape.m * shape.n * shape.value_dim)
        )
        flops += shape.bh * frac * 5 * shape.m * shape.n  # softmax: max, sub, exp, sum, div
        nbytes = (
            es
            * shape.bh
            * (
                shape.m * shape.d
                + shape.n * (shape.d + shape.value_dim)
                + shape.m * shape.value_dim
            )
        )
        exps = shape.bh * frac * shape.m * shape.n  # one exp per (visible) score
        return Cost(float(flops), float(nbytes), float(exps))

    def memory_model(self, shape: Shape, dtype=torch.float32) -> float:
        # fused kernels keep the M x N scores on chip; output + softmax statistics
        es = element_size(dtype)
        return float(shape.bh * shape.m * (shape.value_dim * es + 8))
