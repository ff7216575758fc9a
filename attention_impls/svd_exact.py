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

Scale and precision (issue 12). The factors are stored balanced: U's columns are scaled to
max |U_ij| = 1 and A, B take the scale (so A, B are on the scale of the rows of [K | V], not
of S ~ sqrt(N) |K|, which overflowed fp16), with one more power of two moved from A, B to U
when a working-dtype A or B would come near the dtype's largest value. ``scores``: ``fp32``
(default) keeps U, A, B and the r-wide softmax in fp32 for fp16/bf16 inputs (the output is
cast back), because rounding Q A^T and U to bf16 puts an error of about 2^-8 |logit| on every
score (issue 12: 0.085-0.113 output error at logits 50-100 against dense's 0.007); ``working`` runs them in
the input dtype (faster on tensor cores, that error included). fp32/fp64 inputs are unaffected.

Gradients (``decompose_kv_fixed_subspace``): at full rank the subspace is held fixed, so
they are dense attention's exactly, for every solver; below full rank they are the true
gradients through the fp64 Gram eigendecomposition (solvers ``gram`` and ``gram_fp64``; the
others refuse backward on K, V with a clear error).

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
from .decompose import SOLVERS, Factors, gram_svd_blocks, truncated_svd
from .dense import softmax_weights
from .grad_rules import check_solver_backward, records_grad
from .registry import register
from .validate import check_choice, check_int, check_seed

SCORES = ("fp32", "working")
POWER_ITERS_MAX = 100  # each iteration is one more pass over [K | V]; accuracy saturates far below


def score_dtype(scores: str, dtype: torch.dtype) -> torch.dtype:
    """dtype of U, A, B and the r-wide softmax for inputs of ``dtype``."""
    if scores == "fp32" and dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def balanced_factors(
    f: Factors, d: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U', A', B') with U' A' ~ K and U' B' ~ V, stored so ``dtype`` holds them. Consumes
    ``f``: U' may be written over ``f.u``.

    fp16 / bf16: U' = c U diag(1 / g) and [A' | B'] = diag(S g) W^T / c with g_j = max_i
    |U_ij|, so U' is in [-1, 1] and A', B' are on the scale of the rows of [K | V]
    (|x_i . w_j| <= |x_i|). fp32 / fp64: g = 1 (U's columns are orthonormal, so U is in
    [-1, 1] already, and S W^T fits: s_1 is finite whenever the decomposition was); this
    saves a copy of U and two reductions over it (measured 8 % of prepare at N = 4096).
    c is a power of two (per user and head, no host sync) >= 1 that keeps A', B' below 1/64
    of ``dtype``'s largest value; U' <= c stays far inside it. On CPU, where reading a value
    costs no sync, c = 1 (every user's A', B' already fit) skips its five small ops. Every
    U' column gets a non-negative sum (the sign convention of ``fix_signs``)."""
    # U is the only N-long factor: one multiply for U' (the signs folded in; the sum over N
    # is cheap), and for narrow dtypes g from a contiguous copy of U^T (a max over the
    # strided N axis took 0.73 ms for a 16384 x 16 U, over the copy 0.39 ms) as max(max,
    # -min): no N x r temporary |U|, whose fresh pages cost more than the max itself (0.36
    # against 0.96 ms at N = 16384)
    sign = torch.where(f.u.sum(dim=-2) >= 0, 1.0, -1.0)  # [B,H,r]
    if dtype.itemsize >= 4:
        col = sign  # U' = U diag(sign)
        sw = (f.s * sign)[..., :, None] * f.wt  # [B,H,r,D]
    else:
        ut = f.u.mT.contiguous()
        g = torch.maximum(ut.amax(dim=-1), ut.amin(dim=-1).neg())
        g = g.clamp_min(torch.finfo(f.u.dtype).tiny)  # [B,H,r]
        col = sign / g
        sw = (f.s * g * sign)[..., :, None] * f.wt
    limit = torch.finfo(dtype).max / 64
    big = sw.abs().amax(dim=(-1, -2), keepdim=True)  # [B,H,1,1]
    # U' in place on U when autograd does not need U (the solver's fresh product; its N x r
    # pages are not allocated twice), else a new tensor
    in_place = not f.u.requires_grad and f.u.is_contiguous()
    # c = 1 everywhere (a CPU read costs no sync)
    if sw.device.type == "cpu" and float(big.detach().max()) <= limit:
        scale = col[..., None, :]
        return (f.u.mul_(scale) if in_place else f.u * scale), sw[..., :d], sw[..., d:]
    c = torch.exp2(torch.ceil(torch.log2(big / limit))).clamp_min(1.0)
    scale = c * col[..., None, :]
    return (f.u.mul_(scale) if in_place else f.u * scale), sw[..., :d] / c, sw[..., d:] / c


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


def check_causal_rank(rank: int, shape: Shape, name: str) -> list[str]:
    """Causal needs the full rank: a truncated subspace comes from all N positions, so the
    future keys / values would move the past rows' outputs (issue 16)."""
    limit = min(shape.n, shape.d + shape.value_dim)
    if shape.causal and rank < limit:
        return [
            f"{name}: causal needs rank = min(N, d_k + d_v) = {limit} (got rank {rank}): a truncated "
            "subspace is fitted on all N positions and would leak the future into earlier rows"
        ]
    return []


def validate_rank_param(rank: object, name: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"{name}: rank must be an int >= 1, got {rank!r}")
    if rank < 1:
        raise ValueError(f"{name}: rank must be >= 1, got {rank}")


def validate_factor_params(op: AttentionOperator) -> None:
    """rank, solver, oversample, power_iters, seed: shared by svd_exact and svd_tokens."""
    p = op.params
    validate_rank_param(p["rank"], op.name)
    check_choice(op.name, "solver", p["solver"], SOLVERS)
    check_int(op.name, "oversample", p["oversample"], 0)
    check_int(op.name, "power_iters", p["power_iters"], 0, POWER_ITERS_MAX)
    check_seed(op.name, p["seed"])


def kv_matrix(k: torch.Tensor, v: torch.Tensor, key_mask) -> torch.Tensor:
    """X = [K | V] with padded behaviours zeroed: the matrix every solver decomposes."""
    return torch.cat([zero_padded(k, key_mask), zero_padded(v, key_mask)], dim=-1)


def gram_blocks_prove_kv(op: AttentionOperator, k, v) -> tuple[str, ...]:
    """``("k", "v")`` where ``decompose_kv`` runs the default solver's no-autograd path
    (``gram_svd_blocks``), else ``()``: that path forms the Gram of [K | V] (padded rows
    multiplied by 0, which keeps a NaN or inf non-finite), whose diagonal sums the squares of
    every value, and a non-finite diagonal gives NaN factors, so every factor (S, and what
    svd_exact and svd_tokens make of S W^T) is non-finite. Other solvers and autograd's fp64
    route would raise inside their decomposition first: there K and V get their own pass."""
    if op.params["solver"] != "gram":
        return ()
    if not (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        return ()
    if k.device.type == "mps" or records_grad(k, v):
        return ()
    return ("k", "v")


def decompose_kv(
    op: AttentionOperator, k: torch.Tensor, v: torch.Tensor, key_mask, signs: bool = True
) -> Factors:
    """Truncated SVD of [K | V] (padded keys zeroed). When autograd records K or V, only the
    fp64 Gram route has a tested backward: ``gram`` runs as ``gram_fp64`` then, and the other
    solvers refuse (``grad_rules``). ``gram`` without autograd works on the two blocks
    (``gram_svd_blocks``: no [K | V] copy); ``signs=False`` lets it leave the sign
    convention to the caller (``balanced_factors`` applies it in its own pass over U)."""
    p = op.params
    solver = p.get("solver", "svd")
    check_solver_backward(op.name, solver, k, v)
    if solver == "gram" and records_grad(k, v):
        solver = "gram_fp64"
    if solver == "gram" and k.device.type != "mps":
        return gram_svd_blocks(
            zero_padded(k, key_mask),
            zero_padded(v, key_mask),
            p["rank"],
            p.get("oversample", 8),
            signs=signs,
        )
    return truncated_svd(
        kv_matrix(k, v, key_mask),
        p["rank"],
        solver,
        p.get("oversample", 8),
        p.get("power_iters", 2),
        p.get("seed", 0),
    )


def decompose_kv_fixed_subspace(
    op: AttentionOperator, k: torch.Tensor, v: torch.Tensor, key_mask
) -> Factors:
    """``decompose_kv`` for svd_exact, with the gradient rule of the module docstring.

    Without gradients: the solver's factors. With gradients at full rank (r = min(N, D)): the
    solver runs on detached inputs and U = X W^T / S is re-derived from X, so U diag(S) W^T = X
    and the gradients are dense attention's exactly, for every solver (autograd through eigh
    / SVD divides by eigenvalue gaps: NaN on rank-deficient inputs, 1e-3 error at full rank on
    ill-conditioned ones). With gradients below full rank the subspace itself depends on K, V:
    the true gradient goes through the fp64 Gram eigendecomposition (``gram_fp64``, held to
    fp64 gradcheck with padded users in tests/test_operators_grad.py), which the ``gram``
    solvers use; the others refuse (``grad_rules.check_solver_backward``)."""
    full = min(k.shape[-2], k.shape[-1] + v.shape[-1])
    if not records_grad(k, v) or op.params["rank"] < full:
        return decompose_kv(op, k, v, key_mask, signs=False)
    if k.shape[-2] == full:  # N <= D: X = I X is its own full-rank factorisation
        x = kv_matrix(k, v, key_mask)
        eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device).expand(*x.shape[:-2], -1, -1)
        return Factors(u=eye, s=torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device), wt=x)
    with torch.no_grad():
        f = decompose_kv(op, k.detach(), v.detach(), key_mask, signs=False)
    x = kv_matrix(k, v, key_mask).to(f.u.dtype)
    # N > D: W is a complete basis of the D columns. A zero singular value (a padded or
    # rank-deficient user) gets S = 1 there: U S W^T stays X W W^T = X and its derivative
    # dX W W^T = dX, where U = 0 with S = 0 would drop the directions a perturbation of X
    # moves into.
    s = torch.where(f.s > 0, f.s, torch.ones_like(f.s))
    u = torch.matmul(x, f.wt.transpose(-1, -2)) / s[..., None, :]
    return Factors(u=u, s=s, wt=f.wt)


def svd_prepare_cost(
    shape: Shape, rank: int, solver: str, oversample: int, power_iters: int, dtype
) -> Cost:
    n, dd, bh = shape.n, shape.d + shape.value_dim, shape.bh
    es = element_size(dtype)
    if solver == "svd":
        flops = 4 * n * dd * dd + 22 * dd**3
    elif solver == "lowrank":
        q = min(rank + oversample, n, dd)
        flops = 2 * n * dd * q * (2 + 2 * power_iters) + 4 * n * q * q + 22 * q**3
    elif solver == "gram_lowrank":
        q = min(rank + oversample, dd)
        flops = (
            2 * n * dd * dd + 2 * dd * dd * q * (2 + power_iters) + 20 * q**3 + 2 * n * dd * rank
        )
    elif solver == "gram" and min(rank + oversample, dd) < dd:  # fp32 Gram + refinement
        q = min(rank + oversample, dd)
        flops = (
            2 * n * dd * dd
            + 9 * dd**3
            + 6 * n * dd * q
            + 2 * n * q * q
            + 2 * n * q * rank
            + 40 * q**3
        )
    else:  # gram_fp64 (and gram when r + oversample >= D)
        flops = 2 * n * dd * dd + 9 * dd**3 + 2 * n * dd * rank
    nbytes = es * n * dd + 4 * n * dd + es * n * rank  # read inputs, fp32 copy, write U
    return Cost(float(bh * flops), float(bh * nbytes))


@register
class SvdExactAttention(AttentionOperator):
    name = "svd_exact"
    PARAMS = {
        "rank": 16,
        "solver": "gram",
        "oversample": 8,
        "power_iters": 2,
        "seed": 0,
        "backend": "auto",
        "scores": "fp32",
    }
    supports_causal = True
    weights_are_distribution = True
    description = "softmax over all N behaviours with scores in the rank-r subspace of [K|V]"

    def label_params(self):
        extra = ("scores",) if self.params["scores"] != self.PARAMS["scores"] else ()
        return ("rank", "solver", *extra)

    def _validate_params(self) -> None:
        validate_factor_params(self)
        check_choice(self.name, "scores", self.params["scores"], SCORES)

    def _inputs_proven_by_state(self, k=None, v=None) -> tuple[str, ...]:
        return gram_blocks_prove_kv(self, k, v)

    def _state_tensors(self, state: SvdExactState) -> tuple[torch.Tensor, ...]:
        return (state.s,)

    def _check_extra(self, shape, dtype, device):
        reasons = check_rank(self.params["rank"], shape.n, shape.d, shape.value_dim, self.name)
        return reasons + check_causal_rank(self.params["rank"], shape, self.name)

    def _prepare(self, k, v, key_mask):
        f = decompose_kv_fixed_subspace(self, k, v, key_mask)
        dt = score_dtype(self.params["scores"], k.dtype)
        u, a, b = balanced_factors(f, k.shape[-1], dt)
        r = u.shape[-1]
        if k.device.type == "cuda":
            rp = int(math.ceil(r / 8) * 8)
            if rp != r:
                pad = rp - r
                u = torch.nn.functional.pad(u, (0, pad))
                a = torch.nn.functional.pad(a, (0, 0, 0, pad))
                b = torch.nn.functional.pad(b, (0, 0, 0, pad))
        return SvdExactState(
            **self._base_state_kwargs(k, v, key_mask),
            u=u.to(dt).contiguous(),
            a=a.to(dt).contiguous(),
            b=b.to(dt).contiguous(),
            s=f.s,
            rank=r,
        )

    def _attend(self, state: SvdExactState, q, causal):
        qs = q.to(state.u.dtype)  # fp32 scores for fp16/bf16 input unless scores="working"
        if self._backend(q, state) == "triton":  # one fused kernel: Q A^T, softmax over U, then B
            from .kernels.flash_small_head import flash_small_head

            out = flash_small_head(
                qs,
                state.u,
                None,
                scale=inv_sqrt(state.d),
                key_mask=state.key_mask,
                causal=causal,
                q_proj=state.a,
                out_proj=state.b,
            )
            return out.to(q.dtype)
        qa = torch.matmul(qs, state.a.transpose(-1, -2))  # [B,H,M,rp]
        o = masked_sdpa(
            qa, state.u, state.u, state.key_mask, state.empty_users, causal, scale=inv_sqrt(state.d)
        )
        return torch.matmul(o, state.b).to(q.dtype)

    def _implied_weights_chunk(self, state: SvdExactState, q, row_offset, causal):
        qa = torch.matmul(q.float(), state.a.float().transpose(-1, -2))
        return softmax_weights(
            qa, state.u.float(), state.key_mask, inv_sqrt(state.d), causal, row_offset
        )

    def cost_prepare(self, shape, dtype=torch.float32):
        p = self.params
        return svd_prepare_cost(
            shape, p["rank"], p["solver"], p["oversample"], p["power_iters"], dtype
        )

    def cost_attend(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        fs = element_size(score_dtype(self.params["scores"], dtype))  # U, A, B
        m, n, d, dv, bh = shape.m, shape.n, shape.d, shape.value_dim, shape.bh
        frac = 0.5 if shape.causal else 1.0
        flops = 2 * m * d * r + frac * (4 * m * n * r + 5 * m * n) + 2 * m * r * dv
        nbytes = es * (m * d + m * dv) + fs * (r * d + n * r + r * dv)
        exps = frac * m * n  # exact softmax over all N: the M x N exponentials remain
        return Cost(float(bh * flops), float(bh * nbytes), float(bh * exps))

    def memory_model(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        fs = element_size(score_dtype(self.params["scores"], dtype))
        dd = shape.d + shape.value_dim
        prep = 4 * shape.n * dd * 2 + fs * shape.n * r  # fp32 [K|V] + factors + U
        att = (
            fs * shape.m * (shape.d + r * 2 + shape.value_dim)
            + es * shape.m * shape.value_dim
            + 8 * shape.m
        )
        return float(shape.bh * (prep + att))
