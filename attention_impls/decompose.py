"""Truncated SVD of the per-user matrix [K | V], five solvers, always in fp32 (or fp64).

X = [K | V]  (N x D, D = d + dv), X ~ U diag(S) W^T with U: N x r. Padded behaviours are
zero rows, which leave the singular values and W unchanged and give zero rows of U.

Solvers:
- ``svd``:     exact thin SVD (``torch.linalg.svd``), O(N D^2).
- ``lowrank``: randomized SVD (``torch.svd_lowrank``) with oversampling and power
               iterations, O(N D (r + p)).
- ``gram``:    (default) eigen-decomposition of the D x D Gram matrix X^T X formed in fp32.
               When its spectrum certifies that fp32 was enough (lambda_r and the gap after
               it at least lambda_1 / 16: the rounding then tilts the subspace by ~1e-6),
               U = X W / S as in the plain route. Otherwise one refinement pass that
               restores what the fp32 Gram loses (it squares the condition number, so
               directions below about sqrt(eps) s_1 are noise and the top-r subspace is
               tilted by eps s_1^2 / s_r^2): with q = r + oversample
               eigenvectors W0, one subspace step Z = X^T (X W0) (orthonormalised, D x q),
               then Rayleigh-Ritz on Y = X Z with U re-orthogonalised: Y's columns are scaled
               to unit norm, the q x q Gram of those (well conditioned) is eigendecomposed in
               fp64 and the small q x q SVD of the remaining factor gives S, U and W. Cost
               O(N D^2) for the Gram + 3 O(N D q) products, against the fp64 Gram's one fp64
               O(N D^2) product. When q >= D (and the certificate fails) there is no
               subspace to refine and the fp64 Gram route below runs (measured faster than
               refining all D columns: 34 against 43 ms at N = 16384, D = 128).
- ``gram_fp64``: the previous default: the Gram formed and decomposed in fp64, U = X W / S in
               fp32. Components whose singular value is below 8 eps s_1 are dropped (U column
               and S set to 0): U = X W / S cannot resolve them (so do ``gram``).
- ``gram_lowrank``: randomized range finder on the Gram matrix: Y = G Omega (D x q,
               q = r + oversample), optional power iterations, an orthonormal basis from the
               eigh of the q x q matrix Y^T Y (robust to rank deficiency), then a
               Rayleigh-Ritz step (eigh of Q^T G Q, q x q). Exact when rank([K|V]) <= q.
               Only q x q eigenproblems: on CUDA, q <= 32 uses cuSOLVER's batched Jacobi
               solver instead of one D x D eigh per (user, head), which dominates ``gram``;
               there q is capped at 32 for r <= 32, and r > 32 falls back to ``gram_fp64``.
               q >= D falls back to ``gram_fp64`` too (the range finder would span everything;
               its rank-deficient q x q eighs had no usable gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SOLVERS = ("svd", "lowrank", "gram", "gram_fp64", "gram_lowrank")
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
    elif solver == "gram_lowrank" and not (
        (x.device.type == "cuda" and r > BATCHED_EIGH_MAX) or min(r + oversample, dd) >= dd
    ):
        u, s, wt = _gram_lowrank(x, r, oversample, power_iters, seed, cd)
    elif solver == "gram" and x.device.type != "mps":
        u, s, wt = _gram(x, r, min(r + oversample, dd), cd)
    else:  # gram_fp64; gram when q >= D; gram_lowrank on CUDA when r > 32 or q >= D
        u, s, wt = _gram_fp64(x, r, cd)
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
    inv = torch.where(
        keep, lam.clamp_min(torch.finfo(lam.dtype).tiny).rsqrt(), torch.zeros_like(lam)
    )
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


def _drop_unresolved(s: torch.Tensor, cd: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(S with components below 8 eps s_1 set to 0, 1/S there and 0 elsewhere)."""
    keep = (s > torch.finfo(cd).eps * 8 * s[..., :1]).to(s.dtype)
    s = s * keep
    return s, keep / s.clamp_min(torch.finfo(cd).tiny)


def _gram_fp64(x: torch.Tensor, r: int, cd: torch.dtype):
    """The Gram matrix squares the condition number, so it is formed and decomposed in fp64
    (a D x D problem: one GEMM over N plus a tiny eigh); U = X W / S runs in fp32."""
    xg = x.to(_gram_dtype(x))
    gram = torch.matmul(xg.transpose(-1, -2), xg)  # [B,H,D,D]
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    s = evals.flip(-1)[..., :r].clamp_min(0).sqrt().to(cd)
    w = evecs.flip(-1)[..., :r].to(cd)  # [B,H,D,r]
    s, inv = _drop_unresolved(s, cd)
    return torch.matmul(x, w) * inv[..., None, :], s, w.transpose(-1, -2)


