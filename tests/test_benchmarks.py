"""pytest-benchmark entry: one test per method x case of a preset grid (smoke by default).

    pytest --benchmark-only                                   # smoke grid
    pytest --benchmark-only --preset quick --benchmark-group-by=param:n
    pytest --benchmark-only --benchmark-json out.json && python -m bench import-json out.json --out DIR

The timed function is forward = prepare_unchecked + attend_unchecked (after one validated
call); on CUDA it synchronises before returning. ``extra_info`` carries the row fields: case
parameters, peak memory, KL summary, FLOPs, environment.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import attention_impls as ai
from bench import runner, store, timing
from bench.config import expand, load_config, resolve_methods
from bench.env import environment
from bench.inputs import build_inputs

_CACHE: dict = {}


def _device(cfg_device: str | None) -> str:
    dev = os.environ.get("BENCH_DEVICE") or cfg_device or "cpu"
    return "cpu" if dev.startswith("cuda") and not torch.cuda.is_available() else dev


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_case" not in metafunc.fixturenames:
        return
    preset = metafunc.config.getoption("--preset")
    cfg = load_config(preset)
    methods, _ = resolve_methods(cfg)
    cases = expand(cfg, methods, _device(cfg.device))
    metafunc.parametrize(
        "method,n,m,bench_case",
        [(c.method, c.n, c.m, c) for c in cases],
        ids=[c.test_id for c in cases],
    )


def _inputs(case):
    key = case.input_key()
    if _CACHE.get("key") != key:
        _CACHE.clear()
        _CACHE["key"], _CACHE["val"] = key, build_inputs(case)
    return _CACHE["val"]


def test_forward(benchmark, request, method, n, m, bench_case) -> None:
    preset = request.config.getoption("--preset")
    cfg = load_config(preset)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    case = bench_case
    env = environment(case.device)
    try:
        inp = _inputs(case)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"inputs unavailable: {exc}")
    row = runner.run_case(case, inp, cfg, None, env, preset)  # memory, fidelity, work; no timing
    if row["status"] in ("unsupported", "oom"):
        pytest.skip(f"{row['status']}: {row['reason']}")
    assert row["status"] == "ok", row["reason"]
    op = ai.get(case.method, **case.params_dict)
    cuda = case.device.startswith("cuda")

    def forward() -> None:
        with torch.inference_mode():
            op.attend_unchecked(
                op.prepare_unchecked(inp.k, inp.v, inp.key_mask), inp.q, case.causal
            )
        if cuda:
            torch.cuda.synchronize()

    # The harness's sample calibration (bench/timing.py): each round is `inner` back-to-back
    # calls lasting at least the sample minimum (0.2 ms CPU, 1 ms CUDA), as many rounds as the
    # preset's min_time_s asks within [min_calls, max_calls]; so these stats and the tidy
    # table's forward_ms_* come from samples of the same shape.
    inner = rounds = 1
    if not getattr(benchmark, "disabled", False):  # a plain pytest run calls forward once
        for _ in range(max(1, cfg.timing.warmup_min)):
            forward()
        t0 = time.perf_counter()
        for _ in range(3):
            forward()
        per_call_ms = (time.perf_counter() - t0) / 3 * 1e3
        inner = timing.choose_inner(
            per_call_ms, timing.sample_min_ms(cfg.timing, cuda), cfg.timing.inner_max
        )
        rounds = timing.plan_samples(per_call_ms, inner, cfg.timing)
    benchmark.extra_info.update({k: store._clean(v) for k, v in row.items()})
    benchmark.extra_info["timer"] = "pytest-benchmark" + ("+cuda_sync" if cuda else "")
    benchmark.extra_info.update(
        timing_inner_calls_forward=inner,
        timing_samples_forward=rounds,
        timing_sample_min_ms=timing.sample_min_ms(cfg.timing, cuda),
    )
    benchmark.pedantic(forward, rounds=rounds, warmup_rounds=1, iterations=inner)
    assert row["kl_mean"] is None or row["kl_mean"] >= 0
