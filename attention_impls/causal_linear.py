"""Causal (self-attention, next-item) forms of the linear-attention methods LinRec and Performer.

Row i sees only behaviours j <= i. Linear attention turns that into prefix sums over j of
rank-one states (phi(k_j) v_j^T); they are computed chunk by chunk (``chunk`` rows): inside a
chunk the C x C masked products, across chunks one running state, so memory stays
O(C^2 + C m + m dv) per (user, head) instead of an N x N matrix or N states.

LinRec:    O_i = q^_i (sum_{j<=i} k^_j^T v_j) / sqrt(d)        (no denominator)
Performer: O_i = sum_{j<=i} phi_i(k_j) v_j / sum_{j<=i} phi_i(k_j) . phi(q_i)
           phi_i(k_j) = exp(z_j - c_i) + eps,  c_i = max over real j' <= i and features of z_j'
The non-causal Performer stabilises keys with one max over all N keys; the eps floor does
not scale with it, so that max would carry the future into every row. Here the stabiliser
is the prefix max c_i (only the past), and the last row equals the non-causal output.
Across chunks the running state is held relative to the max so far and rescaled by
exp(c_prev - c_i) <= 1; inside a chunk exp(z_j - c_i) = exp(z_j - m_j) exp(m_j - c_i) with
m_j the key's own max, both factors <= 1, so nothing overflows.

Computed in fp32 (fp64 for fp64 input); padded behaviours are invisible; a row that sees no
real behaviour gets zeros. ``*_reference`` are the plain O(N^2)-masked forms the tests hold
the chunked ones to (forward and backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 64
NEG = -1e30  # "no key yet" for the stabiliser: finite, so differences stay finite


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def real_mask(key_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """[B,1,N,1] in like's dtype: 1 for a real behaviour, 0 for padding."""
    b, _, n, _ = like.shape
    if key_mask is None:
        return torch.ones((b, 1, n, 1), dtype=like.dtype, device=like.device)
    return key_mask[:, None, :, None].to(like.dtype)


def check_chunk(chunk: int) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")


# ----------------------------------------------------------------------------- LinRec


