"""``python -m analysis quality --task target``: the target-attention CTR task
(analysis/target_task.py) trained with each attention method, one row per method x params
x seed, resumable through ``bench.store`` (a re-run with the same ``--out`` skips finished
rows; rows are appended with one fsync'd write each, so a killed run loses at most the row
in progress and duplicates nothing).

Every trained method gets the same preset (epochs, batches, negatives, learning rate, seed)
and is tested at its best validation-AUC epoch. ``pop`` scores a candidate by its training
popularity. A method whose operator refuses the run's shape (``check()``) is a row with
status ``unsupported`` and the reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from attention_impls import AttentionLayer
from attention_impls.base import Shape
from attention_impls.layer import lrea_init
from attention_impls.registry import get
from bench.env import cpu_model, git_commit, timestamp
from bench.quality_rows import deltas_vs_dense
from bench.store import LOG_NAME, append_row, dedupe, read_rows, write_table

from .mean_pool import MeanPool
from .target_data import EVAL_SEED, make_split
from .target_metrics import auc, gauc, ranked_hit_ndcg
from .target_task import EvalSet, K, TargetModel, TrainConfig, eval_set, evaluate, train

TASK = "target"
SVD = ("svd_exact", "svd_tokens")


@dataclass(frozen=True)
class TargetPreset:
    """A training budget, kept as data: the same for every method of a run."""

    dim: int
    hidden: int
    epochs: int
    batch_size: int
    batch_tokens: int
    lr: float
    dropout: float
    targets_per_user: int
    train_neg: int
    neg_eval: int
    neg: str  # uniform | pop, for training and evaluation negatives
    hist_cap: int | None  # None = whole history
    recency: bool
    max_users: int | None  # first users of the log only (None = all)
    min_len: int = 0  # users with at least this many items in the log only (0 = all)


_CPU = TargetPreset(
    dim=32, hidden=64, epochs=4, batch_size=128, batch_tokens=32768, lr=5e-3, dropout=0.1,
    targets_per_user=8, train_neg=4, neg_eval=100, neg="uniform", hist_cap=None,
    recency=True, max_users=None,
)  # fmt: skip

PRESETS: dict[str, TargetPreset] = {
    # seconds on a tiny slice (the tests run it)
    "smoke": TargetPreset(
        dim=16,
        hidden=32,
        epochs=6,
        batch_size=128,
        batch_tokens=8192,
        lr=1e-2,
        dropout=0.0,
        targets_per_user=16,
        train_neg=4,
        neg_eval=20,
        neg="uniform",
        hist_cap=50,
        recency=False,
        max_users=1000,
    ),
    # the committed CPU runs (results/quality/target-ml-1m/): one thread of a loaded 2-vCPU
    # VM, all of ML-1M, whole histories (up to 2,275 items), 4 epochs of 8 targets per user
    "cpu": _CPU,
    # the same with popularity-sampled negatives (training and evaluation): harder, popularity
    # alone no longer separates the positive
    "cpu-pop": replace(_CPU, neg="pop"),
    # ... and without the recency embedding on the keys (attention sees items only)
    "cpu-pop-norec": replace(_CPU, neg="pop", recency=False),
    # amazon-book (70,679 users, unordered sets: no recency; longest 4,474 items): 12x ML-1M's
    # users, so 2 targets per user per epoch keeps the step count near ML-1M's x 3
    "cpu-book": replace(_CPU, targets_per_user=2),
    # amazon-book's users with >= 20 items (its p90; 7,521 users, 357,562 items, about
    # ML-1M's size): half of all users have 7 items or fewer, where target attention and
    # mean pooling see nearly the same thing
    "cpu-book-long": replace(_CPU, min_len=20),
    "cpu-book-long-pop": replace(_CPU, min_len=20, neg="pop"),
    # ... trained 3x longer (the 4-epoch runs pick their last epoch: still rising): the
    # committed ranking setting, where dense beat mean pooling beyond the seed spread; and
    # the users with >= 50 items (1,823 users), which did not learn at this budget
    "cpu-book-long-pop-e12": replace(_CPU, min_len=20, neg="pop", epochs=12),
    "cpu-book-50-pop": replace(_CPU, min_len=50, neg="pop"),
    # the latest items only, for every method: LREA's positional projection then spans n =
    # the cap instead of the longest user (2,275 / 4,474 slots, where a median history of
    # 96 / 31 items falls into one or two of its r = 16 segments); the caps are about ML-1M's
    # p75 and amazon-book's long users' p95
    "cpu-pop-cap200": replace(_CPU, neg="pop", hist_cap=200),
    "cpu-book-long-pop-e12-cap128": replace(_CPU, min_len=20, neg="pop", epochs=12, hist_cap=128),
}

TARGET_COLUMNS = [
    "case_id", "task", "dataset", "method", "params", "seed", "preset", "status", "reason",
    "auc", "gauc", f"hr@{K}", f"ndcg@{K}", "val_auc", "best_epoch", "epochs", "steps",
    "train_s", "train_cpu_s", "s_per_step", "eval_s", "val_eval_s", "final_loss",
    "eval_users", "val_users", "users", "items", "max_hist", "hist_cap", "min_len", "neg", "neg_eval",
    "train_neg", "targets_per_user", "dim", "recency", "ordered",
    "git_commit", "machine", "torch", "threads", "timestamp",
]  # fmt: skip


def preset_named(name: str) -> TargetPreset:
    """The target preset called ``name``; a ValueError listing the presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown target preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


