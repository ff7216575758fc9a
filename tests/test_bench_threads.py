"""Thread plans: a pool of processes never runs more threads than the cores it may use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.threads import ThreadPlan, available_cores, idle_cores, plan_threads


@given(
    cores=st.integers(1, 256),
    workers=st.integers(1, 512),
    free=st.one_of(st.none(), st.floats(0, 300, allow_nan=False)),
)
def test_auto_plan_never_oversubscribes(cores: int, workers: int, free: float | None) -> None:
    p = plan_threads(workers, cores=cores, free=free, env={})
    assert p.source == "auto"
    assert p.threads >= 1 and 1 <= p.workers <= min(workers, cores)
    assert p.total <= cores
    if free is not None:  # busy cores are left alone (at least one thread still runs)
        assert p.total <= max(p.workers, round(free) + 1)


def test_auto_plan_uses_idle_cores_of_an_idle_machine() -> None:
    assert plan_threads(1, cores=8, free=8.0, env={}).threads == 8
    assert plan_threads(4, cores=8, free=8.0, env={}).threads == 2
    assert plan_threads(1, cores=2, free=0.3, env={}).threads == 1  # the busy 2-core VM


def test_explicit_and_environment_win_and_are_reported() -> None:
    p = plan_threads(1, requested=3, cores=2, free=2.0, env={"OMP_NUM_THREADS": "1"})
    assert (p.threads, p.source) == (3, "explicit")
    assert "more threads than cores" in p.describe()
    p = plan_threads(1, cores=4, free=4.0, env={"OMP_NUM_THREADS": "1"})
    assert (p.threads, p.source) == (1, "OMP_NUM_THREADS")
    assert "from OMP_NUM_THREADS" in p.describe()
    p = plan_threads(3, cores=8, free=None, env={})
    assert p.describe().startswith("threads: 2 per process x 3 processes (8 cores available")


@pytest.mark.parametrize("bad", [dict(workers=0), dict(requested=0)])
def test_bad_values_are_value_errors(bad: dict) -> None:
    with pytest.raises(ValueError):
        plan_threads(**{"workers": 1, **bad}, cores=2, env={})


def test_probes_on_this_machine() -> None:
    cores = available_cores()
    assert cores >= 1
    free = idle_cores(0.05)
    assert free is None or 0.0 <= free <= cores + 1e-6
    assert isinstance(plan_threads(cores + 5, cores=cores, env={}), ThreadPlan)
