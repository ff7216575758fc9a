"""Causal self-attention (issue 16): no method that claims it sees the future; the chunked
linear forms equal their written-out O(N^2)-masked references, forward and backward."""

from __future__ import annotations

import pytest
import torch

import attention_impls as ai
from attention_impls import Shape
from attention_impls import causal_linear as cl
from conftest import make_qkv

pytestmark = pytest.mark.usefixtures("one_thread")

# parameters at which each method claims causal support (svd_exact: full rank, see below)
CAUSAL_PARAMS = {
    "dense": {},
    "svd_exact": {"rank": 20},
    "linrec": {},
    "performer": {"features": 32},
}
B, H, N, D = 2, 2, 20, 12


def masks() -> list[torch.Tensor | None]:
    """No mask; and one user padded at the end, one at the start (SASRec pads in front)."""
    m = torch.ones(B, N, dtype=torch.bool)
    m[0, 15:] = False
    m[1, :6] = False
    return [None, m]


def test_the_causal_methods_are_the_ones_listed():
    shape = Shape(B, H, N, N, D, causal=True)
    claims = [name for name in ai.available() if ai.method_class(name).supports_causal]
    assert sorted(claims) == sorted(CAUSAL_PARAMS)
    for name in claims:
        assert ai.get(name, **CAUSAL_PARAMS[name]).check(shape) == [], name
    for name in sorted(set(ai.available()) - set(claims)):
        assert any("causal" in r for r in ai.get(name).check(shape)), name


@pytest.mark.parametrize("name", sorted(CAUSAL_PARAMS))
@pytest.mark.parametrize("t", [1, 7, 19])
@pytest.mark.parametrize("mi", [0, 1])
def test_changing_the_future_leaves_the_past_untouched(name, t, mi):
    """Keys / values at positions >= t replaced by large unrelated ones: rows < t identical
    (to 1e-6 in fp32), rows >= t do change (the test can fail)."""
    mask = masks()[mi]
    q, k, v = make_qkv(b=B, h=H, n=N, m=N, d=D, seed=3)
    g = torch.Generator().manual_seed(9)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, t:] = 4.0 * torch.randn(k2[:, :, t:].shape, generator=g) + 2.0
    v2[:, :, t:] = 9.0 * torch.randn(v2[:, :, t:].shape, generator=g) - 3.0
    op = ai.get(name, **CAUSAL_PARAMS[name])
    out = op.forward(q, k, v, mask, causal=True)
    out2 = op.forward(q, k2, v2, mask, causal=True)
    assert float((out[:, :, :t] - out2[:, :, :t]).abs().max()) <= 1e-6, name
    changed = (out[:, :, t:] - out2[:, :, t:]).abs().amax(dim=(1, 2, 3))
    real_after = torch.ones(B, dtype=torch.bool) if mask is None else mask[:, t:].any(dim=1)
    assert bool((changed[real_after] > 1e-2).all()), "the future did not matter at all"


def test_svd_exact_causal_refuses_truncated_rank():
    """Its subspace is fitted on all N positions: a truncated rank would leak the future."""
    q, k, v = make_qkv(b=1, h=1, n=N, m=N, d=D)
    op = ai.get("svd_exact", rank=8)
    reasons = op.check(Shape(1, 1, N, N, D, causal=True))
    assert reasons and "causal needs rank = min(N, d_k + d_v) = 20" in reasons[0]
    with pytest.raises(ValueError, match="would leak the future"):
        op.forward(q, k, v, causal=True)
    assert op.check(Shape(1, 1, N, 4, D)) == []  # non-causal truncated rank is fine
    assert op.forward(q, k, v).shape == (1, 1, N, D)
    assert ai.get("svd_exact", rank=20).check(Shape(1, 1, N, N, D, causal=True)) == []


def test_svd_exact_causal_full_rank_equals_dense_with_padding():
    q, k, v = make_qkv(b=B, h=H, n=N, m=N, d=D, seed=4)
    mask = masks()[1]
    ref = ai.get("dense").forward(q, k, v, mask, causal=True)
    out = ai.get("svd_exact", rank=N).forward(q, k, v, mask, causal=True)
    assert float((out - ref).abs().max()) < 1e-5


# ----------------------------------------------------------------------------- linear forms


def inputs(dtype=torch.float32, scale=2.0, seed=0, n=N, dv=7):
    g = torch.Generator().manual_seed(seed)
    q = (scale * torch.randn(B, H, n, D, generator=g)).to(dtype)
    k = (scale * torch.randn(B, H, n, D, generator=g)).to(dtype)
    v = torch.randn(B, H, n, dv, generator=g).to(dtype)
    return q, k, v


def omega(features=16, seed=0):
    return ai.get("performer", features=features, seed=seed).features_for(D)


def run(form: str, q, k, v, mask, chunk=None, reference=False):
    if form == "linrec":
        if reference:
            return cl.linrec_causal_reference(q, k, v, mask, 1e-12)
        return cl.linrec_causal(q, k, v, mask, 1e-12, chunk)
    if reference:
        return cl.performer_causal_reference(q, k, v, mask, omega(), 1e-6)
    return cl.performer_causal(q, k, v, mask, omega(), 1e-6, chunk)


