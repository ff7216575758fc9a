"""The quality test that matters for ``svd_exact`` (issue 16, part 6): swap it at rank r into a
*trained* dense SASRec without retraining and measure the end-task change, beside the KL.

Where it is swapped: the last block's last position, i.e. the query that makes the user's
representation (the one every item is scored against) attending over the user's whole
history, which is SOLAR's serving pattern. Earlier positions and blocks stay dense: below
full rank ``svd_exact`` has no causal form (its subspace would mix later keys into earlier
rows), and only the last row of the last block reaches the scores. One decomposition per
batch at the largest rank; rank r uses its leading r triplets (``truncate_state``); a rank
at or above min(N, d_k + d_v) is exact. Per rank: HR/NDCG@10 as is and seen-filtered, the
paired difference to the dense model on the same users with a bootstrap 95 % interval over
users, and KL(dense || svd_exact) of that last query (nats, smoothing 1e-6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import attention_impls as ai

from .closing_loop import _kl_rows, truncate_state
from .sasrec import SASRec, eval_batches, hr_ndcg, ndcg_gain, target_ranks

RANKS = (1, 2, 4, 8, 16, 32, 64, 128)
K = 10


@torch.no_grad()
def _last_block_io(model: SASRec, seq: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(input x of the last block at the last position, its q_last, K, V, key mask)."""
    seen: dict[str, Any] = {}
    blk = model.blocks[-1]
    hook = blk.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0], real=args[2]))
    try:
        model(seq)
    finally:
        hook.remove()
    x, real = seen["x"], seen["real"]
    h = blk.ln1(x)
    q, k, v = (w(h).unsqueeze(1) for w in (blk.w_q, blk.w_k, blk.w_v))
    return x[:, -1], q[:, :, -1:], k, v, real


@torch.no_grad()
def _finish(model: SASRec, x_last: torch.Tensor, a_last: torch.Tensor) -> torch.Tensor:
    """The rest of the last block and the final norm for the last position (eval mode)."""
    blk = model.blocks[-1]
    y = x_last + blk.w_o(a_last)
    y = y + blk.ffn(blk.ln2(y))
    return model.ln(y)


