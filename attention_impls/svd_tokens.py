"""SVD-Attention, reading 2 (``svd_tokens``): softmax over r principal "interest tokens".

[K | V] ~ U diag(S) W^T; the r rows of Z = diag(S) W^T are tokens (Zk: first d columns,
Zv: the rest), and  O = softmax(Q Zk^T / sqrt(d)) Zv. Cost O(N d r) per user plus
O(M r d) per candidate batch. A different operator from dense attention: lossless only in
the sense that U Z reconstructs a rank-r input exactly.

Token scaling (``token_scaling``):
- ``singular``: Z = diag(S) W^T (as in DESIGN.md). Token norms grow like sqrt(N), so the
  softmax over tokens saturates on long sequences.
- ``rms``: Z = diag(S) W^T / sqrt(N_real): tokens on the scale of one behaviour.
Implied weights over behaviours: softmax-over-tokens times U^T (times the scaling):
signed, rows not summing to one. Signs of U columns are fixed so each column sums >= 0.

``backend``: ``torch`` = SDPA over the r tokens (the reference); ``triton`` = one fused
kernel (``kernels/row_mlp.py``); ``auto`` = triton on CUDA when Triton imports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import AttentionOperator, BaseState, Cost, element_size, inv_sqrt, zero_empty_users
from .registry import register
from .svd_exact import (
    check_rank,
    decompose_kv,
    gram_blocks_prove_kv,
    svd_prepare_cost,
    validate_factor_params,
)

SCALINGS = ("singular", "rms")


@dataclass
class SvdTokensState(BaseState):
    zk: torch.Tensor = None  # type: ignore[assignment]  [B,H,r,d] working dtype
    zv: torch.Tensor = None  # type: ignore[assignment]  [B,H,r,dv]
    u: torch.Tensor = None  # type: ignore[assignment]   [B,H,N,r] fp32 (evaluation, reconstruction)
    token_scale: torch.Tensor = None  # type: ignore[assignment]  [B,1,1,1] fp32 factor applied to Z

    def reconstruct(self) -> torch.Tensor:
        """U Z (unscaled) = rank-r approximation of [K | V] in fp32, [B,H,N,d+dv]."""
        z = torch.cat([self.zk.float(), self.zv.float()], dim=-1) / self.token_scale
        return torch.matmul(self.u, z)


@register
class SvdTokensAttention(AttentionOperator):
    name = "svd_tokens"
    PARAMS = {
        "rank": 16,
        "token_scaling": "singular",
        "solver": "gram",
        "oversample": 8,
        "power_iters": 2,
        "seed": 0,
        "backend": "auto",
    }
    supports_causal = False
    weights_are_distribution = False
    description = "softmax over r principal tokens of [K|V] (O(N d r) per user)"

    def label_params(self):
        return ("rank", "token_scaling")

    def _validate_params(self):
        validate_factor_params(self)  # rank, solver, oversample, power_iters, seed
        if self.params["token_scaling"] not in SCALINGS:
            raise ValueError(
                f"{self.name}: unknown token_scaling {self.params['token_scaling']!r}; use one of {', '.join(SCALINGS)}"
            )

    def _inputs_proven_by_state(self, k=None, v=None) -> tuple[str, ...]:
        """K and V through the tokens Z = diag(S) W^T (times a finite scale) on the default
        solver's no-autograd path: a NaN or inf in [K | V] makes every factor NaN there
        (``gram_blocks_prove_kv``), so the tokens' sums are the check; the N x d inputs are
        read again only when that fails (to name the bad one)."""
        return gram_blocks_prove_kv(self, k, v)

    def _state_tensors(self, state: SvdTokensState) -> tuple[torch.Tensor, ...]:
        return (state.zk, state.zv)

    def _check_extra(self, shape, dtype, device):
        return check_rank(self.params["rank"], shape.n, shape.d, shape.value_dim, self.name)

    def _prepare(self, k, v, key_mask):
        f = decompose_kv(self, k, v, key_mask)
        b = k.shape[0]
        if self.params["token_scaling"] == "rms":
            if key_mask is None:
                n_real = torch.full((b,), float(k.shape[2]), device=k.device)
            else:
                n_real = key_mask.sum(dim=1).float().clamp_min(1.0)
            scale = n_real.rsqrt()[:, None, None, None]
        else:
            scale = torch.ones((b, 1, 1, 1), device=k.device)
        z = (f.s[..., :, None] * f.wt) * scale  # [B,H,r,D]
        d = k.shape[-1]
        return SvdTokensState(
            **self._base_state_kwargs(k, v, key_mask),
            zk=z[..., :d].to(k.dtype).contiguous(),
            zv=z[..., d:].to(k.dtype).contiguous(),
            u=f.u,
            token_scale=scale,
        )

    def _attend(self, state: SvdTokensState, q, causal):
        if self._backend(q, state) == "triton":
            from .kernels.row_mlp import svd_tokens_attend

            return svd_tokens_attend(q, state.zk, state.zv, state.empty_users, inv_sqrt(state.d))
        out = torch.nn.functional.scaled_dot_product_attention(
            q, state.zk, state.zv, scale=inv_sqrt(state.d)
        )
        return zero_empty_users(out, state.empty_users)

    def _token_probs(self, state: SvdTokensState, q):
        scores = torch.matmul(q.float(), state.zk.float().transpose(-1, -2)) * inv_sqrt(state.d)
        return torch.softmax(scores, dim=-1)  # [B,H,M,r]

    def _implied_weights_chunk(self, state: SvdTokensState, q, row_offset, causal):
        p = self._token_probs(state, q)
        return torch.matmul(p, state.u.transpose(-1, -2)) * state.token_scale

    def cost_prepare(self, shape, dtype=torch.float32):
        p = self.params
        return svd_prepare_cost(
            shape, p["rank"], p["solver"], p["oversample"], p["power_iters"], dtype
        )

    def cost_attend(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        m, d, dv = shape.m, shape.d, shape.value_dim
        flops = 2 * m * r * d + 5 * m * r + 2 * m * r * dv
        nbytes = es * (m * d + r * (d + dv) + m * dv)
        return Cost(
            float(shape.bh * flops), float(shape.bh * nbytes), float(shape.bh * m * r)
        )  # softmax over r tokens

    def memory_model(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        dd = shape.d + shape.value_dim
        return float(
            shape.bh
            * (4 * shape.n * dd * 2 + 4 * shape.n * r + es * shape.m * (r + shape.value_dim))
        )
