"""Interface, validation and robustness of every registered operator."""

from __future__ import annotations

import pytest
import torch

import attention_impls as ai
from attention_impls import Shape
from conftest import make_qkv, padding_mask

ALL = {
    "dense": {},
    "svd_exact": {"rank": 8},
    "svd_tokens": {"rank": 8},
    "linrec": {},
    "lrea": {"rank": 8},
    "performer": {"features": 64},
}


def test_registry_lists_all_six():
    assert ai.available() == sorted(ALL)


def test_unknown_method_and_parameter_errors_list_what_exists():
    with pytest.raises(ValueError, match="available: dense, linrec"):
        ai.get("flash")
    with pytest.raises(ValueError, match=r"allowed: rank=16, solver='gram'"):
        ai.get("svd_exact", rnk=3)
    with pytest.raises(ValueError, match="unknown solver"):
        ai.get("svd_exact", solver="qr")
    with pytest.raises(ValueError, match="rank must be >= 1"):
        ai.get("svd_tokens", rank=0)


@pytest.mark.parametrize("name", sorted(ALL))
def test_state_reuse_across_candidate_batches(device, name):
    """One prepared state serves several candidate batches (cascade stages)."""
    _, k, v = make_qkv(device=device, n=40)
    mask = padding_mask(2, 40, [40, 25], device)
    op = ai.get(name, **ALL[name])
    state = op.prepare(k, v, mask)
    for m, seed in ((32, 1), (8, 2), (3, 3)):
        q = make_qkv(m=m, n=40, device=device, seed=seed)[0]
        fresh = ai.get(name, **ALL[name])  # a fresh operator: same seeded features / projection
        torch.testing.assert_close(
            op.attend(state, q), fresh.forward(q, k, v, mask), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("name", sorted(ALL))
def test_all_padding_user_gets_zeros(device, name):
    q, k, v = make_qkv(device=device, n=20)
    mask = padding_mask(2, 20, [20, 0], device)
    op = ai.get(name, **ALL[name])
    state = op.prepare(k, v, mask)
    out = op.attend(state, q)
    w = op.implied_weights(state, q)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert float(out[1].abs().max()) == 0.0 and float(w[1].abs().max()) == 0.0


@pytest.mark.parametrize("name", sorted(ALL))
def test_padded_behaviours_get_no_weight(device, name):
    q, k, v = make_qkv(device=device, n=30)
    mask = padding_mask(2, 30, [30, 11], device)
    op = ai.get(name, **ALL[name])
    w = op.implied_weights(op.prepare(k, v, mask), q)
    assert w.shape == (2, 2, 7, 30) and w.dtype == torch.float32
    assert float(w[1, ..., 11:].abs().max()) == 0.0
    # changing padded content changes nothing
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 11:] = 1e3
    v2[1, :, 11:] = -1e3
    out1 = ai.get(name, **ALL[name]).forward(q, k, v, mask)
    out2 = ai.get(name, **ALL[name]).forward(q, k2, v2, mask)
    torch.testing.assert_close(out1[1], out2[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_large_logits_stay_finite(device, name, dtype):
    """|q.k| / sqrt(d) up to 50 in fp16/bf16: finite outputs for every method."""
    d = 16
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(d, generator=g)
    direction = direction / direction.norm()
    k = torch.randn(2, 2, 64, d, generator=g) * 0.3 + direction * 10.0
    q = torch.randn(2, 2, 9, d, generator=g) * 0.3 + direction * 20.0  # q.k / 4 ~ 50
    v = torch.randn(2, 2, 64, d, generator=g)
    logits = (q @ k.transpose(-1, -2)) / d**0.5
    assert 40 < float(logits.abs().max()) <= 60
    op = ai.get(name, **ALL[name])
    out = op.forward(q.to(device, dtype), k.to(device, dtype), v.to(device, dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(ALL))
def test_bad_inputs_raise_clear_errors(name):
    op = ai.get(name, **ALL[name])
    q, k, v = make_qkv(n=20)
    with pytest.raises(ValueError, match="4-D"):
        op.forward(q[0], k, v)
    with pytest.raises(ValueError, match="floating dtype"):
        op.forward(q, k.long(), v)
    with pytest.raises(ValueError, match=r"agree on \[batch, heads, N\]"):
        op.forward(q, k, v[:, :, :10])
    with pytest.raises(ValueError, match="head dim"):
        op.forward(q[..., :8], k, v)
    bad = k.clone()
    bad[0, 0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="k contains NaN"):
        op.forward(q, bad, v)
    badq = q.clone()
    badq[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="q contains inf"):
        op.forward(badq, k, v)
    with pytest.raises(ValueError, match=r"key_mask must have shape \[batch, N\]"):
        op.forward(q, k, v, torch.ones(2, 19, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        op.forward(q, k, v, torch.ones(2, 20))
    with pytest.raises(ValueError, match="different dtypes"):
        op.forward(q, k, v.double())
    if not torch.cuda.is_available():
        meta = torch.empty(2, 2, 20, 16, device="meta")
        with pytest.raises(
            ValueError, match="v is on the meta device"
        ):  # before any device comparison
            op.forward(q, k, meta)


@pytest.mark.parametrize("name", ["svd_exact", "svd_tokens"])
def test_rank_larger_than_data_allows(name):
    q, k, v = make_qkv(n=20, d=8)  # min(N, d_k + d_v) = 16
    with pytest.raises(
        ValueError, match=r"rank 17 is larger than the data allows: min\(N, d_k \+ d_v\)"
    ):
        ai.get(name, rank=17).forward(q, k, v)
    q, k, v = make_qkv(n=5, d=8)
    with pytest.raises(ValueError, match="larger than the data allows"):
        ai.get(name, rank=6).forward(q, k, v)
    assert ai.get(name, rank=16).forward(*make_qkv(n=20, d=8)).shape == (2, 2, 7, 8)


def test_lrea_rank_larger_than_n():
    q, k, v = make_qkv(n=5, d=8)
    with pytest.raises(ValueError, match="rank 6 is larger than the data allows: N = 5"):
        ai.get("lrea", rank=6).forward(q, k, v)


def test_check_reports_reasons_and_cost_is_positive():
    shape = Shape(batch=2, heads=4, n=1024, m=256, d=64, dv=64)
    for name in ai.available():
        op = ai.get(name, **ALL[name])
        assert op.check(shape, "bf16", "cpu") == []
        flops, nbytes, exps = op.cost(shape, "bf16")
        assert flops > 0 and nbytes > 0 and exps >= 0
        assert op.memory_model(shape) > 0
    causal = Shape(batch=1, heads=1, n=64, m=64, d=16, causal=True)
    assert ai.get("dense").check(causal) == []
    assert ai.get("svd_exact", rank=32).check(causal) == []  # full rank: min(N, d_k + d_v)
    assert (
        "causal needs rank" in ai.get("svd_exact", rank=4).check(causal)[0]
    )  # would leak the future
    for name in ("linrec", "performer"):
        assert ai.get(name, **ALL[name]).check(causal) == []
    for name in ("lrea", "svd_tokens"):
        reasons = ai.get(name, **ALL[name]).check(causal)
        assert reasons and "causal" in reasons[0]
    assert (
        "larger than the data allows"
        in ai.get("svd_exact", rank=64).check(Shape(1, 1, 32, 4, 16))[0]
    )
    assert "unknown dtype" in ai.get("dense").check(shape, "int8")[0]


def test_svd_exact_cheaper_than_dense_at_long_sequences():
    shape = Shape(batch=1, heads=1, n=16384, m=1024, d=64)
    dense = ai.get("dense").cost(shape)
    svd = ai.get("svd_exact", rank=8, solver="gram").cost(shape)
    assert svd.flops < dense.flops


def test_causal_rejected_where_unsupported():
    q, k, v = make_qkv(n=12, m=12)
    with pytest.raises(ValueError, match="does not support causal"):
        ai.get("svd_tokens", rank=4).forward(q, k, v, causal=True)
    with pytest.raises(ValueError, match="M == N"):
        ai.get("dense").forward(make_qkv(n=12, m=5)[0], k, v, causal=True)


def test_state_from_another_operator_or_device_is_rejected():
    q, k, v = make_qkv()
    with pytest.raises(ValueError, match="state must come from"):
        ai.get("dense").attend("nope", q)  # type: ignore[arg-type]
    st = ai.get("dense").prepare(k, v)
    with pytest.raises(ValueError, match="dtype"):
        ai.get("dense").attend(st, q.double())
