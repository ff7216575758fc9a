"""Property-based checks of every operator (issue 12): strategies and the one property.

Property, for any generated case (shapes incl. N = 1 and M = 1, fp16 / bf16 / fp32, padding
masks incl. all-padding users, input scales 10^-4.5 .. 10^4.5, causal where supported):

    the call raises ValueError, or its output is finite, has q's dtype, is exactly zero
    for users with no real behaviour, and is within the stated bound of the reference;
    its implied weights are finite (and rows sum to 1 or 0 for the softmax methods).

Reference: dense attention in fp64 on the same (rounded) inputs for the exact methods (dense,
and svd_exact when rank >= min(N, d + dv)); otherwise the method's own output on the same
inputs in fp32. Bound: |out - ref|_max <= C_TOL * (u * scale + s), u the working dtype's unit
roundoff (2^-11 fp16, 2^-8 bf16, 2^-24 fp32), s its smallest subnormal (what rounding a tiny
value to the dtype can lose absolutely), scale an a-priori magnitude of the method:

- softmax methods: max|v| (1 + u_f L) with L = max|q_i| max|k_j| / sqrt(d) (the logit bound)
  and u_f = u32 / u where the scores are computed from fp32 factors (dense, svd_exact with
  scores="fp32": score error u32 L) and 1 where the factors are rounded to the working dtype
  (score error u L). svd_exact factors K jointly with V, so its error is relative to
  [K|V], not K: there max|k_j| becomes max(||[K|V]||_2, r max_j |[k_j|v_j]|), and the
  fp32 factorisation adds an absolute u32 ||[K|V]||_2 (V far smaller than K is resolved
  only to that: components below 8 eps_fp32 s_1 are dropped).
  svd_tokens uses its tokens Zk, Zv in place of k, v.
- linrec: max of (|Q^| + e) (|K^|^T |V| / sqrt(d) + e)  (the absolute-value product of its
  formula; e = s / u carries the underflow of an intermediate rounded to the dtype);
- lrea:   max of (|q| |C| + e) (|W_decomp V| + e)   (training form: ((|q| |C| + e) |W_decomp|
  + e) |V|).

Used by tests/test_operators_properties.py (CI, derandomized) and tests/fuzz_operators.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

import attention_impls as ai
from attention_impls.decompose import SOLVERS
from attention_impls.linrec import elu_l2

C_TOL = 64.0
UNIT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
U32 = 2.0**-24
SUB = {
    torch.float16: 2.0**-24,
    torch.bfloat16: 2.0**-133,
    torch.float32: 2.0**-149,
}  # smallest subnormal
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
METHODS = ("dense", "svd_exact", "svd_tokens", "linrec", "lrea", "performer")
CAUSAL = ("dense", "svd_exact", "linrec", "performer")


@dataclass
class Case:
    method: str
    params: dict[str, Any]
    dtype: torch.dtype
    b: int
    h: int
    n: int
    m: int
    d: int
    dv: int
    scales: tuple[float, float, float]  # q, k, v
    mean: float  # common component added to k and v (before scaling), as real embeddings have
    mask: list[list[bool]] | None
    causal: bool
    seed: int

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        g = torch.Generator().manual_seed(self.seed)
        q = torch.randn(self.b, self.h, self.m, self.d, generator=g) * self.scales[0]
        k = (torch.randn(self.b, self.h, self.n, self.d, generator=g) + self.mean) * self.scales[1]
        v = (torch.randn(self.b, self.h, self.n, self.dv, generator=g) + self.mean) * self.scales[2]
        mask = None if self.mask is None else torch.tensor(self.mask, dtype=torch.bool)
        return q.to(self.dtype), k.to(self.dtype), v.to(self.dtype), mask


def _params(draw, method: str, n: int, d: int, dv: int) -> dict[str, Any]:
    if method == "svd_exact":
        full = min(n, d + dv)
        rank = draw(st.one_of(st.just(full), st.integers(1, full + 1)))  # full + 1: a ValueError
        return {
            "rank": rank,
            "solver": draw(st.sampled_from(SOLVERS)),
            "scores": draw(st.sampled_from(("fp32", "fp32", "working"))),
        }
    if method == "svd_tokens":
        return {
            "rank": draw(st.integers(1, min(n, d + dv))),
            "solver": draw(st.sampled_from(SOLVERS)),
            "token_scaling": draw(st.sampled_from(("singular", "rms"))),
        }
    if method == "lrea":
        return {
            "rank": draw(st.integers(1, n)),
            "form": draw(st.sampled_from(("absorbed", "training"))),
            "slope": draw(st.sampled_from((0.0, 0.01, 0.2))),
        }
    if method == "performer":
        return {
            "features": draw(st.integers(1, 48)),
            "orthogonal": draw(st.booleans()),
            "redraw": draw(st.sampled_from(("fixed", "per_prepare"))),
            "eps": draw(st.sampled_from((0.0, 1e-6, 1e-3, "auto"))),
        }
    if method == "linrec":
        return {"eps": draw(st.sampled_from((1e-12, 1e-6)))}
    return {}


@st.composite
def cases(draw, methods: tuple[str, ...] = METHODS) -> Case:
    method = draw(st.sampled_from(methods))
    dtype = draw(st.sampled_from(DTYPES))
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n = draw(st.one_of(st.just(1), st.integers(1, 48)))
    m = draw(st.one_of(st.just(1), st.integers(1, 12)))
    d = draw(st.one_of(st.just(1), st.integers(1, 24)))
    dv = draw(st.one_of(st.just(d), st.integers(1, 24)))
    causal = method in CAUSAL and draw(st.booleans())
    if causal:
        m = n
    exponent = st.floats(-4.5, 4.5, allow_nan=False)
    scales = tuple(10.0 ** draw(exponent) for _ in range(3))
    mean = draw(st.sampled_from((0.0, 0.0, 3.0)))
    mask = None
    if draw(st.booleans()):
        mask = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(b)]
        if draw(st.booleans()):
            mask[draw(st.integers(0, b - 1))] = [False] * n  # a user with no real behaviour
    return Case(
        method,
        _params(draw, method, n, d, dv),
        dtype,
        b,
        h,
        n,
        m,
        d,
        dv,
        scales,
        mean,
        mask,
        causal,
        draw(st.integers(0, 2**31 - 1)),
    )


# ----------------------------------------------------------------------------- the property


@dataclass
class Tally:
    calls: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _exact(case: Case) -> bool:
    return case.method == "dense" or (
        case.method == "svd_exact" and case.params["rank"] >= min(case.n, case.d + case.dv)
    )


def _real(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Rows of real behaviours of x [B,H,N,D] (padded rows zeroed), fp64."""
    x = x.double()
    return x if mask is None else x * mask[:, None, :, None].double()


