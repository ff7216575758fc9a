"""Closing the loop on a tiny log and the decision table on crafted inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.closing_loop import kl_by_rank, rank_needed, rank_needed_summary, sample_users
from analysis.decide import decide, read_bench, write_decisions
from analysis.embeddings import RouteEmbeddings
from analysis.loaders import load

pytestmark = pytest.mark.usefixtures("one_thread")


def _kl_rows(route: str, users: dict[str, tuple[int, list[float]]]) -> pd.DataFrame:
    ranks = [1, 2, 4, 8, 16, 32, 64]
    rows = []
    for user, (n, kls) in users.items():
        for r, kl in zip(ranks, kls, strict=True):
            rows.append(
                {
                    "dataset": "toy",
                    "route": route,
                    "user": user,
                    "n": n,
                    "m": 65,
                    "d": 64,
                    "rank": r,
                    "kl_mean": kl,
                    "n_bin": "[256,1000)" if n >= 256 else "[16,64)",
                }
            )
    return pd.DataFrame(rows)


CRAFTED = _kl_rows(
    "sasrec",
    {
        # long users: budget 1e-2 met at r = 8, 1e-3 at r = 32
        "a": (500, [1, 0.5, 0.1, 5e-3, 2e-3, 5e-4, 0]),
        "b": (600, [1, 0.5, 0.1, 8e-3, 2e-3, 8e-4, 0]),
        # short users: 1e-2 at r = 4, 1e-3 at r = 16
        "c": (20, [1, 0.1, 5e-3, 2e-3, 5e-4, 1e-4, 0]),
    },
)


def _bench() -> pd.DataFrame:
    rows = []
    for n in (16, 256, 1024):
        for m in (64, 1024):
            rows.append(
                {
                    "method": "dense",
                    "n": n,
                    "m": m,
                    "d": 64,
                    "rank": np.nan,
                    "status": "ok",
                    "forward_ms_median": 1e-3 * n * m,
                }
            )
            for r in (4, 8, 16, 32, 64):
                # svd_exact is cheaper than dense only at large N and small r
                rows.append(
                    {
                        "method": "svd_exact",
                        "n": n,
                        "m": m,
                        "d": 64,
                        "rank": r,
                        "status": "ok",
                        "forward_ms_median": 1e-3 * n * m * r / 64 + 0.05 * 1024 / n * m / 64,
                    }
                )
    rows.append(
        {
            "method": "svd_exact",
            "n": 1024,
            "m": 64,
            "d": 64,
            "rank": 8,
            "status": "oom",
            "forward_ms_median": np.nan,
        }
    )
    return pd.DataFrame(rows)


def test_rank_needed_on_crafted_input() -> None:
    need = rank_needed(CRAFTED).set_index("user")
    assert need.loc["a", "r_kl_0.01"] == 8 and need.loc["a", "r_kl_0.001"] == 32
    assert need.loc["c", "r_kl_0.01"] == 4 and need.loc["c", "r_kl_0.001"] == 16
    summ = rank_needed_summary(rank_needed(CRAFTED))
    assert set(summ["budget"]) == {1e-2, 1e-3}


def test_decide_without_bench(tmp_path: Path) -> None:
    table = decide(CRAFTED, None)
    assert table["expected_ms"].isna().all()
    row = table[(table["n_bin"] == "[256,1000)") & (table["kl_budget"] == 1e-2)].iloc[0]
    assert row["method"] == "svd_exact" and row["rank"] == 8
    assert row["expected_kl"] == pytest.approx((5e-3 + 8e-3) / 2)
    csv, js = write_decisions(table, tmp_path, {"note": "no bench"})
    back = json.loads(js.read_text())
    assert back["note"] == "no bench" and len(back["decisions"]) == len(table) == len(
        pd.read_csv(csv)
    )


def test_decide_with_bench_picks_faster(tmp_path: Path) -> None:
    bench = _bench()
    bench.to_csv(tmp_path / "results.csv", index=False)
    table = decide(CRAFTED, read_bench(tmp_path))
    long = table[(table["n_bin"] == "[256,1000)") & (table["kl_budget"] == 1e-2)]
    assert set(long["m"]) == {64, 1024}
    r = long[long["m"] == 1024].iloc[0]
    assert r["method"] == "svd_exact" and r["rank"] == 8 and r["svd_bench_rank"] == 8
    assert r["speedup_vs_dense"] > 1 and "interpolated" in r["time_source"]
    short = table[
        (table["n_bin"] == "[16,64)") & (table["kl_budget"] == 1e-3) & (table["m"] == 64)
    ].iloc[0]
    assert short["method"] == "dense" and pd.isna(short["rank"]) and short["expected_kl"] == 0.0


def test_read_bench_rejects_wrong_table(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks columns"):
        read_bench(tmp_path / "x.csv")


def test_sample_users_stratified() -> None:
    lengths = np.array([5] * 100 + [100] * 100 + [2000] * 3)
    u = sample_users(lengths, max_users=30, seed=0)
    assert len(u) == 30 and (lengths[u] == 2000).sum() == 3
    assert (lengths[u] == 5).sum() in (13, 14)


def test_kl_by_rank_exact_at_full_rank(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f = tmp_path / "input.txt"
    f.write_text(
        "\n".join(" ".join(map(str, rng.integers(0, 40, n))) for n in (3, 12, 30, 70)) + "\n"
    )
    data = load(f)
    emb = RouteEmbeddings("random", rng.standard_normal((data.n_items, 8)).astype(np.float32))
    kl = kl_by_rank(data, emb, ranks=(1, 2, 4, 8, 16), n_candidates=5, progress=False)
    assert len(kl) == 4 * 5
    full = kl[kl["rank"] == 16]
    assert (full["kl_mean"] < 1e-5).all()
    assert (kl.groupby("user")["kl_mean"].apply(lambda s: s.iloc[0] >= s.iloc[-1])).all()
    w = RouteEmbeddings(
        "sasrec", emb.item, *(rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3))
    )
    kl2 = kl_by_rank(data, w, ranks=(1, 16), n_candidates=5, progress=False)
    assert (kl2.loc[kl2["rank"] == 16, "rank_used"] <= 16).all()


def test_decide_lower_bound_when_rank_not_benched() -> None:
    bench = _bench()
    bench = bench[~((bench["method"] == "svd_exact") & (bench["rank"] > 4))]
    bench.loc[bench["method"] == "svd_exact", "forward_ms_median"] = (
        1e6  # slower than dense anywhere
    )
    table = decide(CRAFTED, bench)
    r = table[
        (table["n_bin"] == "[256,1000)") & (table["kl_budget"] == 1e-2) & (table["m"] == 64)
    ].iloc[0]
    assert r["svd_time_is_lower_bound"] and r["svd_bench_rank"] == 4
    assert r["method"] == "dense" and "even at benched rank 4" in r["note"]
