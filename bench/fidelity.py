"""Fidelity of one case against dense softmax (fp32), on a subsample of query rows."""

from __future__ import annotations

from typing import Any

import torch

import attention_impls as ai
from attention_impls.base import causal_mask

from . import metrics
from .config import Case, FidelityCfg


def row_subsample(m: int, per_head: int) -> torch.Tensor:
    """Evenly spaced query rows (all rows when m <= per_head)."""
    if m <= per_head:
        return torch.arange(m)
    return torch.linspace(0, m - 1, per_head).round().long().unique()


def _chunk_rows(n: int, budget_bytes: int = 256 * 2**20) -> int:
    return max(1, budget_bytes // max(1, n * 8 * 8))  # ~8 float64 temporaries per element


def case_fidelity(
    case: Case,
    op: Any,
    state: Any,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    out: torch.Tensor,
    cfg: FidelityCfg,
) -> dict[str, Any]:
    """Fidelity columns (``kl_*``, ``tv_*``, ``js_*``, ``top10_recall_*``, ``out_err_*``...)."""
    cols: dict[str, Any] = {"kl_smoothing_a": cfg.smoothing_a}
    b, h, m, _ = q.shape
    if case.causal and case.n > cfg.max_causal_n:
        cols["fidelity_rows"] = 0
        cols["fidelity_note"] = (
            f"skipped: causal fidelity needs N x N weights (N > {cfg.max_causal_n})"
        )
        return cols
    dense = ai.get("dense")
    with torch.inference_mode():
        ref_state = dense.prepare_unchecked(k.float(), v.float(), key_mask)
        idx = row_subsample(m, max(1, cfg.max_rows // (b * h)))
        dev_idx = idx.to(q.device)
        if case.causal:  # weights need the full query set (row offsets); subsample after
            p = dense.implied_weights(ref_state, q.float(), causal=True)[:, :, dev_idx]
            w = op.implied_weights(state, q, causal=True)[:, :, dev_idx]
            ref_out = dense.attend_unchecked(ref_state, q.float(), True)[:, :, dev_idx]
        else:
            qs = q[:, :, dev_idx]
            p = dense.implied_weights(ref_state, qs.float())
            w = op.implied_weights(state, qs)
            ref_out = dense.attend_unchecked(ref_state, qs.float(), False)
        o = out[:, :, dev_idx].float()
        r = idx.numel()
        n = k.shape[2]
        if key_mask is not None:
            support = key_mask[:, None, None, :].expand(b, h, r, n)
            vm = key_mask[:, None, :, None].float()
            v_rms = ((v.float().pow(2) * vm).sum((-2, -1)) / vm.sum((-2, -1)).clamp_min(1)).sqrt()
            keep = key_mask.any(1)[:, None, None].expand(b, h, r)
        else:
            support = None
            v_rms = v.float().pow(2).sum(-1).mean(-1).sqrt()
            keep = torch.ones(b, h, r, dtype=torch.bool, device=q.device)
        if case.causal:
            cm = causal_mask(m, n, q.device)[dev_idx][None, None]
            support = cm.expand(b, h, r, n) if support is None else (support & cm)
        v_rms_rows = v_rms[:, :, None].expand(b, h, r)
        flat = keep.reshape(-1)
        p2 = p.reshape(-1, n)[flat]
        w2 = w.reshape(-1, n)[flat]
        s2 = None if support is None else support.reshape(-1, n)[flat]
        parts: dict[str, list[torch.Tensor]] = {}
        step = _chunk_rows(n)
        for start in range(0, p2.shape[0], step):
            sl = slice(start, start + step)
            res = metrics.fidelity_rows(
                p2[sl],
                w2[sl],
                None if s2 is None else s2[sl],
                is_distribution=op.weights_are_distribution,
                a=cfg.smoothing_a,
                topk=cfg.topk,
            )
            for key, val in res.items():
                parts.setdefault(key, []).append(val.cpu())
        err = metrics.output_error_rows(
            o.reshape(-1, o.shape[-1])[flat],
            ref_out.reshape(-1, ref_out.shape[-1])[flat],
            v_rms_rows.reshape(-1)[flat],
        )
    res = {k2: torch.cat(v2) for k2, v2 in parts.items()} if parts else {}
    for name in ("kl", "tv", "js", "top10_recall"):
        cols.update(metrics.summarise(res.get(name, torch.empty(0)), name))
    cols.update(metrics.summarise(err, "out_err"))
    neg = res.get("neg_mass", torch.empty(0))
    cols["neg_mass_mean"] = float(neg.mean()) if neg.numel() else None
    cols["neg_mass_max"] = float(neg.max()) if neg.numel() else None
    cols["kl_smoothed_rows"] = int(res["kl_needed"].sum()) if res else 0
    cols["kl_uniform_rows"] = int(res["zero_rows"].sum()) if res else 0
    cols["kl_rows"] = int(flat.sum())
    cols["padded_rows_excluded"] = int((~flat).sum())
    cols["fidelity_rows"] = int(flat.sum())
    return cols