# The plain fp32 Gram route is trusted when lambda_r and the gap lambda_r - lambda_{r+1} are
# at least lambda_1 / PLAIN_GRAM_RATIO: its rounding (about eps lambda_1) then tilts the top-r
# subspace and U's orthogonality by at most eps * PLAIN_GRAM_RATIO ~ 1e-6.
PLAIN_GRAM_RATIO = 16.0


def plain_gram_is_enough(evals_desc: torch.Tensor, r: int) -> bool:
    """True when every (user, head) of the fp32 Gram's eigenvalues (descending, [..., D]) has
    its r-th eigenvalue and the gap after it above lambda_1 / PLAIN_GRAM_RATIO (see above;
    with lambda_{r+1} clamped at 0 the gap condition implies the first). One decision per
    batch (one host sync on CUDA): a batch with one uncertified matrix is refined whole."""
    lam1 = evals_desc[..., :1].clamp_min(torch.finfo(evals_desc.dtype).tiny)
    gap = evals_desc[..., r - 1 : r]
    if evals_desc.shape[-1] > r:
        gap = gap - evals_desc[..., r : r + 1].clamp_min(0)
    return bool((gap * PLAIN_GRAM_RATIO >= lam1).all())


def _gram(x: torch.Tensor, r: int, q: int, cd: torch.dtype):
    """The default: fp32 Gram + eigh; U = X W / S directly when the spectrum certifies that
    fp32 was enough (``plain_gram_is_enough``), else one refinement (``_gram_refined``), or
    the fp64 Gram when q >= D leaves no subspace to refine."""
    gram = torch.matmul(x.transpose(-1, -2), x)  # [B,H,D,D] in the compute dtype
    return _gram_solve(gram, lambda w: torch.matmul(x, w), lambda: x, r, q, cd)


def _gram_solve(gram, times_x, make_x, r: int, q: int, cd: torch.dtype):
    """``_gram`` from the fp32 Gram of X: ``times_x(w)`` = X w, ``make_x()`` = X (only built
    when the certificate fails: the refinement multiplies by X several times)."""
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals = evals.flip(-1)  # descending; of the vectors only the top ones are flipped below
    if plain_gram_is_enough(evals, r):
        s, inv = _drop_unresolved(evals[..., :r].clamp_min(0).sqrt(), cd)
        w = evecs[..., -r:].flip(-1)
        return times_x(w * inv[..., None, :]), s, w.transpose(-1, -2)  # scale W, not N x r U
    x = make_x()
    if q >= x.shape[-1]:
        return _gram_fp64(x, r, cd)
    return _gram_refined(x, evecs[..., -q:].flip(-1), r, q, cd)


def gram_svd_blocks(
    k: torch.Tensor, v: torch.Tensor, rank: int, oversample: int = 8, signs: bool = True
) -> Factors:
    """The ``gram`` solver on X = [K | V] given as its two blocks, without forming X: the
    Gram from three block products (K^T K, K^T V, V^T V: 3/4 of X^T X's flops, no N x D
    copy; measured 5.0 against 6.5 ms at N = 16384, d = dv = 64, one CPU thread) and
    U = K W_K / S + V W_V / S. X is built only when the fp32 Gram is not certified (the
    refinement multiplies by X several times). ``signs=False`` leaves the signs to the caller
    (``fix_signs``), who may fold them into a pass over U it makes anyway.

    Its diagonal (the squared column norms of X) is finite exactly when every value of X is
    finite and no column's sum of squares overflows; otherwise the factors are NaN (no eigh,
    which would raise), so S proves [K | V] finite (``svd_exact._inputs_proven_by_state``)."""
    cd = _compute_dtype(k.dtype)
    k, v = k.to(cd), v.to(cd)
    n, d, dd = k.shape[-2], k.shape[-1], k.shape[-1] + v.shape[-1]
    r = min(rank, n, dd)
    kt = k.transpose(-1, -2)
    ktv = torch.matmul(kt, v)
    gram = torch.cat(
        [
            torch.cat([torch.matmul(kt, k), ktv], dim=-1),
            torch.cat([ktv.transpose(-1, -2), torch.matmul(v.transpose(-1, -2), v)], dim=-1),
        ],
        dim=-2,
    )
    diag = gram.diagonal(dim1=-2, dim2=-1)
    if not math.isfinite(diag.sum().item()) and not bool(torch.isfinite(diag).all()):
        # a NaN or inf anywhere in X (or squares beyond the dtype's range): eigh would raise;
        # NaN factors instead, so the caller can find and name the bad input
        nan = float("nan")
        return Factors(
            u=torch.full((*k.shape[:-1], r), nan, dtype=cd, device=k.device),
            s=torch.full((*k.shape[:-2], r), nan, dtype=cd, device=k.device),
            wt=torch.full((*k.shape[:-2], r, dd), nan, dtype=cd, device=k.device),
        )

    def times_x(w: torch.Tensor) -> torch.Tensor:  # K W_K + V W_V, the sum in place
        u = torch.matmul(k, w[..., :d, :])
        if u.is_contiguous() and v.is_contiguous():  # one batched multiply-add (measured
            flat = u.view(-1, n, u.shape[-1])  # 1.0 against 1.2 ms for matmul + add_ at
            wv = w[..., d:, :].expand(*v.shape[:-2], -1, -1)  # N = 16384, r = 16)
            flat.baddbmm_(v.view(-1, n, v.shape[-1]), wv.reshape(-1, *wv.shape[-2:]))
            return u
        return u.add_(torch.matmul(v, w[..., d:, :]))

    u, s, wt = _gram_solve(
        gram, times_x, lambda: torch.cat([k, v], dim=-1), r, min(r + oversample, dd), cd
    )
    if signs:
        u, wt = fix_signs(u, wt)
    return Factors(u=u, s=s, wt=wt)


