"""The attention-free baseline both quality tasks train beside the attention methods: each
query gets the mean of v over the real history (q and k unused). Causal (next-item task): row
i averages the real positions <= i; not causal (target task): every candidate gets the mean
over the whole real history."""

from __future__ import annotations

import torch
from torch import nn


class MeanPool(nn.Module):
    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        w = torch.ones_like(v[..., :1]) if key_mask is None else key_mask[:, None, :, None].to(v)
        if causal:
            return torch.cumsum(v * w, dim=2) / torch.cumsum(w, dim=2).clamp_min(1.0)
        pooled = (v * w).sum(2, keepdim=True) / w.sum(2, keepdim=True).clamp_min(1.0)
        return pooled.expand(-1, -1, q.shape[2], -1)