@pytest.mark.parametrize("form", ["linrec", "performer"])
@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
@pytest.mark.parametrize("mi", [0, 1])
def test_chunked_equals_masked_reference_forward(form, chunk, mi):
    mask = masks()[mi]
    q, k, v = inputs()
    out = run(form, q, k, v, mask, chunk)
    ref = run(form, q, k, v, mask, reference=True)
    assert float((out - ref).abs().max()) < 2e-6 * (1 + float(ref.abs().max()))
    if mask is not None:  # user 1 is padded in front: rows that see no real key are zero
        assert float(out[1, :, :6].abs().max()) == 0.0


@pytest.mark.parametrize("form", ["linrec", "performer"])
@pytest.mark.parametrize("chunk", [1, 6, 64])
def test_chunked_equals_masked_reference_backward(form, chunk):
    mask = masks()[1]
    q, k, v = inputs(torch.float64, seed=2)
    g = torch.randn(B, H, N, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = []
    for reference in (False, True):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = run(form, *leaves, mask, chunk, reference=reference)
        grads.append(torch.autograd.grad((out * g).sum(), leaves))
    for a, b, name in zip(*grads, "qkv", strict=True):
        assert torch.isfinite(a).all(), name
        assert float((a - b).abs().max()) < 1e-10 * (1 + float(b.abs().max())), name


@pytest.mark.parametrize("name", ["linrec", "performer"])
@pytest.mark.parametrize("mi", [0, 1])
def test_operator_causal_last_row_equals_non_causal_and_weights_agree(name, mi):
    """The last row sees everything: it equals the non-causal output (Performer's prefix-max
    stabiliser is then the global one). Implied weights reproduce the causal output."""
    mask = masks()[mi]
    q, k, v = inputs(seed=1)
    op = ai.get(name, **CAUSAL_PARAMS[name])
    causal = op.forward(q, k, v, mask, causal=True)
    full = op.forward(q, k, v, mask)
    assert float((causal[:, :, -1] - full[:, :, -1]).abs().max()) < 1e-5
    assert float((causal[:, :, :-1] - full[:, :, :-1]).abs().max()) > 1e-3
    w = op.implied_weights(op.prepare(k, v, mask), q, causal=True)
    vz = v if mask is None else v * mask[:, None, :, None]
    assert float((torch.matmul(w, vz) - causal).abs().max()) < 1e-5
    assert float(w.triu(1).abs().max()) == 0.0


@pytest.mark.parametrize("form", ["linrec", "performer"])
def test_large_logits_stay_finite(form):
    """Performer's keys with logits in the hundreds: the prefix-max rescaling never overflows."""
    q, k, v = inputs(scale=30.0, seed=4)
    out = run(form, q, k, v, masks()[1], 5)
    ref = run(form, q.double(), k.double(), v.double(), masks()[1], reference=True)
    assert torch.isfinite(out).all()
    assert float((out.double() - ref).abs().max()) < 1e-4 * (1 + float(ref.abs().max()))


def test_half_precision_and_bad_chunk():
    q, k, v = make_qkv(b=1, h=1, n=N, m=N, d=D, dtype=torch.bfloat16)
    for name in ("linrec", "performer"):
        out = ai.get(name).forward(q, k, v, causal=True)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        cl.linrec_causal(q, k, v, None, 1e-12, chunk=0)


@pytest.mark.parametrize(
    "name,kernel", [("linrec", "linrec_attend"), ("performer", "performer_attend")]
)
def test_causal_linear_runs_torch_whatever_the_backend(name, kernel, monkeypatch):
    """The Triton kernels are the non-causal forms: a causal call runs the torch path, and
    ``backend_used(..., causal=True)`` (the bench's backend column) says so."""
    import attention_impls.kernels.row_mlp as row_mlp

    dev = "cuda" if torch.cuda.is_available() else "cpu"  # compiled kernels, or the interpreter
    q, k, v = make_qkv(b=1, h=1, n=N, m=N, d=D, device=dev)
    tri = ai.get(name, backend="triton")
    assert tri.backend_used(dev, torch.float32) == "triton"
    assert tri.backend_used(dev, torch.float32, causal=True) == "torch"
    assert (
        ai.get("dense", backend="triton").backend_used(dev, torch.float32, causal=True) == "triton"
    )

    def no_kernel(*args, **kwargs):
        raise AssertionError("the non-causal kernel ran a causal call")

    monkeypatch.setattr(row_mlp, kernel, no_kernel)
    with torch.no_grad():
        assert torch.equal(
            tri.forward(q, k, v, causal=True),
            ai.get(name, backend="torch").forward(q, k, v, causal=True),
        )


@pytest.mark.parametrize("name", ["linrec", "performer"])
def test_causal_cost_model_counts_the_masked_blocks(name):
    """The modelled causal attend does more work than the non-causal one (the C x C blocks and
    the running state) and grows linearly in N, not quadratically."""
    op = ai.get(name, **CAUSAL_PARAMS[name])
    small, big = Shape(1, 2, 1024, 1024, 16, causal=True), Shape(1, 2, 4096, 4096, 16, causal=True)
    plain = op.cost_attend(Shape(1, 2, 1024, 1024, 16))
    causal = op.cost_attend(small)
    assert causal.flops > plain.flops and causal.exps >= plain.exps and causal.bytes > 0
    assert op.cost_attend(big).flops == pytest.approx(4 * causal.flops)
