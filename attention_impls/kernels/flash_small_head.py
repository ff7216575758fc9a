"""Fused exact-softmax attention for small head dimensions (Triton), with split-N.

Computes, per (user, head),

    Qk  = Q A^T                        (optional query projection,  [M, D] -> [M, R])
    O_v = softmax(Qk K^T * scale) V    (online softmax, exp2, fp32 statistics)
    O   = O_v Bo                       (optional output projection, [M, Dv] -> [M, Do])

in one pass over the keys: the scores never leave the chip. ``svd_exact`` uses it with
A = diag(S) W_k^T, K = V = U (N x r) and Bo = diag(S) W_v^T, so the whole attend (two
small projections and softmax attention with head dimension r) is one kernel; ``dense``
with no projections. Rows with no visible key (an all-padding user, a causal row whose
keys are all padding) get zeros, as in ``attention_impls.base.masked_sdpa``.

Why a kernel: with head dimension r = 4..64 the matrix products are cheap and the M x N
exponentials are the floor; SDPA's kernels are tuned for head dimensions 64..256 and the
torch path costs three launches. Small M with few users starves the GPU of programs, so
the key axis can be split across programs (flash-decoding): each split writes its partial
(max, sum, accumulator) and a second kernel merges the splits and applies Bo.

Reference: the ``torch`` backend of the operators (SDPA plus matmuls); the tests hold this
kernel to it, on CPU under Triton's interpreter and on CUDA when present.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._interp import dot_in_fp32
from ._tl import _cast, _mm, _user_head, block_size

LOG2E = 1.4426950408889634


@triton.jit
def _flash_fwd(
    q_ptr,
    a_ptr,
    k_ptr,
    v_ptr,
    bo_ptr,
    mask_ptr,
    out_ptr,
    part_acc_ptr,
    part_ml_ptr,
    H,
    M,
    N,
    D,
    R,
    DV,
    DO,
    n_per_split,
    qk_scale,
    sqb,
    sqh,
    sqm,
    sqd,
    sab,
    sah,
    sar,
    sad,
    skb,
    skh,
    skn,
    skr,
    svb,
    svh,
    svn,
    svd,
    sbb,
    sbh,
    sbv,
    sbo,
    smb,
    smn,
    sob,
    soh,
    som,
    sod,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_O: tl.constexpr,
    PROJ_Q: tl.constexpr,
    PROJ_O: tl.constexpr,
    SAME_KV: tl.constexpr,
    HAS_MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
    NEED_MASK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    b, h = _user_head(pid_bh, H)
    dtype = k_ptr.dtype.element_ty

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    offs_v = tl.arange(0, BLOCK_V)
    row_ok = offs_m < M

    # queries in the key space: Q A^T (fp32 accumulate, rounded to the working dtype like
    # the torch path's matmul) or Q itself
    if PROJ_Q:
        offs_d = tl.arange(0, BLOCK_D)
        q = tl.load(
            q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
            mask=row_ok[:, None] & (offs_d[None, :] < D),
            other=0.0,
        )
        at = tl.load(
            a_ptr + b * sab + h * sah + offs_r[None, :] * sar + offs_d[:, None] * sad,
            mask=(offs_r[None, :] < R) & (offs_d[:, None] < D),
            other=0.0,
        )
        qk = _cast(_mm(q, at, DOT_F32, PREC, tl.float32), dtype, DOT_F32)
    else:
        qk = tl.load(
            q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_r[None, :] * sqd,
            mask=row_ok[:, None] & (offs_r[None, :] < R),
            other=0.0,
        )

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_V], dtype=tl.float32)

    n_lo = pid_s * n_per_split
    n_hi = tl.minimum(n_lo + n_per_split, N)
    if CAUSAL:  # keys beyond the tile's last row are all masked
        n_hi = tl.minimum(n_hi, (pid_m + 1) * BLOCK_M)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    for start in range(n_lo, n_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        col_ok = offs_n < n_hi
        kt = tl.load(
            k_base + offs_n[:, None] * skn + offs_r[None, :] * skr,
            mask=col_ok[:, None] & (offs_r[None, :] < R),
            other=0.0,
        )
        s = _mm(qk, tl.trans(kt), DOT_F32, PREC, tl.float32)
        if NEED_MASK:
            valid = col_ok[None, :]
            if HAS_MASK:
                km = tl.load(mask_ptr + b * smb + offs_n * smn, mask=col_ok, other=0)
                valid = valid & (km != 0)[None, :]
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(valid, s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
            p = tl.exp2(s - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
        else:  # every key visible: one FFMA and one MUFU.EX2 per score
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if SAME_KV:
            vt = kt
        else:
            vt = tl.load(
                v_base + offs_n[:, None] * svn + offs_v[None, :] * svd,
                mask=col_ok[:, None] & (offs_v[None, :] < DV),
                other=0.0,
            )
        acc = acc * alpha[:, None] + _mm(_cast(p, dtype, DOT_F32), vt, DOT_F32, PREC, tl.float32)
        m_i = m_new

    if SPLIT:
        # partials for the merge kernel: acc [BH, S, M, BLOCK_V], (m, l) [BH, S, 2, M]
        n_splits = tl.num_programs(2)
        base = pid_bh.to(tl.int64) * n_splits + pid_s
        tl.store(
            part_acc_ptr + base * M * BLOCK_V + offs_m[:, None] * BLOCK_V + offs_v[None, :],
            acc,
            mask=row_ok[:, None],
        )
        tl.store(part_ml_ptr + base * 2 * M + offs_m, m_i, mask=row_ok)
        tl.store(part_ml_ptr + base * 2 * M + M + offs_m, l_i, mask=row_ok)
    else:
        _finish(
            acc,
            l_i,
            bo_ptr,
            out_ptr,
            b,
            h,
            offs_m,
            row_ok,
            offs_v,
            DV,
            DO,
            sbb,
            sbh,
            sbv,
            sbo,
            sob,
            soh,
            som,
            sod,
            BLOCK_O,
            PROJ_O,
            DOT_F32,
            PREC,
        )


@triton.jit
def _finish(
    acc,
    l_i,
    bo_ptr,
    out_ptr,
    b,
    h,
    offs_m,
    row_ok,
    offs_v,
    DV,
    DO,
    sbb,
    sbh,
    sbv,
    sbo,
    sob,
    soh,
    som,
    sod,
    BLOCK_O: tl.constexpr,
    PROJ_O: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
):
    """Normalise (rows with l = 0 -> 0), apply the output projection, store."""
    dtype = out_ptr.dtype.element_ty
    seen = l_i > 0.0
    inv_l = tl.where(seen, 1.0 / tl.where(seen, l_i, 1.0), 0.0)
    o = acc * inv_l[:, None]
    if PROJ_O:
        offs_o = tl.arange(0, BLOCK_O)
        bo = tl.load(
            bo_ptr + b * sbb + h * sbh + offs_v[:, None] * sbv + offs_o[None, :] * sbo,
            mask=(offs_v[:, None] < DV) & (offs_o[None, :] < DO),
            other=0.0,
        )
        o = _mm(_cast(o, dtype, DOT_F32), bo, DOT_F32, PREC, tl.float32)
        tl.store(
            out_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_o[None, :] * sod,
            _cast(o, dtype, DOT_F32),
            mask=row_ok[:, None] & (offs_o[None, :] < DO),
        )
    else:
        tl.store(
            out_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_v[None, :] * sod,
            _cast(o, dtype, DOT_F32),
            mask=row_ok[:, None] & (offs_v[None, :] < DV),
        )


@triton.jit
def _flash_merge(
    part_acc_ptr,
    part_ml_ptr,
    bo_ptr,
    out_ptr,
    H,
    M,
    DV,
    DO,
    n_splits,
    sbb,
    sbh,
    sbv,
    sbo,
    sob,
    soh,
    som,
    sod,
    BLOCK_M: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_O: tl.constexpr,
    PROJ_O: tl.constexpr,
    DOT_F32: tl.constexpr,
    PREC: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h = _user_head(pid_bh, H)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.arange(0, BLOCK_V)
    row_ok = offs_m < M
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_V], dtype=tl.float32)
    for s in range(0, n_splits):
        base = pid_bh.to(tl.int64) * n_splits + s
        m_s = tl.load(part_ml_ptr + base * 2 * M + offs_m, mask=row_ok, other=float("-inf"))
        l_s = tl.load(part_ml_ptr + base * 2 * M + M + offs_m, mask=row_ok, other=0.0)
        a_s = tl.load(
            part_acc_ptr + base * M * BLOCK_V + offs_m[:, None] * BLOCK_V + offs_v[None, :],
            mask=row_ok[:, None],
            other=0.0,
        )
        m_new = tl.maximum(m_i, m_s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        beta = tl.exp2(m_s - m_safe)
        l_i = l_i * alpha + l_s * beta
        acc = acc * alpha[:, None] + a_s * beta[:, None]
        m_i = m_new
    _finish(
        acc,
        l_i,
        bo_ptr,
        out_ptr,
        b,
        h,
        offs_m,
        row_ok,
        offs_v,
        DV,
        DO,
        sbb,
        sbh,
        sbv,
        sbo,
        sob,
        soh,
        som,
        sod,
        BLOCK_O,
        PROJ_O,
        DOT_F32,
        PREC,
    )


# ----------------------------------------------------------------------------- launch plan


@dataclass(frozen=True)
class LaunchPlan:
    """Tile sizes, warps, pipeline depth and number of key splits of one call."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    splits: int


