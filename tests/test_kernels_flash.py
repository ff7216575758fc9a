"""The fused small-head attention kernel (Triton) against its references.

On CPU the kernel runs under Triton's interpreter (the root conftest sets TRITON_INTERPRET=1
when there is no CUDA); on a CUDA machine the same tests run the compiled kernel. Under
the interpreter the kernel upcasts dot operands to fp32 and rounds fp32 -> bf16 by hand
(Triton 3.6's interpreter gets both wrong; see attention_impls/kernels/_tl.py), so the same
bounds hold on both.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import attention_impls as ai
from attention_impls.base import empty_users_of, masked_sdpa
from attention_impls.dense import softmax_weights
from attention_impls.kernels import resolve_backend, triton_installed

pytestmark = [
    pytest.mark.skipif(
        not triton_installed(), reason="Triton is not installed (pip install triton)"
    ),
    pytest.mark.usefixtures("one_thread"),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _kernel():
    from attention_impls.kernels import flash_small_head as fsh

    return fsh


def reference(q, k, v, scale, mask, causal, a, bo):
    """fp64 softmax attention of the same function (weights from the fp32 reference)."""
    qa = q.double() if a is None else q.double() @ a.double().transpose(-1, -2)
    vv = k if v is None else v
    w = softmax_weights(qa, k, mask, scale, causal).double()
    o = w @ vv.double()
    return o if bo is None else o @ bo.double()


def torch_path(q, k, v, scale, mask, causal, a, bo):
    qa = q if a is None else q @ a.transpose(-1, -2)
    o = masked_sdpa(qa, k, k if v is None else v, mask, empty_users_of(mask), causal, scale=scale)
    return o if bo is None else o @ bo


def rel(x, ref):
    return float((x.double() - ref).norm() / ref.norm().clamp_min(1e-30))


CASES = {
    # name: b, h, m, n, d, r, dv, do, project, same_kv, causal, mask, splits
    "svd_exact_shape": (2, 2, 37, 150, 24, 5, 5, 20, True, True, False, True, None),
    "svd_exact_split": (2, 2, 37, 150, 24, 5, 5, 20, True, True, False, True, 3),
    "dense_split_odd_dv": (2, 1, 20, 70, 16, 16, 12, 12, False, False, False, False, 3),
    "svd_exact_whole_tiles": (1, 2, 20, 128, 16, 8, 8, 16, True, True, False, False, 2),
    "causal_masked": (2, 1, 40, 40, 16, 16, 16, 16, False, False, True, True, 1),
    "causal_projected": (1, 2, 33, 33, 16, 8, 8, 16, True, True, True, False, 1),
}


def make_case(case, dtype, seed):
    b, h, m, n, d, r, dv, do, project, same_kv, causal, use_mask, _ = case
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, m, d, generator=g)
    a = (torch.randn(b, h, r, d, generator=g) * 0.3) if project else None
    bo = torch.randn(b, h, dv, do, generator=g) if project else None
    k = torch.randn(b, h, n, r, generator=g)
    v = None if same_kv else torch.randn(b, h, n, dv, generator=g)
    mask = None
    if use_mask:
        mask = torch.rand(b, n, generator=g) > 0.3
        mask[0] = False  # an all-padding user: zeros
        if b > 1 and causal:
            mask[1, :5] = False  # causal rows 0..4 of user 1 see only padding: zeros

    def conv(t):
        return None if t is None else t.to(DEVICE, dtype)

    return (
        conv(q),
        conv(k),
        conv(v),
        None if mask is None else mask.to(DEVICE),
        causal,
        conv(a),
        conv(bo),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_reference(name, dtype):
    fsh = _kernel()
    case = CASES[name]
    q, k, v, mask, causal, a, bo = make_case(case, dtype, seed=zlib.crc32(name.encode()) % 1000)
    b, h, m, n = case[0], case[1], case[2], case[3]
    plan = fsh.plan_launch(
        m,
        n,
        b * h,
        max(case[5], case[6]),
        causal=causal,
        dtype=dtype,
        sms=fsh.sm_count(q.device),
        splits=case[12],
    )
    do = case[7] if case[8] else case[6]
    out = torch.full((b, h, m, do), float("nan"), dtype=dtype, device=DEVICE)  # poison
    got = fsh.flash_small_head(
        q, k, v, scale=0.3, key_mask=mask, causal=causal, q_proj=a, out_proj=bo, plan=plan, out=out
    )
    assert got.data_ptr() == out.data_ptr()
    assert bool(torch.isfinite(got).all()), "unwritten (NaN) or non-finite outputs"
    ref = reference(q, k, v, 0.3, mask, causal, a, bo)
    if mask is not None:
        assert float(got[0].abs().max()) == 0.0  # the all-padding user
        if causal and b > 1:
            assert float(got[1, :, :5].abs().max()) == 0.0
    err = rel(got, ref)
    if dtype == torch.float32:
        assert err < 1e-5
    else:
        torch_err = rel(torch_path(q, k, v, 0.3, mask, causal, a, bo), ref)
        assert err < 2 * torch_err + 1e-3, f"triton {err:.2e} vs torch {torch_err:.2e}"


def test_split_and_unsplit_agree():
    fsh = _kernel()
    q, k, v, mask, causal, a, bo = make_case(CASES["svd_exact_shape"], torch.float32, seed=3)
    outs = [
        fsh.flash_small_head(
            q,
            k,
            v,
            scale=0.25,
            key_mask=mask,
            q_proj=a,
            out_proj=bo,
            plan=fsh.plan_launch(37, 150, 4, 16, splits=s),
        )
        for s in (1, 2, 3)
    ]
    for o in outs[1:]:
        assert rel(o, outs[0].double()) < 1e-6


def test_plan_heuristics():
    fsh = _kernel()
    few = fsh.plan_launch(64, 65536, 8, 16, sms=132)
    assert few.splits > 1  # 8 programs cannot fill 132 SMs: split the keys
    assert few.splits * 8 >= 2 * 132
    many = fsh.plan_launch(8192, 65536, 64, 16, sms=132)
    assert many.splits == 1
    target = fsh.plan_launch(2048, 10000, 8, 16, sms=132)  # the case: 128 tiles
    assert target.splits == 3 and target.block_m == 128 and target.num_warps == 4
    assert fsh.plan_launch(2048, 10000, 8, 64, sms=132).num_warps == 8
    assert fsh.plan_launch(2048, 10000, 8, 16, dtype=torch.float32).block_m == 64
    assert fsh.plan_launch(64, 64, 8, 16, causal=True).splits == 1
    short = fsh.plan_launch(64, 300, 1, 16, sms=132)
    assert short.splits == 1  # 300 keys: one split of at least four 64-key tiles
    with pytest.raises(ValueError, match="splits"):
        fsh.plan_launch(64, 64, 8, 16, causal=True, splits=2)
    with pytest.raises(ValueError, match="splits"):
        fsh.plan_launch(64, 64, 8, 16, splits=0)


def test_kernel_rejects_bad_input():
    fsh = _kernel()
    q, k, v, mask, _, a, bo = make_case(CASES["svd_exact_shape"], torch.float32, seed=1)
    with pytest.raises(ValueError, match="dtype"):
        fsh.flash_small_head(q.double(), k.double(), None, scale=1.0)
    with pytest.raises(ValueError, match="q_proj"):
        fsh.flash_small_head(q, k, None, scale=1.0, q_proj=a[:, :, :3])
    with pytest.raises(ValueError, match="head dim"):
        fsh.flash_small_head(q, k, None, scale=1.0)
    with pytest.raises(ValueError, match="key_mask"):
        fsh.flash_small_head(q, k, None, scale=1.0, q_proj=a, key_mask=mask.float())
    with pytest.raises(ValueError, match="causal"):
        fsh.flash_small_head(q, k, None, scale=1.0, q_proj=a, causal=True)


# ----------------------------------------------------------------------------- operators


def _qkv(b=2, h=2, n=96, m=21, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, x, d, generator=g) for x in (m, n, n))
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype), v.to(DEVICE, dtype)


@pytest.mark.parametrize("causal", [False, True])
def test_svd_exact_triton_full_rank_equals_dense(causal):
    """Exactness holds on the fused path too: full rank of [K|V] -> dense attention."""
    n = m = 40 if causal else None
    q, k, v = _qkv(n=n or 96, m=m or 21)
    mask = torch.ones(2, k.shape[2], dtype=torch.bool, device=DEVICE)
    mask[1, -7:] = False
    dense = ai.get("dense").forward(q, k, v, mask, causal=causal)
    op = ai.get("svd_exact", rank=32, backend="triton")
    got = op.forward(q, k, v, mask, causal=causal)
    assert op.backend_used(DEVICE, torch.float32) == "triton"
    assert rel(got, dense.double()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_svd_exact_triton_matches_torch_backend(dtype):
    q, k, v = _qkv(dtype=dtype, seed=4)
    mask = torch.ones(2, k.shape[2], dtype=torch.bool, device=DEVICE)
    mask[0] = False
    torch_op = ai.get("svd_exact", rank=6, backend="torch")
    tri_op = ai.get("svd_exact", rank=6, backend="triton")
    ref = torch_op.forward(q, k, v, mask)
    got = tri_op.forward(q, k, v, mask)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert rel(got, ref.double()) < tol
    assert float(got[0].abs().max()) == 0.0


def test_dense_triton_backend_matches_sdpa():
    q, k, v = _qkv(seed=5)
    ref = ai.get("dense").forward(q, k, v)
    got = ai.get("dense", backend="triton").forward(q, k, v)
    assert rel(got, ref.double()) < 1e-5


def test_backend_resolution_and_labels():
    assert ai.get("svd_exact").backend_used("cpu", torch.float32) == "torch"  # auto -> torch on CPU
    assert ai.get("svd_exact", backend="triton").backend_used(DEVICE, torch.float32) == "triton"
    if DEVICE == "cuda":
        assert ai.get("svd_exact").backend_used("cuda", torch.bfloat16) == "triton"
    assert ai.get("dense").backend_used("cpu") == "torch"
    assert ai.get("svd_exact").label == "svd_exact[rank=16,solver=gram]"
    assert "backend=triton" in ai.get("svd_exact", backend="triton").label
    with pytest.raises(ValueError, match="unknown backend"):
        ai.get("svd_exact", backend="cuda")
    with pytest.raises(ValueError, match="fp16, bf16 or fp32"):
        resolve_backend("triton", DEVICE, "svd_exact", torch.float64)
    assert resolve_backend("auto", DEVICE, "svd_exact", torch.float64) == "torch"


def test_triton_backend_off_interpreter_is_a_clear_error(monkeypatch):
    from attention_impls.kernels import _interp

    monkeypatch.setitem(_interp._STATE, "interpreted", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend("triton", "cpu", "svd_exact", torch.float32)
    assert resolve_backend("auto", "cpu", "svd_exact", torch.float32) == "torch"


def test_numpy_guard_names_the_problem(monkeypatch):
    import numpy as np

    from attention_impls.kernels import _interp

    monkeypatch.setattr(np, "__version__", "2.4.0")
    assert "numpy < 2.4" in _interp.numpy_blocks_interpreter()
    monkeypatch.setattr(np, "__version__", "2.3.5")
    assert _interp.numpy_blocks_interpreter() is None


# ----------------------------------------------------------------------------- CUDA only

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda_only
def test_cuda_attend_has_no_host_sync_and_captures_in_a_graph():
    q, k, v = _qkv(b=4, h=2, n=4096, m=512, d=64, dtype=torch.bfloat16)
    op = ai.get("svd_exact", rank=16, backend="triton")
    state = op.prepare(k, v)
    ref = op.attend(state, q)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        op.attend_unchecked(state, q)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = op.attend_unchecked(state, q)
    graph.replay()
    torch.cuda.synchronize()
    assert rel(out, ref.double()) < 1e-6


@cuda_only
@pytest.mark.parametrize("r", [4, 8, 16, 32, 64])
def test_cuda_ranks_bf16_against_torch_backend(r):
    q, k, v = _qkv(b=4, h=2, n=10000, m=2048, d=64, dtype=torch.bfloat16, seed=r)
    ref64 = ai.get("dense").forward(q.double(), k.double(), v.double())
    tp = ai.get("svd_exact", rank=r, backend="torch").forward(q, k, v)
    tr = ai.get("svd_exact", rank=r, backend="triton").forward(q, k, v)
    assert rel(tr, tp.double()) < 2e-2
    assert rel(tr, ref64) < 2 * rel(tp, ref64) + 1e-3


# ----------------------------------------------------------------------------- GPU check tool


def test_kernel_check_plan_grid_and_rows():
    from bench.kernel_check import CheckCase, plan_grid, row

    case = CheckCase()
    grid = plan_grid(case, 16)
    assert len(grid) > 100 and all(
        p["splits"] == 1 or case.n // p["splits"] >= p["block_n"] for p in grid
    )
    assert not [
        p
        for p in plan_grid(case, 64)
        if p["block_m"] == 128 and p["block_n"] == 128 and p["num_warps"] == 4
    ]
    r = row("x", 0.1, case, exp_per_s=3.9e12, dense_ms=0.2, err=1e-3)
    floor = 2048 * 10000 * 8 / 3.9e12 * 1e3
    assert r["exp_floor_ms"] == pytest.approx(floor)
    assert r["fraction_of_exp_floor"] == pytest.approx(floor / 0.1)
    assert r["ratio_to_sdpa_dense"] == pytest.approx(0.5)
    assert (
        row("x", 0.1, case, exp_per_s=None, dense_ms=None, err=None)["fraction_of_exp_floor"]
        is None
    )
    bc = case.bench_case("cpu")
    assert (bc.n, bc.m, bc.d, bc.batch, bc.heads, bc.dtype, bc.family) == (
        10000,
        2048,
        64,
        4,
        2,
        "bf16",
        "powerlaw",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_kernel_check_says_it_needs_cuda(tmp_path):
    from bench.kernel_check import CheckCase, run_check

    with pytest.raises(SystemExit, match="needs a CUDA device"):
        run_check(CheckCase(), tmp_path)


def test_kernels_compile_for_hopper_ahead_of_time():
    """The compiled (non-interpreter) path builds for sm_90 with no GPU present: Triton's
    front end, LLVM and the bundled ptxas; no register spills; tensor-core HGMMA and MUFU
    exponentials in the machine code of the attention kernel."""
    from attention_impls.kernels.aot import run_in_subprocess

    reports = {r["name"]: r for r in run_in_subprocess(arch=90)}
    failed = {k: r["error"] for k, r in reports.items() if not r["ok"]}
    assert not failed, failed
    for name, r in reports.items():
        assert r["local_bytes"] == 0 and r["sass"]["LDL"] == 0 and r["sass"]["STL"] == 0, (name, r)
        assert r["registers"] <= 255
    main = reports["svd_exact r16 bf16"]
    assert main["sass"]["HGMMA"] > 0 and main["sass"]["MUFU.EX2"] > 0