def _scale(case: Case, op: ai.AttentionOperator, q, k, v, mask) -> float:
    """The a-priori magnitude the error bound is relative to (see the module docstring)."""
    u = UNIT[case.dtype]
    e = SUB[case.dtype] / u
    qd, kd, vd = q.double(), _real(k, mask), _real(v, mask)
    qn = float(qd.norm(dim=-1).max())
    if case.method in ("dense", "svd_exact", "performer"):
        key_norm, s1 = float(kd.norm(dim=-1).max()), 0.0
        if case.method == "svd_exact":  # K is factored jointly with V: errors scale with [K|V]
            x = torch.cat([kd, vd], dim=-1)
            s1 = float(torch.linalg.matrix_norm(x, ord=2).max())
            key_norm = max(s1, case.params["rank"] * float(x.norm(dim=-1).max()))
        logit = qn * key_norm / math.sqrt(case.d)
        fp32_factors = _exact(case) or case.method == "svd_exact"
        uf = U32 / u if fp32_factors and case.params.get("scores") != "working" else 1.0
        return float(vd.abs().max()) * (1 + uf * logit) + (U32 / u) * s1
    ref_op = ai.get(case.method, **case.params)
    state = ref_op.prepare(k.float(), v.float(), mask)
    if case.method == "svd_tokens":
        zk, zv = state.zk.double(), state.zv.double()
        logit = qn * float(zk.norm(dim=-1).max()) / math.sqrt(case.d)
        return float(zv.abs().max()) * (1 + logit)
    if case.method == "linrec":
        qh = elu_l2(q, ref_op.params["eps"]).double().abs()
        kh = _real(elu_l2(k, ref_op.params["eps"]), mask).abs()
        return float(((qh + e) @ (kh.transpose(-1, -2) @ vd.abs() / math.sqrt(case.d) + e)).max())
    # lrea
    a = qd.abs() @ state.c.double().abs() + e
    if case.params["form"] == "absorbed":
        return float((a @ (state.bv.double().abs() + e)).max())
    w = ref_op._decomp(state, torch.float64).abs()
    return float(((a @ w + e) @ vd.abs()).max())


