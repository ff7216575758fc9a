"""Allocator churn (issue 11, item 4): ``attention_impls.allocator`` and the harness switch.

The "on" path changes the whole process for good, so it runs in subprocesses."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attention_impls import allocator
from bench import malloc
from bench.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

FAULTS = textwrap.dedent("""
    import json, resource, sys, torch
    from attention_impls.allocator import tune_glibc_malloc
    torch.set_num_threads(1)
    def call():  # four 16 MiB temporaries live at once, filled, then freed (as in a forward)
        return sum(float(t.sum()) for t in [torch.ones(4 * 2**20) for _ in range(4)])
    def faults():
        for _ in range(3):  # warm: glibc's dynamic thresholds adapt to what it has seen
            call()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            call()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # glibc's own dynamic thresholds depend on the process's history (that is the problem:
    # sometimes this loop faults, sometimes not), so the churning baseline is set explicitly:
    # glibc's static defaults (128 KiB), under which every 16 MiB block is mmapped afresh
    churn = tune_glibc_malloc(mmap_threshold=128 * 1024, trim_threshold=128 * 1024)
    untuned = faults()
    t = tune_glibc_malloc()
    print(json.dumps({"applied": t.applied and churn.applied, "untuned": untuned, "tuned": faults()}))
""")


@pytest.mark.skipif(not GLIBC, reason="needs glibc (mallopt)")
def test_tuning_removes_the_page_faults_of_fresh_temporaries():
    out = subprocess.run(
        [sys.executable, "-c", FAULTS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["applied"]
    # at the static defaults each 16 MiB block is mmapped and unmapped, so every call faults
    # its 64 MiB in afresh (16,384 pages of 4 KiB); tuned, the blocks are reused
    assert r["untuned"] > 20 * 4000
    assert r["tuned"] < r["untuned"] / 10, r


def test_not_glibc_is_a_no_op_with_a_reason(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    monkeypatch.setattr(allocator, "_libc", lambda: pytest.fail("mallopt must not be loaded"))
    t = allocator.tune_glibc_malloc()
    assert not t.applied and "not glibc" in t.reason
    assert t.describe().startswith("glibc malloc not tuned: ")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert "not Linux" in allocator.tune_glibc_malloc().reason


@pytest.mark.parametrize(
    "kw",
    [
        {"mmap_threshold": 64 * 2**20},
        {"mmap_threshold": -1},
        {"trim_threshold": 1.5},
        {"mmap_threshold": True},
    ],
)
def test_bad_thresholds_are_value_errors(kw):
    with pytest.raises(ValueError, match="must be an int in"):
        allocator.tune_glibc_malloc(**kw)


def test_harness_column_says_on_or_off_and_why(monkeypatch):
    monkeypatch.setattr(malloc, "malloc_tuning", lambda: None)
    monkeypatch.setattr(
        malloc, "tune_glibc_malloc", lambda: allocator.MallocTuning(True, 2**25, 2**28)
    )
    monkeypatch.delenv("BENCH_MALLOC_TUNE", raising=False)
    assert malloc.apply_malloc_tuning(True, "cpu")["malloc_tuning"].startswith(
        "on: glibc malloc tuned"
    )
    assert "not a CPU run" in malloc.apply_malloc_tuning(True, "cuda:0")["malloc_tuning"]
    assert "sweep config" in malloc.apply_malloc_tuning(False, "cpu")["malloc_tuning"]
    monkeypatch.setenv("BENCH_MALLOC_TUNE", "0")
    assert "BENCH_MALLOC_TUNE=0" in malloc.apply_malloc_tuning(True, "cpu")["malloc_tuning"]
    monkeypatch.setattr(malloc, "malloc_tuning", lambda: allocator.MallocTuning(True, 1, 2))
    assert malloc.apply_malloc_tuning(False, "cpu")["malloc_tuning"].startswith(
        "on: "
    )  # cannot be undone


def test_config_switch():
    raw = {"name": "x", "grid": [{"n": [64], "m": [4], "d": [8]}]}
    assert parse_config(raw).malloc_tune is True
    assert parse_config({**raw, "malloc_tune": False}).malloc_tune is False
    with pytest.raises(ConfigError, match="malloc_tune"):
        parse_config({**raw, "malloc_tune": "no"})
    assert load_config("smoke").malloc_tune is True


@pytest.mark.skipif(not GLIBC, reason="needs glibc (mallopt)")
def test_cpu_sweep_rows_record_the_tuning(tmp_path):
    """A CPU sweep in a fresh process tunes malloc and every row says so."""
    from conftest import tiny_sweep

    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(64,), fidelity=False)
    code = textwrap.dedent(f"""
        import json
        from bench.config import load_config, resolve_methods, expand
        from bench.runner import run_sweep
        cfg = load_config(path={str(cfg)!r})
        cases = expand(cfg, resolve_methods(cfg)[0], "cpu")
        rows, _ = run_sweep(cfg, cases, {str(tmp_path / "out")!r}, progress=False, log=lambda s: None)
        print(json.dumps(sorted({{r["malloc_tuning"] for r in rows}})))
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "BENCH_MALLOC_TUNE"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    values = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(values) == 1 and values[0].startswith("on: glibc malloc tuned: mmap_threshold=")
