"""Target attention over a long history (SOLAR's and LREA's setting), as a trained CTR model.

A DIN-style model (Zhou et al. 2018): each candidate item's embedding, projected by W_q,
attends over the user's whole history (K = H W_k, V = H W_v; no truncation unless a preset
caps it) through ``attention_impls.AttentionLayer(method, **params)`` called non-causally with
``key_mask``; [attended, candidate, attended * candidate] go through a small MLP to one logit
(plus a learned per-item bias);
binary cross-entropy over the positive and its sampled negatives. ``mean_pool`` replaces the
attention by the mean of V over the real history (the attention-free baseline, otherwise the
same model). With ``recency`` (time-ordered data only) a learned embedding of
floor(log2(1 + distance from the latest item)) is added to the keys, so attention can
weight recent behaviour and mean pooling (which reads V only) cannot.

Inputs too short for an operator are padded with masked slots to at least its rank (the SVD
methods, LREA). LREA's learned n x r projection is positional and right-aligned (the last
slot is the latest item); ``AttentionLayer`` applies its last N positions to a batch of N
behaviours, which equals padding every batch to n without computing on the padding.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .target_data import (
    Split,
    capped,
    history,
    length_batches,
    pad_left,
    sample_negatives,
    training_samples,
)
from .target_metrics import auc, gauc, ranked_hit_ndcg

K = 10
RECENCY_BUCKETS = 16


@dataclass(frozen=True)
class TrainConfig:
    dim: int
    hidden: int
    epochs: int
    batch_size: int  # training samples (user, target) per step, at most
    batch_tokens: int  # padded history slots per step, at most
    lr: float
    dropout: float
    targets_per_user: int  # training targets drawn per user per epoch
    train_neg: int  # negatives per training target
    neg: str  # uniform | pop (training and evaluation negatives)
    hist_cap: int | None  # latest items kept per history (None = the whole history)
    recency: bool
    seed: int


class TargetModel(nn.Module):
    def __init__(
        self,
        n_items: int,
        cfg: TrainConfig,
        attn: nn.Module,
        pad_to: int = 1,
    ) -> None:
        super().__init__()
        d = cfg.dim
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=d**-0.5)
        with torch.no_grad():
            self.emb.weight[0].zero_()
        self.rec = nn.Embedding(RECENCY_BUCKETS, d) if cfg.recency else None
        if self.rec is not None:
            nn.init.zeros_(self.rec.weight)
        self.w_q, self.w_k, self.w_v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.attn = attn
        self.mlp = nn.Sequential(
            nn.Linear(3 * d, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )
        self.bias = nn.Embedding(n_items + 1, 1)  # per-item logit bias (popularity), as in
        nn.init.zeros_(self.bias.weight)  # most CTR models' wide part
        self.pad_to = pad_to

    def forward(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """hist [B, L] left-padded item ids (0 = pad), cand [B, M] -> logits [B, M]."""
        n = max(hist.shape[1], self.pad_to)
        mask = hist > 0
        h = self.emb(hist)
        k, v = self.w_k(h), self.w_v(h)
        if self.rec is not None:
            dist = mask.flip(1).cumsum(1).flip(1) - 1  # 0 = latest real item
            bucket = torch.log2(dist.clamp_min(0) + 1.0).floor().long()
            k = k + self.rec(bucket.clamp_max(RECENCY_BUCKETS - 1)) * mask[..., None]
        if n > hist.shape[1]:  # masked zero slots on the left (after the projections: cheap)
            k, v = (F.pad(t, (0, 0, n - hist.shape[1], 0)) for t in (k, v))
            mask = F.pad(mask, (n - hist.shape[1], 0))
        e = self.emb(cand)
        a = self.attn(self.w_q(e)[:, None], k[:, None], v[:, None], key_mask=mask, causal=False)[
            :, 0
        ]
        return (self.mlp(torch.cat([a, e, a * e], -1)) + self.bias(cand)).squeeze(-1)


def _as_tensors(hists: list[np.ndarray], cands: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(pad_left(hists)), torch.from_numpy(np.ascontiguousarray(cands))


@torch.no_grad()
def score_users(
    model: TargetModel,
    hists: list[np.ndarray],
    cands: np.ndarray,
    cfg: TrainConfig,
) -> np.ndarray:
    """[U, M] scores of each user's candidates given their histories (eval mode)."""
    model.eval()
    lengths = np.array([len(h) for h in hists])
    out = np.zeros(cands.shape, dtype=np.float64)
    for idx in length_batches(lengths, 10**9, cfg.batch_tokens, None):
        h, c = _as_tensors([hists[i] for i in idx], cands[idx])
        out[idx] = model(h, c).double().numpy()
    return out