def case_id(dataset: str, method: str, params: dict[str, Any], seed: int, preset: str) -> str:
    return f"{TASK}|{dataset}|{method}|{json.dumps(params, sort_keys=True)}|seed={seed}|{preset}"


def layer_for(
    method: str, params: dict[str, Any], n: int, m: int, dim: int
) -> tuple[Any, dict[str, Any], str]:
    """(factory or None, the row's params, reason the operator refuses or '').

    SVD methods train through the fp64 Gram (the backward the operators support below full
    rank), so their solver defaults to ``gram_fp64`` here; LREA gets ``n`` = the longest
    history of the run and ``init`` (the start of its learned projection, ``AttentionLayer``;
    ``segments`` unless the spec says ``init=random``), both recorded in the row's params."""
    if method == "mean_pool":
        if params:
            raise ValueError(f"mean_pool takes no parameters, got {params}")
        return MeanPool, {}, ""
    extra: dict[str, Any] = {}
    if method == "lrea":
        params = dict(params)
        extra = {"n": n, "init": lrea_init(params.pop("init", None))}
    given = ({"solver": "gram_fp64"} if method in SVD else {}) | params
    op = get(method, **given)  # unknown method / bad params: ValueError here
    full = extra | op.params
    reasons = op.check(Shape(1, 1, n, m, dim, dim, causal=False))
    if method in SVD and full.get("solver") not in ("gram", "gram_fp64"):
        reasons.append(
            f"{method}: solver {full.get('solver')!r} has no stable backward on K, V; "
            "training needs solver gram or gram_fp64"
        )
    if reasons:
        return None, full, "; ".join(reasons)
    return (lambda: AttentionLayer(method, **extra, **given)), full, ""


def _pop_metrics(split: Any, es: EvalSet) -> dict[str, float]:
    cands = np.concatenate([es.pos[:, None], es.negs], 1)
    s = split.popularity[cands]
    labels = np.zeros(cands.shape, dtype=bool)
    labels[:, 0] = True
    hr, ndcg = ranked_hit_ndcg(s[:, 0], s[:, 1:], k=K)
    users = np.repeat(np.arange(len(es.pos)), cands.shape[1])
    return {
        "auc": auc(labels.ravel(), s.ravel()),
        "gauc": gauc(labels.ravel(), s.ravel(), users),
        f"hr@{K}": hr,
        f"ndcg@{K}": ndcg,
    }


