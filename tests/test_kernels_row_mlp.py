"""The fused row-MLP kernel (``attention_impls/kernels/row_mlp.py``) held to the torch backend.

svd_tokens, linrec, lrea (absorbed) and performer run their ``attend`` as one Triton
launch with ``backend="triton"``. On a machine without CUDA the root conftest sets
TRITON_INTERPRET=1, so these tests run the kernel on CPU tensors under Triton's
interpreter; on a CUDA machine they run the compiled kernel on the GPU (and the CUDA-graph
test runs too). Shapes are small and awkward on purpose: d = 24 (not a power of two),
dv = 20 != d, r = 13 (not a multiple of 16), M = 37 (not a multiple of the row block), and
a user whose behaviours are all padding.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

import attention_impls as ai
from attention_impls.base import inv_sqrt
from attention_impls.kernels import _interp
from conftest import padding_mask

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Triton 3.6's interpreter int()s 1-element arrays for runtime loop bounds (NumPy warns)
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = {
    "linrec": {},
    "lrea": {"rank": 13},
    "svd_tokens": {"rank": 13},
    "performer": {"features": 72},  # 3 feature chunks of 32, the last one partial
}
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
B, H, N, M, D, DV = 2, 2, 50, 37, 24, 20


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def inputs(seed, dtype, m=M, d=D, dv=DV, n=N, q_scale=1.0):
    """Fresh random q, k, v; q is a non-contiguous view (heads and rows swapped)."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, m, H, d, generator=g) * q_scale).to(DEV, dtype).transpose(1, 2)
    k = torch.randn(B, H, n, d, generator=g).to(DEV, dtype)
    v = torch.randn(B, H, n, dv, generator=g).to(DEV, dtype)
    return q, k, v


def kernel_call(name, op, state, q, **kw):
    """The kernel entry point the operator's triton path calls, with extra launch options."""
    from attention_impls.kernels import row_mlp

    if name == "linrec":
        return row_mlp.linrec_attend(q, state.kv, state.empty_users, op.params["eps"], **kw)
    if name == "lrea":
        return row_mlp.lrea_attend(
            q, state.c, state.bv, state.empty_users, op.params["slope"], **kw
        )
    if name == "svd_tokens":
        return row_mlp.svd_tokens_attend(
            q, state.zk, state.zv, state.empty_users, inv_sqrt(state.d), **kw
        )
    return row_mlp.performer_attend(
        q, state.omega, state.kv, state.ksum, state.empty_users, op.eps, **kw
    )  # the resolved floor (eps="auto" -> a number)


def scramble_user(state, user):
    """Random values in one user's slice of every per-user state tensor, in place."""
    g = torch.Generator().manual_seed(99)
    for name in ("kv", "c", "bv", "zk", "zv", "ksum"):
        t = getattr(state, name, None)
        if t is not None:
            t[user] = torch.rand(t[user].shape, generator=g).to(t.device, t.dtype) + 0.5


