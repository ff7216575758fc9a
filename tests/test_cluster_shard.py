"""Cluster plumbing that needs no Ray: --shard / bench merge, bucketing by user, mergeable
histograms (exact integer quantiles), the bucketed spectra against the plain route, and the
install hint when Ray is missing."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from analysis import cluster as acl
from analysis.spectra import user_table
from analysis.summaries import summarise
from analysis.synthlog import write_synthetic_log
from bench import store
from bench.cli import main as bench_main
from bench.config import expand, load_config, resolve_methods
from bench.shard import merge_runs, parse_shard, shard_cases
from conftest import tiny_sweep


def _cases(path):
    cfg = load_config(path=path)
    return cfg, expand(cfg, resolve_methods(cfg)[0], "cpu")


def test_shards_partition_the_cases_by_input_group():
    cfg = load_config("smoke")
    cases = expand(cfg, resolve_methods(cfg)[0], "cpu")
    parts = [shard_cases(cases, (i, 3)) for i in range(3)]
    ids = [c.case_id for p in parts for c in p]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(ids) == len(set(ids))
    for i, p in enumerate(parts):  # an input group never spans two shards
        others = {c.input_key() for j, q in enumerate(parts) if j != i for c in q}
        assert not {c.input_key() for c in p} & others
    for bad in ("3/3", "1", "a/b", "0/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_shard_runs_merge_into_one_row_per_case(tmp_path, capsys):
    path = tiny_sweep(tmp_path, methods=["dense", "svd_exact"], n=(32, 48, 64))
    _, cases = _cases(path)
    for i in range(2):
        assert (
            bench_main(
                [
                    "run",
                    "--config",
                    str(path),
                    "--out",
                    str(tmp_path / f"s{i}"),
                    "--shard",
                    f"{i}/2",
                    "--no-progress",
                ]
            )
            == 0
        )
    # a duplicated row (a shard re-run by hand) and a stale "input unavailable" row
    rows0 = store.read_rows(tmp_path / "s0" / store.LOG_NAME)
    stale = dict(rows0[0], status="unsupported", reason="input unavailable: later")
    store.append_row(tmp_path / "s1" / store.LOG_NAME, [rows0[1], stale])
    assert (
        bench_main(
            ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "all")]
        )
        == 0
    )
    merged = store.read_rows(tmp_path / "all" / store.LOG_NAME)
    ids = [r["case_id"] for r in merged]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(ids) == len(set(ids))
    assert all(r["status"] == "ok" for r in merged)  # the finished row beat the stale one
    assert len(store.read_table(tmp_path / "all")) == len(cases)
    assert not list((tmp_path / "all").glob(".*tmp"))
    # merging is idempotent (the output may be one of the inputs)
    merge_runs([tmp_path / "all", tmp_path / "s0"], tmp_path / "all")
    assert len(store.read_rows(tmp_path / "all" / store.LOG_NAME)) == len(cases)
    assert bench_main(["merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_cluster_flag_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    path = tiny_sweep(tmp_path, methods=["dense"])
    assert (
        bench_main(
            [
                "run",
                "--config",
                str(path),
                "--out",
                str(tmp_path / "r"),
                "--cluster",
                "ray",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "pip install -e '.[cluster]'" in capsys.readouterr().err
    from analysis.cli import main as analysis_main

    write_synthetic_log(tmp_path / "log", users=20, mean_len=5, items=40, dim=8)
    assert (
        analysis_main(
            [
                "spectrum",
                "--data",
                str(tmp_path / "log"),
                "--cluster",
                "ray",
                "--buckets",
                "2",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "pip install -e '.[cluster]'" in capsys.readouterr().err


def test_bucketing_keeps_every_row_and_each_user_in_one_bucket(tmp_path):
    meta = write_synthetic_log(
        tmp_path / "log", users=300, mean_len=12, items=200, dim=8, files=2, seed=1
    )
    bl = acl.bucket_log(tmp_path / "log", tmp_path / "b", 5, buffer_rows=500)  # several flushes
    per = [acl.read_bucket(b) for b in bl]
    assert sum(len(p) for p in per) == meta["rows"]
    owners = pd.concat([p.assign(bucket=i) for i, p in enumerate(per)])
    assert (owners.groupby("user")["bucket"].nunique() == 1).all()
    with pytest.raises(ValueError, match="not empty"):
        acl.bucket_log(tmp_path / "log", tmp_path / "b", 5)


def test_histogram_quantiles_equal_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 1001):
        v = rng.integers(0, 40, size=n)
        parts = np.array_split(v, 3)
        merged = acl._int_hist(parts[0])
        for p in parts[1:]:
            merged = acl._merge_int(merged, acl._int_hist(p))
        for q in (0.1, 0.5, 0.9, 0.0, 1.0, 0.37):
            assert acl.hist_quantile(merged, q) == pytest.approx(np.quantile(v, q), abs=1e-12)


def test_bucketed_spectra_equal_the_plain_route_and_summaries(tmp_path):
    write_synthetic_log(
        tmp_path / "log", users=400, mean_len=30, items=300, dim=16, files=2, seed=2
    )
    table = tmp_path / "log" / "item_embeddings.npy"
    bl = acl.bucket_log(tmp_path / "log", tmp_path / "b", 3)
    run = acl.run_spectra(bl, table, tmp_path / "s", dataset="log")
    got = pd.read_parquet(tmp_path / "s" / "users").sort_values(["user", "centred"])
    ref = acl.reference_users(tmp_path / "log", table).sort_values(["user", "centred"])
    got, ref = got.reset_index(drop=True), ref.reset_index(drop=True)
    for col in ("user", "n", "n_distinct", "rank_cap", "r90", "r95", "r99"):
        np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy())
    for col in ("effective_rank", "stable_rank", "s1"):
        np.testing.assert_allclose(got[col], ref[col], rtol=1e-10)
    want = summarise(ref)
    assert list(run.summary.columns) == list(want.columns)
    m = run.summary.merge(want, on=["centred", "n_bin"], suffixes=("", "_ref"))
    assert len(m) == len(want)
    exact = [
        c
        for c in want.columns
        if c != "n_bin" and c.startswith(("r90", "r95", "r99", "n_", "users", "frac_"))
    ]
    for c in exact:  # integer ranks: exact medians and quantiles from the merged histograms
        np.testing.assert_allclose(
            m[c].astype(float), m[f"{c}_ref"].astype(float), rtol=0, atol=1e-12
        )
    for c in ("effective_rank", "stable_rank"):
        np.testing.assert_allclose(m[f"{c}_mean"], m[f"{c}_mean_ref"], rtol=1e-12)
        for s in ("median", "p10", "p90"):
            assert (m[f"{c}_{s}"] - m[f"{c}_{s}_ref"]).abs().max() <= 1.0 / acl.FLOAT_BINS_PER_UNIT
    # a re-run reuses the finished buckets and gives the same summary
    again = acl.run_spectra(bl, table, tmp_path / "s", dataset="log")
    pd.testing.assert_frame_equal(again.summary, run.summary)


def test_bad_items_and_missing_columns_are_clear_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"uid": [1, 1, 2], "item": [0, 1, 9]}), tmp_path / "log" / "a.parquet")
    with pytest.raises(ValueError, match="no column"):
        acl.bucket_log(tmp_path / "log", tmp_path / "b", 2)
    np.save(tmp_path / "t.npy", np.ones((5, 4), dtype=np.float32))
    bl = acl.bucket_log(tmp_path / "log", tmp_path / "b2", 1, cols=("uid", "item", None))
    with pytest.raises(ValueError, match="item ids span"):
        acl.run_spectra(bl, tmp_path / "t.npy", tmp_path / "s")


def test_user_table_on_a_gathered_table_is_the_same():
    """The per-bucket gather (only the bucket's items) does not change the spectra."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    seqs = [rng.integers(0, 50, size=k) for k in (3, 9, 20)]
    keep, local = np.unique(np.concatenate(seqs), return_inverse=True)
    cuts = np.cumsum([len(s) for s in seqs])[:-1]
    a, _ = user_table(seqs, table, "x", "r", "x")
    b, _ = user_table(np.split(local, cuts), table[keep], "x", "r", "x")
    pd.testing.assert_frame_equal(a, b)


def test_buckets_made_elsewhere_flat_files_with_other_column_names(tmp_path):
    """Spark's repartition(B, user).write.parquet(DIR) layout: part files + _SUCCESS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    d = tmp_path / "spark"
    d.mkdir()
    (d / "_SUCCESS").touch()
    rows = []
    for part, users in enumerate(([0, 2, 4], [1, 3])):
        uid = np.repeat(users, 20)
        item = rng.integers(0, 30, size=len(uid))
        pq.write_table(pa.table({"uid": uid, "iid": item}), d / f"part-{part:05d}.parquet")
        rows.append(pd.DataFrame({"user": uid, "item": item}))
    np.save(tmp_path / "t.npy", rng.standard_normal((30, 8)).astype(np.float32))
    bl = acl.existing_buckets(d)
    assert [b.name for b in bl] == ["part-00000.parquet", "part-00001.parquet"]
    acl.run_spectra(bl, tmp_path / "t.npy", tmp_path / "s", cols=("uid", "iid", None))
    got = pd.read_parquet(tmp_path / "s" / "users").sort_values(["user", "centred"])
    uid, seqs, _ = acl.sequences_of(pd.concat(rows, ignore_index=True))
    want, _ = user_table(seqs, np.load(tmp_path / "t.npy"), "log", "table", "x", users=uid)
    want = want.sort_values(["user", "centred"])
    np.testing.assert_array_equal(got["r90"].to_numpy(), want["r90"].to_numpy())
    np.testing.assert_allclose(got["s1"].to_numpy(), want["s1"].to_numpy(), rtol=1e-10)
