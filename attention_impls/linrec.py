"""LinRec (SIGIR 2023): L2-normalised linear attention, following the authors' public formula.

    Q^ = rownorm(elu(Q)),  K^ = rownorm(elu(K))   (L2 over the feature axis, eps-guarded)
    O  = Q^ (K^^T V) / sqrt(d)

No softmax and no denominator. Keys of padded behaviours are zeroed (the public code
ignores the mask; this suite does not). Implied weights Q^ K^^T / sqrt(d) are signed and
unnormalised. Normalisation runs in fp32; the per-user state K^^T V / sqrt(d) (d x dv) is
accumulated in fp32 and stored in the working dtype. Cost O((N + M) d dv).

``backend``: ``torch`` = the code below (the reference); ``triton`` = one fused kernel
(``kernels/row_mlp.py``: normalisation and product in one launch); ``auto`` = triton on CUDA
when Triton imports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import causal_linear
from .base import (
    AttentionOperator,
    BaseState,
    Cost,
    element_size,
    inv_sqrt,
    needs_grad,
    zero_empty_users,
    zero_padded,
)
from .registry import register
from .validate import check_float

EPS_MAX = 1e-3
_HALF_MAX: dict[torch.dtype, float] = {}


def frobenius(t: torch.Tensor) -> torch.Tensor:
    """||t||_F as a 0-d tensor, accumulated and returned in fp32 for fp16/bf16 (no overflow
    of the half-precision range by the norm itself), in t's dtype otherwise."""
    wide = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None
    return torch.linalg.vector_norm(t, dtype=wide)


def half_max(dtype: torch.dtype) -> float:
    """Half the largest finite value of ``dtype`` (cached: this runs in every checked call)."""
    if dtype not in _HALF_MAX:
        _HALF_MAX[dtype] = 0.5 * float(torch.finfo(dtype).max)
    return _HALF_MAX[dtype]


def elu_l2(x: torch.Tensor, eps: float) -> torch.Tensor:
    """rownorm(elu(x)) in fp32: ELU, then L2-normalise each row over the feature axis."""
    return F.normalize(F.elu(x.float()), p=2.0, dim=-1, eps=eps)


def row_divide(y: torch.Tensor, norms: torch.Tensor, eps: float, grad: bool) -> torch.Tensor:
    """y / max(norms, eps): ``elu_l2``'s division (F.normalize's, without its Python ``norm``
    wrapper), in place on the ELU's fresh output and its fresh norms unless autograd records
    (the norm's backward reads y and the norms): one N x d temporary fewer."""
    denom = norms.clamp_min(eps) if grad else norms.clamp_min_(eps)
    return y / denom if grad else y.div_(denom)


@dataclass
class LinRecState(BaseState):
    kv: torch.Tensor = None  # type: ignore[assignment]  [B,H,d,dv] = K^^T V / sqrt(d)
    k: torch.Tensor = None  # type: ignore[assignment]   reference to the keys (evaluation only)
    v: torch.Tensor = None  # type: ignore[assignment]   reference to the values (causal form)
    # 1 / (smallest row norm of elu(K)) over real rows, inf when a row is zero or padded:
    # finite means every behaviour's value row enters kv with a non-zero weight (``prepare``
    # then checks V through kv); None for the causal form, which makes no kv
    v_witness: torch.Tensor | None = None
    # sum of K (0-d), made by the checked calls only (``_prepare_witnessed``): finite proves K
    # finite; None from ``prepare_unchecked`` and the causal form
    k_witness: torch.Tensor | None = None
    # ||kv||_F in fp32 (0-d), made by the checked calls only: finite proves kv finite (what
    # kv itself proved before) and bounds the output (``_output_proven_finite``)
    kv_norm: torch.Tensor | None = None


