"""Closing the loop on a tiny log and the decision table on crafted inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.closing_loop import kl_by_rank, rank_needed, rank_needed_summary, sample_users
from analysis.decide import METHODS, DecideOpts, decide, missing_toml, read_bench, write_decisions
from analysis.decide_timing import TimeOpts, view
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


def _row(
    method: str,
    n: int,
    m: int,
    prep: float,
    att: float,
    rank: float = np.nan,
    iqr_rel: float = 0.02,
    samples: int = 20,
    **kw,
) -> dict:
    """A bench row with median/IQR/samples per phase (forward = prepare + attend)."""
    row = {
        "method": method,
        "n": n,
        "m": m,
        "d": 64,
        "rank": rank,
        "status": "ok",
        "device": "cpu",
        "device_name": "TestCPU",
        "dtype": "fp32",
        "batch": 1,
        "heads": 1,
        "setting": "target",
        "solver": "gram" if method == "svd_exact" else np.nan,
    }
    for ph, t in (("prepare", prep), ("attend", att), ("forward", prep + att)):
        row[f"{ph}_ms_median"] = t
        row[f"{ph}_ms_iqr"] = t * iqr_rel
        row[f"timing_samples_{ph}"] = samples
    row.update(kw)
    return row


def _bench() -> pd.DataFrame:
    rows = []
    for n in (20, 500):
        for m in (64, 1024):
            rows.append(_row("dense", n, m, 1e-3, 1e-3 * n * m / 64))
            for r in (4, 8, 16, 32, 64):
                # svd_exact: a per-user prepare, then an attend cheaper than dense at small r
                rows.append(_row("svd_exact", n, m, 0.5, 1e-3 * n * m * r / 64 / 64, rank=r))
            rows.append(_row("linrec", n, m, 0.01, 0.01))
    rows.append(_row("svd_exact", 500, 64, 0.5, 1.0, rank=8, status="oom"))
    return pd.DataFrame(rows)


def _one(dec: pd.DataFrame, nb: str, b: float, m, scen: str) -> pd.Series:
    sel = dec[
        (dec["n_bin"] == nb)
        & (dec["kl_budget"] == b)
        & (dec["m"] == m)
        & dec["scenario"].str.startswith(scen)
    ]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_rank_needed_on_crafted_input() -> None:
    need = rank_needed(CRAFTED).set_index("user")
    assert need.loc["a", "r_kl_0.01"] == 8 and need.loc["a", "r_kl_0.001"] == 32
    assert need.loc["c", "r_kl_0.01"] == 4 and need.loc["c", "r_kl_0.001"] == 16
    summ = rank_needed_summary(rank_needed(CRAFTED))
    assert set(summ["budget"]) == {1e-2, 1e-3}


def test_decide_without_bench(tmp_path: Path) -> None:
    dec, cand, missing = decide(CRAFTED, None)
    assert (dec["method"] == "undecided").all() and not missing
    assert dec["why"].str.contains("no bench table").all()
    # every method has a row per regime, none dropped, none silently empty
    assert set(cand["method"]) == set(METHODS)
    svd = cand[
        (cand["method"] == "svd_exact")
        & (cand["n_bin"] == "[256,1000)")
        & (cand["kl_budget"] == 1e-2)
    ]
    assert svd["rank"].iloc[0] == 8 and svd["expected_kl"].iloc[0] == pytest.approx(
        (5e-3 + 8e-3) / 2
    )
    for meth in ("linrec", "lrea", "performer"):
        assert cand.loc[cand["method"] == meth, "quality"].str.startswith("quality unknown").all()
    assert (
        cand.loc[cand["method"] == "svd_tokens", "quality"].str.contains("not measured: run").all()
    )
    paths = write_decisions(dec, cand, tmp_path, {"note": "no bench"})
    back = json.loads(paths[1].read_text())
    assert back["note"] == "no bench" and len(back["decisions"]) == len(dec) == len(
        pd.read_csv(paths[0])
    )


def test_decide_with_bench_picks_faster_with_interval(tmp_path: Path) -> None:
    bench = _bench()
    bench.to_csv(tmp_path / "results.csv", index=False)
    dec, cand, _ = decide(CRAFTED, read_bench(tmp_path))
    r = _one(dec, "[256,1000)", 1e-2, 1024, "per-request")
    assert r["method"] == "svd_exact" and r["rank"] == 8 and r["bench_n"] == 500
    assert r["speedup_lo"] > 1 and r["device"] == "cpu (TestCPU)"
    # linrec is far faster but its quality is unknown: it never wins, and its row says why
    lin = cand[(cand["method"] == "linrec") & (cand["n_bin"] == "[256,1000)") & (cand["m"] == 1024)]
    assert (lin["speedup"] > r["speedup"]).all() and not lin["eligible"].any()
    assert "linrec: quality unknown" in r["why"]
    short = _one(dec, "[16,64)", 1e-3, 64, "per-request")
    assert short["method"] == "dense" and pd.isna(short["rank"]) and short["expected_kl"] == 0.0
    assert "svd_exact r=16" in short["why"] and "slower" in short["why"]


def test_faster_method_outside_budget_loses() -> None:
    # svd_tokens: faster than everything but over the KL budget at every rank
    tok = CRAFTED.assign(method="svd_tokens", kl_mean=CRAFTED["kl_mean"] + 1.0)
    kl = pd.concat([CRAFTED.assign(method="svd_exact"), tok], ignore_index=True)
    bench = _bench()
    extra = [_row("svd_tokens", n, m, 1e-4, 1e-4, rank=16) for n in (20, 500) for m in (64, 1024)]
    bench = pd.concat([bench, pd.DataFrame(extra)], ignore_index=True)
    dec, cand, _ = decide(kl, bench)
    r = _one(dec, "[256,1000)", 1e-2, 1024, "per-request")
    assert r["method"] == "svd_exact"
    tok_rows = cand[cand["method"] == "svd_tokens"]
    assert (
        tok_rows["quality"].str.startswith("over the KL budget").all()
        and not tok_rows["eligible"].any()
    )


def test_interval_straddling_one_is_no_faster() -> None:
    # svd_exact 1.05x faster than dense at one case, but with a noisy dense (IQR 40 %, 3 samples)
    bench = pd.DataFrame(
        [
            _row("dense", 500, 64, 1e-3, 1.05, iqr_rel=0.4, samples=3),
            _row("svd_exact", 500, 64, 0.0, 1.0, rank=8, iqr_rel=0.4, samples=3),
        ]
    )
    bench.loc[1, ["prepare_ms_median", "prepare_ms_iqr"]] = [1e-3, 0.0]
    dec, cand, _ = decide(CRAFTED[CRAFTED["n"] >= 256], bench, DecideOpts(m_values=(64,)))
    r = _one(dec, "[256,1000)", 1e-2, 64, "per-request")
    c = cand[
        (cand["method"] == "svd_exact")
        & (cand["scenario"] == "per-request")
        & (cand["kl_budget"] == 1e-2)
    ]
    assert c["speedup"].iloc[0] > 1 and c["speedup_lo"].iloc[0] < 1 < c["speedup_hi"].iloc[0]
    assert c["verdict"].iloc[0].startswith("no faster") and r["method"] == "dense"


def test_prestored_state_wins_when_prepare_dominates() -> None:
    # svd_exact: prepare 10 ms, attend 0.2 ms; dense: attend 1 ms. Per request dense wins;
    # pre-stored over R = 100 requests svd_exact wins, crossover R = ceil(10 / 0.8) = 13.
    bench = pd.DataFrame(
        [
            _row("dense", 500, 64, 0.0, 1.0, iqr_rel=0.0),
            _row("svd_exact", 500, 64, 10.0, 0.2, rank=8, iqr_rel=0.0),
        ]
    )
    bench.loc[0, "prepare_ms_median"] = 0.0
    opts = DecideOpts(m_values=(64,), time=TimeOpts(run_sigma=0.0))
    dec, cand, _ = decide(CRAFTED[CRAFTED["n"] >= 256], bench, opts)
    assert _one(dec, "[256,1000)", 1e-2, 64, "per-request")["method"] == "dense"
    r = _one(dec, "[256,1000)", 1e-2, 64, "pre-stored")
    assert (
        r["method"] == "svd_exact"
        and r["crossover_r"] == 13
        and r["scenario"] == "pre-stored (R=100)"
    )
    assert r["state_bytes_per_user_head"] > 0


def test_not_benched_rank_is_not_bounded(tmp_path: Path) -> None:
    bench = _bench()
    bench = bench[~((bench["method"] == "svd_exact") & (bench["rank"] > 4))]
    dec, cand, missing = decide(CRAFTED, bench)
    r = _one(dec, "[256,1000)", 1e-2, 64, "per-request")
    assert (
        r["method"] == "dense"
        and "svd_exact r=8: not benched with dense in one run at N = 500, rank 8" in r["why"]
    )
    assert "missing_cases.toml" in r["why"]
    assert ("svd_exact", 500, 64, 64, 8) in missing and ("dense", 500, 64, 64, None) in missing
    # the sweep it writes parses as a bench config
    from bench.config import load_config

    v = view(bench)
    (tmp_path / "m.toml").write_text(missing_toml(missing, v.fixed, v.device))
    cfg = load_config(path=tmp_path / "m.toml")
    assert cfg.name == "decide_missing"


def test_speedup_pairs_rows_of_one_run() -> None:
    # dense re-timed in a second (loaded) run at 10x its time: svd_exact, timed only in the
    # first run, is compared with the first run's dense (2x), never with the second's (20x)
    quick = pd.DataFrame(
        [_row("dense", 500, 64, 0.0, 10.0), _row("svd_exact", 500, 64, 1.0, 4.0, rank=8)]
    )
    loaded = pd.DataFrame([_row("dense", 500, 64, 0.0, 100.0)])
    bench = pd.concat(
        [quick.assign(source="quick"), loaded.assign(source="loaded")], ignore_index=True
    )
    _, cand, _ = decide(CRAFTED[CRAFTED["n"] >= 256], bench, DecideOpts(m_values=(64,)))
    c = cand[
        (cand["method"] == "svd_exact")
        & (cand["scenario"] == "per-request")
        & (cand["kl_budget"] == 1e-2)
    ]
    assert c["speedup"].iloc[0] == pytest.approx(2.0) and c["bench_source"].iloc[0] == "quick"


def test_decide_refuses_mixed_devices() -> None:
    bench = _bench()
    gpu = bench.assign(device="cuda", device_name="H100")
    with pytest.raises(ValueError, match="several devices"):
        decide(CRAFTED, pd.concat([bench, gpu]))
    dec, _, _ = decide(CRAFTED, pd.concat([bench, gpu]), DecideOpts(device="cuda"))
    assert (dec["device"] == "cuda (H100)").all()


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


def test_kl_by_rank_svd_tokens_rows_feed_decide(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f = tmp_path / "input.txt"
    f.write_text(
        "\n".join(" ".join(map(str, rng.integers(0, 60, n))) for n in (20, 30, 300, 320)) + "\n"
    )
    data = load(f)
    emb = RouteEmbeddings("random", rng.standard_normal((data.n_items, 8)).astype(np.float32))
    kl = kl_by_rank(
        data,
        emb,
        ranks=(1, 4, 16),
        n_candidates=5,
        progress=False,
        methods=("svd_exact", "svd_tokens"),
    )
    assert set(kl["method"]) == {"svd_exact", "svd_tokens"} and len(kl) == 4 * 3 * 2
    assert (kl["kl_mean"] >= 0).all()
    # svd_exact at full rank is exact; svd_tokens (another operator) is not
    full = kl[kl["rank"] == 16]
    assert (full.loc[full["method"] == "svd_exact", "kl_mean"] < 1e-5).all()
    assert (full.loc[full["method"] == "svd_tokens", "kl_mean"] > 1e-3).any()
    assert len(rank_needed(kl)) == 4  # svd_exact's rows only
    _, cand, _ = decide(kl, None, DecideOpts(budgets=(1e9,)))
    tok = cand[cand["method"] == "svd_tokens"]
    assert tok["quality"].str.startswith("KL ").all() and tok["eligible"].all()
    with pytest.raises(ValueError, match="not supported"):
        kl_by_rank(data, emb, ranks=(1,), progress=False, methods=("linrec",))


def test_loaded_run_is_timed_by_process_cpu_time() -> None:
    """A run whose rows say wall times are unusable (timing_rank_by = process_cpu) is decided
    on process CPU time: here the loaded wall clock made dense look 2x slower than it ran."""
    rows = []
    for method, wall, cpu in (("dense", 8.0, 4.0), ("linrec", 5.0, 5.0)):
        r = _row(method, 500, 1024, 0.001, wall, timing_rank_by="process_cpu")
        for ph, t in (("prepare", 0.001), ("attend", cpu), ("forward", cpu + 0.001)):
            r[f"{ph}_process_cpu_ms_median"] = t
            r[f"{ph}_process_cpu_ms_iqr"] = 0.02 * t
        rows.append(r)
    v = view(pd.DataFrame(rows))
    assert (
        set(v.timing.values()) == {"process_cpu"}
        and "process CPU time: loaded run" in v.device_label
    )
    dense, lin = (v.draws(v.select(m, 500, 1024, 64), "attend")[0] for m in ("dense", "linrec"))
    assert (dense, lin) == (4.0, 5.0)  # wall would have said 8.0 and 5.0
    idle = pd.DataFrame([_row("dense", 500, 1024, 0.001, 8.0)])
    assert view(idle).timing == {"table": "wall"}


def test_a_rows_interval_does_not_depend_on_what_was_drawn_before() -> None:
    """Each bench row's bootstrap draws come from their own (seed, row, phase) stream: adding
    or reordering other cases (e.g. one more method in the decision) leaves them unchanged."""
    bench = _bench()
    rows = bench[bench["method"] == bench["method"].iloc[0]].head(1)
    a = view(bench).draws(rows, "forward")
    v = view(bench)
    v.draws(bench[bench["method"] != rows["method"].iloc[0]], "forward")  # something else first
    b = v.draws(rows, "forward")
    assert a is not None and b is not None
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
