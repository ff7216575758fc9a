"""Rank measures on known spectra; the batched Gram route against numpy.linalg.svd."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import spectra
from analysis.summaries import scree, summarise

pytestmark = pytest.mark.usefixtures("one_thread")


def test_exact_rank_gives_r99_equal_rank() -> None:
    rng = np.random.default_rng(0)
    for r in (1, 3, 7):
        x = rng.standard_normal((50, r)) @ rng.standard_normal((r, 16))
        s = spectra.svd_singular_values(x)
        m = spectra.rank_measures(s[None])
        assert m["r99"][0] <= r
        # equal singular values: every energy rank is r
        s_eq = np.r_[np.ones(r), np.zeros(16 - r)]
        me = spectra.rank_measures(s_eq[None])
        assert me["r90"][0] == me["r95"][0] == me["r99"][0] == r


def test_identity_effective_and_stable_rank() -> None:
    for n in (1, 5, 32):
        s = spectra.svd_singular_values(np.eye(n))
        m = spectra.rank_measures(s[None])
        assert m["effective_rank"][0] == pytest.approx(n)
        assert m["stable_rank"][0] == pytest.approx(n)
        assert m["r99"][0] == n


def test_energy_rank_threshold_and_zero_rows() -> None:
    s = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # energies 9, 1 -> 90 % at r = 1
    assert list(spectra.energy_rank(s, 0.90)) == [1, 0]
    assert list(spectra.energy_rank(s, 0.95)) == [2, 0]
    assert spectra.effective_rank(s)[1] == 0 and spectra.stable_rank(s)[1] == 0


def _random_users(rng: np.random.Generator, n_items: int, lengths: list[int]) -> list[np.ndarray]:
    return [rng.integers(0, n_items, n) for n in lengths]


@pytest.mark.parametrize("centred", [False, True])
def test_gram_route_matches_numpy_svd(centred: bool) -> None:
    rng = np.random.default_rng(1)
    d = 24
    table = rng.standard_normal((300, d)).astype(np.float32)
    table[:, :4] *= 30  # a decaying spectrum
    lengths = [1, 2, 5, 23, 24, 25, 60, 61, 200, 513]
    seqs = _random_users(rng, 300, lengths)
    got = spectra.gram_singular_values(seqs, table, centred=centred)
    for u, s in enumerate(seqs):
        ref = spectra.svd_singular_values(table[s].astype(np.float64), centred=centred)
        mask = ref > 1e-6 * max(ref[0], 1e-300)
        np.testing.assert_allclose(got[u][mask], ref[mask], rtol=1e-6)
        assert np.all(got[u][~mask] <= 1e-5 * max(ref[0], 1.0))


def test_gram_with_projection_and_low_rank_users() -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((100, 8)).astype(np.float32)
    w = rng.standard_normal((8, 12)).astype(np.float32)
    seqs = _random_users(rng, 100, [3, 40])
    got = spectra.gram_singular_values(seqs, table, project=w)
    assert got.shape == (2, 12)
    ref = spectra.svd_singular_values(table[seqs[1]].astype(np.float64) @ w)
    np.testing.assert_allclose(got[1][:8], ref[:8], rtol=1e-6)
    assert np.count_nonzero(got[0]) == 3  # rank capped by N
    assert np.count_nonzero(got[1]) == 8  # rank capped by d of the table


def test_user_table_and_summaries() -> None:
    rng = np.random.default_rng(3)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    seqs = _random_users(rng, 50, [4, 20, 100, 1200])
    users, spec = spectra.user_table(seqs, table, "toy", "random", "x")
    assert len(users) == 8 and set(users["centred"]) == {False, True}
    assert users.loc[users["n"] == 4, "rank_cap"].tolist() == [
        len(np.unique(seqs[0])),
        len(np.unique(seqs[0])) - 1,
    ]
    summ = summarise(users)
    assert {"[1,16)", "[16,64)", "[64,256)", "[1000,inf)", "all"} <= set(summ["n_bin"])
    sc = scree(spec[False], np.array([4, 20, 100, 1200]), "random", "x", False)
    assert np.allclose(sc.loc[sc["n_bin"] == "all", "sv_mean"].iloc[0], 1.0)
    last = sc[sc["index"] == 8]
    assert np.allclose(last["energy_cum"], 1.0)


def test_bin_labels() -> None:
    labels = spectra.log_bins_label(np.array([1, 15, 16, 999, 1000, 5000]))
    assert list(labels) == ["[1,16)", "[1,16)", "[16,64)", "[256,1000)", "[1000,inf)", "[1000,inf)"]
