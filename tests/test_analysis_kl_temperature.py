"""KL of svd_exact by rank across query temperature (t = 1 is the plain table, a tiny t makes
both distributions uniform, KL -> 0; the CLI writes the stacked summary) and against the
score-error bound 2 s_{r+1} max||q|| / sqrt(d), which every measured row must respect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.closing_loop import bound_vs_measured, by_temperature, kl_by_rank
from analysis.embeddings import RouteEmbeddings
from analysis.loaders import load

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(tmp_path: Path) -> Path:
    """A generated (synthetic) log: 40 users with 20-80 random items of 50."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{int(rng.integers(50))}", t)
        for u in range(40)
        for t in range(int(rng.integers(20, 80)))
    ]
    f = tmp_path / "log.csv"
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(f, index=False)
    return f


def test_temperature_scales_the_queries(tmp_path: Path) -> None:
    data = load(_log(tmp_path))
    rng = np.random.default_rng(1)
    emb = RouteEmbeddings("random", rng.standard_normal((data.n_items, 8)).astype(np.float32))
    kw = {"ranks": (1, 2, 4), "max_users": 12, "progress": False}
    plain = kl_by_rank(data, emb, **kw)
    pd.testing.assert_frame_equal(plain, kl_by_rank(data, emb, temperature=1.0, **kw))
    cold = kl_by_rank(data, emb, temperature=1e-4, **kw)
    hot = kl_by_rank(data, emb, temperature=4.0, **kw)
    assert cold["kl_mean"].max() < 1e-6 < plain["kl_mean"].max()
    assert hot["kl_mean"].mean() > plain["kl_mean"].mean()
    t = by_temperature({1.0: plain, 4.0: hot})
    assert sorted(t["temperature"].unique()) == [1.0, 4.0]
    assert {"route", "n_bin", "budget", "r_median", "unmet"} <= set(t.columns)


def test_cli_writes_the_temperature_table_unless_asked_not_to(tmp_path: Path) -> None:
    log = _log(tmp_path)
    argv = ["kl", "--data", str(log), "--embedding", "random", "--kl-users", "10"]
    argv += ["--cache", "none", "--quiet", "--threads", "1", "--out"]
    assert main(argv + [str(tmp_path / "a"), "--temperatures", "0.5,2"]) == 0
    t = pd.read_csv(tmp_path / "a" / "kl_by_temperature.csv")
    assert sorted(t["temperature"].unique()) == [0.5, 1.0, 2.0]
    assert main(argv + [str(tmp_path / "b"), "--temperatures", "1"]) == 0
    assert not (tmp_path / "b" / "kl_by_temperature.csv").exists()
    with pytest.raises(SystemExit):
        main(argv + [str(tmp_path / "c"), "--temperatures", "0,1"])


def test_measured_kl_respects_the_score_error_bound(tmp_path: Path) -> None:
    data = load(_log(tmp_path))
    rng = np.random.default_rng(2)
    emb = RouteEmbeddings("random", rng.standard_normal((data.n_items, 8)).astype(np.float32))
    kl = kl_by_rank(data, emb, ranks=(1, 2, 4, 8, 16), max_users=12, progress=False)
    live = kl[kl["s_next"] > 0]
    assert len(live) and (live["kl_max"] <= live["kl_bound"] + 1e-5).all()
    assert (kl.loc[kl["rank_used"] >= 16, "kl_bound"] == 0).all()  # d_k + d_v = 16: exact
    b = bound_vs_measured(kl)
    assert b["bound_holds"].all() and (b["looseness_median"].dropna() >= 1).all()
    assert set(b["rank"]) <= {1, 2, 4, 8}
