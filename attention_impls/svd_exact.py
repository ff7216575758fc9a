"""SVD-Attention, reading 1 (``svd_exact``): softmax over all N behaviours, scores in the
rank-r subspace of [K | V].

[K | V] ~ U diag(S) W^T (U: N x r) gives K ~ U A, V ~ U B with [A | B] = diag(S) W^T. Then
    O = softmax((Q A^T) U^T / sqrt(d)) U B,
i.e. fused attention with head dimension r (queries Q A^T, keys U, values U) followed by
one (M x r)(r x dv) product. Exactly dense attention when rank([K | V]) <= r; otherwise
KL(P || P_r) <= 2 s_{r+1} max ||q|| / sqrt(d).

The SVD runs once per user in ``prepare`` (fp32) and is reused for every candidate batch.
On CUDA the subspace dimension is zero-padded to a multiple of 8 so SDPA can pick its
fused kernels; zero columns change nothing.

``backend``: ``torch`` = Q A^T, SDPA with head dimension r, then (.) B (three launches);
``triton`` = all of it in one fused kernel (``kernels/flash_small_head.py``), held to the
torch path by the tests; ``auto`` = triton on CUDA when Triton imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import (
    AttentionOperator,
    BaseState,
    Cost,
    Shape,
    element_size,
    inv_sqrt,
    masked_sdpa,
    zero_padded,
)
from .decompose import SOLVERS, Factors, truncated_svd
from .dense import softmax_weights
from .registry import register


@dataclass
class SvdExactState(BaseState):
    u: torch.Tensor = None  # type: ignore[assignment]   [B,H,N,rp] working dtype
    a: torch.Tensor = None  # type: ignore[assignment]   [B,H,rp,d]
    b: torch.Tensor = None  # type: ignore[assignment]   [B,H,rp,dv]
    s: torch.Tensor = None  # type: ignore[assignment]   [B,H,r] fp32 singular values
    rank: int = 0


def check_rank(rank: int, n: int, d: int, dv: int, name: str) -> list[str]:
    limit = min(n, d + dv)
    if rank > limit:
        return [
            f"{name}: rank {rank} is larger than the data allows: min(N, d_k + d_v) = "
            f"min({n}, {d + dv}) = {limit}"
        ]
    return []


def validate_rank_param(rank: object, name: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"{name}: rank must be an int >= 1, got {rank!r}")
    if rank < 1:
        raise ValueError(f"{name}: rank must be >= 1, got {rank}")


def decompose_kv(op: AttentionOperator, k: torch.Tensor, v: torch.Tensor, key_mask) -> Factors:
    x = torch.cat([zero_padded(k, key_mask), zero_padded(v, key_mask)], dim=-1)
    p = op.params
    return truncated_svd(
        x, p["rank"], p.get("solver", "svd"), p.get("oversample", 8), p.get("power_iters", 2), p.get("seed", 0)
    )


def svd_prepare_cost(shape: Shape, rank: int, solver: str, oversample: int, power_iters: int, dtype) -> Cost:
    n, dd, bh = shape.n, shape.d + shape.value_dim, shape.bh
    es = element_size(dtype)
    if solver == "svd":
        flops = 4 * n * dd * dd + 22 * dd**3
    elif solver == "lowrank":
        q = min(rank + oversample, n, dd)
        flops = 2 * n * dd * q * (2 + 2 * power_iters) + 4 * n * q * q + 22 * q**3
    elif solver == "gram_lowrank":
        q = min(rank + oversample, dd)
        flops = 2 * n * dd * dd + 2 * dd * dd * q * (2 + power_iters) + 20 * q**3 + 2 * n * dd * rank
    else:
        flops = 2 * n * dd * dd + 9 * dd**3 + 2 * n * dd * rank
    nbytes = es * n * dd + 4 * n * dd + es * n * rank  # read inputs, fp32 copy, write U
    return Cost(float(bh * flops), float(bh * nbytes))


@register
class SvdExactAttention(AttentionOperator):
    name = "svd_exact"
    PARAMS = {"rank": 16, "solver": "gram", "oversample": 8, "power_iters": 2, "seed": 0,
              "backend": "auto"}
    supports_causal = True
    weights_are_distribution = True
    description = "softmax over all N behaviours with scores in the rank-r subspace of [K|V]"

    def label_params(self):
        return ("rank", "solver")

    def _validate_params(self) -> None:
        validate_rank_param(self.params["rank"], self.name)
        if self.params["solver"] not in SOLVERS:
            raise ValueError(
                f"{self.name}: unknown solver {self.params['solver']!r}; use one of {', '.join(SOLVERS)}"
            )
        for key in ("oversample", "power_iters"):
            val = self.params[key]
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ValueError(f"{self.name}: {key} must be an int >= 0, got {val!r}")

    def _check_extra(self, shape, dtype, device):
        return check_rank(self.params["rank"], shape.n, shape.d, shape.value_dim, self.name)

    def _prepare(self, k, v, key_mask):
        f = decompose_kv(self, k, v, key_mask)
        d = k.shape[-1]
        sw = f.s[..., :, None] * f.wt  # [B,H,r,D] = diag(S) W^T
        a, b, u = sw[..., :d], sw[..., d:], f.u
        r = u.shape[-1]
        if k.device.type == "cuda":
            rp = int(math.ceil(r / 8) * 8)
            if rp != r:
                pad = rp - r
                u = torch.nn.functional.pad(u, (0, pad))
                a = torch.nn.functional.pad(a, (0, 0, 0, pad))
                b = torch.nn.functional.pad(b, (0, 0, 0, pad))
        dt = k.dtype
        return SvdExactState(
            **self._base_state_kwargs(k, v, key_mask),
            u=u.to(dt).contiguous(),
            a=a.to(dt).contiguous(),
            b=b.to(dt).contiguous(),
            s=f.s,
            rank=r,
        )

    def _attend(self, state: SvdExactState, q, causal):
        if self._backend(q) == "triton":  # one fused kernel: Q A^T, softmax over U, then B
            from .kernels.flash_small_head import flash_small_head

            return flash_small_head(q, state.u, None, scale=inv_sqrt(state.d), key_mask=state.key_mask,
                                    causal=causal, q_proj=state.a, out_proj=state.b)
        qa = torch.matmul(q, state.a.transpose(-1, -2))  # [B,H,M,rp]
        o = masked_sdpa(qa, state.u, state.u, state.key_mask, state.empty_users, causal, scale=inv_sqrt(state.d))
        return torch.matmul(o, state.b)

    def _implied_weights_chunk(self, state: SvdExactState, q, row_offset, causal):
        qa = torch.matmul(q.float(), state.a.float().transpose(-1, -2))
        return softmax_weights(qa, state.u.float(), state.key_mask, inv_sqrt(state.d), causal, row_offset)

    def cost_prepare(self, shape, dtype=torch.float32):
        p = self.params
        return svd_prepare_cost(shape, p["rank"], p["solver"], p["oversample"], p["power_iters"], dtype)

    def cost_attend(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        m, n, d, dv, bh = shape.m, shape.n, shape.d, shape.value_dim, shape.bh
        frac = 0.5 if shape.causal else 1.0
        flops = 2 * m * d * r + frac * (4 * m * n * r + 5 * m * n) + 2 * m * r * dv
        nbytes = es * (m * d + r * d + n * r + r * dv + m * dv)
        exps = frac * m * n  # exact softmax over all N: the M x N exponentials remain
        return Cost(float(bh * flops), float(bh * nbytes), float(bh * exps))

    def memory_model(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        dd = shape.d + shape.value_dim
        prep = 4 * shape.n * dd * 2 + es * shape.n * r  # fp32 [K|V] + factors + U
        att = es * shape.m * (r * 2 + shape.value_dim) + 8 * shape.m
        return float(shape.bh * (prep + att))
