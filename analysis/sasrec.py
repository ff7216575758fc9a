"""Route (b): a small SASRec-style next-item model trained on the log, on CPU, in minutes.

Architecture (Kang & McAuley 2018, pre-LN variant): item embedding (index 0 = padding)
scaled by sqrt(d) plus a learned position embedding over the last ``max_len`` items
(left-padded, right-aligned), ``blocks`` single-head causal self-attention blocks with
explicit bias-free W_q, W_k, W_v, W_o and a GELU feed-forward, dropout, final LayerNorm;
scores are dot products with the item table (tied). Loss: full softmax cross-entropy over
all items when there are at most ``full_softmax_max_items`` items, otherwise sampled
softmax against ``negatives`` shared uniform negatives per batch. Seeded; bounded by
``epochs`` and ``max_seconds``.

Evaluation: each user's held-out last item (from a test split when the data has one,
otherwise the last item of the sequence, which the model never trains on) is ranked
against ALL items by the score after the user's training sequence, once as is (repeat
consumption is legitimate in some logs) and once with the user's seen items removed
(gSASRec's protocol). HR@10 and NDCG@10 are averaged over users; a popularity ranking gives
the baseline beside them. ``Trainer`` checkpoints and resumes between epochs.

For the spectra and the KL: X = what the first attention block sees for each item,
LN1(sqrt(d) e_i) (the learned item table scaled and LayerNormed as in the forward pass; the
position term is left out because it belongs to a slot, not to an item), and
K_u = X_u W_k, V_u = X_u W_v, Q = X_cand W_q with the first block's W_* (row-vector
convention). The raw item table is cached too (``item_raw``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 64
    max_len: int = 200
    blocks: int = 2
    dropout: float = 0.2
    lr: float = 2e-3
    batch_size: int = 32
    epochs: int = 20
    max_seconds: float = 240.0
    negatives: int = 1024
    full_softmax_max_items: int = 5000
    seed: int = 0


class Block(nn.Module):
    """Pre-LN block. ``attn``: None = torch SDPA with attention dropout (the original core);
    otherwise a module ``attn(q, k, v, key_mask=..., causal=True)`` on [B, 1, L, d] (e.g.
    ``attention_impls.AttentionLayer``), used without attention dropout (analysis/quality.py)."""

    def __init__(self, dim: int, dropout: float, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.attn = attn
        self.ln1 = nn.LayerNorm(dim)
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.w_o = nn.Linear(dim, dim, bias=False)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        q, k, v = (w(h).unsqueeze(1) for w in (self.w_q, self.w_k, self.w_v))  # [B,1,L,d]
        if self.attn is not None:
            a = self.attn(q, k, v, key_mask=real, causal=True)
        else:
            a = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0
            )
        x = x + self.drop(self.w_o(a.squeeze(1)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    def __init__(
        self, n_items: int, cfg: SASRecConfig, make_attn: Callable[[], nn.Module] | None = None
    ) -> None:
        """``make_attn``: builds each block's attention core (None = SDPA, see ``Block``)."""
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.dropout, None if make_attn is None else make_attn())
            for _ in range(cfg.blocks)
        )
        self.ln = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.item.weight, std=cfg.dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] of item index + 1 (0 = left padding) -> hidden states [B, L, d]."""
        b, length = seq.shape
        real = seq > 0
        pos = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=seq.device)
        x = self.item(seq) * math.sqrt(self.cfg.dim) + self.pos(pos)[None]
        x = self.drop(x) * real[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = (causal[None] & real[:, None, :]) | eye[None]  # padded queries see themselves only
        for blk in self.blocks:
            x = blk(x, mask[:, None], real)
        return self.ln(x)

    def item_table(self) -> torch.Tensor:
        return self.item.weight[1:]

    @torch.no_grad()
    def first_block_input(self) -> torch.Tensor:
        """What the first attention block sees for each item, without the position term:
        LN1(sqrt(d) * e_i). Rows of K are these times W_k (the scale matters for the KL)."""
        return self.blocks[0].ln1(self.item_table() * math.sqrt(self.cfg.dim))

    @torch.no_grad()
    def weights(self) -> dict[str, np.ndarray]:
        """First-block item inputs and projections, row-vector convention (K = item @ w_k)."""
        b0 = self.blocks[0]
        return {
            "item": self.first_block_input().numpy().astype(np.float32),
            "item_raw": self.item_table().numpy().astype(np.float32),
            "w_q": b0.w_q.weight.T.numpy().astype(np.float32),
            "w_k": b0.w_k.weight.T.numpy().astype(np.float32),
            "w_v": b0.w_v.weight.T.numpy().astype(np.float32),
        }


def split_for_training(
    sequences: list[np.ndarray], held_out: np.ndarray | None
) -> tuple[list[np.ndarray], np.ndarray]:
    """(training sequences, held-out item per user or -1). Without a test split: leave the last item out."""
    if held_out is not None:
        return list(sequences), np.asarray(held_out, dtype=np.int64)
    train, target = [], np.full(len(sequences), -1, dtype=np.int64)
    for u, s in enumerate(sequences):
        if len(s) >= 3:
            train.append(s[:-1])
            target[u] = s[-1]
        else:
            train.append(s)
    return train, target


def _batches(lengths: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Users sorted by length in chunks (little padding), chunks in random order."""
    order = np.argsort(lengths + rng.random(len(lengths)), kind="stable")
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(chunks)
    return chunks


