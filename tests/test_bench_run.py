"""End to end: sweep rows, injected OOM, unsupported rows, resume after kill -9, time budget,
import-json and the crossover reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import runner, store
from bench.cli import main
from bench.config import expand, load_config, resolve_methods
from bench.summary import crossover
from conftest import tiny_sweep

ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp_path: Path, memory: bool = False) -> Path:
    return tiny_sweep(
        tmp_path, methods=["dense", "svd_exact", "linrec"], n=(32, 64, 128), memory=memory
    )


def _cases(path: Path):
    cfg = load_config(path=path)
    return cfg, expand(cfg, resolve_methods(cfg)[0], "cpu")


def test_sweep_rows_and_resume_without_duplicates(tmp_path):
    cfg, cases = _cases(tiny(tmp_path, memory=True))
    rows, info = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    assert info["measured"] == len(cases) == 9
    df = store.read_table(tmp_path / "run")
    assert (df["status"] == "ok").all()
    assert df["peak_mem_cpu_bytes"].notna().all() and (df["mem_method"] != "").all()
    assert df["kl_mean"].notna().all() and (df["forward_calls"] >= 2).all()
    assert (df.loc[df.method == "svd_exact", "flops"] > 0).all()
    for p in ("prepare", "attend", "forward"):  # CPU time beside wall time (issue 11)
        assert (df[f"{p}_thread_cpu_ms_median"] > 0).all() and (
            df[f"{p}_process_cpu_ms_median"] > 0
        ).all()
        assert (df[f"{p}_wall_per_cpu"] > 0).all()
    assert (
        df["load_per_core"].notna().all()
        and df["timing_rank_by"].isin(["wall", "process_cpu"]).all()
    )
    assert ((df["timing_rank_by"] == "process_cpu") == df["timing_wall_warning"].notna()).all()
    rows2, info2 = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    assert info2["measured"] == 0 and info2["already_done"] == 9
    assert len(store.read_rows(tmp_path / "run" / "rows.jsonl")) == 9


def test_injected_oom_becomes_a_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    cfg, cases = _cases(tiny(tmp_path))
    monkeypatch.setenv("BENCH_INJECT_OOM", "svd_exact")
    rows, info = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    df = pd.DataFrame(rows)
    oom = df[df.method == "svd_exact"]
    assert (oom["status"] == "oom").all() and oom["reason"].str.contains("out of memory").all()
    assert (df[df.method != "svd_exact"]["status"] == "ok").all()


def test_fault_hook_and_unsupported_rows(tmp_path, monkeypatch):
    cfg, cases = _cases(tiny(tmp_path))

    def hook(case):
        if case.method == "linrec":
            raise MemoryError()
        if case.n == 128:
            raise ValueError("boom")

    monkeypatch.setattr(runner, "FAULT_HOOK", hook)
    rows, _ = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    df = pd.DataFrame(rows)
    assert set(df[df.method == "linrec"]["status"]) == {"oom"}
    assert set(df[(df.method == "dense") & (df.n == 128)]["status"]) == {"error"}
    self_cfg = load_config("smoke")
    self_cases = [c for c in expand(self_cfg, ["lrea"], "cpu") if c.setting == "self"]
    rows, _ = runner.run_sweep(self_cfg, self_cases, tmp_path / "self", progress=False)
    assert rows[0]["status"] == "unsupported" and "causal" in rows[0]["reason"]


def test_time_budget_stops_cleanly_and_resumes(tmp_path, capsys):
    cfg_path = tiny(tmp_path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--config",
                str(cfg_path),
                "--out",
                str(out),
                "--time-budget",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "time budget" in capsys.readouterr().out
    assert main(["run", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    df = store.read_table(out)
    assert len(df) == 9 and df["case_id"].is_unique


def test_resume_after_kill_9(tmp_path):
    cfg_path = tiny(tmp_path)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--config",
        str(cfg_path),
        "--out",
        str(out),
        "--no-progress",
        "--no-cascade",
    ]
    env = {**os.environ, "BENCH_TEST_DELAY_S": "0.4", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = out / "rows.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if log.exists() and log.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [r["case_id"] for r in store.read_rows(log)]
    assert 2 <= len(before) < 9
    env.pop("BENCH_TEST_DELAY_S")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    ids = [r["case_id"] for r in store.read_rows(log)]
    _, cases = _cases(cfg_path)
    assert sorted(ids) == sorted(c.case_id for c in cases)  # each case exactly once
    assert ids[: len(before)] == before  # finished rows kept, not re-measured
    assert store.read_table(out)["case_id"].is_unique


def test_import_json_round_trip(tmp_path):
    data = {
        "benchmarks": [
            {
                "name": "test_forward[dense-N64]",
                "fullname": "x::test_forward[dense-N64]",
                "extra_info": {
                    "case_id": "abc",
                    "method": "dense",
                    "n": 64,
                    "m": 8,
                    "flops": 1e6,
                    "bytes": 1e3,
                    "kl_mean": 0.0,
                },
                "stats": {"median": 0.002, "iqr": 0.0001, "min": 0.0015, "rounds": 7},
            }
        ]
    }
    f = tmp_path / "bench.json"
    f.write_text(json.dumps(data))
    assert main(["import-json", str(f), "--out", str(tmp_path / "t")]) == 0
    df = store.read_table(tmp_path / "t")
    row = df.iloc[0]
    assert row["forward_ms_median"] == pytest.approx(2.0) and row["forward_calls"] == 7
    assert row["flops_per_s"] == pytest.approx(5e8) and row["timer"] == "pytest-benchmark"
    assert list(df.columns[: len(store.COLUMNS)]) == store.COLUMNS


def test_crossover_reading():
    rows = []
    for n, dense_ms, fast_ms in [(256, 1.0, 2.0), (1024, 4.0, 3.0), (4096, 16.0, 5.0)]:
        base = dict(
            m=64,
            d=64,
            dtype="fp32",
            batch=1,
            heads=1,
            family="powerlaw",
            setting="target",
            status="ok",
            n=n,
        )
        rows.append(
            {
                **base,
                "method": "dense",
                "label": "dense",
                "forward_ms_median": dense_ms,
                "kl_mean": 0.0,
            }
        )
        rows.append(
            {
                **base,
                "method": "svd_exact",
                "label": "svd_exact[r=4]",
                "forward_ms_median": fast_ms,
                "kl_mean": 0.01,
            }
        )
        rows.append(
            {
                **base,
                "method": "linrec",
                "label": "linrec",
                "forward_ms_median": dense_ms * 2,
                "kl_mean": 1.0,
            }
        )
    cx = crossover(pd.DataFrame(rows)).set_index("method")
    assert cx.loc["svd_exact", "crossover_n"] == 1024
    assert cx.loc["svd_exact", "speedup_at_max_n"] == pytest.approx(16 / 5)
    assert cx.loc["svd_exact", "kl_mean_at_crossover"] == pytest.approx(0.01)
    assert pd.isna(cx.loc["linrec", "crossover_n"])


def test_missing_profile_is_unsupported_then_measured_once_it_exists(tmp_path):
    prof = tmp_path / "ds" / "profile.json"
    cfg_path = tiny_sweep(
        tmp_path,
        name="sm",
        methods=["dense", "svd_exact", "linrec"],
        n=(32, 64, 128),
        grid_extra=f'family = [{{kind = "spectrum_matched", profile = "{prof}"}}]',
    )
    cfg, cases = _cases(cfg_path)
    rows, _ = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    assert {r["status"] for r in rows} == {"unsupported"}
    assert all("input unavailable" in r["reason"] and "not found" in r["reason"] for r in rows)
    prof.parent.mkdir()
    prof.write_text(
        json.dumps({"model": "powerlaw", "params": {"alpha": 1.2}, "noise_floor": 0.01})
    )
    rows, info = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    assert info["measured"] == 9 and {r["status"] for r in rows} == {"ok"} and len(rows) == 9
    assert store.read_table(tmp_path / "run")["case_id"].is_unique
