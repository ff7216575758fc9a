"""``AttentionLayer`` (issue 16): an operator as an nn.Module that trains, moves and saves."""

from __future__ import annotations

import pytest
import torch

import attention_impls as ai
from attention_impls import AttentionLayer
from conftest import make_qkv, padding_mask

pytestmark = pytest.mark.usefixtures("one_thread")

N = 24
LAYERS = {  # trainable configurations (svd methods: the gram solver, the one with a backward)
    "dense": {},
    "svd_exact": {"rank": 6, "solver": "gram"},
    "svd_tokens": {"rank": 6, "solver": "gram"},
    "linrec": {},
    "performer": {"features": 16},
    "lrea": {"rank": 5, "n": N},
}


def build(name: str, **extra) -> AttentionLayer:
    return AttentionLayer(name, **{**LAYERS[name], **extra})


def test_every_method_has_a_layer():
    assert sorted(LAYERS) == ai.available()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_reach_q_k_v_and_the_parameters(name):
    layer = build(name)
    q, k, v = (t.requires_grad_(True) for t in make_qkv(n=N, m=5, d=8))
    out = layer(q, k, v, key_mask=padding_mask(2, N, [N, 15]))
    assert out.shape == (2, 2, 5, 8) and out.requires_grad
    out.square().sum().backward()
    for t, label in zip((q, k, v), "qkv", strict=True):
        assert (
            t.grad is not None and torch.isfinite(t.grad).all() and float(t.grad.abs().max()) > 0
        ), label
    params = list(layer.parameters())
    assert (len(params) == 2) == (name == "lrea")
    for p in params:
        assert p.grad is not None and float(p.grad.abs().max()) > 0


