"""Shared fixtures: the devices to test on (CPU always, CUDA when present)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def one_thread():
    """Small tensors run faster on one thread, and do not fight a busy machine
    (applied with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def make_qkv(
    b=2, h=2, n=48, m=7, d=16, dv=None, device="cpu", dtype=torch.float32, seed=0, scale=1.0
):
    g = torch.Generator(device="cpu").manual_seed(seed)
    dv = d if dv is None else dv
    q = torch.randn(b, h, m, d, generator=g) * scale
    k = torch.randn(b, h, n, d, generator=g)
    v = torch.randn(b, h, n, dv, generator=g)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def low_rank_kv(b=2, h=2, n=48, d=16, dv=None, rank=4, device="cpu", seed=0, noise=0.0):
    """[K|V] of exact rank ``rank`` with singular values spread over [1, 5] * sqrt(n / rank)
    (well conditioned, so fp32 rounding stays far below the test tolerances), plus optional
    Gaussian noise."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    dv = d if dv is None else dv
    left, _ = torch.linalg.qr(torch.randn(b, h, n, rank, generator=g))
    right, _ = torch.linalg.qr(torch.randn(b, h, d + dv, rank, generator=g))
    s = torch.linspace(5.0, 1.0, rank) * (n / rank) ** 0.5
    x = (left * s) @ right.transpose(-1, -2)
    if noise:
        x = x + noise * torch.randn(x.shape, generator=g)
    return x[..., :d].to(device).contiguous(), x[..., d:].to(device).contiguous()


def ill_conditioned_kv(b=1, h=2, n=96, d=16, dv=None, rank=None, cond=1e5, device="cpu", seed=0):
    """[K|V] with singular values spread geometrically from 10 down to 10 / ``cond`` over its
    first ``rank`` directions (all d + dv by default) and zero after: the inputs on which a
    plain fp32 Gram matrix (condition number squared) loses about 1e-4 of [K|V] (measured: at
    full rank with cond 1e5, 1.1e-4 of [K|V] and 6.6e-5 of the output; at rank 16 of 128 with
    cond 1e3, 1.4e-4), which is why ``gram`` refines its fp32 Gram when its spectrum asks for
    it and ``gram_fp64`` forms it in fp64."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    dv = d if dv is None else dv
    dd = d + dv
    rank = dd if rank is None else rank
    left, _ = torch.linalg.qr(torch.randn(b, h, n, dd, generator=g, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(b, h, dd, dd, generator=g, dtype=torch.float64))
    s = torch.zeros(dd, dtype=torch.float64)
    s[:rank] = 10.0 * torch.logspace(0, -math.log10(cond), rank, dtype=torch.float64)
    x = ((left * s) @ right.transpose(-1, -2)).float()
    return x[..., :d].to(device).contiguous(), x[..., d:].to(device).contiguous()


def gaussian_factor_kv(b=2, h=2, n=64, d=16, rank=32, seed=32):
    """A reconstruction of the suite's first test input (Gaussian factors, the right one
    square; condition number about 1e3), the likeliest "test input" on which docs/operators.md
    recorded that the fp32 Gram lost 2e-4. Measured now, the plain fp32 Gram loses 1.7e-6 of
    the output here; ``ill_conditioned_kv`` reproduces the loss."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (
        torch.randn(b, h, n, rank, generator=g)
        @ torch.randn(b, h, rank, 2 * d, generator=g)
        / rank**0.5
    )
    return x[..., :d].contiguous(), x[..., d:].contiguous()


def padding_mask(b, n, lengths, device="cpu"):
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, :length] = True
    return mask.to(device)


def tiny_sweep(
    path: Path,
    *,
    name: str = "tiny",
    methods: list[str] | None = None,
    n: tuple[int, ...] = (64, 128),
    m: int = 4,
    timing: dict | None = None,
    memory: bool = False,
    fidelity: bool = True,
    grid_extra: str = "",
) -> Path:
    """Write a TOML sweep of a few tiny CPU cases to ``path/<name>.toml`` and return it: the
    shared starting point of the harness tests (``timing`` overrides or adds [timing] keys)."""
    lines = [f'name = "{name}"', "threads = 1", 'device = "cpu"']
    if methods is not None:
        lines.append("methods = [" + ", ".join(f'"{x}"' for x in methods) + "]")
    tim = {"min_calls": 2, "max_calls": 3, "min_time_s": 0.0, "warmup_max": 1, **(timing or {})}
    lines += ["[timing]"] + [
        f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in tim.items()
    ]
    lines += ["[memory]", f"enabled = {str(memory).lower()}"]
    if not fidelity:
        lines += ["[fidelity]", "enabled = false"]
    lines += [
        "[[grid]]",
        f"n = [{', '.join(map(str, n))}]",
        f"m = [{m}]",
        "d = [8]",
        "rank = [2]",
        grid_extra.strip(),
    ]
    f = Path(path) / f"{name}.toml"
    f.write_text("\n".join(x for x in lines if x) + "\n")
    return f
