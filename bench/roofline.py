"""Device peaks (FLOP/s and bytes/s) and the roofline fraction of a measured call.

GPU peaks come from a table of vendor figures (dense, no sparsity) keyed by the name the
device reports; the CPU peak is measured with a matmul probe (and a copy probe for bytes/s).
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
    "A100 SXM 80GB": ({"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB}, 2.039 * TB),
    "A100 SXM 40GB": ({"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB}, 1.555 * TB),
    "A100 PCIe 80GB": ({"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB}, 1.935 * TB),
    "A100 PCIe 40GB": ({"fp32": 19.5 * TB, "bf16": 312 * TB, "fp16": 312 * TB, "fp64": 19.5 * TB}, 1.555 * TB),
}


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


def device_peaks(device: str, device_name: str, dtype: str) -> tuple[float | None, float | None, str]:
    """(peak FLOP/s, peak bytes/s, source label)."""
    if device.startswith("cuda"):
        f, b = gpu_peaks(device_name, dtype)
        return f, b, "table"
    f, b = cpu_peaks(dtype)
    return f, b, "measured"


def roofline_fraction(flops: float | None, nbytes: float | None, seconds: float | None,
                      peak_flops: float | None, peak_bw: float | None) -> dict[str, float | None]:
    """Achieved rates and the fraction of the attainable min(peak, AI x bandwidth)."""
    out: dict[str, float | None] = {"flops_per_s": None, "bytes_per_s": None,
                                    "arithmetic_intensity": None, "roofline_fraction": None}
    if not flops or not nbytes or not seconds or seconds <= 0:
        return out
    out["flops_per_s"] = flops / seconds
    out["bytes_per_s"] = nbytes / seconds
    out["arithmetic_intensity"] = flops / nbytes
    if peak_flops and peak_bw:
        attainable = min(peak_flops, out["arithmetic_intensity"] * peak_bw)
        out["roofline_fraction"] = out["flops_per_s"] / attainable
    return out
