"""One fused Triton kernel for the per-candidate ``attend`` of four cheap operators.

Every one of these attends has the shape, per (user, head),

    out[M, dv] = norm( g( f(q)[M, d] @ W1[d, r] ) @ W2[r, dv] )

with per-(user, head) weights prepared once per user:

========== ===================== ================= ========================= ==================
method     f(q)                  W1                g, W2                     normalisation
========== ===================== ================= ========================= ==================
linrec     rownorm(elu(q)) fp32  kv [d, dv]        none (out = f(q) @ kv)    none
lrea       q                     C [d, r]          LeakyReLU(slope), Bv      none
svd_tokens q                     Zk^T [d, r]       exp(s - rowmax), Zv       / row sum
performer  q (fp32 dot)          omega^T [d, m]    exp(s - rowmax) + eps, kv / (phi . ksum)
========== ===================== ================= ========================= ==================

One launch per call, grid ``(cdiv(M, BLOCK_M), B*H)``: a program loads its query tile once,
loops over the hidden dim in ``BLOCK_R`` chunks (online max / rescaling for the two
softmax-like methods, so any r or m works), accumulates in fp32 (fp64 for fp64 inputs,
which the operators keep on torch) and writes the output tile once. Users flagged in ``empty_users`` get zeros inside the kernel, so the Triton path
runs no torch pre- or post-processing kernels and never syncs with the host (it can be
captured in a CUDA graph). Non-power-of-two d / r / dv are padded to power-of-two blocks of
at least 16 (``tl.dot``'s minimum) with masked loads. Inputs are read through their
strides: nothing is copied.

Dot operands stay in the working dtype (bf16/fp16 tensor-core dots on CUDA; fp32 dots in
full precision, ``input_precision="ieee"``, as torch's fp32 matmuls run), except
performer's feature logits, which its reference computes in fp32. Under Triton's
interpreter every dot runs on fp32 operands (``_interp.dot_in_fp32``: the 3.6 interpreter
computes bf16 dots wrongly), and fp32 -> bf16 casts round to nearest even by hand (the
interpreter truncates; see ``_cast``).

Performer: the ``-||q'||^2 / 2`` term of the feature logits is constant across features
for a query and cancels exactly in ``z - rowmax(z)``, so the kernel skips it. The eps
floor does not scale with the running max, so it is carried separately:
``sum_j (exp(z_j - c) + eps) W_j = sum_j exp(z_j - c) W_j + eps * sum_j W_j``.

The plain PyTorch code in each operator's ``_attend`` is the reference these are tested
against (``tests/test_kernels_row_mlp.py``). Import this module only when the Triton
backend runs: importing it imports Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._interp import dot_in_fp32, kernels_interpreted
from ._tl import _cast, _mm, _user_head, block_size

# Fixed when this module is imported, like triton.jit's interpreter decision.
_DOT_FP32 = dot_in_fp32()
_INTERPRETED = kernels_interpreted()

# g: what follows the first product
ACT_NONE = 0  # out = f(q) @ W1 (W1 is [d, dv]; no second product)
ACT_LEAKY = 1  # out = leaky_relu(f(q) @ W1 * scale) @ W2
ACT_SOFTMAX = (
    2  # out = sum_j (e_j + eps) W2_j / max(sum_j (e_j + eps) ksum_j, tiny), e = exp(s - rowmax s)
)
# f: what is applied to q first
PRE_NONE = 0
PRE_ELU_L2 = 1  # rownorm(elu(q)) in fp32, cast back to the working dtype


@triton.jit
def _row_mlp_kernel(
    q_ptr,
    w1_ptr,
    w2_ptr,
    ksum_ptr,
    empty_ptr,
    out_ptr,
    H,
    M,
    D,
    R,
    DV,
    sq_b,
    sq_h,
    sq_m,
    sq_d,
    sw1_b,
    sw1_h,
    sw1_d,
    sw1_r,
    sw2_b,
    sw2_h,
    sw2_r,
    sw2_v,
    sk_b,
    sk_h,
    sk_r,
    se_b,
    so_b,
    so_h,
    so_m,
    so_v,
    scale,
    slope,
    eps,
    norm_eps,
    feat_scale,
    PRE: tl.constexpr,
    ACT: tl.constexpr,
    HAS_KSUM: tl.constexpr,
    HAS_EPS: tl.constexpr,
    HAS_EMPTY: tl.constexpr,
    FIRST_FP32: tl.constexpr,
    DOT_FP32: tl.constexpr,
    IN_PREC: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h = _user_head(pid_bh, H)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < M
    mask_d = offs_d < D
    mask_v = offs_v < DV

    # ---- f(q): the query tile, loaded once
    q_base = q_ptr + b * sq_b + h * sq_h
    q = tl.load(
        q_base + offs_m[:, None] * sq_m + offs_d[None, :] * sq_d,
        mask=mask_m[:, None] & mask_d[None, :],
        other=0.0,
    )
    if PRE == 1:  # rownorm(elu(q)) in fp32 (padded columns are 0 and stay 0)
        x = q.to(tl.float32)
        x = tl.where(x > 0, x, tl.exp(tl.minimum(x, 0.0)) - 1.0)
        nrm = tl.sqrt(tl.sum(x * x, axis=1))
        x = x / tl.maximum(nrm, norm_eps)[:, None]
        q = _cast(x, q_ptr.dtype.element_ty, DOT_FP32)
    if FIRST_FP32:
        q = q.to(tl.float32)

    w1_base = w1_ptr + b * sw1_b + h * sw1_h
    w2_base = w2_ptr + b * sw2_b + h * sw2_h

    if ACT == 0:
        # out = f(q) @ W1, W1 [d, dv]
        w1 = tl.load(
            w1_base + offs_d[:, None] * sw1_d + offs_v[None, :] * sw1_r,
            mask=mask_d[:, None] & mask_v[None, :],
            other=0.0,
        )
        out = _mm(q, w1, DOT_FP32, IN_PREC, ACC)
    elif ACT == 1:
        # out = leaky_relu(f(q) @ W1 * scale) @ W2
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=ACC)
        for r0 in range(0, R, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            mask_r = offs_r < R
            w1 = tl.load(
                w1_base + offs_d[:, None] * sw1_d + offs_r[None, :] * sw1_r,
                mask=mask_d[:, None] & mask_r[None, :],
                other=0.0,
            )
            a = _mm(q, w1, DOT_FP32, IN_PREC, ACC) * scale
            a = tl.where(a >= 0, a, a * slope)
            w2 = tl.load(
                w2_base + offs_r[:, None] * sw2_r + offs_v[None, :] * sw2_v,
                mask=mask_r[:, None] & mask_v[None, :],
                other=0.0,
            )
            acc += _mm(_cast(a, w2_ptr.dtype.element_ty, DOT_FP32), w2, DOT_FP32, IN_PREC, ACC)
        out = acc
    else:
        # softmax-like: online row max over the r (or m) chunks, rescaling as it goes
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
        l_i = tl.zeros([BLOCK_M], dtype=ACC)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=ACC)
        e_num = tl.zeros([BLOCK_DV], dtype=ACC)  # sum_j W2_j       (eps floor)
        e_den = tl.zeros([BLOCK_R], dtype=ACC)  # sum_j ksum_j     (eps floor), per lane
        for r0 in range(0, R, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            mask_r = offs_r < R
            w1 = tl.load(
                w1_base + offs_d[:, None] * sw1_d + offs_r[None, :] * sw1_r,
                mask=mask_d[:, None] & mask_r[None, :],
                other=0.0,
            )
            if FIRST_FP32:
                w1 = w1.to(tl.float32)
            s = _mm(q, w1, DOT_FP32, IN_PREC, ACC) * scale
            s = tl.where(mask_r[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            if HAS_KSUM:
                ks = tl.load(
                    ksum_ptr + b * sk_b + h * sk_h + offs_r * sk_r, mask=mask_r, other=0.0
                ).to(ACC)
                l_i = l_i * alpha + tl.sum(p * ks[None, :], axis=1)
            else:
                ks = tl.where(mask_r, 1.0, 0.0).to(ACC)
                l_i = l_i * alpha + tl.sum(p, axis=1)
            w2 = tl.load(
                w2_base + offs_r[:, None] * sw2_r + offs_v[None, :] * sw2_v,
                mask=mask_r[:, None] & mask_v[None, :],
                other=0.0,
            )
            acc = acc * alpha[:, None] + _mm(
                _cast(p, w2_ptr.dtype.element_ty, DOT_FP32), w2, DOT_FP32, IN_PREC, ACC
            )
            if HAS_EPS:
                e_num += tl.sum(w2.to(ACC), axis=0)
                e_den += ks
            m_i = m_new
        num = acc
        den = l_i
        if HAS_EPS:
            num = num + eps * e_num[None, :]
            den = den + eps * tl.sum(e_den, axis=0)
        den = tl.maximum(den * feat_scale, 1.1754943508222875e-38)  # torch.finfo(float32).tiny
        out = (num * feat_scale) / den[:, None]

    if HAS_EMPTY:  # users with no real behaviour: zeros (selected, so NaN/inf never leak)
        is_empty = tl.load(empty_ptr + b * se_b).to(tl.int32)
        out = tl.where(is_empty != 0, 0.0, out)

    o_base = out_ptr + b * so_b + h * so_h
    tl.store(
        o_base + offs_m[:, None] * so_m + offs_v[None, :] * so_v,
        _cast(out, out_ptr.dtype.element_ty, DOT_FP32),
        mask=mask_m[:, None] & mask_v[None, :],
    )


# Rows of queries per program. Compiled: 64 (wgmma tiles; 256 programs at M = 2048,
# B*H = 8). Interpreted: 32, few programs keep the CPU tests fast.
_BLOCK_M = 32 if _INTERPRETED else 64


def _launch(
    q: torch.Tensor,
    w1: torch.Tensor,
    w1_strides: tuple[int, int, int, int],
    w2: torch.Tensor,
    w2_strides: tuple[int, int, int, int],
    r: int,
    dv: int,
    *,
    act: int,
    pre: int = PRE_NONE,
    ksum: torch.Tensor | None = None,
    empty_users: torch.Tensor | None = None,
    scale: float = 1.0,
    slope: float = 0.0,
    eps: float = 0.0,
    norm_eps: float = 0.0,
    feat_scale: float = 1.0,
    first_fp32: bool = False,
    block_m: int | None = None,
    block_r: int | None = None,
    num_warps: int = 4,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One launch of the kernel; ``out`` (default: a new [B,H,M,dv] tensor) is overwritten."""
    b, h, m, d = q.shape
    if out is None:
        out = torch.empty((b, h, m, dv), dtype=q.dtype, device=q.device)
    bm = block_m or _BLOCK_M
    acc = tl.float64 if q.dtype == torch.float64 else tl.float32
    ks = ksum if ksum is not None else q
    ks_strides = (ksum.stride(0), ksum.stride(1), ksum.stride(2)) if ksum is not None else (0, 0, 0)
    emp = empty_users if empty_users is not None else q
    grid = (triton.cdiv(m, bm), b * h)
    _row_mlp_kernel[grid](
        q,
        w1,
        w2,
        ks,
        emp,
        out,
        h,
        m,
        d,
        r,
        dv,
        *q.stride(),
        *w1_strides,
        *w2_strides,
        *ks_strides,
        emp.stride(0),
        *out.stride(),
        float(scale),
        float(slope),
        float(eps),
        float(norm_eps),
        float(feat_scale),
        PRE=pre,
        ACT=act,
        HAS_KSUM=ksum is not None,
        HAS_EPS=eps > 0,
        HAS_EMPTY=empty_users is not None,
        FIRST_FP32=first_fp32,
        DOT_FP32=_DOT_FP32,
        IN_PREC="tf32" if (first_fp32 and q.dtype in (torch.float16, torch.bfloat16)) else "ieee",
        ACC=acc,
        BLOCK_M=bm,
        BLOCK_D=block_size(d),
        BLOCK_R=block_r or block_size(r, 64),
        BLOCK_DV=block_size(dv),
        num_warps=num_warps,
    )
    return out