def _pad_left(seqs: list[np.ndarray], length: int) -> torch.Tensor:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for j, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[j, length - len(s) :] = s + 1
    return torch.from_numpy(out)


class Trainer:
    """SASRec training one epoch at a time, with its whole state (model, optimizer, both RNGs,
    losses) as a ``state_dict`` of tensors and plain values, so a run checkpointed after any
    epoch resumes to exactly the run that was never interrupted (one thread, same device)."""

    def __init__(
        self,
        sequences: list[np.ndarray],
        n_items: int,
        cfg: SASRecConfig = SASRecConfig(),
        make_attn: Callable[[], nn.Module] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.cfg, self.n_items, self.device = cfg, n_items, torch.device(device)
        self.model = SASRec(n_items, cfg, make_attn).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        self.usable = [s for s in sequences if len(s) >= 2]
        if not self.usable:
            raise ValueError("no sequence with 2 or more items to train on")
        self.lengths = np.array([min(len(s) - 1, cfg.max_len) for s in self.usable])
        self.full = n_items <= cfg.full_softmax_max_items
        self.losses: list[float] = []

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.usable) / self.cfg.batch_size)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) item indices + 1 of users ``idx``, left-padded to their longest."""
        length = int(self.lengths[idx].max())
        inp = _pad_left([self.usable[u][:-1] for u in idx], length)
        tgt = _pad_left([self.usable[u][1:] for u in idx], length)
        return inp.to(self.device), tgt.to(self.device)

    def loss(self, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Next-item loss on every real position (full softmax CE, or sampled, see module doc)."""
        real = tgt > 0
        h = self.model(inp)[real]  # [T, d]
        y = tgt[real] - 1
        table = self.model.item_table()
        if self.full:
            return F.cross_entropy(h @ table.T, y)
        neg = torch.from_numpy(self.rng.integers(0, self.n_items, self.cfg.negatives))
        neg = neg.to(self.device)
        pos_logit = (h * table[y]).sum(-1, keepdim=True)
        neg_logit = (h @ table[neg].T).masked_fill(neg[None, :] == y[:, None], float("-inf"))
        return F.cross_entropy(torch.cat([pos_logit, neg_logit], 1), torch.zeros_like(y))

    def epoch(self, progress: bool = False) -> float:
        """One pass over every usable user; returns (and records) the mean loss per position."""
        self.model.train()
        tot, cnt = 0.0, 0
        chunks = _batches(self.lengths, self.cfg.batch_size, self.rng)
        desc = f"sasrec epoch {len(self.losses) + 1}"
        bar = tqdm(chunks, desc=desc, disable=not progress, leave=False)
        for idx in bar:
            inp, tgt = self.batch(idx)
            loss = self.loss(inp, tgt)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                self.model.item.weight[0].zero_()
            n = int((tgt > 0).sum())
            tot += float(loss.detach()) * n
            cnt += n
            bar.set_postfix(loss=f"{tot / max(cnt, 1):.3f}")
        self.losses.append(tot / max(cnt, 1))
        return self.losses[-1]

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "np_rng": self.rng.bit_generator.state,
            "losses": list(self.losses),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = state["np_rng"]
        self.losses = [float(x) for x in state["losses"]]


