"""The blocked exclusive prefix sum behind causal LinRec, and causal LinRec at lengths where
that sum recurses (more chunks than one group), against the written-out masked reference,
forward and backward; autograd's path equals the in-place no-grad path bit for bit."""

from __future__ import annotations

import pytest
import torch

from attention_impls import causal_linear as cl

pytestmark = pytest.mark.usefixtures("one_thread")


def cumsum_exclusive(x: torch.Tensor) -> torch.Tensor:
    """The plain form: torch.cumsum shifted by one row (row 0 = 0)."""
    return torch.cat([torch.zeros_like(x[:, :1]), torch.cumsum(x, dim=1)[:, :-1]], dim=1)


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 63, 64, 65, 200, 513])
@pytest.mark.parametrize("group", [2, 3, 8])
def test_exclusive_prefix_sum_equals_cumsum_forward_and_backward(length, group):
    g = torch.Generator().manual_seed(length * 10 + group)
    x = torch.randn(3, length, 5, generator=g, dtype=torch.float64, requires_grad=True)
    out = cl.exclusive_prefix_sum(x, group)
    ref = cumsum_exclusive(x)
    assert out.shape == ref.shape
    diff, scale = float((out - ref).detach().abs().max()), float(ref.detach().abs().max())
    assert diff < 1e-12 * (1 + scale)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((out * w).sum(), x)
    (gb,) = torch.autograd.grad((ref * w).sum(), x)
    assert float((ga - gb).abs().max()) < 1e-12 * (1 + float(gb.abs().max()))


def test_exclusive_prefix_sum_fp32_stays_within_rounding():
    x = torch.randn(2, 1000, 64, generator=torch.Generator().manual_seed(0))
    ref = cumsum_exclusive(x.double())
    out = cl.exclusive_prefix_sum(x)
    assert out.dtype == torch.float32
    assert float((out.double() - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def long_inputs(n: int, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (2.0 * torch.randn(2, 1, n, 8, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(2, 1, n, 5, generator=g, dtype=dtype)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, n - 17 :] = False
    mask[1, :9] = False
    return q, k, v, mask


@pytest.mark.parametrize("chunk", [1, 2, 5])  # 150, 75, 30 chunks: the prefix sum recurses
@pytest.mark.parametrize("masked", [False, True])
def test_causal_linrec_many_chunks_equals_reference_forward_and_backward(chunk, masked):
    q, k, v, mask = long_inputs(150)
    mask = mask if masked else None
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads, outs = [], []
    for fn in (cl.linrec_causal, cl.linrec_causal_reference):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        args = (*leaves, mask, 1e-12) + ((chunk,) if fn is cl.linrec_causal else ())
        out = fn(*args)
        outs.append(out.detach())
        grads.append(torch.autograd.grad((out * g).sum(), leaves))
    assert float((outs[0] - outs[1]).abs().max()) < 1e-12 * (1 + float(outs[1].abs().max()))
    for a, b, name in zip(*grads, "qkv", strict=True):
        assert float((a - b).abs().max()) < 1e-10 * (1 + float(b.abs().max())), name


@pytest.mark.parametrize("chunk", [3, 64])
def test_causal_linrec_grad_path_equals_no_grad_path(chunk):
    """Without autograd the features are scaled in place; the recorded path computes the same
    arithmetic out of place, so the outputs are identical."""
    q, k, v, mask = long_inputs(130, torch.float32, seed=1)
    with torch.no_grad():
        fast = cl.linrec_causal(q, k, v, mask, 1e-12, chunk)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    recorded = cl.linrec_causal(*leaves, mask, 1e-12, chunk)
    assert recorded.requires_grad
    assert torch.equal(fast, recorded.detach())
    ref = cl.linrec_causal_reference(q, k, v, mask, 1e-12)
    assert float((fast - ref).abs().max()) < 2e-6 * (1 + float(ref.abs().max()))
