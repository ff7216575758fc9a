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
against ALL items by the score after the user's training sequence; nothing is filtered
(repeat consumption is legitimate in some logs). HR@10 and NDCG@10 are averaged over
users; a popularity ranking gives the baseline beside them.

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
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SASRec(n_items, cfg, make_attn)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    usable = [s for s in sequences if len(s) >= 2]
    if not usable:
        raise ValueError("no sequence with 2 or more items to train on")
    lengths = np.array([min(len(s) - 1, cfg.max_len) for s in usable])
    full = n_items <= cfg.full_softmax_max_items
    losses: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        tot, cnt = 0.0, 0
        chunks = _batches(lengths, cfg.batch_size, rng)
        bar = tqdm(chunks, desc=f"sasrec epoch {epoch + 1}", disable=not progress, leave=False)
        for idx in bar:
            length = int(lengths[idx].max())
            inp = _pad_left([usable[u][:-1] for u in idx], length)
            tgt = _pad_left([usable[u][1:] for u in idx], length)
            real = tgt > 0
            h = model(inp)[real]  # [T, d]
            y = tgt[real] - 1
            table = model.item_table()
            if full:
                loss = F.cross_entropy(h @ table.T, y)
            else:
                neg = torch.from_numpy(rng.integers(0, n_items, cfg.negatives))
                pos_logit = (h * table[y]).sum(-1, keepdim=True)
                neg_logit = h @ table[neg].T
                neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], float("-inf"))
                loss = F.cross_entropy(torch.cat([pos_logit, neg_logit], 1), torch.zeros_like(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.item.weight[0].zero_()
            tot += float(loss.detach()) * len(y)
            cnt += len(y)
            bar.set_postfix(loss=f"{tot / max(cnt, 1):.3f}")
        losses.append(tot / max(cnt, 1))
        if on_epoch is not None:
            on_epoch(epoch, model, losses[-1])
            model.train()
        if time.perf_counter() - t0 > cfg.max_seconds:
            break
    model.eval()
    return model, losses


@torch.no_grad()
def evaluate(
    model: SASRec, sequences: list[np.ndarray], target: np.ndarray, k: int = 10, batch: int = 256
) -> dict[str, float]:
    """HR@k and NDCG@k of each user's held-out item, ranked against all items (no filtering)."""
    model.eval()
    users = np.flatnonzero((target >= 0) & np.array([len(s) > 0 for s in sequences]))
    hits = np.zeros(len(users))
    ndcg = np.zeros(len(users))
    table = model.item_table()
    lengths = np.array([min(len(sequences[u]), model.cfg.max_len) for u in users])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch):
        sel = order[start : start + batch]
        us = users[sel]
        length = int(lengths[sel].max())
        h = model(_pad_left([sequences[u] for u in us], length))[:, -1]
        scores = h @ table.T
        tgt = torch.from_numpy(target[us])
        pos = scores.gather(1, tgt[:, None])
        rank = (scores > pos).sum(1).numpy()  # 0-based rank, ties favour the target
        hits[sel] = rank < k
        ndcg[sel] = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return {
        f"hr@{k}": float(hits.mean()),
        f"ndcg@{k}": float(ndcg.mean()),
        "eval_users": int(len(users)),
    }


def popularity_baseline(
    sequences: list[np.ndarray], target: np.ndarray, n_items: int, k: int = 10
) -> dict[str, float]:
    """HR@k / NDCG@k of ranking every user's held-out item by training popularity."""
    counts = np.bincount(
        np.concatenate([s for s in sequences if len(s)]), minlength=n_items
    ).astype(np.float64)
    users = np.flatnonzero(target >= 0)
    srt = np.sort(counts)
    rank = n_items - np.searchsorted(
        srt, counts[target[users]], side="right"
    )  # items strictly more popular
    return {
        f"pop_hr@{k}": float((rank < k).mean()),
        f"pop_ndcg@{k}": float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).mean()),
    }


def config_dict(cfg: SASRecConfig) -> dict[str, object]:
    return asdict(cfg)