def poisoned(b, h, m, dv, dtype):
    return torch.full((b, h, m, dv), float("nan"), dtype=dtype, device=DEV)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_triton_matches_torch(name, dtype):
    seed = sorted(CASES).index(name) * 10 + [torch.float32, torch.float16, torch.bfloat16].index(
        dtype
    )
    q, k, v = inputs(seed, dtype)
    mask = padding_mask(B, N, [31, 0], DEV)  # user 1: all padding
    tri = ai.get(name, backend="triton", **CASES[name])
    ref_op = ai.get(name, backend="torch", **CASES[name])
    assert tri.backend_used(DEV) == "triton" and ref_op.backend_used(DEV) == "torch"
    state = tri.prepare(k, v, mask)
    scramble_user(state, 1)  # the kernel must zero the empty user whatever its state holds
    out = tri.attend(state, q)
    ref = ref_op.attend(state, q)
    assert out.shape == (B, H, M, DV) and out.dtype == dtype and out.device.type == DEV.type
    assert torch.isfinite(out).all()
    assert float(out[1].abs().max()) == 0.0  # the all-padding user: exactly zero
    assert rel(out[0], ref[0]) < TOL[dtype]
    # into a NaN-poisoned buffer: every element is written, the same values as above
    again = kernel_call(name, tri, state, q, out=poisoned(B, H, M, DV, dtype))
    assert torch.equal(again, out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_row_and_hidden_chunks_and_no_mask(name):
    """Several row blocks and hidden chunks (block_m = block_r = 16, r = 40), M = 40, no
    key mask (no empty-user flag), contiguous q; fp32 into a NaN-poisoned buffer. Performer
    with a large eps floor, so the floor's separate sums count."""
    params = dict(CASES[name])
    if "rank" in params:
        params["rank"] = 40  # <= min(N, d + dv) = 44
    if name == "performer":
        params["eps"] = 0.3
    q, k, v = inputs(7, torch.float32, m=40)
    q = q.contiguous()
    tri = ai.get(name, backend="triton", **params)
    state = tri.prepare(k, v, None)
    assert state.empty_users is None
    ref = ai.get(name, backend="torch", **params).attend(state, q)
    out = kernel_call(
        name, tri, state, q, block_m=16, block_r=16, out=poisoned(B, H, 40, DV, torch.float32)
    )
    assert torch.isfinite(out).all()
    assert rel(out, ref) < 1e-4


def upcast(state):
    """The same prepared state with its working-dtype tensors in fp32."""
    low = {
        f.name: getattr(state, f.name).float()
        for f in dataclasses.fields(state)
        if isinstance(getattr(state, f.name), torch.Tensor)
        and getattr(state, f.name).dtype == state.dtype
    }
    return dataclasses.replace(state, dtype=torch.float32, **low)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["svd_tokens", "performer"])
def test_large_logits_half_precision(name, dtype):
    """Logits far beyond exp's fp16 range: the running max keeps the kernel finite, and it
    stays within 1e-2 of the torch path run in fp32 on the same state. (performer's torch
    path in fp16 is itself 0.2 off here: its eps-floor features, ~1e-7, are fp16
    subnormals once cast; the kernel adds the floor in fp32.)"""
    q, k, v = inputs(3, dtype, q_scale=20.0)
    k = (k.float() * 3.0).to(dtype)
    tri = ai.get(name, backend="triton", **CASES[name])
    state = tri.prepare(k, v, padding_mask(B, N, [50, 17], DEV))
    out = tri.attend(state, q)
    ref = ai.get(name, backend="torch", **CASES[name]).attend(upcast(state), q.float())
    assert torch.isfinite(out).all()
    assert rel(out, ref) < 1e-2


@pytest.mark.parametrize("name", sorted(CASES))
def test_explicit_triton_needs_compiled_cuda_or_interpreter(name, monkeypatch):
    """On CPU the kernels run only under the interpreter: explicit triton without it is a
    clear ValueError (simulated by marking the kernels as not interpreted)."""
    monkeypatch.setitem(_interp._STATE, "interpreted", False)
    op = ai.get(name, backend="triton", **CASES[name])
    q, k, v = inputs(0, torch.float32)
    state = op.prepare(k.cpu(), v.cpu())
    with pytest.raises(
        ValueError, match=rf"{name}: backend='triton' cannot run on cpu: .*TRITON_INTERPRET=1"
    ):
        op.attend(state, q.cpu())
    assert ai.get(name, backend="auto", **CASES[name]).backend_used("cpu") == "torch"


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_backend_and_auto_on_cpu(name):
    with pytest.raises(
        ValueError, match=rf"{name}: unknown backend 'cuda'; use one of auto, torch, triton"
    ):
        ai.get(name, backend="cuda", **CASES[name])
    assert ai.get(name, **CASES[name]).params["backend"] == "auto"
    auto = ai.get(name, **CASES[name])
    assert auto.backend_used("cpu") == "torch"
    q, k, v = inputs(1, torch.float32)
    q, k, v = q.cpu(), k.cpu(), v.cpu()
    state = auto.prepare(k, v)
    assert torch.equal(
        auto.attend(state, q), ai.get(name, backend="torch", **CASES[name]).attend(state, q)
    )