@register
class LinRecAttention(AttentionOperator):
    name = "linrec"
    PARAMS = {"eps": 1e-12, "backend": "auto"}
    supports_causal = True  # causal form: chunked prefix sums (causal_linear.py)
    causal_kernel = False  # the Triton kernel is the non-causal form only
    weights_are_distribution = False
    description = "L2-normalised linear attention (ELU, row L2 norm, Q(K^T V)/sqrt(d))"

    def _validate_params(self):
        # eps only guards the division of an all-zero row; above EPS_MAX it would rescale
        # real rows (ELU outputs of small inputs have norms ~ |x|)
        check_float(self.name, "eps", self.params["eps"], 0.0, EPS_MAX, lo_open=True)

    def _prepare(self, k, v, key_mask, witnesses: bool = False):
        # elu_l2 written out (the same ops as F.normalize) to keep the row norms: they are
        # the witness that lets the small kv prove V finite (``_inputs_proven_by_state``)
        grad = needs_grad(k)
        y = F.elu(k.float())
        # K's finiteness (checked calls): its sum right after the ELU read K, still in cache
        # (at N = 16384 this cost less than the same sum before the ELU in an A/B)
        k_witness = k.sum() if witnesses and k.dtype != torch.float16 else None
        norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
        witness = None
        if witnesses:  # read by ``_prepare_proving`` only; before the clamp below, which may
            # run in place: a zero row's norm must give an infinite witness
            witness = (
                norms.amin().reciprocal()
                if key_mask is None
                else torch.tensor(float("inf"), device=k.device)
            )
        kn = zero_padded(row_divide(y, norms, self.params["eps"], grad), key_mask)
        kv = torch.matmul(kn.transpose(-1, -2), v.float()).mul_(inv_sqrt(k.shape[-1]))
        if kv.dtype != k.dtype:
            kv = kv.to(k.dtype)
        return LinRecState(
            **self._base_state_kwargs(k, v, key_mask),
            kv=kv,
            k=k,
            v=v,
            v_witness=witness,
            k_witness=k_witness,
            kv_norm=frobenius(kv) if witnesses else None,
        )

    def _prepare_witnessed(self, k, v, key_mask):
        return self._prepare(k, v, key_mask, witnesses=True)

    def _output_proven_finite(self, state: LinRecState, q: torch.Tensor, causal: bool) -> bool:
        """Every output value and partial sum is q^_i . kv[:, j] with ||q^_i|| <= 1 (the rows
        of q^ are L2-normalised; finite q gives finite q^), so |.| <= ||kv[:, j]|| <=
        ||kv||_F: below half the dtype's largest finite value (room for rounding) the output
        is finite and forward skips reading it. Causal form (no kv): not proven."""
        if causal or state.kv_norm is None:
            return False
        return state.kv_norm.item() < half_max(q.dtype)

    def _inputs_proven_by_state(self, k=None, v=None) -> tuple[str, ...]:
        """V is checked through kv = K^^T V / sqrt(d) when every row of elu(K) is non-zero and
        real (``v_witness`` finite): a NaN or inf in V's row j then meets the non-zero weights
        of K^_j, and a non-zero factor is never skipped (inf x w = inf, NaN x w = NaN, and
        sums of those stay non-finite), so kv is non-finite. Otherwise (a zero or padded key
        row, the causal form) V gets its own pass. K: ELU(-inf) = -1 is finite, so no product
        of K^ reveals a -inf in K; the checked calls sum K right after the ELU instead
        (``k_witness``, one pass over K where the ELU left it in cache), except in fp16,
        whose total of 65,504 overflows easily: there K gets the direct check (with its
        row-sum retry) before prepare."""
        return ("v",) if getattr(k, "dtype", None) == torch.float16 else ("k", "v")

    def _state_tensors(self, state: LinRecState) -> tuple[torch.Tensor, ...]:
        if state.v_witness is None or state.kv is None or state.key_mask is not None:
            # proves nothing (the causal form; a mask, whose padded rows make v_witness
            # infinite by construction): K and V get their own checks
            return ()
        kv = state.kv if state.kv_norm is None else state.kv_norm
        if state.k_witness is None:  # fp16: K was checked directly
            return (kv, state.v_witness)
        return (state.k_witness, kv, state.v_witness)

    def _prepare_for_causal(self, k, v, key_mask):
        """forward(causal=True) attends by prefix sums over k and v: no K^T V sum needed."""
        return LinRecState(**self._base_state_kwargs(k, v, key_mask), kv=None, k=k, v=v)

    def _attend(self, state: LinRecState, q, causal):
        if causal:  # torch only (no kernel): prefix sums over the past
            return causal_linear.linrec_causal(
                q, state.k, state.v, state.key_mask, self.params["eps"]
            )
        if self._backend(q, state) == "triton":
            from .kernels.row_mlp import linrec_attend

            return linrec_attend(q, state.kv, state.empty_users, self.params["eps"])
        y = F.elu(q.float())
        norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
        qn = row_divide(y, norms, self.params["eps"], needs_grad(q))
        if qn.dtype != q.dtype:
            qn = qn.to(q.dtype)
        return zero_empty_users(torch.matmul(qn, state.kv), state.empty_users)

    def _implied_weights_chunk(self, state: LinRecState, q, row_offset, causal):
        eps = self.params["eps"]
        if causal:
            return causal_linear.linrec_causal_weights(q, state.k, state.key_mask, eps, row_offset)
        return torch.matmul(elu_l2(q, eps), elu_l2(state.k, eps).transpose(-1, -2)) * inv_sqrt(
            state.d
        )

    def cost_prepare(self, shape, dtype=torch.float32):
        n, d, dv, es = shape.n, shape.d, shape.value_dim, element_size(dtype)
        flops = 6 * n * d + 2 * n * d * dv
        exps = n * d  # ELU evaluates exp (expm1) on every key element
        return Cost(
            float(shape.bh * flops),
            float(shape.bh * (es * n * (d + dv) + es * d * dv)),
            float(shape.bh * exps),
        )

    def cost_attend(self, shape, dtype=torch.float32):
        if shape.causal:  # prefix sums over the past (causal_linear.py)
            return Cost(*causal_linear.linrec_causal_cost(shape, dtype))
        m, d, dv, es = shape.m, shape.d, shape.value_dim, element_size(dtype)
        flops = 6 * m * d + 2 * m * d * dv
        exps = m * d  # ELU on every query element
        return Cost(
            float(shape.bh * flops),
            float(shape.bh * es * (m * d + d * dv + m * dv)),
            float(shape.bh * exps),
        )

    def memory_model(self, shape, dtype=torch.float32):
        es = element_size(dtype)
        return float(
            shape.bh
            * (4 * shape.n * shape.d + 4 * shape.m * shape.d + es * shape.m * shape.value_dim)
        )