_SM_COUNT: dict[int, int] = {}


def sm_count(device: torch.device) -> int:
    """Multiprocessors of a CUDA device (cached); 8 elsewhere, so that interpreter runs
    exercise the split-and-merge path."""
    if device.type != "cuda":
        return 8
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def plan_launch(
    m: int,
    n: int,
    bh: int,
    head_dim: int,
    *,
    causal: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    sms: int = 132,
    splits: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> LaunchPlan:
    """Heuristic launch plan (every field overridable, e.g. by a tuning sweep on a GPU).

    Chosen from the sm_90 compiler report (``python -m attention_impls.kernels.aot``), not
    from timings: 128-row query tiles and 64-key tiles; 4 warps while the head dimension
    is <= 32 (168 registers, no spills at r = 16), 8 warps above it (4 warps spill at
    d = 64); 64-row tiles in fp32, whose ieee dots run on the FMA units. Splits of the key
    axis when the query tiles times users would leave multiprocessors idle: aim at two
    programs per SM, each split at least four key tiles long. Causal attention is never
    split (its tiles already stop at the diagonal)."""
    wide = head_dim > 32
    fp32 = dtype == torch.float32
    bm = block_m or (64 if fp32 else 128)
    bm = min(bm, block_size(m))
    bn = block_n or 64
    warps = num_warps or (8 if (wide and not fp32) else 4)
    stages = num_stages or (2 if fp32 else 3)
    if splits is None:
        programs = -(-m // bm) * bh
        target = 2 * sms
        max_splits = max(1, n // (4 * bn))
        splits = 1 if (causal or programs >= target) else min(max_splits, -(-target // programs))
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    if causal and splits != 1:
        raise ValueError("causal attention is not split over keys (splits must be 1)")
    return LaunchPlan(bm, bn, warps, stages, int(splits))


# ----------------------------------------------------------------------------- entry point


def _check(name: str, t: torch.Tensor, ndim: int, dtype: torch.dtype, device: torch.device) -> None:
    if t.dim() != ndim:
        raise ValueError(f"flash_small_head: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"flash_small_head: {name} has dtype {t.dtype}, expected {dtype}")
    if t.device != device:
        raise ValueError(f"flash_small_head: {name} is on {t.device}, expected {device}")


SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)


def flash_small_head(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor | None,
    *,
    scale: float,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
    q_proj: torch.Tensor | None = None,
    out_proj: torch.Tensor | None = None,
    plan: LaunchPlan | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax((Q A^T) K^T * scale) V Bo, fused (see the module docstring).

    q [B,H,M,D]; q_proj A [B,H,R,D] or None (then D == R); k [B,H,N,R]; v [B,H,N,Dv] or
    None (then V = K); out_proj Bo [B,H,Dv,Do] or None; key_mask [B,N] bool or None.
    Returns [B,H,M,Do] in q's dtype (written into ``out`` when given). Inputs are used
    through their strides (no copies)."""
    dev, dt = q.device, q.dtype
    if dt not in SUPPORTED:
        raise ValueError(f"flash_small_head: dtype {dt} not supported (fp16, bf16, fp32)")
    _check("q", q, 4, dt, dev)
    _check("k", k, 4, dt, dev)
    bsz, heads, m, d = q.shape
    n, r = k.shape[2], k.shape[3]
    if q_proj is not None:
        _check("q_proj", q_proj, 4, dt, dev)
        if q_proj.shape != (bsz, heads, r, d):
            raise ValueError(
                f"flash_small_head: q_proj must be [B,H,R,D] = {[bsz, heads, r, d]}, "
                f"got {list(q_proj.shape)}"
            )
    elif d != r:
        raise ValueError(f"flash_small_head: q has head dim {d} but k has {r} (and no q_proj)")
    same_kv = v is None
    vv = k if same_kv else v
    _check("v", vv, 4, dt, dev)
    if vv.shape[:3] != (bsz, heads, n):
        raise ValueError(
            f"flash_small_head: v must be [B,H,N,Dv] with N = {n}, got {list(vv.shape)}"
        )
    dv = vv.shape[3]
    if out_proj is not None:
        _check("out_proj", out_proj, 4, dt, dev)
        if out_proj.shape[:3] != (bsz, heads, dv):
            raise ValueError(
                f"flash_small_head: out_proj must be [B,H,Dv,Do] with Dv = {dv}, "
                f"got {list(out_proj.shape)}"
            )
        do = out_proj.shape[3]
    else:
        do = dv
    if key_mask is not None and (key_mask.dtype != torch.bool or tuple(key_mask.shape) != (bsz, n)):
        raise ValueError(
            f"flash_small_head: key_mask must be bool [B,N] = {[bsz, n]}, "
            f"got {key_mask.dtype} {list(key_mask.shape)}"
        )
    if causal and m != n:
        raise ValueError(f"flash_small_head: causal attention needs M == N, got M={m}, N={n}")

    bh = bsz * heads
    plan = plan or plan_launch(m, n, bh, max(r, dv), causal=causal, dtype=dt, sms=sm_count(dev))
    blk_d, blk_r, blk_v, blk_o = block_size(d), block_size(r), block_size(dv), block_size(do)
    if out is None:
        out = torch.empty((bsz, heads, m, do), dtype=dt, device=dev)
    else:
        _check("out", out, 4, dt, dev)
        if out.shape != (bsz, heads, m, do):
            raise ValueError(
                f"flash_small_head: out must be {[bsz, heads, m, do]}, got {list(out.shape)}"
            )
    n_per_split = -(-n // plan.splits)
    n_per_split = -(-n_per_split // plan.block_n) * plan.block_n  # whole key tiles per split
    splits = -(-n // n_per_split)
    split = splits > 1
    if split:
        part_acc = torch.empty((bh, splits, m, blk_v), dtype=torch.float32, device=dev)
        part_ml = torch.empty((bh, splits, 2, m), dtype=torch.float32, device=dev)
    else:
        part_acc = part_ml = out  # unused
    a = q_proj if q_proj is not None else q
    bo = out_proj if out_proj is not None else out
    mask = key_mask if key_mask is not None else out
    mask_strides = (key_mask.stride(0), key_mask.stride(1)) if key_mask is not None else (0, 0)
    dot_f32 = dot_in_fp32()
    prec = "ieee" if dt == torch.float32 else "tf32"
    grid = (triton.cdiv(m, plan.block_m), bh, splits)
    _flash_fwd[grid](
        q,
        a,
        k,
        vv,
        bo,
        mask,
        out,
        part_acc,
        part_ml,
        heads,
        m,
        n,
        d,
        r,
        dv,
        do,
        n_per_split,
        float(scale) * LOG2E,
        *q.stride(),
        *a.stride(),
        *k.stride(),
        *vv.stride(),
        *bo.stride(),
        *mask_strides,
        *out.stride(),
        BLOCK_M=plan.block_m,
        BLOCK_N=plan.block_n,
        BLOCK_D=blk_d,
        BLOCK_R=blk_r,
        BLOCK_V=blk_v,
        BLOCK_O=blk_o,
        PROJ_Q=q_proj is not None,
        PROJ_O=out_proj is not None,
        SAME_KV=same_kv,
        HAS_MASK=key_mask is not None,
        CAUSAL=bool(causal),
        SPLIT=split,
        NEED_MASK=(key_mask is not None) or bool(causal) or (n % plan.block_n != 0),
        DOT_F32=dot_f32,
        PREC=prec,
        num_warps=plan.num_warps,
        num_stages=plan.num_stages,
    )
    if split:
        _flash_merge[(triton.cdiv(m, plan.block_m), bh)](
            part_acc,
            part_ml,
            bo,
            out,
            heads,
            m,
            dv,
            do,
            splits,
            *bo.stride(),
            *out.stride(),
            BLOCK_M=plan.block_m,
            BLOCK_V=blk_v,
            BLOCK_O=blk_o,
            PROJ_O=out_proj is not None,
            DOT_F32=dot_f32,
            PREC=prec,
            num_warps=plan.num_warps,
        )
    return out
