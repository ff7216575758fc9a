"""Timing samples of ``inner`` back-to-back calls and input rotation (bench/timing.py): the
arithmetic as pure functions, the timer's decisions on CPU (the CUDA decisions through a timer
whose sampling is faked), a tiny sweep writing the new columns, and the event path on CUDA."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import runner, store, timing
from bench.cli import main
from bench.config import Timing, expand, load_config, resolve_methods
from conftest import tiny_sweep

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")

MiB = 2**20


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


# ----------------------------------------------------------------------------- pure arithmetic


def test_choose_inner():
    assert timing.choose_inner(0.005, 1.0, 1000) == 200  # 5 us calls, 1 ms samples
    assert timing.choose_inner(0.003, 1.0, 1000) == 334  # rounds up
    assert timing.choose_inner(0.0001, 1.0, 1000) == 1000  # capped
    assert timing.choose_inner(2.0, 1.0, 1000) == 1  # a call alone is long enough
    assert timing.choose_inner(0.005, 0.0, 1000) == 1  # sample_min_ms = 0: single calls
    assert timing.choose_inner(0.0, 1.0, 64) == 64  # unmeasurably fast: the cap
    assert timing.choose_inner(float("nan"), 1.0, 64) == 64
    assert timing.choose_inner(0.005, 1.0, 0) == 1


def test_grow_inner():
    assert timing.grow_inner(100, 1.2, 1.0, 1000) == 100  # long enough: keep
    assert timing.grow_inner(100, 0.5, 1.0, 1000) == 220  # half as long: x2 plus 10 %
    assert timing.grow_inner(100, 0.5, 1.0, 150) == 150  # capped
    assert timing.grow_inner(1000, 0.5, 1.0, 1000) == 1000
    assert timing.grow_inner(3, 0.0, 1.0, 1000) == 30
    assert timing.grow_inner(10, 0.999, 1.0, 1000) == 12  # always at least one more


def test_plan_samples():
    cfg = Timing(min_calls=10, max_calls=100, min_time_s=0.05)
    assert timing.plan_samples(0.005, 200, cfg) == 50  # 1 ms samples: 50 for 50 ms
    assert timing.plan_samples(20.0, 1, cfg) == 10  # long calls: min_calls
    assert timing.plan_samples(0.001, 1, cfg) == 100  # max_calls
    assert timing.plan_samples(0.0, 1, Timing(min_calls=3, max_calls=5, min_time_s=0.0)) == 3


def test_sample_min_ms_defaults():
    assert timing.sample_min_ms(Timing(), cuda=True) == 1.0
    assert timing.sample_min_ms(Timing(), cuda=False) == 0.2
    assert timing.sample_min_ms(Timing(sample_min_ms=0.5), cuda=True) == 0.5


def test_rotation_sets():
    l2 = 50 * MiB  # H100
    assert timing.rotation_sets(2 * MiB, l2, 8) == 8  # small inputs: the most sets
    assert timing.rotation_sets(30 * MiB, l2, 8) == 4  # ceil(100 / 30)
    assert timing.rotation_sets(60 * MiB, l2, 8) == 2
    assert timing.rotation_sets(100 * MiB, l2, 8) == 1  # >= 2 x L2 by itself
    assert timing.rotation_sets(2 * MiB, None, 8) == 1  # unknown cache
    assert timing.rotation_sets(0, l2, 8) == 1
    assert timing.rotation_sets(2 * MiB, l2, 1) == 1


def test_plan_rotation_per_phase_and_memory_budget():
    l2 = 50 * MiB
    comp = {"kv": 128 * MiB, "q": 4 * MiB, "state": 1 * MiB}  # large N, small state
    plan = timing.plan_rotation(comp, l2, 8, budget_bytes=None)
    assert plan.sets == {"prepare": 1, "attend": 8, "forward": 1}
    assert plan.copies == {"kv": 1, "q": 8, "state": 8}  # k, v never copied
    assert plan.working_set == {"prepare": 128 * MiB, "attend": 5 * MiB, "forward": 132 * MiB}
    assert plan.extra_bytes == 7 * 5 * MiB and plan.note is None

    small = {"kv": 4 * MiB, "q": 1 * MiB, "state": 2 * MiB}
    plan = timing.plan_rotation(small, l2, 8, budget_bytes=10 * 2**30)
    assert set(plan.sets.values()) == {8} and plan.note is None
    capped = timing.plan_rotation(small, l2, 8, budget_bytes=7 * 3 * MiB)  # room for 3 more sets
    assert max(capped.sets.values()) == 4 and capped.extra_bytes == 21 * MiB
    assert "capped at 4" in capped.note
    none = timing.plan_rotation(small, l2, 8, budget_bytes=1 * MiB)
    assert set(none.sets.values()) == {1} and none.extra_bytes == 0 and "skipped" in none.note
    off = timing.plan_rotation(small, l2, 8, budget_bytes=None, enabled=False)
    assert set(off.sets.values()) == {1} and off.working_set["forward"] == 5 * MiB


def test_cache_mode():
    l2 = 50 * MiB
    assert timing.cache_mode(True, True, 8, 2 * MiB, l2) == timing.CACHE_ROTATION
    assert timing.cache_mode(True, True, 1, 2 * MiB, l2) == timing.CACHE_FLUSH  # the old behaviour
    assert timing.cache_mode(True, True, 1, 200 * MiB, l2) == timing.CACHE_LARGE
    assert timing.cache_mode(True, False, 1, 2 * MiB, l2) == timing.CACHE_WARM
    assert timing.cache_mode(False, True, 1, 2 * MiB, l2) == timing.CACHE_WARM  # CPU: no flush


def test_iqr_rel_and_summarise_phase():
    assert timing.iqr_rel(0.03, 1.5) == pytest.approx(0.02)
    assert timing.iqr_rel(None, 1.0) is None and timing.iqr_rel(0.1, 0.0) is None
    pt = timing.PhaseTiming(
        [1.0, 2.0, 3.0, 4.0], inner=50, input_sets=4, cache=timing.CACHE_ROTATION
    )
    s = timing.summarise_phase(pt, "attend")
    assert s["attend_ms_median"] == 2.5 and s["attend_ms_iqr"] == pytest.approx(1.5)
    assert s["attend_ms_iqr_rel"] == pytest.approx(0.6) and s["attend_calls"] == 200
    assert s["timing_inner_calls_attend"] == 50 and s["timing_samples_attend"] == 4
    assert s["timing_input_sets_attend"] == 4 and s["timing_cache_attend"] == "rotation"


# ----------------------------------------------------------------------------- the timer on CPU


def test_cpu_samples_hold_inner_calls_and_report_per_call_time():
    calls = []

    def fn():
        calls.append(1)
        busy(0.05)

    cfg = Timing(min_calls=4, max_calls=6, min_time_s=0.0, warmup_max=3, sample_min_ms=1.0)
    pt = timing.PhaseTimer("cpu", cfg).run(fn)
    assert pt.inner >= 10 and 4 <= pt.samples <= 6  # >= 1 ms of 0.05 ms calls
    assert len(calls) == pt.warmup_calls + pt.samples * pt.inner
    times = sorted(pt.times_ms)  # per call (a sample is >= 1 ms)
    assert times[0] > 0.04 and times[len(times) // 2] < 0.5
    assert pt.cache == timing.CACHE_WARM and pt.input_sets == 1


def test_inner_max_caps_and_rotation_cycles_through_input_sets():
    seen = []
    fns = [lambda i=i: seen.append(i) for i in range(3)]
    cfg = Timing(
        min_calls=2, max_calls=2, min_time_s=0.0, warmup_max=2, sample_min_ms=5.0, inner_max=7
    )
    pt = timing.PhaseTimer("cpu", cfg).run(fns)
    assert pt.inner == 7 and pt.input_sets == 3 and pt.cache == timing.CACHE_ROTATION
    assert seen == [i % 3 for i in range(len(seen))]  # consecutive calls never repeat a set


class FakeCudaTimer(timing.PhaseTimer):
    """A timer that takes the CUDA decisions but fakes the event samples (1 us per call)."""

    def __init__(self, cfg: Timing, l2: int = 50 * MiB) -> None:
        super().__init__("cpu", cfg)
        self.cuda, self.l2, self.log = True, l2, []

    @property
    def cache_bytes(self) -> int:
        return self.l2

    def _samples(self, fns, start, inner, count, flush):
        self.log.append((inner, count, flush))
        for i in range(count * inner):
            fns[(start + i) % len(fns)]()
        return [0.001] * count


def test_cuda_decisions_flush_fallback_and_rotation():
    cfg = Timing(min_calls=5, max_calls=10, min_time_s=0.0, warmup_max=2)
    t = FakeCudaTimer(cfg)
    assert t.rotation_enabled and t.sample_min_ms == 1.0 and t.name == "cuda_events"
    # no rotation, small working set, flush_l2: old behaviour (one call per sample, flushed)
    pt = t.run(lambda: None, working_set_bytes=1 * MiB)
    assert pt.inner == 1 and pt.cache == timing.CACHE_FLUSH and all(f for _, _, f in t.log)
    # rotation: no flush, 1 ms samples of 1 us calls
    t.log.clear()
    pt = t.run([lambda: None] * 8, working_set_bytes=1 * MiB)
    assert (
        pt.inner == 1000 and pt.cache == timing.CACHE_ROTATION and not any(f for _, _, f in t.log)
    )
    # a working set of >= 2 x L2 needs neither
    pt = t.run(lambda: None, working_set_bytes=200 * MiB)
    assert pt.inner == 1000 and pt.cache == timing.CACHE_LARGE
    # flush_l2 = false: inner calls, caches as they are
    pt = FakeCudaTimer(Timing(min_calls=2, max_calls=2, flush_l2=False)).run(lambda: None, 1 * MiB)
    assert pt.inner == 1000 and pt.cache == timing.CACHE_WARM
    plan = t.rotation_plan({"kv": 2 * MiB, "q": MiB, "state": MiB})  # free memory: this host's RAM
    assert plan.sets["attend"] == 8 or plan.note


def test_rotation_copies_are_independent(tmp_path):
    import attention_impls as ai
    from bench.inputs import build_inputs

    cfg = load_config(path=_tiny(tmp_path, rotate=True, cache_bytes=65536))
    case = [c for c in expand(cfg, ["svd_exact"], "cpu") if c.n == 64][0]
    inp = build_inputs(case)
    op = ai.get(case.method, **case.params_dict)
    with torch.inference_mode():
        state = op.prepare(inp.k, inp.v, inp.key_mask)
        twin = runner.clone_state(state)
        assert twin.u.data_ptr() != state.u.data_ptr() and torch.equal(twin.u, state.u)
        assert runner.tensor_bytes(state) == runner.tensor_bytes(twin) > 0
        assert runner.tensor_bytes(inp.k, inp.k) == inp.k.numel() * inp.k.element_size()
        cols = runner.time_phases(op, inp, state, False, timing.PhaseTimer("cpu", cfg.timing))
    assert cols["timing_input_sets"] > 1 and cols["timing_cache_attend"] == "rotation"
    assert cols["timing_working_set_bytes_prepare"] == runner.tensor_bytes(
        inp.k, inp.v, inp.key_mask
    )


# ----------------------------------------------------------------------------- a tiny sweep


def _tiny(tmp_path: Path, **timing_extra) -> Path:
    return tiny_sweep(
        tmp_path,
        methods=["dense", "svd_exact", "linrec"],
        fidelity=False,
        timing={
            "min_calls": 3,
            "max_calls": 4,
            "warmup_max": 2,
            "sample_min_ms": 0.3,
            **timing_extra,
        },
    )


def test_sweep_writes_timing_columns(tmp_path):
    cfg = load_config(path=_tiny(tmp_path, rotate=True, cache_bytes=65536))
    cases = expand(cfg, resolve_methods(cfg)[0], "cpu")
    runner.run_sweep(cfg, cases, tmp_path / "run", progress=False)
    df = store.read_table(tmp_path / "run")
    assert (df["status"] == "ok").all() and len(df) == 6
    assert (df["timing_input_sets"] > 1).all() and df["timing_rotation_note"].isna().all()
    assert (df["timing_sample_min_ms"] == 0.3).all()
    for p in ("prepare", "attend", "forward"):
        inner, samples = df[f"timing_inner_calls_{p}"], df[f"timing_samples_{p}"]
        assert (inner >= 1).all() and samples.between(3, 4).all()
        assert (df[f"{p}_calls"] == inner * samples).all()
        rel = df[f"{p}_ms_iqr_rel"]
        assert (rel >= 0).all()
        assert rel.to_numpy() == pytest.approx(
            (df[f"{p}_ms_iqr"] / df[f"{p}_ms_median"]).to_numpy()
        )
        assert (df[f"timing_cache_{p}"] == "rotation").all() and (
            df[f"timing_input_sets_{p}"] > 1
        ).all()
    cols = list(df.columns)
    assert (
        cols.index("attend_ms_iqr_rel")
        < cols.index("timer")
        < cols.index("timing_inner_calls_attend")
    )


def test_run_prints_the_noise_summary(tmp_path, capsys):
    rc = main(
        [
            "run",
            "--config",
            str(_tiny(tmp_path)),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--methods",
            "dense",
            "linrec",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "timing noise (IQR/median per case; target < 3%)" in out
    assert "worst attend" in out and "ok cases at or over 3%" in out
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (df["timing_input_sets"] == 1).all()  # CPU: rotation off by default
    assert math.isclose(df["timing_sample_min_ms"].iloc[0], 0.3)


# ----------------------------------------------------------------------------- CUDA only


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA events and L2 rotation need a CUDA device"
)
def test_cuda_event_samples_with_rotation():
    dev = torch.device("cuda")
    cfg = Timing(min_calls=5, max_calls=10, min_time_s=0.0)
    t = timing.PhaseTimer(dev, cfg)
    assert t.cache_bytes > 0 and t.rotation_enabled
    xs = [torch.randn(256, 256, device=dev) for _ in range(4)]
    pt = t.run([lambda x=x: x @ x for x in xs], working_set_bytes=xs[0].numel() * 4)
    assert pt.inner > 1 and pt.cache == timing.CACHE_ROTATION and min(pt.times_ms) > 0
    assert pt.times_ms[0] * pt.inner >= 0.5 * t.sample_min_ms  # samples of about 1 ms
    pt = t.run(lambda: xs[0] @ xs[0], working_set_bytes=xs[0].numel() * 4)
    assert pt.inner == 1 and pt.cache == timing.CACHE_FLUSH


def test_calls_per_graph_is_whole_cycles_under_the_cap():
    assert timing.calls_per_graph(1, 64) == 64
    assert timing.calls_per_graph(3, 64) == 63  # 21 cycles through 3 input sets
    assert timing.calls_per_graph(8, 4) == 8  # at least one cycle
    assert timing.calls_per_graph(0, 10) == 10


def test_graph_timing_refuses_cpu():
    t = timing.PhaseTimer("cpu", Timing())
    with pytest.raises(ValueError, match="CUDA"):
        t.run_graph(lambda: None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph replay needs a CUDA device")
def test_cuda_graph_replay_timing_and_capture_failure_note():
    from bench import runner

    dev = torch.device("cuda")
    t = timing.PhaseTimer(
        dev, Timing(min_calls=5, max_calls=10, min_time_s=0.0, graph_calls_max=16)
    )
    xs = [torch.randn(256, 256, device=dev) for _ in range(3)]
    pt = t.run_graph([lambda x=x: x @ x for x in xs], working_set_bytes=xs[0].numel() * 4)
    assert pt.extra["graph_calls"] == 15 and pt.samples >= 5 and min(pt.times_ms) > 0
    cols = runner.time_attend_graph(t, [lambda: xs[0].sum().item()], None)  # .item() syncs
    assert "capture failed" in cols["timing_graph_note"]


# ----------------------------------------------------------------------------- CPU time (issue 11)


def _busy(ms: float) -> None:
    end = time.thread_time() + ms / 1e3
    while time.thread_time() < end:
        pass


def test_cpu_phase_records_thread_and_process_cpu_time():
    """Busy work: CPU time ~ wall time, recorded for the same samples."""
    cfg = Timing(min_calls=3, max_calls=3, min_time_s=0.0, warmup_max=1, sample_min_ms=0.0)
    pt = timing.PhaseTimer("cpu", cfg).run(lambda: _busy(2.0))
    assert len(pt.thread_cpu_ms) == len(pt.process_cpu_ms) == len(pt.times_ms) == 3
    assert all(1.9 <= t <= 10.0 for t in pt.thread_cpu_ms)
    cols = timing.summarise_phase(pt, "forward")
    assert cols["forward_thread_cpu_ms_median"] == pytest.approx(sorted(pt.thread_cpu_ms)[1])
    assert cols["forward_process_cpu_ms_median"] >= 0.9 * cols["forward_thread_cpu_ms_median"]
    assert cols["forward_wall_per_cpu"] == pytest.approx(
        cols["forward_ms_median"] / cols["forward_process_cpu_ms_median"]
    )
    assert set(cols) >= {f"forward_{c}" for c in ("thread_cpu_ms_iqr", "process_cpu_ms_iqr")}
    assert set(cols) <= set(store.COLUMNS)  # every column the timer writes is in the schema


def test_waiting_shows_as_wall_time_without_cpu_time_and_warns():
    """A call that waits (here: sleeps, as a call waiting for a core on a loaded machine does)
    has wall time but almost no CPU time: wall_per_cpu is large and the wall times are flagged."""
    cfg = Timing(min_calls=3, max_calls=3, min_time_s=0.0, warmup_max=1, sample_min_ms=0.0)
    pt = timing.PhaseTimer("cpu", cfg).run(lambda: time.sleep(0.004))
    cols = timing.summarise_phase(pt, "attend")
    assert cols["attend_ms_median"] >= 3.9 and cols["attend_thread_cpu_ms_median"] < 1.0
    assert cols["attend_wall_per_cpu"] > 4
    msg = timing.wall_warning(0.1, cols["attend_wall_per_cpu"], threads=1)
    assert msg and "wall time" in msg


def test_wall_warning_thresholds():
    assert timing.wall_warning(0.5, 1.1, threads=1) is None  # idle machine, one thread
    assert timing.wall_warning(None, None) is None  # no load average (non-POSIX), CUDA row
    assert "load average 2.50 per core" in timing.wall_warning(2.5, 1.0, threads=1)
    assert timing.wall_warning(0.5, 0.3, threads=4) is None  # 4 threads: wall ~ CPU / 4
    assert "wall time" in timing.wall_warning(0.5, 0.5, threads=4)  # 2x CPU per thread
    load = timing.machine_load()
    assert set(load) == {"load_avg_1m", "load_per_core"}


def test_cuda_rows_have_no_cpu_time():
    pt = timing.PhaseTiming([1.0, 2.0])
    cols = timing.summarise_cpu(pt, "attend")
    assert cols["attend_thread_cpu_ms_median"] is None and cols["attend_wall_per_cpu"] is None


def test_rank_by_names_the_column_and_old_files_rank_by_wall():
    from bench.summary import crossover, rank_by

    old = store.to_frame(
        [{"case_id": "a", "method": "dense", "status": "ok", "forward_ms_median": 1.0}]
    )
    assert rank_by(old)[0] == "wall"  # an older file: CPU-time columns empty
    base = dict(status="ok", m=4, d=8, dtype="fp32", batch=1, heads=1, family="x", setting="target")
    rows = []
    for n, dense_cpu, fast_cpu in ((64, 1.0, 2.0), (128, 2.0, 1.0)):
        for method, cpu in (("dense", dense_cpu), ("svd_exact", fast_cpu)):
            rows.append(
                {
                    **base,
                    "n": n,
                    "method": method,
                    "label": method,
                    "forward_ms_median": 5.0,
                    "attend_ms_median": 5.0,
                    "forward_process_cpu_ms_median": cpu,
                    "attend_process_cpu_ms_median": cpu,
                    "timing_rank_by": "process_cpu",
                    "timing_wall_warning": "load average 3.00 per core (> 1)",
                }
            )
    df = store.to_frame(rows)
    timing_kind, why = rank_by(df)
    assert timing_kind == "process_cpu" and "process CPU time" in why and "load average" in why
    cx = crossover(df, timing=timing_kind)  # wall times tie (noise); CPU time shows the crossover
    assert float(cx.loc[cx.method == "svd_exact", "crossover_n"].iloc[0]) == 128
    assert crossover(df)["crossover_n"].isna().all()


def test_committed_cpu_results_still_read():
    """Result files written before the CPU-time columns existed stay readable."""
    from bench.summary import rank_by

    df = store.to_frame(store.read_table(ROOT / "results" / "cpu").to_dict("records"))
    assert "forward_thread_cpu_ms_median" in df.columns and len(df)
    assert rank_by(df)[0] in ("wall", "process_cpu")
