"""Device peaks and the three-bound roofline of a measured call.

Three ceilings per device: matmul FLOP/s (per dtype), memory bytes/s, and exponentials per
second (special-function throughput: MUFU on NVIDIA GPUs). The floor of a call is

    floor = max(flops / peak_flops, bytes / peak_bytes_per_s, exps / peak_exp_per_s)

and the term that attains the max is its bound ("matmul", "memory" or "exp"). GPU peaks
come from a table of vendor figures (dense, no sparsity) keyed by the name the device
reports; ``bench.ceilings`` measures all three with probes (on CUDA the runner prefers the
measured values and keeps the table's in the row); the CPU peaks are always measured.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch

TB = 1e12
# name -> (peak FLOP/s per dtype, bytes/s). fp32 = non-tensor-core FP32.
GPU_PEAKS: dict[str, tuple[dict[str, float], float]] = {
    "H200": ({"fp32": 67 * TB, "bf16": 989 * TB, "fp16": 989 * TB, "fp64": 67 * TB}, 4.8 * TB),
    "H100 NVL": ({"fp32": 60 * TB, "bf16": 835 * TB, "fp16": 835 * TB, "fp64": 60 * TB}, 3.9 * TB),
    "H100 PCIe": ({"fp32": 51 * TB, "bf16": 756 * TB, "fp16": 756 * TB, "fp64": 51 * TB}, 2.0 * TB),
    "H100 SXM": ({"fp32": 67 * TB, "bf16": 989 * TB, "fp16": 989 * TB, "fp64": 67 * TB}, 3.35 * TB),
    "A100 SXM 80GB": (
        {"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB},
        2.039 * TB,
    ),
    "A100 SXM 40GB": (
        {"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB},
        1.555 * TB,
    ),
    "A100 PCIe 80GB": (
        {"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB},
        1.935 * TB,
    ),
    "A100 PCIe 40GB": (
        {"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB},
        1.555 * TB,
    ),
}

# Exponentials per second: SMs x 16 special-function results per clock per SM (MUFU.EX2;
# CUDA C++ Programming Guide, "Arithmetic Instructions" throughput table, compute
# capability 8.0 and 9.0) x clock. An exp in fp32 is one MUFU.EX2 (after a multiply by
# log2 e); the same rate serves every dtype (fp16/bf16 exps are computed in fp32).
GHZ = 1e9
MUFU_PER_CLK_PER_SM = 16
GPU_EXP_PER_S: dict[str, float] = {
    # 132 SMs x 16 x 1.83 GHz = 3.86e12/s. 1.83 GHz is the clock behind the vendor's dense
    # bf16 figure (132 SMs x 4096 FLOP/clk x 1.83 GHz = 989 TFLOP/s); at the 1.98 GHz max
    # boost it would be 4.18e12/s.
    "H100 SXM": 132 * MUFU_PER_CLK_PER_SM * 1.83 * GHZ,
    "H200": 132 * MUFU_PER_CLK_PER_SM * 1.83 * GHZ,  # same GH100 chip and clocks: 3.86e12/s
    "H100 NVL": 132 * MUFU_PER_CLK_PER_SM * 1.785 * GHZ,  # max boost 1.785 GHz: 3.77e12/s
    "H100 PCIe": 114 * MUFU_PER_CLK_PER_SM * 1.755 * GHZ,  # 114 SMs, boost 1.755 GHz: 3.20e12/s
    # 108 SMs x 16 x 1.41 GHz (boost; 108 x 2048 x 1.41 GHz = 312 TFLOP/s bf16): 2.44e12/s
    "A100 SXM 80GB": 108 * MUFU_PER_CLK_PER_SM * 1.41 * GHZ,
    "A100 SXM 40GB": 108 * MUFU_PER_CLK_PER_SM * 1.41 * GHZ,
    "A100 PCIe 80GB": 108 * MUFU_PER_CLK_PER_SM * 1.41 * GHZ,
    "A100 PCIe 40GB": 108 * MUFU_PER_CLK_PER_SM * 1.41 * GHZ,
}
BOUNDS = ("matmul", "memory", "exp")


def gpu_model_key(name: str) -> str | None:
    """Map a reported device name (e.g. 'NVIDIA H100 80GB HBM3') to a key of GPU_PEAKS."""
    u = name.upper().replace("-", " ")
    if "H200" in u:
        return "H200"
    if "H100" in u:
        if "NVL" in u:
            return "H100 NVL"
        if "PCIE" in u:
            return "H100 PCIe"
        return "H100 SXM"  # 'H100 80GB HBM3', 'H100 SXM5 80GB'
    if "A100" in u:
        form = "PCIe" if "PCIE" in u else "SXM"
        size = "40GB" if "40GB" in u else "80GB"
        return f"A100 {form} {size}"
    return None


def gpu_peaks(name: str, dtype: str) -> tuple[float | None, float | None]:
    key = gpu_model_key(name)
    if key is None:
        return None, None
    flops, bw = GPU_PEAKS[key]
    return flops.get(dtype), bw


def gpu_exp_rate(name: str) -> float | None:
    """Table exponentials per second of a device (None if the device is not in the table)."""
    key = gpu_model_key(name)
    return None if key is None else GPU_EXP_PER_S.get(key)


@lru_cache(maxsize=8)
def cpu_peaks(dtype: str = "fp32", size: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Measured (FLOP/s of a square matmul, bytes/s of a large copy) on this CPU."""
    from attention_impls import dtype_from_name

    dt = dtype_from_name(dtype)
    a = torch.randn(size, size).to(dt)
    b = torch.randn(size, size).to(dt)
    best = float("inf")
    with torch.inference_mode():
        a @ b
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        src = torch.ones(32 * 2**20 // 4)  # 128 MiB
        dst = torch.empty_like(src)
        dst.copy_(src)
        bw_best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            dst.copy_(src)
            bw_best = min(bw_best, time.perf_counter() - t0)
    return 2.0 * size**3 / best, 2.0 * src.numel() * 4 / bw_best


def roofline_fraction(
    flops: float | None,
    nbytes: float | None,
    seconds: float | None,
    peak_flops: float | None,
    peak_bw: float | None,
) -> dict[str, float | None]:
    """Achieved rates and the fraction of the attainable min(peak, AI x bandwidth)."""
    out: dict[str, float | None] = {
        "flops_per_s": None,
        "bytes_per_s": None,
        "arithmetic_intensity": None,
        "roofline_fraction": None,
    }
    if not flops or not nbytes or not seconds or seconds <= 0:
        return out
    out["flops_per_s"] = flops / seconds
    out["bytes_per_s"] = nbytes / seconds
    out["arithmetic_intensity"] = flops / nbytes
    if peak_flops and peak_bw:
        attainable = min(peak_flops, out["arithmetic_intensity"] * peak_bw)
        out["roofline_fraction"] = out["flops_per_s"] / attainable
    return out


def roofline_floor(
    flops: float | None,
    nbytes: float | None,
    exps: float | None,
    peak_flops: float | None,
    peak_bw: float | None,
    peak_exp: float | None,
) -> tuple[float | None, str | None]:
    """(floor in seconds, bound) with floor = max(flops / peak_flops, bytes / peak_bw,
    exps / peak_exp) over the terms whose work and peak are both known; bound is the name
    of the largest term ("matmul", "memory", "exp"; first in that order on a tie).

    (None, None) when no term can be computed; (0.0, None) when the modelled work is zero
    (dense's prepare)."""
    terms = {}
    for name, work, peak in zip(
        BOUNDS, (flops, nbytes, exps), (peak_flops, peak_bw, peak_exp), strict=True
    ):
        if work is not None and peak and peak > 0 and work == work and work >= 0:
            terms[name] = float(work) / float(peak)
    if not terms:
        return None, None
    bound = max(terms, key=lambda k: terms[k])  # max keeps the first of equal terms
    if terms[bound] <= 0:
        return 0.0, None
    return terms[bound], bound


def phase_roofline(
    phase: str,
    flops: float | None,
    nbytes: float | None,
    exps: float | None,
    ms: float | None,
    peak_flops: float | None,
    peak_bw: float | None,
    peak_exp: float | None,
) -> dict[str, float | str | None]:
    """``roofline_floor_ms_<phase>``, ``roofline_bound_<phase>`` and
    ``roofline_fraction_<phase>`` = floor / measured median (not clipped: above 1 means
    the cost model undercounts the work, or a peak is too low)."""
    floor, bound = roofline_floor(flops, nbytes, exps, peak_flops, peak_bw, peak_exp)
    frac = None
    if bound is not None and floor is not None and ms is not None and ms == ms and ms > 0:
        frac = floor * 1e3 / ms
    return {
        f"roofline_floor_ms_{phase}": None if floor is None else floor * 1e3,
        f"roofline_bound_{phase}": bound,
        f"roofline_fraction_{phase}": frac,
    }
