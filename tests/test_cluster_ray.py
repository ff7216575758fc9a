"""Sweeps and spectra through a local Ray (one start per module): the same rows and spectra
as one process, and a worker killed mid-sweep loses and duplicates nothing after a resume.
Skipped with a reason where Ray (the ``[cluster]`` extra) is not installed."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[cluster]')")

from bench import runner, store  # noqa: E402
from bench.cluster import run_sweep_ray  # noqa: E402
from bench.config import MemoryCfg, expand, load_config, resolve_methods  # noqa: E402
from conftest import tiny_sweep  # noqa: E402

# columns that must match between a local run and a Ray run (timings, memory peaks, the
# machine's ceilings and environment columns are measurements and may differ)
SAME = [
    "case_id",
    "method",
    "label",
    "params",
    "family",
    "n",
    "m",
    "d",
    "batch",
    "heads",
    "dtype",
    "setting",
    "status",
    "reason",
    "backend",
    "kl_mean",
    "kl_max",
    "tv_mean",
    "out_err_max",
    "top10_recall_mean",
    "flops",
    "bytes",
    "exps",
    "mem_model_bytes",
]


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=80 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
        )
    yield ray
    if started:
        ray.shutdown()


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = store.to_frame(rows)[SAME].sort_values("case_id").reset_index(drop=True)
    return df


def test_smoke_sweep_on_ray_gives_the_local_rows(local_ray, tmp_path):
    cfg = load_config("smoke")
    # the smoke grid with all methods; the CPU memory probe (a child process per case) is off
    # to keep the test short: its peaks are measurements, not compared anyway
    cfg = dataclasses.replace(cfg, memory=MemoryCfg(enabled=False))
    cases = expand(cfg, resolve_methods(cfg)[0], "cpu")
    # the Ray workers run one thread each (OMP_NUM_THREADS=1 above); the local run must too,
    # since a reduction split over two threads sums in another order, and an ill-conditioned
    # fit (LREA at rank 4 on an exact-rank input) amplifies that to a 1.4 % KL difference
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local, _ = runner.run_sweep(cfg, cases, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    rows, info = run_sweep_ray(cfg, cases, tmp_path / "ray", progress=False, workers=2)
    assert info["measured"] == len(cases) and info["worker_deaths"] == 0 and info["workers"] == 2
    a, b = _frame(local), _frame(rows)
    assert len(a) == len(b) == len(cases)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    assert set(b["status"]) == {"ok", "unsupported"}
    # the driver alone wrote the log: one line per case, nothing else
    assert len(store.read_rows(tmp_path / "ray" / store.LOG_NAME)) == len(cases)
    # a second run resumes: nothing measured again
    _, info2 = run_sweep_ray(cfg, cases, tmp_path / "ray", progress=False, workers=2)
    assert info2["measured"] == 0 and info2["already_done"] == len(cases)


def test_killed_worker_then_resume_loses_and_duplicates_nothing(local_ray, tmp_path):
    path = tiny_sweep(tmp_path, methods=["dense", "svd_exact", "linrec"], n=(32, 48, 64))
    cfg = load_config(path=path)
    cases = expand(cfg, resolve_methods(cfg)[0], "cpu")
    killed: list[int] = []

    def kill_one(row: dict, actors: list) -> None:
        if not killed:  # after the first row: SIGKILL a worker mid-case (as an OOM killer would)
            pid = ray.get(actors[0].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    out = tmp_path / "run"
    rows, info = run_sweep_ray(
        cfg,
        cases,
        out,
        progress=False,
        workers=2,
        on_row=kill_one,
        worker_env={"BENCH_TEST_DELAY_S": "0.2"},
    )
    assert killed and info["worker_deaths"] >= 1
    lost = set(info["lost"])
    assert lost and not lost & {r["case_id"] for r in rows}  # the dead worker's case: no row
    assert len(rows) + len(lost) == len(cases)  # the rest of its group went to a replacement
    rows2, info2 = run_sweep_ray(cfg, cases, out, progress=False, workers=1)
    assert info2["measured"] == len(lost) and info2["worker_deaths"] == 0
    log = store.read_rows(out / store.LOG_NAME)
    ids = [r["case_id"] for r in log]
    assert len(ids) == len(set(ids)) == len(cases)
    assert {r["case_id"] for r in rows2} == {c.case_id for c in cases}
    assert all(r["status"] == "ok" for r in rows2)


def test_spectra_on_ray_equal_one_process(local_ray, tmp_path):
    from analysis.cluster import bucket_log, run_spectra
    from analysis.synthlog import write_synthetic_log

    src = tmp_path / "log"
    write_synthetic_log(src, users=600, mean_len=40, items=500, dim=16, files=3, seed=3)
    buckets = bucket_log(src, tmp_path / "buckets", 4)
    table = src / "item_embeddings.npy"
    one = run_spectra(buckets, table, tmp_path / "one", engine="local")
    two = run_spectra(buckets, table, tmp_path / "ray", engine="ray")
    a = pd.read_parquet(tmp_path / "one" / "users").sort_values(["user", "centred"])
    b = pd.read_parquet(tmp_path / "ray" / "users").sort_values(["user", "centred"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    pd.testing.assert_frame_equal(one.summary, two.summary)
    assert int(a["user"].nunique()) == 600
    # and both equal the plain in-memory route over the whole log
    from analysis.cluster import reference_users

    ref = reference_users(src, table).sort_values(["user", "centred"]).reset_index(drop=True)
    for col in ("n", "n_distinct", "r90", "r95", "r99", "rank_cap"):
        np.testing.assert_array_equal(ref[col].to_numpy(), a[col].to_numpy())
    np.testing.assert_allclose(ref["effective_rank"], a["effective_rank"], rtol=1e-9)
    assert Path(tmp_path / "ray" / "summary.csv").is_file()