def test_lrea_layer_trains_its_projection():
    """A few SGD steps on a toy target lower the loss through W_comp / W_decomp only."""
    layer = build("lrea", form="training")
    q, k, v = make_qkv(n=N, m=5, d=8, seed=1)
    target = ai.get("dense").forward(q, k, v)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = (layer(q, k, v) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_state_dict_round_trip(name):
    layer = build(name)
    if layer.w_comp is not None:  # make the saved state differ from a fresh layer's
        with torch.no_grad():
            layer.w_comp.add_(0.1)
            layer.w_decomp.mul_(-1.0)
    state = layer.state_dict()
    assert sorted(state) == (["w_comp", "w_decomp"] if name == "lrea" else [])
    fresh = build(name)
    fresh.load_state_dict(state)
    q, k, v = make_qkv(n=N, m=5, d=8, seed=2)
    assert torch.equal(fresh(q, k, v), layer(q, k, v))
    if name == "lrea":
        assert not torch.equal(build(name)(q, k, v), layer(q, k, v))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_to_dtype_moves_parameters_and_runs(name):
    layer = build(name).to(torch.float64)
    for p in layer.parameters():
        assert p.dtype == torch.float64
    q, k, v = make_qkv(n=N, m=5, d=8, dtype=torch.float64)
    ref = build(name)(q.float(), k.float(), v.float())
    out = layer(q, k, v)
    assert out.dtype == torch.float64
    assert float((out.detach().float() - ref.detach()).abs().max()) < 1e-4
    half = build(name).to(torch.bfloat16)
    assert half(*(t.bfloat16() for t in (q, k, v))).dtype == torch.bfloat16


def test_causal_and_module_behaviour():
    layer = build("performer")
    q, k, v = make_qkv(n=N, m=N, d=8)
    assert torch.equal(
        layer(q, k, v, causal=True), ai.get("performer", features=16).forward(q, k, v, causal=True)
    )
    assert "features=16" in repr(layer)
    assert layer.backend_used("cpu", torch.float32, requires_grad=True) == "torch"
    seq = torch.nn.ModuleDict({"attn": layer})
    assert seq["attn"] is layer


def test_lrea_init_from_keys_and_errors():
    layer = build("lrea")
    _, k, _ = make_qkv(n=N, d=8, seed=3)
    terms = layer.init_lrea_from(k)
    assert terms["reconstruction_error"] < 1.0
    assert torch.equal(layer.w_comp.data, layer.op.w_comp)
    with pytest.raises(ValueError, match="pass n = the number of behaviours"):
        AttentionLayer("lrea", rank=4)
    with pytest.raises(ValueError, match="rank 8 is larger than n = 4"):
        AttentionLayer("lrea", rank=8, n=4)
    with pytest.raises(ValueError, match="n and init are only used by lrea"):
        AttentionLayer("dense", n=4)
    with pytest.raises(ValueError, match="init_lrea_from is for lrea layers"):
        build("dense").init_lrea_from(k)
    q, k, v = make_qkv(n=N + 1, m=5, d=8)
    with pytest.raises(
        ValueError, match="input has N = 25 behaviours, more than this layer's n = 24"
    ):
        layer(q, k, v)


@pytest.mark.parametrize("form", ["absorbed", "training"])
def test_lrea_shorter_input_equals_left_padding_to_n(form):
    """An input of N < n behaviours uses the projection's last N positions: the same output
    and the same gradients (inputs and W_comp / W_decomp) as left-padding it to n with masked
    slots, which is what the layer used to require."""
    torch.manual_seed(0)
    short_n = 9
    q, k, v = make_qkv(n=short_n, m=4, d=8, seed=5, dtype=torch.float64)
    mask = padding_mask(2, short_n, [short_n, 6])
    pad = N - short_n
    k_pad, v_pad = (torch.nn.functional.pad(t, (0, 0, pad, 0)) for t in (k, v))
    mask_pad = torch.nn.functional.pad(mask, (pad, 0))
    grads = []
    for kk, vv, mm in ((k, v, mask), (k_pad, v_pad, mask_pad)):
        layer = build("lrea", form=form)
        qq = q.clone().requires_grad_(True)
        kk, vv = kk.clone().requires_grad_(True), vv.clone().requires_grad_(True)
        out = layer(qq, kk, vv, key_mask=mm)
        out.square().sum().backward()
        grads.append((out.detach(), qq.grad, kk.grad[..., -short_n:, :], vv.grad[..., -short_n:, :],
                      layer.w_comp.grad, layer.w_decomp.grad))  # fmt: skip
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(grads[0][4][:pad].abs().max()) == 0.0  # positions the input never reaches


def test_lrea_init_segments_is_the_operators_default_and_exact_when_absorbed():
    """The default start is ``segment_basis`` (the operator's own default projection): non-negative
    with disjoint columns, so the absorbed form equals the training form from the first step."""
    from attention_impls.lrea import segment_basis

    absorbed, training = build("lrea"), build("lrea", form="training")
    assert absorbed.init == "segments"
    torch.testing.assert_close(absorbed.w_comp.detach(), segment_basis(N, 5))
    torch.testing.assert_close(absorbed.w_decomp.detach(), segment_basis(N, 5).T)
    q, k, v = make_qkv(n=N, m=5, d=8, seed=3)
    mask = padding_mask(2, N, [N, 15])
    torch.testing.assert_close(absorbed(q, k, v, key_mask=mask), training(q, k, v, key_mask=mask))


def test_lrea_init_random_and_unknown_init():
    a, b = build("lrea", init="random"), build("lrea", init="random")
    torch.testing.assert_close(a.w_comp, b.w_comp)  # drawn from the operator's seed
    w = a.w_comp.detach()
    torch.testing.assert_close(w.T @ w, torch.eye(5), atol=1e-5, rtol=0)
    assert float(w.min()) < 0  # mixed signs, unlike the segment basis
    with pytest.raises(ValueError, match="unknown init 'svd'"):
        build("lrea", init="svd")
    with pytest.raises(ValueError, match="n and init are only used by lrea"):
        AttentionLayer("dense", init="random")
