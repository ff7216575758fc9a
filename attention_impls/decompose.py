"""Truncated SVD of the per-user matrix [K | V], three solvers, always in fp32 (or fp64).

X = [K | V]  (N x D, D = d + dv), X ~ U diag(S) W^T with U: N x r. Padded behaviours are
zero rows, which leave the singular values and W unchanged and give zero rows of U.

Solvers:
- ``svd``:     exact thin SVD (``torch.linalg.svd``), O(N D^2).
- ``lowrank``: randomized SVD (``torch.svd_lowrank``) with oversampling and power
               iterations, O(N D (r + p)).
- ``gram``:    eigen-decomposition of the D x D Gram matrix X^T X (formed in fp64 because
               it squares the condition number), O(N D^2) in one GEMM + a tiny eigh;
               fastest when N >> D. Components whose singular value is below 8 eps s_1 are
               dropped (U column and S set to 0): U = X W / S cannot resolve them.
- ``gram_lowrank``: randomized range finder on the Gram matrix: Y = G Omega (D x q,
               q = r + oversample), optional power iterations, an orthonormal basis from the
               eigh of the q x q matrix Y^T Y (robust to rank deficiency), then a
               Rayleigh-Ritz step (eigh of Q^T G Q, q x q). Exact when rank([K|V]) <= q.
               Only q x q eigenproblems: on CUDA, q <= 32 uses cuSOLVER's batched Jacobi
               solver instead of one D x D eigh per (user, head), which dominates ``gram``;
               there q is capped at 32 for r <= 32, and r > 32 falls back to ``gram``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SOLVERS = ("svd", "lowrank", "gram", "gram_lowrank")
# cuSOLVER's batched Jacobi eigh (syevjBatched) serves matrices up to 32 x 32; torch loops
# one eigh per matrix above that (measured on an H100, torch 2.11: 16 fp64 eighs of
# 128 x 128 took 25.9 ms, one took 1.8 ms; 16 of 32 x 32 took 0.3 ms).
BATCHED_EIGH_MAX = 32


@dataclass
class Factors:
    u: torch.Tensor  # [B, H, N, r]  left singular vectors (orthonormal columns, 0 where dropped)
    s: torch.Tensor  # [B, H, r]     singular values, descending
    wt: torch.Tensor  # [B, H, r, D]  right singular vectors as rows (W^T)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def fix_signs(u: torch.Tensor, wt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic signs: each U column gets a non-negative sum (its token points along
    the mean behaviour). U diag(S) W^T is unchanged."""
    sign = torch.sign(u.sum(dim=-2))  # [B, H, r]
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return u * sign[..., None, :], wt * sign[..., :, None]