def _gram_refined(x: torch.Tensor, w0: torch.Tensor, r: int, q: int, cd: torch.dtype):
    """From the fp32 Gram's top-q eigenvectors w0 [B,H,D,q]: one subspace step, Rayleigh-Ritz
    with U re-orthogonalised (module docstring). Small problems (D x q QR, q x q eigh and SVD)
    run in fp64; they cost nothing next to the N-long products."""
    # one subspace step: the fp32 Gram tilts the top-q span by eps s_1^2 / s_q^2; X^T (X W0)
    # is formed from products with X itself (error eps s_1 s_j per column), which cuts that
    # to about eps s_1 / s_j. The reduced QR of the D x q result is a tiny fp64 problem.
    z = torch.matmul(x.transpose(-1, -2), torch.matmul(x, w0))
    w1 = torch.linalg.qr(z.double())[0]  # [B,H,D,q] fp64, orthonormal
    y = torch.matmul(x, w1.to(cd))  # [B,H,N,q]
    # Rayleigh-Ritz with U re-orthogonalised: with Y's columns scaled to unit norm the q x q
    # Gram is well conditioned, and its fp32 rounding is relative to each column, not to
    # s_1^2 (scaling Y^T Y after the product rounds the same as scaling Y before it)
    yty = torch.matmul(y.transpose(-1, -2), y).double()  # [B,H,q,q]
    norms = yty.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()  # [B,H,q]
    eps = torch.finfo(cd).eps
    live = norms > norms.amax(-1, keepdim=True) * eps * 8  # columns above rounding noise
    inv_n = torch.where(
        live, 1.0 / norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(norms)
    )
    lam, e = torch.linalg.eigh(inv_n[..., :, None] * yty * inv_n[..., None, :])
    # keep every direction the fp64 eigh resolves: a nearly dependent pair of noisy columns
    # still carries its (tiny) share of X, and dropping it at fp32's eps cost 4e-6 of X
    ok = (
        lam
        > lam[..., -1:].clamp_min(torch.finfo(lam.dtype).tiny) * torch.finfo(lam.dtype).eps * 64 * q
    )
    lam = torch.where(ok, lam, torch.ones_like(lam))  # excluded below; avoids 0 * inf
    root, inv_root = lam.sqrt() * ok, lam.rsqrt() * ok
    # Y diag(1/n) = Q diag(root) E^T with Q orthonormal, so Y = Q M, M = diag(root) E^T diag(n);
    # the SVD of the small M = P S Z^T gives X W1 = (Q P) S Z^T
    m = root[..., :, None] * e.transpose(-1, -2) * norms[..., None, :]  # [B,H,q,q]
    p, sig, zt = torch.linalg.svd(m, full_matrices=False)
    s, _ = _drop_unresolved(sig[..., :r].to(cd), cd)
    coef = inv_n[..., :, None] * torch.matmul(
        e * inv_root[..., None, :], p[..., :r]
    )  # Q P = Y coef
    u = torch.matmul(y, (coef * (s > 0).double()[..., None, :]).to(cd))  # [B,H,N,r]
    wt = torch.matmul(zt[..., :r, :], w1.transpose(-1, -2)).to(cd)  # [B,H,r,D]
    return u, s, wt