def prepare_run(data: Any, p: TargetPreset) -> tuple[list, Any, EvalSet, EvalSet, int, bool]:
    """(sequences, split, validation set, test set, longest history, recency on) of a preset:
    the same for every method and seed of a run, and for the swap that re-evaluates it."""
    seqs, held = list(data.sequences), data.held_out
    if p.max_users is not None:
        seqs = seqs[: p.max_users]
        held = None if held is None else held[: p.max_users]
    if p.min_len:
        keep = [
            i
            for i, s in enumerate(seqs)
            if len(s) + (held is not None and held[i] >= 0) >= p.min_len
        ]
        if not keep:
            raise ValueError(f"no user has {p.min_len} or more items: preset min_len = {p.min_len}")
        seqs = [seqs[i] for i in keep]
        held = None if held is None else held[keep]
    split = make_split(seqs, held, data.n_items, data.time_ordered)
    rng = np.random.default_rng(EVAL_SEED)  # the same candidates for every method and seed
    val = eval_set(split, "val", p.neg_eval, p.hist_cap, p.neg, rng)
    test = eval_set(split, "test", p.neg_eval, p.hist_cap, p.neg, rng)
    max_hist = max(max(len(h) for h in test.hists), max(len(h) for h in val.hists))
    return seqs, split, val, test, max_hist, p.recency and data.time_ordered


