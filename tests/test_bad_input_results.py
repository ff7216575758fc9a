"""Issue 12, items 7, 10, 11, 13 and 15: sweeps with no ok row, out-of-memory on CPU, the
results-folder lock, foreign lines in the log, unusable output folders, `bench crossover` on
the wrong input; and the SIGINT resume (kill -9 is in test_bench_run.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import runner, store
from bench.cli import main
from bench.config import expand, load_config
from bench.errors import OutputError
from bench.lock import LOCK_NAME, RunLock
from conftest import tiny_sweep

ROOT = Path(__file__).resolve().parents[1]


def _run(cfg: Path, out: Path, *extra: str) -> int:
    return main(
        ["run", "--config", str(cfg), "--out", str(out), "--no-progress", "--no-cascade", *extra]
    )


def test_sweep_without_any_ok_row_summarises_instead_of_keyerror(tmp_path, capsys):
    cfg = tiny_sweep(
        tmp_path,
        methods=["dense", "svd_exact"],
        n=(32,),
        grid_extra='family = [{kind = "real", path = "/nonexistent/emb.npz"}]',
    )
    assert _run(cfg, tmp_path / "run") == 0  # was KeyError: 'forward_ms_median', exit 1
    out = capsys.readouterr().out
    assert "no case ran ok (2 unsupported)" in out and "input unavailable" in out
    assert len(store.read_table(tmp_path / "run")) == 2  # the rows are written


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 160000000000 bytes. Error code 12 (Cannot allocate memory)"
        ),
        MemoryError(),
    ],
)
def test_cpu_out_of_memory_is_an_oom_row(tmp_path, monkeypatch, exc):
    cfg = load_config(path=tiny_sweep(tmp_path, methods=["dense"], n=(32,)))
    cases = expand(cfg, ["dense"], "cpu")

    def hook(case):
        raise exc

    monkeypatch.setattr(runner, "FAULT_HOOK", hook)
    rows, _ = runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    assert rows[0]["status"] == "oom"  # was "error" (only "out of memory" was recognised)


def test_memory_error_with_an_estimate_records_it(tmp_path, monkeypatch):
    from attention_impls.errors import InsufficientMemoryError

    def hook(case):
        raise InsufficientMemoryError("dense.implied_weights", 160 * 10**9, 8 * 10**9, "cpu")

    cfg = load_config(path=tiny_sweep(tmp_path, methods=["dense"], n=(32,)))
    monkeypatch.setattr(runner, "FAULT_HOOK", hook)
    rows, _ = runner.run_sweep(cfg, expand(cfg, ["dense"], "cpu"), tmp_path / "run", progress=False)
    assert rows[0]["status"] == "oom" and "estimated 149 GiB" in rows[0]["reason"]
    assert rows[0]["mem_estimate_bytes"] == 160e9


def _lock_file(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(
        json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": time.time()})
    )


def test_second_run_on_the_same_folder_says_who_holds_it(tmp_path, capsys):
    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(32,))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path / "run", holder.pid)
        assert _run(cfg, tmp_path / "run") == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid} on host {socket.gethostname()}" in err and "started" in err
        assert not (tmp_path / "run" / "rows.jsonl").exists()  # nothing measured
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone now: its lock is stale, taken over with a message, and released after
    assert _run(cfg, tmp_path / "run") == 0
    assert "taking over a stale lock" in capsys.readouterr().err
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_lock_from_another_host_is_respected(tmp_path):
    _lock_file(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(OutputError, match="elsewhere.example.*delete"):
        RunLock(tmp_path).acquire()


def test_foreign_and_malformed_log_lines_are_counted_and_skipped(tmp_path, capsys):
    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(32, 64))
    out = tmp_path / "run"
    assert _run(cfg, out) == 0
    log = out / store.LOG_NAME
    first = json.loads(log.read_text().splitlines()[0])
    with open(log, "a") as fh:
        fh.write(json.dumps({"foo": 1}) + "\n")  # no case_id
        fh.write(json.dumps({**first, "case_id": "0123456789abcdef"}) + "\n")  # unknown case_id
        fh.write(json.dumps({**first, "forward_ms_median": "fast"}) + "\n")  # wrong type
    capsys.readouterr()
    assert _run(cfg, out) == 0  # was a TypeError in the summary
    err = capsys.readouterr().err
    assert "skipped 3 line(s)" in err and "no case_id" in err and "unknown case_id" in err
    assert "forward_ms_median is not a number" in err
    df = store.read_table(out)
    assert len(df) == 2 and df["case_id"].is_unique  # was 3..5 rows
    assert pd.api.types.is_float_dtype(df["forward_ms_median"])


def test_committed_logs_pass_the_row_check():
    from bench import rowcheck

    for log in sorted((ROOT / "results").glob("*/rows.jsonl")):
        good, skipped = rowcheck.split(store.read_rows(log, repair=False))
        assert not skipped, (log, skipped)


@pytest.mark.parametrize("kind", ["file", "under_file", "devnull", "readonly"])
def test_unusable_output_folder_fails_before_any_work(tmp_path, capsys, kind):
    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(32,))
    (tmp_path / "f").write_text("x")
    out = {
        "file": tmp_path / "f",
        "under_file": tmp_path / "f" / "sub",
        "devnull": Path("/dev/null"),
        "readonly": tmp_path / "ro",
    }[kind]
    if kind == "readonly":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.mkdir()
        out.chmod(0o500)
    assert _run(cfg, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and "\n" not in err


def test_read_only_folder_fails_before_the_first_case_even_as_root(tmp_path, capsys, monkeypatch):
    import bench.outdir

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bench.outdir.tempfile, "mkstemp", refuse)  # what a read-only folder does
    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(32,))
    assert _run(cfg, tmp_path / "ro") == 2
    assert "not writable (Permission denied)" in capsys.readouterr().err
    assert not (tmp_path / "ro" / store.LOG_NAME).exists()  # was: first case measured, then OSError


@pytest.mark.parametrize(
    ("what", "words"),
    [
        ("missing", "no such file or folder"),
        ("empty_dir", "no results.csv"),
        ("other", "not a bench results table"),
    ],
)
def test_crossover_on_the_wrong_input(tmp_path, capsys, what, words):
    path = {"missing": tmp_path / "nope", "empty_dir": tmp_path, "other": tmp_path / "o.csv"}[what]
    (tmp_path / "o.csv").write_text("a,b\n1,2\n")
    assert main(["crossover", str(path)]) == 2  # was FileNotFoundError / KeyError
    assert words in capsys.readouterr().err


def test_sigint_keeps_rows_releases_the_lock_and_resumes(tmp_path):
    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(16, 24, 32, 48), fidelity=False)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--no-progress",
        "--no-cascade",
    ]
    env = {**os.environ, "BENCH_TEST_DELAY_S": "0.3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = out / store.LOG_NAME
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (log.exists() and log.read_bytes().count(b"\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    before = [r["case_id"] for r in store.read_rows(log)]
    assert 2 <= len(before) < 4 and not (out / LOCK_NAME).exists()
    env.pop("BENCH_TEST_DELAY_S")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    ids = [r["case_id"] for r in store.read_rows(log)]
    assert len(ids) == 4 == len(set(ids)) and ids[: len(before)] == before
