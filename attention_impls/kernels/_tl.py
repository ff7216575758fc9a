"""Triton device helpers shared by the kernels (dots and casts that behave the same compiled
and under Triton 3.6's interpreter)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mm(a, b, DOT_FP32: tl.constexpr, IN_PREC: tl.constexpr, ACC: tl.constexpr):
    """a @ b accumulated in ``ACC``; operands upcast to ``ACC`` when DOT_FP32 (interpreter quirk)."""
    if DOT_FP32:
        return tl.dot(a.to(ACC), b.to(ACC), input_precision=IN_PREC)
    else:
        return tl.dot(a, b, input_precision=IN_PREC).to(ACC)


@triton.jit
def _cast(x, DT: tl.constexpr, EMULATE_RTNE: tl.constexpr):
    """x.to(DT). The 3.6 interpreter truncates fp32 -> bf16 (compiled code rounds to nearest
    even); under it (EMULATE_RTNE) round to nearest even by hand first, so the interpreted
    kernel rounds as the compiled one does."""
    if EMULATE_RTNE and DT == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(DT)


@triton.jit
def _user_head(pid_bh, H):
    """Program id over B*H -> (user, head) as 64-bit offsets (B*H*N*D can pass 2**31)."""
    return (pid_bh // H).to(tl.int64), (pid_bh % H).to(tl.int64)


def block_size(n: int, cap: int | None = None) -> int:
    """Power-of-two block >= 16 (tl.dot's minimum) covering n, optionally capped."""
    b = max(16, triton.next_power_of_2(int(n)))
    return b if cap is None else min(b, cap)