def run_target_quality(
    data: Any,
    methods: list[tuple[str, dict[str, Any]]],
    seeds: list[int],
    preset_name: str,
    out: str | Path,
    progress: bool = True,
) -> pd.DataFrame:
    """Train and evaluate every (method, seed) not already in ``out``; returns the table."""
    p = preset_named(preset_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG_NAME
    seqs, split, val, test, max_hist, recency = prepare_run(data, p)
    done = {r["case_id"] for r in read_rows(log) if r.get("status") in ("ok", "unsupported")}
    cases = [(m, q, s) for s in seeds for m, q in methods]  # seed-major: a cut run keeps seeds
    bar = tqdm(cases, desc="target", disable=not progress)
    for method, params, seed in bar:
        if method == "pop":
            factory, full, reason = None, dict(params), ""
        else:
            factory, full, reason = layer_for(method, params, max_hist, p.neg_eval + 1, p.dim)
        cid = case_id(data.name, method, full, seed, preset_name)
        if cid in done:
            continue
        bar.set_postfix(method=method, seed=seed)
        row: dict[str, Any] = {
            "case_id": cid, "task": TASK, "dataset": data.name, "method": method,
            "params": json.dumps(full, sort_keys=True), "seed": seed, "preset": preset_name,
            "users": len(seqs), "items": data.n_items, "max_hist": max_hist,
            "hist_cap": p.hist_cap, "min_len": p.min_len, "neg": p.neg, "neg_eval": p.neg_eval,
            "train_neg": p.train_neg, "targets_per_user": p.targets_per_user, "dim": p.dim,
            "recency": recency, "ordered": data.time_ordered,
            "eval_users": len(test.pos), "val_users": len(val.pos),
            "git_commit": git_commit(), "machine": cpu_model(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "timestamp": timestamp(),
        }  # fmt: skip
        if method == "pop":
            t = time.perf_counter()
            m = _pop_metrics(split, test)
            row.update(status="ok", reason="", epochs=0, steps=0, train_s=0.0, **m)
            row.update(val_auc=_pop_metrics(split, val)["auc"], eval_s=time.perf_counter() - t)
        elif factory is None:
            row.update(status="unsupported", reason=reason)
        else:
            row.update(
                status="ok",
                reason="",
                **_train_eval(
                    factory,
                    split,
                    val,
                    test,
                    p,
                    seed,
                    recency,
                    max_hist,
                    method,
                    full,
                    data.n_items,
                    bar if progress else None,
                ),
            )
        append_row(log, row)
        write_tables(out)  # after every row: a killed run leaves current tables
    return write_tables(out)


def write_tables(out: str | Path) -> pd.DataFrame:
    """``results.csv`` and (when a row is ok) ``summary.csv`` from the log."""
    df = write_target_table(out)
    if (df["status"] == "ok").any():
        write_table(target_summary(df), out, name="summary.csv", parquet=False)
    return df


def fit_model(
    factory: Any, split: Any, val: EvalSet, p: TargetPreset, seed: int, recency: bool,
    max_hist: int, method: str, full: dict[str, Any], n_items: int, bar: Any = None,
) -> tuple[TargetModel, TrainConfig, dict[str, Any]]:  # fmt: skip
    """Train one (method, seed) of a preset; deterministic on CPU (the swap retrains dense)."""
    cfg = TrainConfig(
        **{k: v for k, v in asdict(p).items() if k in TrainConfig.__dataclass_fields__ and k != "recency"},
        recency=recency, seed=seed,
    )  # fmt: skip
    torch.manual_seed(seed)
    pad_to = int(full.get("rank", 1)) if method in SVD or method == "lrea" else 1
    model = TargetModel(n_items, cfg, factory(), pad_to=pad_to)

    def report(epoch: int, loss: float, val_auc: float) -> None:
        if bar is not None:
            bar.set_postfix(method=method, seed=seed, epoch=epoch, loss=f"{loss:.4f}",
                            val_auc=f"{val_auc:.4f}")  # fmt: skip

    return model, cfg, train(model, split, val, cfg, report)


def _train_eval(
    factory: Any, split: Any, val: EvalSet, test: EvalSet, p: TargetPreset, seed: int,
    recency: bool, max_hist: int, method: str, full: dict[str, Any], n_items: int, bar: Any,
) -> dict[str, Any]:  # fmt: skip
    model, cfg, res = fit_model(
        factory, split, val, p, seed, recency, max_hist, method, full, n_items, bar
    )
    t = time.perf_counter()
    res |= evaluate(model, test.hists, test.pos, test.negs, cfg)
    res["eval_s"] = time.perf_counter() - t
    return res


def write_target_table(out: str | Path) -> pd.DataFrame:
    """``results.csv`` from the log (one row per case_id, the latest), written atomically."""
    df = pd.DataFrame(dedupe(read_rows(Path(out) / LOG_NAME)))
    df = df.reindex(columns=TARGET_COLUMNS + [c for c in df.columns if c not in TARGET_COLUMNS])
    write_table(df, out, parquet=False)
    return df


METRICS = ("auc", "gauc", f"hr@{K}", f"ndcg@{K}")


def target_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds (sample std) per dataset x preset x method x params, the
    difference to dense of the same dataset and preset, and whether
    |Δ| > std(method) + std(dense) (None with a single seed: no spread)."""
    ok = df[df["status"] == "ok"]
    agg: dict[str, Any] = {"seeds": ("seed", "nunique")}
    for m in METRICS:
        agg[m] = (m, "mean")
        agg[f"{m}_std"] = (m, "std")
    agg |= {"best_epoch": ("best_epoch", "mean"), "s_per_step": ("s_per_step", "mean"),
            "train_cpu_s": ("train_cpu_s", "mean"),
            "cpu_s_per_step": ("cpu_s_per_step", "mean")}  # fmt: skip
    ok = ok.assign(cpu_s_per_step=ok["train_cpu_s"] / ok["steps"].where(ok["steps"] > 0))
    s = ok.groupby(["dataset", "preset", "method", "params"], sort=False).agg(**agg)
    s = s.reset_index()
    for m in METRICS:  # every Δ column, empty where a preset has no (single) dense row
        s[f"d_{m}"], s[f"d_{m}_beyond_spread"] = np.nan, None
    return deltas_vs_dense(s, ["dataset", "preset"], METRICS)


def target_summary_markdown(s: pd.DataFrame) -> str:
    """The summary as a markdown table (AUC, GAUC, HR@10, NDCG@10 with Δ vs dense)."""
    head = "| preset | method | seeds | AUC | GAUC | HR@10 | NDCG@10 | "
    head += (
        "ΔAUC vs dense (beyond spread?) | ΔNDCG@10 vs dense (beyond spread?) | train CPU s / step |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in s.iterrows():
        cells = [str(r["preset"]), str(r["method"]), str(r["seeds"])]
        cells += [f"{r[m]:.4f} ± {r[f'{m}_std']:.4f}" for m in METRICS]
        for m in ("auc", f"ndcg@{K}"):
            flag = {True: "yes", False: "no"}.get(r[f"d_{m}_beyond_spread"], "n/a")
            cells.append("-" if pd.isna(r[f"d_{m}"]) else f"{r[f'd_{m}']:+.4f} ({flag})")
        c = r["cpu_s_per_step"]
        cells.append(f"{c:.4f}" if pd.notna(c) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