def check_case(case: Case, tally: Tally | None = None) -> str:
    """Run one case; return its outcome ('ok' or 'ValueError: <kind>'), raise AssertionError
    when the property is violated (any other exception propagates: a traceback is a failure)."""
    q, k, v, mask = case.tensors()
    op = ai.get(case.method, **case.params)
    if tally is not None:
        tally.calls += 1
    try:
        out = op.forward(q, k, v, mask, causal=case.causal)
    except ValueError as exc:
        msg = str(exc)
        kind = next(
            (
                key
                for key in (
                    "contains inf",
                    "contains NaN",
                    "larger than the data allows",
                    "exceeded the dtype's range",
                    "would leak the future",
                )
                if key in msg
            ),
            msg[:60],
        )
        outcome = f"ValueError: {kind}"
        if tally is not None:
            tally.add(f"{case.method} {str(case.dtype)[6:]}: {outcome}")
        return outcome
    assert out.shape == (case.b, case.h, case.m, case.dv), out.shape
    assert out.dtype == case.dtype, out.dtype
    assert bool(torch.isfinite(out).all()), f"non-finite output without an error: {case}"
    if mask is not None:
        empty = ~mask.any(dim=1)
        assert float(out[empty].abs().max()) == 0.0 if bool(empty.any()) else True, (
            "all-padding user not zero"
        )
    try:
        w = op.implied_weights(op.prepare(k, v, mask), q, causal=case.causal)
    except ValueError as exc:  # a clear range error is allowed (e.g. fp16 token scales past 65504)
        assert "exceeded the dtype's range" in str(exc), str(exc)
        if tally is not None:
            tally.add(
                f"{case.method} {str(case.dtype)[6:]}: implied weights: exceeded the dtype's range"
            )
        return "ok (implied weights out of range)"
    assert w.shape == (case.b, case.h, case.m, case.n) and bool(torch.isfinite(w).all()), (
        "implied weights"
    )
    if op.weights_are_distribution:  # rows sum to 1, or 0 where nothing is visible
        sums = w.double().sum(-1)
        assert bool(((sums - 1).abs() < 1e-3).logical_or(sums.abs() < 1e-6).all()), (
            "weights not a distribution"
        )
    if _exact(case):
        ref = ai.get("dense").forward(q.double(), k.double(), v.double(), mask, causal=case.causal)
    else:
        try:
            ref = ai.get(case.method, **case.params).forward(
                q.float(), k.float(), v.float(), mask, causal=case.causal
            )
        except ValueError:  # the fp32 run itself out of range: nothing finite to compare with
            ref = None
    if ref is not None:
        err = float((out.double() - ref.double()).abs().max())
        bound = C_TOL * (UNIT[case.dtype] * _scale(case, op, q, k, v, mask) + SUB[case.dtype])
        assert err <= bound, f"error {err:.3g} > bound {bound:.3g} for {case}"
    if tally is not None:
        tally.add(f"{case.method} {str(case.dtype)[6:]}: ok")
    return "ok"
