"""bench.metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from bench import metrics


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_kl_of_identical_distributions_is_zero():
    p = t([0.1, 0.2, 0.7], [0.25, 0.25, 0.5])
    kl, needed = metrics.kl_rows(p, p, a=0.0)
    assert float(kl.abs().max()) == 0.0
    assert not needed.any()
    kl_s, _ = metrics.kl_rows(p, p)  # smoothing moves Q by at most ~a
    assert float(kl_s.max()) < 1e-5


def test_kl_known_pair():
    p, q = t([0.5, 0.5]), t([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.1438410...
    kl, _ = metrics.kl_rows(p, q, a=0.0)
    assert float(kl[0]) == pytest.approx(expected, abs=1e-12)
    assert float(kl[0]) == pytest.approx(0.143841036, abs=1e-8)
    assert float(metrics.tv_rows(p, q)[0]) == pytest.approx(0.25)
    mix = [0.375, 0.625]
    js = 0.5 * (0.5 * math.log(0.5 / mix[0]) + 0.5 * math.log(0.5 / mix[1])) + 0.5 * (
        0.25 * math.log(0.25 / mix[0]) + 0.75 * math.log(0.75 / mix[1])
    )
    assert float(metrics.js_rows(p, q)[0]) == pytest.approx(js, abs=1e-12)
    assert js == pytest.approx(0.033822, abs=1e-6)


def test_signed_weight_protocol_on_a_crafted_row():
    w = t([0.6, -0.2, 0.4, 0.0])
    q, neg, zero = metrics.signed_to_distribution(w)
    assert torch.allclose(q, t([0.6, 0.0, 0.4, 0.0]))
    assert float(neg[0]) == pytest.approx(0.2 / 1.2)
    assert not bool(zero[0])
    p = t([0.25, 0.25, 0.25, 0.25])
    a = 1e-6
    kl, needed = metrics.kl_rows(p, q, a=a)
    qa = [(1 - a) * x + a / 4 for x in (0.6, 0.0, 0.4, 0.0)]
    expected = sum(0.25 * math.log(0.25 / x) for x in qa)
    assert float(kl[0]) == pytest.approx(expected, rel=1e-12)
    assert bool(needed[0])  # Q had zeros where P > 0: smoothing was needed (counted)


def test_all_negative_row_becomes_uniform_and_is_counted():
    q, neg, zero = metrics.signed_to_distribution(t([-1.0, -3.0, 0.0]))
    assert torch.allclose(q, torch.full((1, 3), 1 / 3, dtype=torch.float64))
    assert float(neg[0]) == pytest.approx(1.0)
    assert bool(zero[0])


def test_support_excludes_padded_behaviours():
    p = t([0.5, 0.5, 0.0])
    w = t([0.3, 0.3, 5.0])  # mass on a padded behaviour is ignored
    support = torch.tensor([[True, True, False]])
    q, neg, _ = metrics.signed_to_distribution(w, support)
    assert torch.allclose(q, t([0.5, 0.5, 0.0]))
    kl, needed = metrics.kl_rows(p, q, support, a=1e-6)
    assert float(kl[0]) < 1e-9 and not bool(needed[0])


def test_topk_recall_and_output_error():
    p, q = t([0.7, 0.2, 0.1]), t([0.1, 0.6, 0.3])
    assert float(metrics.topk_recall_rows(p, q, k=1)[0]) == pytest.approx(0.2 / 0.7)
    assert float(metrics.topk_recall_rows(p, p, k=2)[0]) == pytest.approx(1.0)
    out, ref = t([3.0, 4.0]), t([0.0, 0.0])
    assert float(metrics.output_error_rows(out, ref, 2.0)[0]) == pytest.approx(2.5)


def test_summarise_and_fidelity_rows():
    s = metrics.summarise(torch.tensor([1.0, 2.0, 3.0, 4.0]), "kl")
    assert s["kl_mean"] == 2.5 and s["kl_p50"] == 2.5 and s["kl_max"] == 4.0
    assert s["kl_p99"] == pytest.approx(3.97)
    assert metrics.summarise(torch.empty(0), "x") == {
        f"x_{k}": None for k in ("mean", "p50", "p99", "max")
    }
    p = torch.softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(0)), -1)
    res = metrics.fidelity_rows(p, p, is_distribution=True)
    assert float(res["kl"].max()) < 1e-5 and float(res["tv"].max()) < 1e-6
    assert torch.allclose(res["top10_recall"], torch.ones(5, dtype=torch.float64))
