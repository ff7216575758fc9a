"""Metrics of the target-attention task (analysis/target_task.py): AUC, GAUC, HR@k, NDCG@k.

Ties are never broken by position (the order candidates are listed in must not matter):

- AUC is the Mann-Whitney statistic with average ranks, so a tied (positive, negative) pair
  counts 1/2 (``scipy.stats.rankdata``);
- GAUC is DIN's (Zhou et al. 2018, eq. 8): per-user AUC weighted by the user's number of
  impressions; users whose impressions are all one class have no AUC and are skipped;
- HR@k / NDCG@k of the one positive among its candidates are their expectations under a
  uniformly random order of the tied: with g negatives scored strictly above the positive and
  t tied with it, its 0-based rank is uniform on g..g+t.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; ties between a positive and a negative count 1/2."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ValueError(f"AUC needs both classes, got {pos} positives and {neg} negatives")
    ranks = rankdata(s)  # average ranks: ties share
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    """DIN's group AUC: sum_u n_u AUC_u / sum_u n_u over users with both classes
    (n_u = the user's impressions)."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    u = np.asarray(users).ravel()
    if not (y.shape == s.shape == u.shape):
        raise ValueError(f"labels {y.shape}, scores {s.shape}, users {u.shape} differ in shape")
    order = np.argsort(u, kind="stable")
    y, s, u = y[order], s[order], u[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    num = den = 0.0
    for a, b in zip(starts, np.r_[starts[1:], len(u)], strict=False):
        yy = y[a:b]
        if yy.all() or not yy.any():
            continue  # one class only: no AUC
        num += (b - a) * auc(yy, s[a:b])
        den += b - a
    if den == 0:
        raise ValueError("GAUC: no user has both a positive and a negative impression")
    return num / den


def ranked_hit_ndcg(
    pos_score: np.ndarray, neg_scores: np.ndarray, k: int = 10
) -> tuple[float, float]:
    """Mean HR@k and NDCG@k of each row's positive among [positive, its negatives].

    ``pos_score`` [U], ``neg_scores`` [U, n]. Tied negatives: expectation over a random order."""
    p = np.asarray(pos_score, dtype=np.float64).reshape(-1, 1)
    n = np.asarray(neg_scores, dtype=np.float64)
    if n.ndim != 2 or n.shape[0] != p.shape[0]:
        raise ValueError(f"neg_scores must be [U, n] with U = {p.shape[0]}, got {n.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    greater = (n > p).sum(1)
    tied = (n == p).sum(1)
    hr = np.empty(len(p))
    ndcg = np.empty(len(p))
    for i, (g, t) in enumerate(zip(greater, tied, strict=False)):
        ranks = np.arange(g, g + t + 1)  # equally likely 0-based ranks
        inside = ranks < k
        hr[i] = inside.mean()
        ndcg[i] = np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0).mean()
    return float(hr.mean()), float(ndcg.mean())