def linrec_features(x: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """rownorm(elu(x)) in ``dtype`` (the formula of ``linrec.elu_l2``)."""
    return F.normalize(F.elu(x.to(dtype)), p=2.0, dim=-1, eps=eps)


def _scaled_features(x: torch.Tensor, eps: float, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """scale * rownorm(elu(x)) with one pass over N x d after the ELU: the row factor
    scale / max(||elu(x)||, eps) is formed on the [.., N, 1] norms. In place on the ELU's
    output when autograd does not record (the norm's and the product's backward read it)."""
    y = F.elu(x.to(dtype))
    # small [.., N, 1] temporaries, out of place: the norm's backward reads its output
    factor = scale / torch.linalg.vector_norm(y, dim=-1, keepdim=True).clamp_min(eps)
    if torch.is_grad_enabled() and y.requires_grad:
        return y * factor
    return y.mul_(factor)


SCAN_GROUP = 8  # chunks summed per group of the blocked prefix sum


def exclusive_prefix_sum(x: torch.Tensor, group: int = SCAN_GROUP) -> torch.Tensor:
    """out[:, i] = sum_{j < i} x[:, j] for x [B, L, F] (out[:, 0] = 0), differentiable.

    torch.cumsum on CPU accumulates one element at a time (measured: 1.0 ms for 64 x 4096
    fp32, 10 ms for 256 x 4096, one thread). Here blocks of ``group`` rows are summed by
    one batched product with a strictly lower-triangular 0/1 matrix, the block totals by the
    same function (recursively), and each block gets its predecessors' total added: only
    additions (no running total minus the current term, so no cancellation), all batched."""
    b, n, f = x.shape
    tri = torch.ones((group, group), dtype=x.dtype, device=x.device).tril_(-1)
    if n <= group:
        return torch.matmul(tri[:n, :n], x)
    blocks = -(-n // group)
    if blocks * group != n:  # zero rows at the end: they change no sum before them
        x = F.pad(x, (0, 0, 0, blocks * group - n))
    xb = x.view(b, blocks, group, f)
    inner = torch.matmul(tri, xb)  # sums before each row within its block
    carry = exclusive_prefix_sum(xb.sum(dim=2), group)  # [B, blocks, F]: earlier blocks
    out = inner.add_(carry.unsqueeze(2))  # in place on a product's output: autograd allows it
    return out.view(b, blocks * group, f)[:, :n]


def linrec_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    eps: float,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """Causal LinRec by chunked prefix sums: [B,H,N,dv] in q's dtype.

    All chunks at once (no Python loop over them): each chunk's state K_c^T V_c, an exclusive
    prefix sum over chunks for what the earlier chunks contribute (``exclusive_prefix_sum``),
    and the C x C masked product inside each chunk (N is zero-padded to a multiple of
    ``chunk``; padded rows are cut). Batched as [B*H*chunks, C, .] products; the mask and
    the inter-chunk term are applied in place on product outputs (fewer N-sized
    temporaries). Memory: N/C states of d x dv per (user, head) besides the inputs."""
    check_chunk(chunk)
    cd = compute_dtype(q)
    b, h, n, d = q.shape
    dv = v.shape[-1]
    qn = _scaled_features(q, eps, cd, d**-0.5)  # the 1/sqrt(d) folded into q's row factor
    kn, vz = _scaled_features(k, eps, cd, 1.0), v.to(cd)
    if key_mask is not None:  # padded behaviours: zero keys and values, invisible to every row
        real = real_mask(key_mask, qn)
        kn, vz = kn * real, vz * real
    c = min(chunk, n)
    pad = (-n) % c
    if pad:  # zero rows: invisible keys (kn = 0) and queries whose output is cut below
        qn, kn, vz = (F.pad(t, (0, 0, 0, pad)) for t in (qn, kn, vz))
    nc = (n + pad) // c
    qc, kc, vc = (t.reshape(b * h * nc, c, t.shape[-1]) for t in (qn, kn, vz))
    kt = kc.transpose(1, 2)
    states = torch.bmm(kt, vc).view(b * h, nc, d * dv)
    before = exclusive_prefix_sum(states).reshape(b * h * nc, d, dv)  # earlier chunks' sum
    scores = torch.bmm(qc, kt).tril_()  # j <= i inside the chunk
    out = torch.bmm(scores, vc).baddbmm_(qc, before)
    out = out.view(b, h, nc * c, dv)
    return (out[:, :, :n] if pad else out).to(q.dtype)


def linrec_causal_weights(
    q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None, eps: float, row_offset: int = 0
) -> torch.Tensor:
    """[B,H,M,N] fp32 signed weights of rows row_offset.. (zero on the future and padding)."""
    w = torch.matmul(
        linrec_features(q, eps, torch.float32),
        linrec_features(k, eps, torch.float32).transpose(-1, -2),
    )
    return (
        w * _visible(q.shape[2], k.shape[2], key_mask, row_offset, q.device) * q.shape[-1] ** -0.5
    )


def linrec_causal_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """Plain form: (Q^ K^^T masked to j <= i and real) V / sqrt(d), the N x N matrix written out."""
    cd = compute_dtype(q)
    w = torch.matmul(linrec_features(q, eps, cd), linrec_features(k, eps, cd).transpose(-1, -2))
    w = w * _visible(q.shape[2], k.shape[2], key_mask, 0, q.device).to(cd)
    return (torch.matmul(w, v.to(cd)) * q.shape[-1] ** -0.5).to(q.dtype)


def _visible(
    m: int, n: int, key_mask: torch.Tensor | None, row_offset: int, device
) -> torch.Tensor:
    """[B or 1, 1, M, N] fp32: 1 where row row_offset+i may see real behaviour j."""
    rows = torch.arange(row_offset, row_offset + m, device=device)[:, None]
    vis = (torch.arange(n, device=device)[None, :] <= rows)[None, None]
    if key_mask is not None:
        vis = vis & key_mask[:, None, None, :]
    return vis.to(torch.float32)


# ----------------------------------------------------------------------------- Performer


def performer_logits(x: torch.Tensor, omega: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w_i . x' - ||x'||^2 / 2 with x' = x d^-1/4 in ``dtype`` (``performer.feature_logits``)."""
    xs = x.to(dtype) * x.shape[-1] ** -0.25
    return torch.matmul(xs, omega.to(dtype).T) - 0.5 * (xs * xs).sum(dim=-1, keepdim=True)


def _query_features(
    q: torch.Tensor, omega: torch.Tensor, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """phi(q) [B,H,M,m] without the m^-1/2 factor (it cancels): row-stabilised, + eps."""
    zq = performer_logits(q, omega, dtype)
    return torch.exp(zq - zq.amax(dim=-1, keepdim=True)) + eps


def _key_parts(k, omega, key_mask, dtype):
    """Keys' exp(z_j - m_j) [B,H,N,m] (0 on padding), their own maxima m_j [B,H,N] (NEG on
    padding) and the prefix maxima c_i = max_{real j <= i} m_j [B,H,N]."""
    zk = performer_logits(k, omega, dtype)
    mk = zk.amax(dim=-1)
    real = None if key_mask is None else key_mask[:, None, :].expand_as(mk)
    if real is not None:
        mk = torch.where(real, mk, torch.full_like(mk, NEG))
    arg = zk - mk[..., None]
    if real is not None:  # where on the argument: exp never sees a huge value, backward no NaN
        arg = torch.where(real[..., None], arg, torch.full_like(arg, NEG))
    return torch.exp(arg), mk, torch.cummax(mk, dim=-1).values


def performer_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    omega: torch.Tensor,
    eps: float,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """Causal FAVOR+ by chunked prefix sums with a prefix-max stabiliser: [B,H,N,dv]."""
    check_chunk(chunk)
    cd = compute_dtype(q)
    phi_q = _query_features(q, omega, eps, cd)
    ek, mk, c = _key_parts(k, omega, key_mask, cd)
    real = real_mask(key_mask, phi_q)
    vz = v.to(cd) * real
    v_prefix = torch.cumsum(vz, dim=2)  # sum_{j<=i} v_j over real j: the eps floor's share
    count = torch.cumsum(real, dim=2)  # [B,1,N,1]
    q_total = phi_q.sum(dim=-1, keepdim=True)  # phi(q_i) . 1
    b, h, n, nf = phi_q.shape
    s_kv = torch.zeros((b, h, nf, v.shape[-1]), dtype=cd, device=q.device)
    s_k = torch.zeros((b, h, nf, 1), dtype=cd, device=q.device)
    c_prev = torch.full((b, h, 1), NEG, dtype=cd, device=q.device)
    nums, dens = [], []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        pq, kk, vc, ci, mj = (
            phi_q[:, :, s:e],
            ek[:, :, s:e],
            vz[:, :, s:e],
            c[:, :, s:e],
            mk[:, :, s:e],
        )
        carry = torch.exp(c_prev - ci)[..., None]  # [B,H,C,1] <= 1
        tril = torch.ones((e - s, e - s), dtype=torch.bool, device=q.device).tril()
        arg = torch.where(
            tril,
            mj[..., None, :] - ci[..., :, None],
            torch.full((), NEG, dtype=cd, device=q.device),
        )
        p = torch.matmul(pq, kk.transpose(-1, -2)) * torch.exp(arg)  # [B,H,C,C]
        nums.append(torch.matmul(pq, s_kv) * carry + torch.matmul(p, vc))
        dens.append(torch.matmul(pq, s_k) * carry + p.sum(dim=-1, keepdim=True))
        c_end = ci[..., -1:]  # [B,H,1]
        to_end = torch.exp(mj - c_end)[..., None] * kk  # [B,H,C,m]: exp(z_j - c_end)
        decay = torch.exp(c_prev - c_end)[..., None]  # [B,H,1,1]
        s_kv = s_kv * decay + torch.matmul(to_end.transpose(-1, -2), vc)
        s_k = s_k * decay + to_end.sum(dim=-2)[..., None]
        c_prev = c_end
    num = torch.cat(nums, dim=2) + eps * q_total * v_prefix
    den = torch.cat(dens, dim=2) + eps * q_total * count
    den = torch.where(den > 0, den, torch.ones_like(den))  # rows that see nothing: num = 0
    return (num / den).to(q.dtype)


def performer_causal_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    key_mask: torch.Tensor | None,
    omega: torch.Tensor,
    eps: float,
    row_offset: int = 0,
) -> torch.Tensor:
    """[B,H,M,N] fp32 normalised weights of rows row_offset.. (rows sum to 1, or 0 if blind)."""
    ek, mk, c = _key_parts(k, omega, key_mask, torch.float32)
    phi_q = _query_features(q, omega, eps, torch.float32)
    ci = c[:, :, row_offset : row_offset + q.shape[2]]
    vis = _visible(q.shape[2], k.shape[2], key_mask, row_offset, q.device) > 0
    arg = torch.where(
        vis, mk[..., None, :] - ci[..., :, None], torch.full((), NEG, device=q.device)
    )
    w = (
        torch.matmul(phi_q, ek.transpose(-1, -2)) * torch.exp(arg)
        + eps * phi_q.sum(-1, keepdim=True) * vis
    )
    total = w.sum(dim=-1, keepdim=True)
    return w / torch.where(total > 0, total, torch.ones_like(total))


def performer_causal_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    omega: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Plain form, one row at a time: phi_i(k_j) = exp(z_j - c_i) + eps over the real j <= i."""
    cd = compute_dtype(q)
    phi_q = _query_features(q, omega, eps, cd)
    zk = performer_logits(k, omega, cd)
    b, h, n, _ = zk.shape
    real = torch.ones((b, n), dtype=torch.bool, device=q.device) if key_mask is None else key_mask
    rows = []
    for i in range(n):
        seen = real[:, None, : i + 1, None]  # [B,1,i+1,1]
        z = zk[:, :, : i + 1]
        c = z.masked_fill(~seen, float("-inf")).amax(dim=(-1, -2), keepdim=True)  # [B,H,1,1]
        c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
        phi_k = torch.where(
            seen,
            torch.exp(torch.where(seen, z - c, torch.zeros_like(z))) + eps,
            torch.zeros_like(z),
        )
        w = torch.matmul(phi_q[:, :, i : i + 1], phi_k.transpose(-1, -2))  # [B,H,1,i+1]
        den = w.sum(dim=-1, keepdim=True)
        num = torch.matmul(w, v[:, :, : i + 1].to(cd))
        rows.append(num / torch.where(den > 0, den, torch.ones_like(den)))
    return torch.cat(rows, dim=2).to(q.dtype)


# ----------------------------------------------------------------------------- cost model


def linrec_causal_cost(shape, dtype) -> tuple[float, float, float]:
    """(flops, bytes, exps) of one causal LinRec attend, all users and heads (modelled):
    both feature maps, the C x C masked blocks (computed whole), the running state."""
    n, d, dv, es, c = (
        shape.n,
        shape.d,
        shape.value_dim,
        torch.empty((), dtype=dtype).element_size(),
        CHUNK,
    )
    flops = 12 * n * d + 2 * n * min(c, n) * (d + dv) + 4 * n * d * dv
    nbytes = es * n * (2 * d + 2 * dv)  # read q, k, v; write out
    return float(shape.bh * flops), float(shape.bh * nbytes), float(shape.bh * 2 * n * d)


def performer_causal_cost(shape, features: int, dtype) -> tuple[float, float, float]:
    """(flops, bytes, exps) of one causal Performer attend, all users and heads (modelled)."""
    n, d, dv, m, es, c = (
        shape.n,
        shape.d,
        shape.value_dim,
        features,
        torch.empty((), dtype=dtype).element_size(),
        CHUNK,
    )
    c = min(c, n)
    flops = 4 * n * d * m + 2 * n * c * (m + dv) + 4 * n * m * (dv + 1) + 10 * n * m
    nbytes = es * n * (2 * d + 2 * dv)
    return float(shape.bh * flops), float(shape.bh * nbytes), float(shape.bh * (2 * n * m + n * c))
