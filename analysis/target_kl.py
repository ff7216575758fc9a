"""KL by rank of ``svd_exact`` on the trained dense target-attention model's own Q, K, V (issue
16, item 6: the closing loop on the DIN-style task).

Each sampled test user's history goes through the trained model once with a capturing
attention: the queries are its 1 + ``neg_eval`` candidates projected by W_q, the keys and values
its whole history projected by W_k and W_v, the keys with the learned recency embedding added,
exactly what the model's attention sees. The rows are those of ``kl_by_rank.csv``
(``closing_loop.user_kl_rows``), route ``din-target``, so ``closing_loop.rank_needed`` turns
them into the rank each user needs for a KL budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .closing_loop import sample_users, user_kl_rows
from .spectra import log_bins_label
from .target_task import TargetModel, _as_tensors

ROUTE = "din-target"
RANKS = (1, 2, 4, 8, 16, 24, 32, 48, 64)


class CaptureAttention(nn.Module):
    """Runs ``inner`` and keeps the last call's q, k, v and mask (one user per call here)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.last: tuple[torch.Tensor, ...] | None = None

    def forward(self, q, k, v, key_mask=None, causal=False):  # noqa: ANN001 (the layer's API)
        self.last = (q.detach(), k.detach(), v.detach(), key_mask)
        return self.inner(q, k, v, key_mask=key_mask, causal=causal)


@torch.no_grad()
def user_qkv(
    model: TargetModel, hist: np.ndarray, cands: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q [M, d], K [N, d], V [N, d]) of one user as the model's attention receives them, real
    behaviours only (fp32)."""
    model.eval()
    capture = CaptureAttention(model.attn)
    model.attn = capture
    try:
        h, c = _as_tensors([hist], cands[None])
        model(h, c)
    finally:
        model.attn = capture.inner
    q, k, v, mask = capture.last  # type: ignore[misc]
    real = mask[0] if mask is not None else torch.ones(k.shape[2], dtype=torch.bool)
    return q[0, 0].float(), k[0, 0][real].float(), v[0, 0][real].float()


def target_kl_by_rank(
    model: TargetModel,
    hists: list[np.ndarray],
    cands: np.ndarray,
    ids: dict[str, Any],
    ranks: tuple[int, ...] = RANKS,
    max_users: int = 300,
    seed: int = 0,
) -> pd.DataFrame:
    """``kl_by_rank.csv`` rows for up to ``max_users`` test users (sampled across history
    lengths by ``closing_loop.sample_users``, fixed ``seed``), each over its own candidates."""
    lengths = np.array([len(h) for h in hists])
    ops: dict[int, object] = {}
    rows: list[dict[str, Any]] = []
    # the user id names the model too (rank_needed groups by dataset, route and user)
    prefix = "".join(f"{ids[key]}/" for key in ("preset", "seed") if key in ids)
    for u in sample_users(lengths, max_users, seed=seed):
        q, k, v = user_qkv(model, hists[u], cands[u])
        uid = {**ids, "route": ROUTE, "user": f"{prefix}{u}"}
        rows += user_kl_rows(q, k, v, uid, ranks, ("svd_exact",), "gram", ops)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["n_bin"] = log_bins_label(df["n"].to_numpy())
    return df
