"""Root pytest configuration: the ``--preset`` option of the benchmark tests, and Triton's
interpreter for the kernel tests on machines without CUDA.

``pytest --benchmark-only`` runs the smoke grid as pytest-benchmark tests;
``pytest --benchmark-only --preset quick`` a larger grid. In a plain ``pytest`` run the
benchmark tests still run, each function once (``--benchmark-disable`` semantics), so the
test suite stays fast; pass ``--benchmark-enable`` to time them there too.
"""

from __future__ import annotations

import os

import pytest
import torch

# The Triton kernels (attention_impls/kernels) run on CPU only under Triton's interpreter,
# and triton.jit reads this variable when a kernel module is first imported: set it before
# any test imports them. On a CUDA machine the kernels compile as usual.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Sweeps run inside the test process (tests/test_bench_run.py, ...) would tune glibc malloc
# for the rest of the session (it cannot be undone): keep it off here; the "on" path is
# tested in subprocesses (tests/test_bench_malloc.py).
os.environ.setdefault("BENCH_MALLOC_TUNE", "0")

_TIMING_FLAGS = (
    "benchmark_only",
    "benchmark_enable",
    "benchmark_json",
    "benchmark_autosave",
    "benchmark_save",
    "benchmark_compare",
    "benchmark_histogram",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--preset",
        action="store",
        default="smoke",
        help="bench preset whose grid tests/test_benchmarks.py runs (smoke, quick, paper, full)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    opts = config.option
    if hasattr(opts, "benchmark_disable") and not any(
        getattr(opts, f, None) for f in _TIMING_FLAGS
    ):
        opts.benchmark_disable = True
