"""Data of the target-attention task: splits, sampled negatives, length-bucketed batches.

Item ids are the loader's 0-based indices shifted by one (0 = padding). Histories are
left-padded (right-aligned), so for time-ordered data the last column is the latest item.

Split, time-ordered data: test item = the data's held-out item (gSASRec ML-1M:
``test/output.txt``, which follows the training line by two items there: the shared copy has
no ``test/input.txt``, see ``quality_anchor.py``), else each user's last item; validation
item = the last item of the remaining training sequence; training targets are positions t >= 1 of the rest, with history
= the items before t. Unordered data (KGAT sets such as amazon-book): there is no "before",
so the test and validation items are drawn at random from each user's set (seed
``SPLIT_SEED``, the same for every method) and a training target's history is the rest of
the fit set; target attention is order-free, so nothing is lost.

Negatives are items the user never interacted with (held-out items included): uniform, or
proportional to training popularity (``neg="pop"``: harder, the popular items are what a
user is likely to have seen). The evaluation negatives are drawn once per run from a fixed
seed, so every method ranks the same candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_SEED = 20260
EVAL_SEED = 31337


@dataclass
class Split:
    fit: list[np.ndarray]  # training items per user (1-based ids); targets are drawn from these
    val_item: np.ndarray  # [U] 1-based, 0 = none
    test_hist: list[np.ndarray]  # history of the test ranking (fit + validation item)
    test_item: np.ndarray  # [U] 1-based, 0 = none
    seen_keys: np.ndarray  # sorted user * (n_items + 1) + item over everything the user touched
    popularity: np.ndarray  # [n_items + 1] counts over the fit sequences
    ordered: bool


def make_split(
    sequences: list[np.ndarray], held_out: np.ndarray | None, n_items: int, ordered: bool
) -> Split:
    seqs = [np.asarray(s, dtype=np.int64) + 1 for s in sequences]
    n = len(seqs)
    held = None if held_out is None else np.asarray(held_out, dtype=np.int64) + 1  # -1 -> 0
    test = np.zeros(n, dtype=np.int64)
    val = np.zeros(n, dtype=np.int64)
    fit: list[np.ndarray] = []
    test_hist: list[np.ndarray] = []
    rng = np.random.default_rng(SPLIT_SEED)
    for u, s in enumerate(seqs):
        if not ordered and len(s) >= 3:
            s = s[rng.permutation(len(s))]  # random held-out items; the rest's order is moot
        if held is not None:
            th, test[u] = s, held[u]
        elif len(s) >= 3:
            th, test[u] = s[:-1], s[-1]
        else:
            th = s
        if len(th) >= 2:
            fit.append(th[:-1])
            val[u] = th[-1]
        else:
            fit.append(th)
        test_hist.append(th)
    width = n_items + 1
    keys = [u * width + s for u, s in enumerate(seqs)]
    keys += [np.flatnonzero(test > 0) * width + test[test > 0]]
    pop = np.bincount(
        np.concatenate([f for f in fit if len(f)] or [np.zeros(0, np.int64)]), minlength=width
    ).astype(np.float64)
    pop[0] = 0.0
    return Split(fit, val, test_hist, test, np.unique(np.concatenate(keys)), pop, ordered)


def sample_negatives(
    users: np.ndarray,
    count: int,
    split: Split,
    rng: np.random.Generator,
    kind: str = "uniform",
    distinct: bool = False,
) -> np.ndarray:
    """[len(users), count] item ids (1-based) none of which the user interacted with.

    ``kind``: ``uniform`` over items, or ``pop`` (proportional to training popularity + 1).
    ``distinct``: no repeats within a row (evaluation candidates)."""
    if kind not in ("uniform", "pop"):
        raise ValueError(f"negative sampling must be 'uniform' or 'pop', got {kind!r}")
    width = len(split.popularity)
    p = None
    if kind == "pop":
        w = split.popularity[1:] + 1.0
        p = w / w.sum()
    out = np.zeros((len(users), count), dtype=np.int64)
    todo = np.ones(out.shape, dtype=bool)
    for _ in range(1000):
        idx = np.nonzero(todo)
        if len(idx[0]) == 0:
            return out
        draw = rng.choice(width - 1, size=len(idx[0]), p=p) + 1
        out[idx] = draw
        keys = users[idx[0]] * width + draw
        pos = np.searchsorted(split.seen_keys, keys).clip(max=len(split.seen_keys) - 1)
        todo[:] = False
        todo[idx] = split.seen_keys[pos] == keys
        if distinct:
            todo |= _dups(out)
    raise ValueError("could not sample negatives: users have interacted with nearly every item")


def _dups(out: np.ndarray) -> np.ndarray:
    """True at every later copy of a value within its row."""
    mask = np.zeros(out.shape, dtype=bool)
    order = np.argsort(out, axis=1, kind="stable")
    srt = np.take_along_axis(out, order, 1)
    same = np.zeros(out.shape, dtype=bool)
    same[:, 1:] = srt[:, 1:] == srt[:, :-1]
    np.put_along_axis(mask, order, same, 1)
    return mask


def training_samples(
    split: Split, targets_per_user: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(user, target position in ``fit[user]``) pairs for one epoch; position >= 1 when
    ordered (a non-empty prefix), any position of a set of >= 2 items otherwise."""
    users, pos = [], []
    for u, f in enumerate(split.fit):
        if len(f) < 2:
            continue
        lo = 1 if split.ordered else 0
        t = rng.integers(lo, len(f), size=targets_per_user)
        users.append(np.full(targets_per_user, u))
        pos.append(t)
    if not users:
        raise ValueError("no user has 2 or more training items: nothing to train on")
    return np.concatenate(users), np.concatenate(pos)


def history(split: Split, user: int, pos: int, cap: int | None) -> np.ndarray:
    """History of the training target ``fit[user][pos]``: the items before it (ordered) or
    the other items of the set; the latest ``cap`` items when capped."""
    f = split.fit[user]
    h = f[:pos] if split.ordered else np.delete(f, pos)
    return h if cap is None else h[-cap:]


def capped(h: np.ndarray, cap: int | None) -> np.ndarray:
    return h if cap is None else h[-cap:]


def length_batches(
    lengths: np.ndarray, batch: int, tokens: int, rng: np.random.Generator | None
) -> list[np.ndarray]:
    """Indices sorted by length, cut into chunks of at most ``batch`` rows and at most
    ``tokens`` padded history slots (little padding); chunk order shuffled when ``rng``."""
    order = np.argsort(lengths, kind="stable")
    chunks, cur, longest = [], [], 0
    for i in order:
        n = max(longest, int(lengths[i]), 1)
        if cur and (len(cur) + 1 > batch or (len(cur) + 1) * n > tokens):
            chunks.append(np.array(cur))
            cur, n = [], max(int(lengths[i]), 1)
        cur.append(i)
        longest = n
    if cur:
        chunks.append(np.array(cur))
    if rng is not None:
        rng.shuffle(chunks)
    return chunks


def pad_left(seqs: list[np.ndarray], length: int | None = None) -> np.ndarray:
    width = max(max((len(s) for s in seqs), default=1), 1) if length is None else length
    out = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, width - len(s) :] = s
    return out
