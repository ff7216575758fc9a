"""Pure logic of the GPU paths, testable on CPU: stability rule, roofline lookup, NVML guards."""

from __future__ import annotations

import pytest
import torch

from bench import env, roofline, timing
from bench.config import Timing


def test_stability_rule():
    assert not timing.is_stable([1.0, 1.0], window=3)
    assert timing.is_stable([5.0, 1.0, 1.02, 0.99], window=3, rtol=0.1)
    assert not timing.is_stable([1.0, 1.5, 1.0], window=3, rtol=0.1)
    assert not timing.is_stable([0.0, 0.0, 0.0])


def test_summarise_times():
    s = timing.summarise_times([4.0, 1.0, 3.0, 2.0], "attend")
    assert s == {
        "attend_ms_median": 2.5,
        "attend_ms_iqr": pytest.approx(1.5),
        "attend_ms_min": 1.0,
        "attend_calls": 4,
    }
    assert timing.summarise_times([], "x")["x_calls"] == 0


def test_phase_timer_bounds_calls_on_cpu():
    calls = []
    t = timing.PhaseTimer(
        "cpu", Timing(min_calls=3, max_calls=7, min_time_s=10.0, warmup_max=4, sample_min_ms=0.0)
    )  # one call per sample
    times = t.measure(lambda: calls.append(1))
    assert len(times) == 7 and t.name == "perf_counter"
    assert 1 + 7 <= len(calls) <= 4 + 7


def test_l2_flush_size_falls_back_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    assert timing.l2_flush_bytes(torch.device("cuda")) == 128 * 2**20


@pytest.mark.parametrize(
    "name,key",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_roofline_lookup_by_device_name(name, key):
    assert roofline.gpu_model_key(name) == key
    f, b = roofline.gpu_peaks(name, "bf16")
    assert (f is None) == (key is None)


def test_roofline_fraction():
    r = roofline.roofline_fraction(1e12, 1e9, 1.0, 10e12, 1e12)  # AI 1000: compute bound
    assert r["arithmetic_intensity"] == 1000 and r["roofline_fraction"] == pytest.approx(0.1)
    r = roofline.roofline_fraction(1e9, 1e9, 1.0, 10e12, 1e12)  # AI 1: bandwidth bound
    assert r["roofline_fraction"] == pytest.approx(1e9 / 1e12)
    assert roofline.roofline_fraction(None, 1.0, 1.0, 1.0, 1.0)["roofline_fraction"] is None


def test_cpu_peak_probe_is_positive():
    f, b = roofline.cpu_peaks("fp32", size=128, repeats=1)
    assert f > 0 and b > 0


class _FakeNvmlAbsent:
    ok = False


class _FakeMod:
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980

    def nvmlDeviceGetTemperature(self, h, kind):
        raise RuntimeError("not supported")

    def nvmlDeviceGetPowerUsage(self, h):
        return 350_000

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        return 4


class _FakeNvml:
    ok = True
    mod = _FakeMod()

    def handle(self, index):
        return object()


def test_nvml_absent_gives_empty_fields():
    empty = {k: None for k in env.NVML_FIELDS}
    assert env.nvml_snapshot(0, lib=_FakeNvmlAbsent()) == empty
    assert env.nvml_snapshot(None) == empty


def test_nvml_partial_failures_are_guarded():
    snap = env.nvml_snapshot(0, lib=_FakeNvml())
    assert snap == {"sm_clock_mhz": 1980, "temp_c": None, "power_w": 350.0, "throttle": "0x4"}


def test_environment_columns_on_cpu():
    e = env.environment("cpu")
    assert e["device"] == "cpu" and e["threads"] >= 1 and e["torch_version"]
    assert e["driver"] is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timer_memory_and_nvml():
    from bench.memory import cuda_peak_bytes

    dev = torch.device("cuda")
    t = timing.PhaseTimer(dev, Timing(min_calls=3, max_calls=5, min_time_s=0.0))
    a = torch.randn(1024, 1024, device=dev)
    times = t.measure(lambda: a @ a)
    assert t.name == "cuda_events" and len(times) >= 3 and min(times) > 0
    assert t._flush_buf is not None and t._flush_buf.numel() >= 2 * 2**20
    peak, nv = cuda_peak_bytes(lambda: torch.empty(64 * 2**20, dtype=torch.uint8, device=dev), dev)
    assert peak >= 64 * 2**20
    snap = env.nvml_snapshot(0)
    assert set(snap) == set(env.NVML_FIELDS)
    assert roofline.gpu_model_key(env.device_name(dev)) is not None or True
