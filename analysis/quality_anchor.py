"""The anchor's own test protocol on a copy of gSASRec's ML-1M split without its test inputs.

gSASRec's split (its ``datasets/ml1m/preprocess_ml1m.py``) keeps each user's last two items
out of ``train/input.txt`` (three for the 512 validation users) and tests the last item after
``test/input.txt`` = every item but the last. ``../shared/data/ml-1m`` has ``train/``,
``val/`` and ``test/output.txt`` but no ``test/input.txt``: testing after the training line
predicts the test item two steps ahead (three for a validation user), a harder task than
the anchor's. For the validation users ``val/input.txt`` + ``val/output.txt`` *is* gSASRec's
test input, so on them the anchor's protocol is reproduced item for item: the ``anchor_*``
columns, seen items filtered as gSASRec does, with the standard error over those users.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .sasrec import evaluate_ranks, hr_ndcg, ndcg_gain, popularity_ranks

PREFIX = "anchor_"
AnchorSet = tuple[list[np.ndarray], np.ndarray]


def anchor_columns(k: int) -> list[str]:
    base = [f"hr@{k}", f"ndcg@{k}", f"hr@{k}_filtered", f"ndcg@{k}_filtered"]
    return [PREFIX + c for c in base] + [f"{PREFIX}ndcg@{k}_filtered_se", f"{PREFIX}users"]


def anchor_set(data: Any, max_users: int | None) -> AnchorSet | None:
    """(gSASRec test inputs, test items) of the validation users matched to a training line
    and a held-out item, among the first ``max_users`` users; None when there are none."""
    users = getattr(data, "val_users", None)
    if users is None or data.held_out is None:
        return None
    keep = [
        j
        for j, u in enumerate(users)
        if u >= 0 and (max_users is None or u < max_users) and data.held_out[u] >= 0
    ]
    if not keep:
        return None
    inputs = [np.concatenate([data.val_inputs[j], data.val_targets[j : j + 1]]) for j in keep]
    return inputs, np.asarray(data.held_out)[np.asarray(users)[keep]]


def _metrics(rank: np.ndarray, rank_f: np.ndarray, k: int) -> dict[str, float]:
    gains = ndcg_gain(rank_f, k)
    se = float(gains.std(ddof=1) / math.sqrt(len(gains))) if len(gains) > 1 else math.nan
    out = {
        PREFIX + key: v
        for key, v in {**hr_ndcg(rank, k), **hr_ndcg(rank_f, k, "_filtered")}.items()
    }
    return {**out, f"{PREFIX}ndcg@{k}_filtered_se": se, f"{PREFIX}users": int(len(rank))}


def anchor_metrics(model: Any, anchor: AnchorSet | None, k: int) -> dict[str, float]:
    """The ``anchor_*`` columns for a trained SASRec ({} without an anchor set)."""
    if anchor is None:
        return {}
    _, rank, rank_f = evaluate_ranks(model, *anchor)
    return _metrics(rank, rank_f, k)


def pop_anchor_metrics(
    anchor: AnchorSet | None, train: list[np.ndarray], n_items: int, k: int
) -> dict[str, float]:
    """The same columns for the popularity ranking (counts from the training lines)."""
    if anchor is None:
        return {}
    rank, rank_f = popularity_ranks(anchor[0], anchor[1], n_items, counts_from=train)
    return _metrics(rank, rank_f, k)