def train_sasrec(
    sequences: list[np.ndarray],
    n_items: int,
    cfg: SASRecConfig = SASRecConfig(),
    progress: bool = True,
    on_epoch: Callable[[int, SASRec, float], None] | None = None,
    make_attn: Callable[[], nn.Module] | None = None,
) -> tuple[SASRec, list[float]]:
    """Train on next-item prediction; returns the model (eval mode) and the mean loss per epoch.
    ``make_attn``: the attention core of each block (see ``SASRec``)."""
    trainer = Trainer(sequences, n_items, cfg, make_attn)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        loss = trainer.epoch(progress)
        if on_epoch is not None:
            on_epoch(epoch, trainer.model, loss)
        if time.perf_counter() - t0 > cfg.max_seconds:
            break
    trainer.model.eval()
    return trainer.model, trainer.losses


def eval_batches(
    model: SASRec, sequences: list[np.ndarray], target: np.ndarray, batch: int
) -> tuple[np.ndarray, Any]:
    """(users with a held-out item and a non-empty sequence, generator of (positions in that
    array, their users, their left-padded input on the model's device)), users sorted by
    length so a batch pads little."""
    device = next(model.parameters()).device
    users = np.flatnonzero((target >= 0) & np.array([len(s) > 0 for s in sequences]))
    lengths = np.array([min(len(sequences[u]), model.cfg.max_len) for u in users])
    order = np.argsort(lengths, kind="stable")

    def gen() -> Any:
        for start in range(0, len(order), batch):
            sel = order[start : start + batch]
            us = users[sel]
            seq = _pad_left([sequences[u] for u in us], int(lengths[sel].max())).to(device)
            yield sel, us, seq

    return users, gen()


@torch.no_grad()
def evaluate(
    model: SASRec, sequences: list[np.ndarray], target: np.ndarray, k: int = 10, batch: int = 256
) -> dict[str, float]:
    """HR@k and NDCG@k of each user's held-out item ranked against all items, twice: as is
    (``hr@k``) and with the items of the user's input sequence removed from the ranking
    (``hr@k_filtered``, gSASRec's protocol: a held-out item that was already seen is then a
    miss). Ties favour the target. With one held-out item per user, Recall@k = HR@k."""
    users, rank, rank_f = evaluate_ranks(model, sequences, target, batch)
    return {"eval_users": int(len(users)), **hr_ndcg(rank, k), **hr_ndcg(rank_f, k, "_filtered")}


