"""The default ``gram`` solver on [K | V] given as two blocks (no N x D copy) against the same
solver on the formed matrix, and svd_exact's state (signs and scaling folded into one pass
over U) against its definition."""

from __future__ import annotations

import pytest
import torch

import attention_impls as ai
from attention_impls.decompose import gram_svd_blocks, plain_gram_is_enough, truncated_svd
from conftest import ill_conditioned_kv

pytestmark = pytest.mark.usefixtures("one_thread")


def low_rank_kv(n=300, d=16, dv=12, rank=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, n, rank, generator=g) @ torch.randn(2, 2, rank, d + dv, generator=g)
    return x[..., :d].contiguous(), x[..., d:].contiguous()


def evals_desc(k, v):
    x = torch.cat([k, v], -1)
    return torch.linalg.eigvalsh(x.transpose(-1, -2) @ x).flip(-1)


@pytest.mark.parametrize(
    "case,rank",
    [
        ("certified", 6),  # exact rank 6, well conditioned: the plain route
        ("ill", 12),  # spread over 1e5: refinement (X formed on demand)
        ("ill_full", 48),  # q >= D: the fp64 Gram
    ],
)
def test_blocks_equal_the_formed_matrix(case, rank):
    if case == "certified":
        k, v = low_rank_kv()
        assert plain_gram_is_enough(evals_desc(k, v), rank)
    else:
        k, v = ill_conditioned_kv(n=256, d=24, rank=12, cond=1e5, seed=3)
        assert not plain_gram_is_enough(evals_desc(k, v), rank)
    x = torch.cat([k, v], -1)
    a = gram_svd_blocks(k, v, rank)
    b = truncated_svd(x, rank, "gram")
    scale = float(x.abs().max())
    for fa, name in ((a, "blocks"), (b, "formed")):
        recon = (fa.u * fa.s[..., None, :]) @ fa.wt
        assert float((recon - x).abs().max()) < 2e-5 * scale, name
    torch.testing.assert_close(a.s, b.s, rtol=1e-5, atol=1e-5 * float(b.s.max()))
    live = b.s > 1e-6 * b.s[..., :1]
    # same signs convention, same vectors up to rounding (distinct singular values)
    ua, ub = a.u * live[..., None, :], b.u * live[..., None, :]
    assert float((ua - ub).abs().max()) < 1e-3


def test_blocks_without_signs_differ_only_in_signs():
    k, v = low_rank_kv(seed=1)
    a, b = gram_svd_blocks(k, v, 6, signs=False), gram_svd_blocks(k, v, 6)
    flip = torch.sign((a.u * b.u).sum(-2))  # +-1 per column
    assert bool((flip.abs() == 1).all())
    torch.testing.assert_close(a.u * flip[..., None, :], b.u)
    torch.testing.assert_close(a.wt * flip[..., :, None], b.wt)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_svd_exact_state_is_signed_balanced_and_reconstructs(masked, dtype):
    """U' columns have non-negative sums and |U'| <= 1 (c = 1 here); fp16 factors (scores in
    the working dtype) are balanced to one entry at 1 in every column, fp32 ones keep U's
    orthonormal columns; U' A' = K and U' B' = V on real rows, 0 on padded ones."""
    k, v = low_rank_kv(n=200, d=16, dv=16, rank=5, seed=2)
    k, v = k.to(dtype), v.to(dtype)
    mask = None
    if masked:
        mask = torch.ones(2, 200, dtype=torch.bool)
        mask[0, 150:] = False
        mask[1, :30] = False
    scores = "working" if dtype == torch.float16 else "fp32"
    st = ai.get("svd_exact", rank=5, scores=scores).prepare(k, v, mask)
    assert st.u.dtype == dtype
    u = st.u.float()
    assert bool((u.sum(-2) >= 0).all())
    assert float(u.abs().max()) <= 1.0 + 1e-3
    if dtype == torch.float16:
        torch.testing.assert_close(u.abs().amax(-2), torch.ones(2, 2, 5))
    else:
        torch.testing.assert_close(u.mT @ u, torch.eye(5).expand(2, 2, 5, 5), atol=1e-5, rtol=0)
    real = torch.ones(2, 1, 200, 1) if mask is None else mask[:, None, :, None].float()
    scale = float(k.float().abs().max())
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert float((u @ st.a.float() - k.float() * real).abs().max()) < tol * scale
    assert float((u @ st.b.float() - v.float() * real).abs().max()) < tol * scale