def evaluate(
    model: TargetModel, hists: list[np.ndarray], pos: np.ndarray, negs: np.ndarray, cfg: TrainConfig
) -> dict[str, float]:
    """AUC, GAUC, HR@10, NDCG@10 of each user's positive against its fixed negatives."""
    cands = np.concatenate([pos[:, None], negs], 1)
    s = score_users(model, hists, cands, cfg)
    labels = np.zeros(cands.shape, dtype=bool)
    labels[:, 0] = True
    users = np.repeat(np.arange(len(pos)), cands.shape[1])
    hr, ndcg = ranked_hit_ndcg(s[:, 0], s[:, 1:], k=K)
    return {
        "auc": auc(labels.ravel(), s.ravel()),
        "gauc": gauc(labels.ravel(), s.ravel(), users),
        f"hr@{K}": hr,
        f"ndcg@{K}": ndcg,
    }


@dataclass
class EvalSet:
    """One ranking problem per user, fixed for every method of a run."""

    hists: list[np.ndarray]
    pos: np.ndarray
    negs: np.ndarray
    users: np.ndarray


def eval_set(
    split: Split, which: str, count: int, cap: int | None, kind: str, rng: np.random.Generator
) -> EvalSet:
    """``which`` = val (history = fit) or test (history = fit + validation item); ``count``
    distinct negatives per user drawn by ``kind`` (uniform | pop)."""
    item = split.val_item if which == "val" else split.test_item
    src = split.fit if which == "val" else split.test_hist
    users = np.array([u for u in np.flatnonzero(item > 0) if len(src[u])], dtype=np.int64)
    negs = sample_negatives(users, count, split, rng, kind=kind, distinct=True)
    return EvalSet([capped(src[u], cap) for u in users], item[users], negs, users)


def train(
    model: TargetModel,
    split: Split,
    val: EvalSet,
    cfg: TrainConfig,
    progress: Any = None,
) -> dict[str, Any]:
    """Adam on BCE for ``cfg.epochs`` epochs; the epoch with the best validation AUC is
    kept (loaded into ``model``). Validation time is kept out of train_s / train_cpu_s."""
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best: dict[str, Any] = {"auc": -math.inf, "epoch": 0, "state": None}
    steps, loss_v = 0, float("nan")
    val_wall = val_cpu = 0.0
    t0, c0 = time.perf_counter(), time.thread_time()
    for epoch in range(cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        users, pos = training_samples(split, cfg.targets_per_user, rng)
        hists = [history(split, u, p, cfg.hist_cap) for u, p in zip(users, pos, strict=False)]
        targets = np.array([split.fit[u][p] for u, p in zip(users, pos, strict=False)])
        negs = sample_negatives(users, cfg.train_neg, split, rng, kind=cfg.neg)
        cands = np.concatenate([targets[:, None], negs], 1)
        labels = torch.zeros(cands.shape)
        labels[:, 0] = 1.0
        lengths = np.array([len(h) for h in hists])
        model.train()
        total = 0.0
        for idx in length_batches(lengths, cfg.batch_size, cfg.batch_tokens, rng):
            h, c = _as_tensors([hists[i] for i in idx], cands[idx])
            loss = F.binary_cross_entropy_with_logits(model(h, c), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            total += loss.item() * len(idx)
        loss_v = total / len(hists)
        tv, cv = time.perf_counter(), time.thread_time()
        m = evaluate(model, val.hists, val.pos, val.negs, cfg)
        if m["auc"] > best["auc"]:
            best.update(auc=m["auc"], epoch=epoch + 1, state=copy.deepcopy(model.state_dict()))
        val_wall += time.perf_counter() - tv
        val_cpu += time.thread_time() - cv
        if progress is not None:
            progress(epoch + 1, loss_v, m["auc"])
    wall, cpu = time.perf_counter() - t0 - val_wall, time.thread_time() - c0 - val_cpu
    model.load_state_dict(best["state"])
    return {
        "val_auc": best["auc"],
        "best_epoch": best["epoch"],
        "epochs": cfg.epochs,
        "steps": steps,
        "train_s": wall,
        "train_cpu_s": cpu,
        "s_per_step": wall / max(steps, 1),
        "val_eval_s": val_wall,
        "final_loss": loss_v,
    }