# ----------------------------------------------------------------------------- per method


def linrec_attend(q, kv, empty_users, eps: float, **kw) -> torch.Tensor:
    """rownorm(elu(q)) @ kv; q [B,H,M,d], kv [B,H,d,dv] (the working dtype)."""
    dv = kv.shape[-1]
    return _launch(
        q,
        kv,
        tuple(kv.stride()),
        kv,
        tuple(kv.stride()),
        dv,
        dv,
        act=ACT_NONE,
        pre=PRE_ELU_L2,
        empty_users=empty_users,
        norm_eps=eps,
        **kw,
    )


def lrea_attend(q, c, bv, empty_users, slope: float, **kw) -> torch.Tensor:
    """leaky_relu(q @ c, slope) @ bv; c [B,H,d,r], bv [B,H,r,dv]."""
    return _launch(
        q,
        c,
        tuple(c.stride()),
        bv,
        tuple(bv.stride()),
        c.shape[-1],
        bv.shape[-1],
        act=ACT_LEAKY,
        empty_users=empty_users,
        slope=slope,
        **kw,
    )


def svd_tokens_attend(q, zk, zv, empty_users, scale: float, **kw) -> torch.Tensor:
    """softmax(q @ zk^T * scale) @ zv; zk [B,H,r,d], zv [B,H,r,dv]."""
    sb, sh, sr, sd = zk.stride()
    return _launch(
        q,
        zk,
        (sb, sh, sd, sr),
        zv,
        tuple(zv.stride()),
        zk.shape[-2],
        zv.shape[-1],
        act=ACT_SOFTMAX,
        empty_users=empty_users,
        scale=scale,
        **kw,
    )