def truncated_svd(
    x: torch.Tensor,
    rank: int,
    solver: str = "svd",
    oversample: int = 8,
    power_iters: int = 2,
    seed: int = 0,
) -> Factors:
    """Top-``rank`` SVD of ``x`` [B, H, N, D] computed in fp32 (fp64 for fp64 input)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    cd = _compute_dtype(x.dtype)
    x = x.to(cd)
    n, dd = x.shape[-2], x.shape[-1]
    r = min(rank, n, dd)
    if solver == "svd":
        u, s, wt = torch.linalg.svd(x, full_matrices=False)
        u, s, wt = u[..., :r], s[..., :r], wt[..., :r, :]
    elif solver == "lowrank":
        q = min(r + oversample, n, dd)
        lead = x.shape[:-2]
        flat = x.reshape(-1, n, dd)
        # svd_lowrank draws its test matrix from the global RNG: seed it locally so results
        # are reproducible and the caller's RNG stream is untouched.
        devices = [flat.device] if flat.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            u, s, w = torch.svd_lowrank(flat, q=q, niter=power_iters)
        u = u[..., :r].reshape(*lead, n, r)
        s = s[..., :r].reshape(*lead, r)
        wt = w[..., :r].transpose(-1, -2).reshape(*lead, r, dd)
    elif solver == "gram_lowrank" and not (x.device.type == "cuda" and r > BATCHED_EIGH_MAX):
        u, s, wt = _gram_lowrank(x, r, oversample, power_iters, seed, cd)
    else:  # gram (also gram_lowrank on CUDA when r > 32: one D x D eigh beats several q x q)
        # The Gram matrix squares the condition number, so it is formed and decomposed in
        # fp64 (a D x D problem: one GEMM over N plus a tiny eigh); U = X W / S runs in fp32.
        gd = torch.float32 if x.device.type == "mps" else torch.float64
        xg = x.to(gd)
        gram = torch.matmul(xg.transpose(-1, -2), xg)  # [B,H,D,D]
        evals, evecs = torch.linalg.eigh(gram)  # ascending
        evals = evals.flip(-1)[..., :r].clamp_min(0)
        s = evals.sqrt().to(cd)
        w = evecs.flip(-1)[..., :r].to(cd)  # [B,H,D,r]
        # drop components below what U = X W / S can resolve in the compute dtype
        tol = torch.finfo(cd).eps * 8 * s[..., :1]
        keep = s > tol
        s = torch.where(keep, s, torch.zeros_like(s))
        inv = torch.where(keep, 1.0 / s.clamp_min(torch.finfo(cd).tiny), torch.zeros_like(s))
        u = torch.matmul(x, w) * inv[..., None, :]
        wt = w.transpose(-1, -2)
    u, wt = fix_signs(u, wt)
    return Factors(u=u, s=s, wt=wt)


def _gram_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "mps" else torch.float64


def _orthonormal_basis(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of y [..., D, q], q columns (zero where y has fewer
    directions), from q x q eighs only.

    One eigh of y^T y squares y's condition number, and y = G Omega already squares that of
    [K | V]: a direction below about 1e-3 of the largest was dropped (issue 12: V 1500x
    smaller than K was lost whole). So the part of y outside the first basis is
    orthonormalised again on its own scale, made orthogonal to the first basis, the first
    q non-zero columns of both are kept (largest energy first) and orthonormalised once more."""
    q = y.shape[-1]
    b = _eigh_basis(y)
    rest = y - torch.matmul(b, torch.matmul(b.transpose(-1, -2), y))
    b2 = _eigh_basis(rest)
    b2 = _eigh_basis(b2 - torch.matmul(b, torch.matmul(b.transpose(-1, -2), b2)))
    both = torch.cat([b, b2], dim=-1)
    live = (both.norm(dim=-2) > 0.5).to(torch.int8)  # unit columns; zeros where dropped
    order = torch.argsort(live, dim=-1, descending=True, stable=True)[..., :q]  # b's first
    kept = torch.gather(both, -1, order.unsqueeze(-2).expand(*both.shape[:-1], q))
    return _eigh_basis(kept)  # nearly orthonormal already: this pass is accurate


def _eigh_basis(y: torch.Tensor) -> torch.Tensor:
    """One pass: eigh of y^T y; directions with negligible energy are zeroed, not divided by ~0."""
    lam, e = torch.linalg.eigh(torch.matmul(y.transpose(-1, -2), y))
    lam_max = lam[..., -1:].clamp_min(torch.finfo(lam.dtype).tiny)
    keep = lam > lam_max * torch.finfo(lam.dtype).eps * 64
    inv = torch.where(keep, lam.clamp_min(torch.finfo(lam.dtype).tiny).rsqrt(), torch.zeros_like(lam))
    return (torch.matmul(y, e) * inv[..., None, :]).flip(-1)  # largest energy first


def _gram_lowrank(x, r, oversample, power_iters, seed, cd):
    gd = _gram_dtype(x)
    xg = x.to(gd)
    gram = torch.matmul(xg.transpose(-1, -2), xg)  # [..., D, D]
    dd = gram.shape[-1]
    q = min(r + oversample, dd)
    if x.device.type == "cuda" and q > BATCHED_EIGH_MAX >= r:
        q = BATCHED_EIGH_MAX  # stay on the batched eigh path; still exact when rank <= 32
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    omega = torch.randn((dd, q), generator=gen, device=x.device, dtype=gd)
    basis = _orthonormal_basis(torch.matmul(gram, omega))
    for _ in range(power_iters):
        basis = _orthonormal_basis(torch.matmul(gram, basis))
    t = torch.matmul(basis.transpose(-1, -2), torch.matmul(gram, basis))  # [..., q, q]
    evals, evecs = torch.linalg.eigh(t)
    evals = evals.flip(-1)[..., :r].clamp_min(0)
    w = torch.matmul(basis, evecs.flip(-1)[..., :r]).to(cd)  # [..., D, r]
    s = evals.sqrt().to(cd)
    tol = torch.finfo(cd).eps * 8 * s[..., :1]
    keep = s > tol
    s = torch.where(keep, s, torch.zeros_like(s))
    inv = torch.where(keep, 1.0 / s.clamp_min(torch.finfo(cd).tiny), torch.zeros_like(s))
    u = torch.matmul(x, w) * inv[..., None, :]
    return u, s, w.transpose(-1, -2)