@torch.no_grad()
def swap_ranks(
    model: SASRec,
    sequences: list[np.ndarray],
    target: np.ndarray,
    ranks: tuple[int, ...] = RANKS,
    batch: int = 128,
    solver: str = "gram",
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Per user: 0-based target ranks for ``dense`` and each r (as is, ``f:`` filtered), and
    the KL of the swapped last query per r."""
    model.eval()
    users, batches = eval_batches(model, sequences, target, batch)
    names = ["dense", *[f"r{r}" for r in ranks]]
    out = {f"{p}{n}": np.zeros(len(users)) for n in names for p in ("", "f:")}
    kl = {r: np.zeros(len(users)) for r in ranks}
    dense = ai.get("dense")
    table = model.item_table()
    ops: dict[int, Any] = {}
    for sel, us, seq in batches:
        x_last, q, k, v, real = _last_block_io(model, seq)
        tgt = torch.from_numpy(target[us]).to(seq.device)
        seen = [sequences[u] for u in us]
        p = dense.implied_weights(dense.prepare(k, v, real), q)[:, 0, 0]
        top = min(max(ranks), k.shape[2], k.shape[3] + v.shape[3])
        op = ops.setdefault(top, ai.get("svd_exact", rank=top, solver=solver))
        state = op.prepare(k, v, real)
        for name in names:
            if name == "dense":
                a = dense(q, k, v, key_mask=real)
            else:
                r = int(name[1:])
                st = truncate_state(state, min(r, state.rank))
                a = op.attend(st, q)
                w = op.implied_weights(st, q)[:, 0, 0]
                kl[r][sel] = _kl_rows(p, w).cpu().numpy()
            scores = _finish(model, x_last, a[:, 0, 0]) @ table.T
            rank, rank_f = target_ranks(scores, tgt, seen)
            out[name][sel], out[f"f:{name}"][sel] = rank, rank_f
    return out, kl


def swap_table(
    ranks_by: dict[str, np.ndarray],
    kl: dict[int, np.ndarray],
    boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per rank: metrics, paired ΔNDCG@10 to dense with a bootstrap 95 % interval
    over users (the same users resampled for both), KL mean / median / p90."""
    rng = np.random.default_rng(seed)
    n = len(ranks_by["dense"])
    idx = rng.integers(0, n, size=(boot, n))
    rows = []
    for r in sorted(kl):
        row: dict[str, Any] = {"rank": r}
        for suf, pre in (("", ""), ("_filtered", "f:")):
            m = hr_ndcg(ranks_by[f"{pre}r{r}"], K, suf)
            d = hr_ndcg(ranks_by[f"{pre}dense"], K, suf)
            diff = ndcg_gain(ranks_by[f"{pre}r{r}"], K) - ndcg_gain(ranks_by[f"{pre}dense"], K)
            lo, hi = np.quantile(diff[idx].mean(1), [0.025, 0.975])
            row.update(m)
            row[f"dense_ndcg@{K}{suf}"] = d[f"ndcg@{K}{suf}"]
            row[f"d_ndcg@{K}{suf}"] = float(diff.mean())
            row[f"d_ndcg@{K}{suf}_lo"], row[f"d_ndcg@{K}{suf}_hi"] = float(lo), float(hi)
        row["kl_mean"] = float(kl[r].mean())
        row["kl_median"] = float(np.median(kl[r]))
        row["kl_p90"] = float(np.quantile(kl[r], 0.9))
        row["users"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def rank_for_budget(table: pd.DataFrame, budget: float, col: str = "d_ndcg@10_filtered") -> Any:
    """The smallest rank whose whole ΔNDCG interval lies above -budget (None if none)."""
    ok = table[table[f"{col}_lo"] >= -budget]
    return int(ok["rank"].min()) if len(ok) else None


def load_trained(model_path: str | Path, row: pd.Series, n_items: int) -> SASRec:
    """A dense SASRec from ``analysis quality``'s saved best state and its result row."""
    from .quality import PRESETS, attention_factory, config_for

    cfg = config_for(PRESETS[row["preset"]], int(row["seed"]))
    make, _, reason = attention_factory("dense", {}, cfg)
    if make is None:
        raise ValueError(reason)
    model = SASRec(n_items, cfg, make)
    state = torch.load(model_path, weights_only=True, map_location="cpu")["model"]
    model.load_state_dict(state)
    return model.eval()


def markdown(table: pd.DataFrame) -> str:
    head = (
        "| rank r | NDCG@10 (filtered) | ΔNDCG@10 vs dense [95 % CI] | HR@10 (filtered) "
        "| KL mean | KL median |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['rank']} | {r['ndcg@10_filtered']:.4f} | {r['d_ndcg@10_filtered']:+.4f} "
            f"[{r['d_ndcg@10_filtered_lo']:+.4f}, {r['d_ndcg@10_filtered_hi']:+.4f}] | "
            f"{r['hr@10_filtered']:.4f} | {r['kl_mean']:.3g} | {r['kl_median']:.3g} |"
        )
    return "\n".join(lines)


def run_swap(
    quality_dir: str | Path,
    data: Any,
    ranks: tuple[int, ...] = RANKS,
    seeds: list[int] | None = None,
) -> pd.DataFrame:
    """For every finished dense run in ``quality_dir`` (or the given seeds): the swap table on
    its test users, written to ``swap.csv`` there (atomically); returns all rows."""
    from bench.store import write_table

    from .quality import PRESETS, make_split

    qdir = Path(quality_dir)
    res = qdir / "results.csv"
    if not res.exists():
        raise ValueError(f"{qdir}: no results.csv; train first with `python -m analysis quality`")
    df = pd.read_csv(res)
    need = {"method", "status", "seed", "preset", "dataset", "model_file"}
    if missing := need - set(df.columns):
        raise ValueError(f"{res}: not an `analysis quality` table (lacks {sorted(missing)})")
    runs = df[(df["method"] == "dense") & (df["status"] == "ok") & df["model_file"].notna()]
    runs = runs[runs["dataset"] == data.name]
    if seeds is not None:
        runs = runs[runs["seed"].isin(seeds)]
    if runs.empty:
        raise ValueError(f"{res}: no finished dense run on {data.name} with a saved model")
    if bad := [r for r in ranks if r < 1]:
        raise ValueError(f"--ranks must be positive ints, got {bad}")
    tables = []
    for _, row in runs.iterrows():
        split = make_split(data, PRESETS[row["preset"]].max_users)
        model = load_trained(qdir / "models" / row["model_file"], row, data.n_items)
        by, kl = swap_ranks(model, split.test_in, split.test_target, ranks)
        t = swap_table(by, kl)
        t.insert(0, "seed", int(row["seed"]))
        t.insert(0, "dataset", data.name)
        t.insert(2, "model_file", row["model_file"])
        tables.append(t)
    out = pd.concat(tables, ignore_index=True)
    write_table(out, qdir, name="swap.csv", parquet=False)
    return out
