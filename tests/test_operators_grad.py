"""Autograd through every method (issue 16): fp64 gradcheck with a padded user, the clear
refusals where a part has no reliable backward, and the Triton backend's fall-back to the
torch path whenever grad is needed (run under Triton's interpreter on CPU).

Tolerances: methods whose documented internals are fp32 whatever the input dtype (LinRec's
and Performer's non-causal feature maps, LREA's projections) are checked with a central
difference step of 1e-3 and atol = rtol = 2e-3: fp32 rounding (~6e-8 relative) divided by
the step gives ~1e-4 of noise in the numerical derivative, the step's truncation error
~1e-6. Everything else (dense, svd_exact / svd_tokens with ``gram``, the causal linear forms,
which compute in fp64 for fp64 input) uses gradcheck's defaults (step 1e-6, atol 1e-5,
rtol 1e-3).
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import attention_impls as ai
from attention_impls.grad_rules import BACKWARD_SOLVERS

pytestmark = pytest.mark.usefixtures("one_thread")

B, H, N, M, D = 2, 1, 8, 3, 4
DEV = torch.device(
    "cuda" if torch.cuda.is_available() else "cpu"
)  # triton: compiled, or the interpreter
FP32_INSIDE = {"eps": 1e-3, "atol": 2e-3, "rtol": 2e-3}
EXACT = {}


def padded() -> torch.Tensor:
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 5:] = False  # user 1 has 5 real behaviours: fewer than d_k + d_v = 8
    return mask


def leaves(m=M, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(B, H, length, D, generator=g, dtype=torch.float64).requires_grad_(True)
        for length in (m, N, N)
    )


def lrea_op(form: str) -> ai.AttentionOperator:
    op = ai.get("lrea", rank=3, form=form)
    w = torch.randn(N, 3, generator=torch.Generator().manual_seed(7))
    op.set_projection(w, w.T.clone())
    return op


# (label, operator factory, causal, gradcheck options)
CASES = [
    ("dense", lambda: ai.get("dense"), False, EXACT),
    ("dense causal", lambda: ai.get("dense"), True, EXACT),
    ("svd_exact r3", lambda: ai.get("svd_exact", rank=3, solver="gram"), False, EXACT),
    ("svd_exact full", lambda: ai.get("svd_exact", rank=8, solver="gram"), False, EXACT),
    ("svd_exact causal full", lambda: ai.get("svd_exact", rank=8, solver="gram"), True, EXACT),
    ("svd_tokens r3", lambda: ai.get("svd_tokens", rank=3, solver="gram"), False, EXACT),
    ("svd_tokens rms", lambda: ai.get("svd_tokens", rank=3, token_scaling="rms"), False, EXACT),
    ("linrec", lambda: ai.get("linrec"), False, FP32_INSIDE),
    ("linrec causal", lambda: ai.get("linrec"), True, EXACT),
    ("performer", lambda: ai.get("performer", features=8), False, FP32_INSIDE),
    ("performer causal", lambda: ai.get("performer", features=8), True, EXACT),
    ("lrea absorbed", lambda: lrea_op("absorbed"), False, FP32_INSIDE),
    ("lrea training", lambda: lrea_op("training"), False, FP32_INSIDE),
]


@pytest.mark.parametrize("label,factory,causal,tol", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_fp64(label, factory, causal, tol, masked):
    op = factory()
    mask = padded() if masked else None
    q, k, v = leaves(m=N if causal else M)
    assert gradcheck(lambda q, k, v: op.forward(q, k, v, mask, causal=causal), (q, k, v), **tol), (
        label
    )


def test_every_method_is_gradchecked():
    assert {c[0].split()[0] for c in CASES} == set(ai.available())


def test_lrea_gradients_reach_the_projection():
    """The training form's W_comp / W_decomp get correct gradients (what AttentionLayer learns)."""
    q, k, v = leaves()
    g = torch.Generator().manual_seed(3)
    wc = torch.randn(N, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    wd = torch.randn(3, N, generator=g, dtype=torch.float64).requires_grad_(True)
    for form in ("absorbed", "training"):
        op = ai.get("lrea", rank=3, form=form)

        def f(wc, wd, op=op):
            op.w_comp, op.w_decomp = wc.float(), wd.float()  # what AttentionLayer.forward does
            return op.forward(q.detach(), k.detach(), v.detach(), padded())

        assert gradcheck(f, (wc, wd), **FP32_INSIDE), form


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("solver", ["svd", "lowrank", "gram_lowrank"])
@pytest.mark.parametrize("name", ["svd_exact", "svd_tokens"])
def test_solvers_without_backward_refuse_it_clearly(name, solver):
    """They gave NaN (svd, gram_lowrank) or ~1e49 (lowrank) gradients for a padded user."""
    assert solver not in BACKWARD_SOLVERS
    q, k, v = leaves()
    op = ai.get(name, rank=3, solver=solver)
    with pytest.raises(
        ValueError, match=rf"{name}: solver='{solver}' has no reliable backward.*solver='gram'"
    ):
        op.forward(q, k, v, padded())
    with torch.no_grad():  # inference is untouched
        assert torch.isfinite(op.forward(q, k, v, padded())).all()
    # only q requires grad: the decomposition is not differentiated, the gradient is exact
    assert gradcheck(lambda q: op.forward(q, k.detach(), v.detach(), padded()), (q,))


def test_lrea_default_projection_is_a_constant_with_a_backward():
    """Without fit / set_projection LREA uses the segment-mean basis (issue 11): a constant of
    N and r, not an SVD of the keys, so gradients to q, k and v pass fp64 gradcheck."""
    q, k, v = leaves()
    op = ai.get("lrea", rank=3)
    assert op.projection_source == "segment_means"
    assert gradcheck(lambda q, k, v: op.forward(q, k, v, padded()), (q, k, v), **FP32_INSIDE)


# ----------------------------------------------------------------------------- triton backend

KERNELS = {  # method -> (params, module, kernel entry point the torch fall-back must not call)
    "dense": ({}, "flash_small_head", "flash_small_head"),
    "svd_exact": ({"rank": 4}, "flash_small_head", "flash_small_head"),
    "svd_tokens": ({"rank": 4}, "row_mlp", "svd_tokens_attend"),
    "linrec": ({}, "row_mlp", "linrec_attend"),
    "performer": ({"features": 16}, "row_mlp", "performer_attend"),
    "lrea": ({"rank": 3}, "row_mlp", "lrea_attend"),
}


def triton_ops(name):
    params = KERNELS[name][0]
    tri, ref = ai.get(name, backend="triton", **params), ai.get(name, backend="torch", **params)
    if name == "lrea":
        w = torch.randn(N, 3, generator=torch.Generator().manual_seed(7))
        for op in (tri, ref):
            op.set_projection(w, w.T.clone())
    return tri, ref


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("which", ["q", "k", "v", "qkv"])
def test_triton_backend_gradients_equal_torch(name, which, monkeypatch):
    """backend='triton' under grad: the torch path runs (the kernel is not called), outputs
    require grad and the gradients equal the torch backend's; without grad the kernel runs."""
    import importlib

    tri, ref = triton_ops(name)
    mod = importlib.import_module(f"attention_impls.kernels.{KERNELS[name][1]}")
    q, k, v = (t.detach().to(DEV, torch.float32) for t in leaves())
    mask = padded().to(DEV)
    with torch.no_grad():
        assert tri.backend_used(q.device, q.dtype) == "triton"
        no_grad_out = tri.forward(q, k, v, mask)
        assert float((no_grad_out - ref.forward(q, k, v, mask)).abs().max()) < 1e-4
    assert tri.backend_used(q.device, q.dtype, requires_grad=True) == "torch"

    def no_kernel(*args, **kwargs):
        raise AssertionError("the Triton kernel has no backward: it must not run under grad")

    monkeypatch.setattr(mod, KERNELS[name][2], no_kernel)
    grads = []
    for op in (tri, ref):
        ins = [t.clone().requires_grad_(c in which) for t, c in zip((q, k, v), "qkv", strict=True)]
        out = op.forward(*ins, mask)
        assert out.requires_grad
        wanted = [t for t in ins if t.requires_grad]
        grads.append(torch.autograd.grad((out * out).sum(), wanted))
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
        assert float(a.abs().max()) > 0


@pytest.mark.parametrize("n", [3, 12])  # N < d_k + d_v = 8 and N > 8: both full-rank routes
@pytest.mark.parametrize("solver", ["gram", "svd", "lowrank", "gram_lowrank"])
def test_svd_exact_full_rank_gradients_are_dense_for_every_solver(n, solver):
    """At full rank svd_exact is dense attention, so its gradients must be dense's, with a
    padded user (zero singular values) and for solvers that refuse backward below full rank."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (
        torch.randn(B, H, length, D, generator=g, dtype=torch.float64).requires_grad_(True)
        for length in (M, n, n)
    )
    mask = torch.ones(B, n, dtype=torch.bool)
    mask[1, n // 2 :] = False
    op = ai.get("svd_exact", rank=min(n, 2 * D), solver=solver)
    assert gradcheck(lambda q, k, v: op.forward(q, k, v, mask), (q, k, v)), solver
    out = op.forward(q, k, v, mask)
    ref = ai.get("dense").forward(q, k, v, mask)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name,params", [("linrec", {}), ("svd_exact", {"rank": 4})])
@pytest.mark.parametrize("masked", [False, True])
def test_in_place_no_grad_paths_equal_the_recorded_ones(name, params, masked):
    """linrec's features and svd_exact's U' are written in place when autograd does not
    record; the recorded path computes the same arithmetic out of place: same outputs."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 2, n, 8, generator=g) for n in (5, 40, 40))
    mask = None
    if masked:
        mask = torch.ones(2, 40, dtype=torch.bool)
        mask[1, 30:] = False
    op = ai.get(name, **params)
    with torch.no_grad():
        fast = op.forward(q, k, v, mask)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    recorded = op.forward(*leaves, mask)
    assert recorded.requires_grad
    if name == "linrec":
        assert torch.equal(fast, recorded.detach())
    else:  # autograd runs svd_exact's fp64 Gram route below full rank: same result to rounding
        torch.testing.assert_close(fast, recorded.detach(), rtol=1e-4, atol=1e-5)