def performer_attend(q, omega, kv, ksum, empty_users, eps: float, **kw) -> torch.Tensor:
    """FAVOR+ attend: phi(q) @ kv / (phi(q) @ ksum); omega [m,d] fp32 (shared),
    kv [B,H,m,dv] working dtype, ksum [B,H,m] fp32. 32-feature chunks and 8 warps: the fp32
    logits tile spills registers at 64 x 64 with 4 warps (ptxas, sm_90)."""
    m, d = omega.shape
    return _launch(
        q,
        omega,
        (0, 0, omega.stride(1), omega.stride(0)),
        kv,
        tuple(kv.stride()),
        m,
        kv.shape[-1],
        act=ACT_SOFTMAX,
        ksum=ksum,
        empty_users=empty_users,
        scale=d**-0.25,
        eps=eps,
        feat_scale=m**-0.5,
        first_fp32=True,
        **{"block_r": block_size(m, 32), "num_warps": 8, **kw},
    )


def aot_specs():
    """The kernel as each method launches it at the issue's case (d = dv = 64, r = 16,
    256 performer features, bf16), for ``python -m attention_impls.kernels.aot``."""
    from .aot import KernelSpec

    mod, kern = __name__, "_row_mlp_kernel"
    ptrs = {
        "q_ptr": "*bf16",
        "w1_ptr": "*bf16",
        "w2_ptr": "*bf16",
        "ksum_ptr": "*fp32",
        "empty_ptr": "*i1",
        "out_ptr": "*bf16",
    }
    floats = ("scale", "slope", "eps", "norm_eps", "feat_scale")
    base = dict(
        PRE=PRE_NONE,
        HAS_KSUM=False,
        HAS_EPS=False,
        HAS_EMPTY=True,
        FIRST_FP32=False,
        DOT_FP32=False,
        IN_PREC="ieee",
        ACC=tl.float32,
        BLOCK_M=64,
        BLOCK_D=64,
        BLOCK_R=16,
        BLOCK_DV=64,
    )

    def spec(name, warps=4, pointers=ptrs, **const):
        return KernelSpec(
            name,
            mod,
            kern,
            pointers,
            {**base, **const},
            num_warps=warps,
            num_stages=1,
            floats=floats,
        )

    return [
        spec("linrec bf16", ACT=ACT_NONE, PRE=PRE_ELU_L2),
        spec("lrea bf16", ACT=ACT_LEAKY),
        spec("svd_tokens bf16", ACT=ACT_SOFTMAX),
        spec(
            "performer bf16 (256 features)",
            warps=8,
            pointers={**ptrs, "w1_ptr": "*fp32"},
            ACT=ACT_SOFTMAX,
            HAS_KSUM=True,
            HAS_EPS=True,
            FIRST_FP32=True,
            IN_PREC="tf32",
            BLOCK_R=32,
        ),
    ]
