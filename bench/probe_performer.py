"""Performer's eps floor and stabilisers, chosen by measured KL to softmax (issue 11, item 3).

``python -m bench.probe_performer [--seeds 20] [--n 1024] [--m 256] [--features 256]``
prints one line per (input family, query scale, variant): mean KL(P || Q) over query rows
and seeds, with the seed-to-seed standard error. Inputs are synthetic: keys and values have
unit mean square entries, full rank (Gaussian) or rank 16 ([K|V] = G1 G2); queries are
Gaussian times the query scale. The same orthogonal features (``seed``) serve every variant.

Variants:
- ``ours eps=E``: the operator with ``eps=E`` (implied weights, what ships);
- ``raw-max eps=E``: written out, with performer-pytorch's stabilisers (row max / global max
  of the raw projections w.x', not of w.x' - |x'|^2 / 2), which makes the floor larger
  relative to the features by exp(|x'|^2 / 2);
- ``performer-pytorch``: the package's own ``softmax_kernel`` (eps 1e-4), if installed.
"""

from __future__ import annotations

import argparse
import math

import torch

import attention_impls as ai
from attention_impls.performer import draw_features

from .metrics import kl_rows

SCALES = (0.25, 0.5, 1.0, 2.0)
FAMILIES = ("full_rank", "rank16")


def inputs(
    family: str, scale: float, n: int, m: int, d: int, seed: int
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    if family == "rank16":
        kv = torch.randn(1, 1, n, 16, generator=g) @ torch.randn(16, 2 * d, generator=g)
    else:
        kv = torch.randn(1, 1, n, 2 * d, generator=g)
    kv = kv / kv.pow(2).mean().sqrt()
    q = torch.randn(1, 1, m, d, generator=g) * scale
    return q, kv[..., :d].contiguous(), kv[..., d:].contiguous()


def softmax_p(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


def raw_max_weights(
    q: torch.Tensor, k: torch.Tensor, omega: torch.Tensor, eps: float
) -> torch.Tensor:
    """FAVOR+ with the peer's stabilisers, written out (fp32)."""
    s = q.shape[-1] ** -0.25
    qd, kd = (q * s) @ omega.T, (k * s) @ omega.T
    qn, kn = 0.5 * (q * s).pow(2).sum(-1, keepdim=True), 0.5 * (k * s).pow(2).sum(-1, keepdim=True)
    pq = torch.exp(qd - qn - qd.amax(-1, keepdim=True)) + eps
    pk = torch.exp(kd - kn - kd.amax(dim=(-1, -2), keepdim=True)) + eps
    w = pq @ pk.transpose(-1, -2)
    return w / w.sum(-1, keepdim=True)


def package_weights(q: torch.Tensor, k: torch.Tensor, omega: torch.Tensor) -> torch.Tensor | None:
    try:
        from performer_pytorch.performer_pytorch import softmax_kernel
    except ImportError:
        return None
    pq = softmax_kernel(q, projection_matrix=omega, is_query=True)
    pk = softmax_kernel(k, projection_matrix=omega, is_query=False)
    w = pq @ pk.transpose(-1, -2)
    return w / w.sum(-1, keepdim=True)


def mean_kl(p: torch.Tensor, w: torch.Tensor) -> float:
    return float(kl_rows(p[0, 0], w[0, 0])[0].mean())


def run(
    seeds: int, n: int, m: int, features: int, eps_ours: list[float], eps_raw: list[float]
) -> list[dict]:
    d = 64
    omega = draw_features(features, d, True, 0)
    rows = []
    for family in FAMILIES:
        for scale in SCALES:
            acc: dict[str, list[float]] = {}
            for seed in range(seeds):
                q, k, v = inputs(family, scale, n, m, d, seed)
                p = softmax_p(q, k)
                for eps in eps_ours:
                    op = ai.get("performer", features=features, eps=eps)
                    w = op.implied_weights(op.prepare(k, v), q)
                    acc.setdefault(f"ours eps={eps:g}", []).append(mean_kl(p, w))
                for eps in eps_raw:
                    acc.setdefault(f"raw-max eps={eps:g}", []).append(
                        mean_kl(p, raw_max_weights(q, k, omega, eps))
                    )
                acc.setdefault("uniform", []).append(mean_kl(p, torch.full_like(p, 1.0 / n)))
                pw = package_weights(q, k, omega)
                if pw is not None:
                    acc.setdefault("performer-pytorch", []).append(mean_kl(p, pw))
            for variant, vals in acc.items():
                t = torch.tensor(vals, dtype=torch.float64)
                se = float(t.std() / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
                rows.append(
                    {
                        "family": family,
                        "scale": scale,
                        "variant": variant,
                        "kl": float(t.mean()),
                        "se": se,
                    }
                )
                print(
                    f"{family:9s} scale={scale:<5g} {variant:22s} KL {float(t.mean()):.4f} +- {se:.4f}",
                    flush=True,
                )
    return rows


def convergence(eps_list: list[float | str]) -> None:
    """KL against m on the small case of tests/test_operators_exactness.py (d = 16, N = 64,
    M = 16, query scale 0.7, seeds 0-2 of the features), for each floor."""
    g = torch.Generator().manual_seed(11)  # make_qkv(n=64, m=16, d=16, scale=0.7, seed=11)
    q = torch.randn(2, 2, 16, 16, generator=g) * 0.7
    k = torch.randn(2, 2, 64, 16, generator=g)
    v = torch.randn(2, 2, 64, 16, generator=g)
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 4.0, dim=-1)
    print(f"uniform KL {float((p * (p * 64).log()).sum(-1).mean()):.4f}")
    for m in (16, 128, 1024, 8192):
        cells = []
        for eps in eps_list:
            kl = 0.0
            for seed in range(3):
                op = ai.get("performer", features=m, seed=seed, eps=eps)
                w = op.implied_weights(op.prepare(k, v), q).double()
                kl += float((p * (p.log() - w.log())).sum(-1).mean()) / 3
            cells.append(f"eps={eps}({op.eps:.3g}): {kl:.4f}")
        print(f"m={m:<5d} " + "  ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--eps", type=float, nargs="*", default=[1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1])
    ap.add_argument("--eps-raw", type=float, nargs="*", default=[1e-6, 1e-4])
    ap.add_argument(
        "--convergence", action="store_true", help="the d = 16 KL-against-m table instead"
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.convergence:
        convergence([1e-6, 1e-4, 1e-3, 1e-2, 0.1, "auto"])
        return
    run(a.seeds, a.n, a.m, a.features, a.eps, a.eps_raw)


if __name__ == "__main__":
    main()
