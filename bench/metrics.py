"""Fidelity metrics against dense softmax, per query row. Pure functions (torch in).

Rows are the last axis: ``p`` (reference distributions) and ``w`` (a method's implied
weights) are ``[R, N]``; ``support`` ``[R, N]`` bool marks real behaviours (None = all).

Signed-weight protocol (DESIGN.md section 3) for weights that are signed or unnormalised:
clip negatives to 0, record the negative-mass fraction sum|neg| / sum|w|, renormalise;
a row whose clipped sum is 0 becomes uniform over its support (counted). KL then smooths
Q with (1 - a) Q + a / N_real (a = 1e-6) on every row, and counts the rows where smoothing
turned a zero entry of Q into a non-zero one where P > 0 (without it the KL is infinite).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SMOOTHING_A = 1e-6


def _support(x: torch.Tensor, support: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(x, dtype=torch.bool) if support is None else support


def signed_to_distribution(
    w: torch.Tensor, support: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q rows summing to 1, negative-mass fraction per row, rows that were all <= 0)."""
    w = w.double()
    sup = _support(w, support)
    w = torch.where(sup, w, torch.zeros_like(w))
    abs_sum = w.abs().sum(-1)
    neg = (-w).clamp_min(0).sum(-1)
    neg_frac = torch.where(abs_sum > 0, neg / abs_sum.clamp_min(1e-300), torch.zeros_like(abs_sum))
    clipped = w.clamp_min(0)
    total = clipped.sum(-1, keepdim=True)
    zero_rows = total.squeeze(-1) <= 0
    uniform = sup.double() / sup.sum(-1, keepdim=True).clamp_min(1)
    q = torch.where(total > 0, clipped / total.clamp_min(1e-300), uniform)
    return q, neg_frac, zero_rows


def kl_rows(
    p: torch.Tensor, q: torch.Tensor, support: torch.Tensor | None = None, a: float = SMOOTHING_A
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P || Q_a) per row (nats) with Q_a = (1 - a) Q + a / N_real; and the rows that needed it."""
    p, q = p.double(), q.double()
    sup = _support(p, support)
    n_real = sup.sum(-1, keepdim=True).clamp_min(1).double()
    q_s = torch.where(sup, (1 - a) * q + a / n_real, torch.zeros_like(q))
    pos = (p > 0) & sup
    ratio = torch.where(pos, p / q_s.clamp_min(1e-300), torch.ones_like(p))
    kl = torch.where(pos, p * torch.log(ratio), torch.zeros_like(p)).sum(-1)
    needed = (pos & (q <= 0)).any(-1)
    return kl.clamp_min(0.0), needed


def tv_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Total variation 0.5 * sum |P - Q| per row."""
    return 0.5 * (p.double() - q.double()).abs().sum(-1)


def js_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats, in [0, ln 2]) per row."""
    p, q = p.double(), q.double()
    mix = 0.5 * (p + q)

    def part(x: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(x > 0, x / mix.clamp_min(1e-300), torch.ones_like(x))
        return torch.where(x > 0, x * torch.log(ratio), torch.zeros_like(x)).sum(-1)

    return (0.5 * part(p) + 0.5 * part(q)).clamp(0.0, math.log(2.0))


def topk_recall_rows(p: torch.Tensor, q: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Mass of P on Q's top-k behaviours over the mass of P's own top-k (1 = perfect)."""
    k = min(k, p.shape[-1])
    p = p.double()
    top_q = q.double().topk(k, dim=-1).indices
    got = p.gather(-1, top_q).sum(-1)
    best = p.topk(k, dim=-1).values.sum(-1)
    return torch.where(best > 0, got / best.clamp_min(1e-300), torch.ones_like(best))


def output_error_rows(
    out: torch.Tensor, ref: torch.Tensor, v_rms: torch.Tensor | float
) -> torch.Tensor:
    """||o - o_ref|| / RMS value norm per row (``v_rms`` broadcast over the rows)."""
    err = (out.double() - ref.double()).norm(dim=-1)
    v_rms = torch.as_tensor(v_rms, dtype=torch.float64, device=err.device)
    return err / v_rms.clamp_min(1e-300)


def summarise(values: torch.Tensor | np.ndarray, prefix: str) -> dict[str, float | None]:
    """``{prefix}_mean, _p50, _p99, _max`` of a 1-D set of per-row values (None if empty)."""
    x = (
        values.detach().double().cpu().numpy()
        if isinstance(values, torch.Tensor)
        else np.asarray(values, float)
    )
    x = x[np.isfinite(x)] if x.size else x
    if x.size == 0:
        return {f"{prefix}_{s}": None for s in ("mean", "p50", "p99", "max")}
    return {
        f"{prefix}_mean": float(x.mean()),
        f"{prefix}_p50": float(np.percentile(x, 50)),
        f"{prefix}_p99": float(np.percentile(x, 99)),
        f"{prefix}_max": float(x.max()),
    }


def fidelity_rows(
    p: torch.Tensor,
    w: torch.Tensor,
    support: torch.Tensor | None = None,
    *,
    is_distribution: bool = False,
    a: float = SMOOTHING_A,
    topk: int = 10,
) -> dict[str, torch.Tensor]:
    """All per-row weight metrics of one block of rows (p: reference, w: implied weights)."""
    if is_distribution:
        sup = _support(w, support)
        q = torch.where(sup, w.double().clamp_min(0), torch.zeros_like(w, dtype=torch.float64))
        s = q.sum(-1, keepdim=True)
        q = torch.where(
            s > 0, q / s.clamp_min(1e-300), sup.double() / sup.sum(-1, keepdim=True).clamp_min(1)
        )
        neg = torch.zeros(q.shape[:-1], dtype=torch.float64, device=q.device)
        zero = s.squeeze(-1) <= 0
    else:
        q, neg, zero = signed_to_distribution(w, support)
    kl, needed = kl_rows(p, q, support, a)
    return {
        "kl": kl,
        "kl_needed": needed,
        "tv": tv_rows(p, q),
        "js": js_rows(p, q),
        "top10_recall": topk_recall_rows(p, q, topk),
        "neg_mass": neg,
        "zero_rows": zero,
    }