def test_fp64_stays_on_torch():
    q, k, v = (t.double() for t in inputs(2, torch.float32))
    op = ai.get("linrec", backend="triton")
    with pytest.raises(ValueError, match="fp16, bf16 or fp32"):
        op.attend(op.prepare(k, v), q)
    auto = ai.get("linrec")
    assert auto.attend(auto.prepare(k, v), q).dtype == torch.float64


def test_lrea_training_form_is_torch_only():
    with pytest.raises(ValueError, match="lrea: backend='triton' serves the absorbed form only"):
        ai.get("lrea", rank=8, form="training", backend="triton")
    op = ai.get("lrea", rank=8, form="training")
    assert op.backend_used(DEV) == "torch"
    q, k, v = inputs(4, torch.float32)
    state = op.prepare(k, v)
    assert torch.equal(
        op.attend(state, q),
        ai.get("lrea", rank=8, form="training", backend="torch").attend(state, q),
    )


def test_works_without_triton_and_imports_kernels_lazily():
    """With Triton missing (simulated), the default backend runs torch and an explicit
    triton says why; the kernel module is never imported."""
    code = (
        "import sys\n"
        "sys.modules['triton'] = None  # import triton -> ImportError, find_spec -> None\n"
        "import torch, attention_impls as ai\n"
        "q = torch.randn(1, 1, 5, 8); k = torch.randn(1, 1, 9, 8)\n"
        "for name, kw in (('linrec', {}), ('lrea', {'rank': 4}), ('svd_tokens', {'rank': 4}), ('performer', {})):\n"
        "    op = ai.get(name, **kw)\n"
        "    assert op.backend_used('cpu') == 'torch' and op.forward(q, k, k).shape == (1, 1, 5, 8)\n"
        "    try:\n"
        "        ai.get(name, backend='triton', **kw).forward(q, k, k)\n"
        "    except ValueError as e:\n"
        "        assert 'Triton is not installed' in str(e), e\n"
        "    else:\n"
        "        raise AssertionError('explicit triton ran without Triton')\n"
        "assert 'attention_impls.kernels.row_mlp' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: captures the compiled kernel in a CUDA graph"
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_graph_capture_and_replay(name):
    """attend_unchecked captures in a CUDA graph (so it never syncs with the host) and a
    replay on new queries matches the torch backend."""
    dtype, b, h, n, m, d = torch.bfloat16, 4, 2, 256, 300, 64
    g = torch.Generator().manual_seed(5)
    k = torch.randn(b, h, n, d, generator=g).to("cuda", dtype)
    v = torch.randn(b, h, n, d, generator=g).to("cuda", dtype)
    q = torch.randn(b, h, m, d, generator=g).to("cuda", dtype)
    mask = padding_mask(b, n, [256, 100, 0, 7], "cuda")
    params = {"linrec": {}, "lrea": {"rank": 16}, "svd_tokens": {"rank": 16}, "performer": {}}[name]
    op = ai.get(name, backend="triton", **params)
    state = op.prepare(k, v, mask)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # compile and warm up outside the capture
            op.attend_unchecked(state, q)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = op.attend_unchecked(state, q)
    q.copy_(torch.randn(b, h, m, d, generator=g).to("cuda", dtype))
    graph.replay()
    torch.cuda.synchronize()
    ref = ai.get(name, backend="torch", **params).attend(state, q)
    assert float(out[2].abs().max()) == 0.0
    assert rel(out, ref) < 1e-2