@torch.no_grad()
def evaluate_ranks(
    model: SASRec, sequences: list[np.ndarray], target: np.ndarray, batch: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evaluated users, 0-based rank of each one's target, the same with seen items removed;
    inf = a miss), as ``evaluate`` computes them."""
    model.eval()
    users, batches = eval_batches(model, sequences, target, batch)
    rank = np.zeros(len(users))
    rank_f = np.zeros(len(users))
    table = model.item_table()
    for sel, us, seq in batches:
        scores = model(seq)[:, -1] @ table.T
        tgt = torch.from_numpy(target[us]).to(scores.device)
        rank[sel], rank_f[sel] = target_ranks(scores, tgt, [sequences[u] for u in us])
    return users, rank, rank_f


def target_ranks(
    scores: torch.Tensor, target: torch.Tensor, seen: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each row's target among all items (ties favour the target), as is and
    with the row's ``seen`` items removed; a seen target is removed too (rank = inf)."""
    pos = scores.gather(1, target[:, None])
    rank = (scores > pos).sum(1).cpu().numpy().astype(np.float64)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    rows = np.concatenate([np.full(len(s), j) for j, s in enumerate(seen)] + [np.empty(0, int)])
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen] + [np.empty(0, int)])
    dev = scores.device
    mask[torch.from_numpy(rows).long().to(dev), torch.from_numpy(cols).long().to(dev)] = True
    r = (scores.masked_fill(mask, float("-inf")) > pos).sum(1).double()
    r[mask.gather(1, target[:, None])[:, 0]] = float("inf")
    return rank, r.cpu().numpy()


def hr_ndcg(rank: np.ndarray, k: int, suffix: str = "") -> dict[str, float]:
    """HR@k and NDCG@k (one relevant item: 1 / log2(rank + 2) inside the top k) from 0-based
    ranks; inf = a miss. NaN when there are no ranks."""
    rank = np.asarray(rank, dtype=np.float64)
    if not len(rank):
        return {f"hr@{k}{suffix}": float("nan"), f"ndcg@{k}{suffix}": float("nan")}
    return {
        f"hr@{k}{suffix}": float((rank < k).mean()),
        f"ndcg@{k}{suffix}": float(ndcg_gain(rank, k).mean()),
    }


def ndcg_gain(rank: np.ndarray, k: int) -> np.ndarray:
    """Per row: 1 / log2(rank + 2) inside the top k (0-based rank), else 0; inf = a miss."""
    hit = rank < k
    return np.where(hit, 1.0 / np.log2(np.where(hit, rank, 0.0) + 2.0), 0.0)


def popularity_baseline(
    sequences: list[np.ndarray],
    target: np.ndarray,
    n_items: int,
    k: int = 10,
    counts_from: list[np.ndarray] | None = None,
) -> dict[str, float]:
    """HR@k / NDCG@k of ranking every user's held-out item by training popularity, as is and
    with the user's seen items removed (``pop_hr@k_filtered``; a seen target is a miss).
    Popularity counts ``counts_from`` (default: ``sequences``, the users' inputs)."""
    rank, rank_f = popularity_ranks(sequences, target, n_items, counts_from)
    return {
        f"pop_{key}": val
        for key, val in {**hr_ndcg(rank, k), **hr_ndcg(rank_f, k, "_filtered")}.items()
    }


def popularity_ranks(
    sequences: list[np.ndarray],
    target: np.ndarray,
    n_items: int,
    counts_from: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks of the users' held-out items (those with one) under the popularity
    ranking, as is and with each user's ``sequences`` items removed (inf = a seen target)."""
    src = sequences if counts_from is None else counts_from
    counts = np.bincount(
        np.concatenate([s for s in src if len(s)] + [np.empty(0, np.int64)]), minlength=n_items
    ).astype(np.float64)
    users = np.flatnonzero(target >= 0)
    srt = np.sort(counts)
    c_t = counts[target[users]]
    rank = n_items - np.searchsorted(srt, c_t, side="right")  # items strictly more popular
    rank_f = np.empty(len(users))
    for j, u in enumerate(users):
        seen = np.unique(sequences[u]) if u < len(sequences) else np.empty(0, np.int64)
        if np.isin(target[u], seen):
            rank_f[j] = np.inf
        else:
            rank_f[j] = rank[j] - int((counts[seen] > c_t[j]).sum())
    return rank.astype(np.float64), rank_f


def config_dict(cfg: SASRecConfig) -> dict[str, object]:
    return asdict(cfg)
