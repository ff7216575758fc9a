"""End-task quality (issue 16, self-attention next-item slice): SASRec trained with each
attention method as its core, ranked on held-out items, one tidy row per method x seed.

The model is ``analysis/sasrec.py``'s SASRec with each block's attention replaced by
``attention_impls.AttentionLayer(method, **params)`` called with ``causal=True`` (``dense``
goes through the same layer, so no method has attention dropout), ``mean_pool`` by causal
mean pooling over the prefix of real items, and ``pop`` is the popularity ranking. Every
trained method gets the same preset: same epochs, batch, learning rate, seed, hence the same
optimizer steps. A method whose operator has no causal form (``check`` says why) becomes a
row with status ``unsupported`` and that reason.

Split (leave-one-out): test item = the data's held-out item when it has one, else each
user's last item; validation item = the last item of the remaining training sequence, which
the model then never trains on. The test ranking reads the training sequence including the
validation item. Metrics as ``sasrec.evaluate``: full ranking over all items, nothing
filtered, HR@10 / NDCG@10. The epoch with the best validation NDCG@10 is the one tested
(a fixed step budget, model selection on validation, not early stopping).

Rows go through ``bench.store`` (append-only ``rows.jsonl``, fsync per row; ``results.csv``
rewritten atomically), keyed by ``case_id``: a re-run with the same ``--out`` skips
finished rows.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from attention_impls import AttentionLayer
from attention_impls.base import Shape
from bench.env import cpu_model, git_commit, timestamp
from bench.store import LOG_NAME, append_row, dedupe, read_rows, write_table

from .sasrec import SASRecConfig, evaluate, popularity_baseline, split_for_training, train_sasrec

TASK = "seqrec"
BASELINES = ("mean_pool", "pop")
K = 10


@dataclass(frozen=True)
class Preset:
    """A training budget, kept as data: the same for every method of a run."""

    dim: int
    max_len: int
    blocks: int
    epochs: int
    batch_size: int
    lr: float
    dropout: float
    max_users: int | None  # first users of the log only (None = all)


PRESETS: dict[str, Preset] = {
    # seconds: a few hundred users, a tiny model, 2 epochs (the test runs it)
    "smoke": Preset(
        dim=16, max_len=20, blocks=1, epochs=2, batch_size=32, lr=2e-3, dropout=0.2, max_users=150
    ),
    # the committed CPU run (results/quality/): sized to finish on a loaded 2-vCPU VM
    "cpu": Preset(
        dim=64,
        max_len=100,
        blocks=2,
        epochs=30,
        batch_size=64,
        lr=2e-3,
        dropout=0.2,
        max_users=None,
    ),
}

QUALITY_COLUMNS = [
    "case_id",
    "task",
    "dataset",
    "method",
    "params",
    "seed",
    "preset",
    "status",
    "reason",
    f"hr@{K}",
    f"ndcg@{K}",
    f"val_hr@{K}",
    f"val_ndcg@{K}",
    "best_epoch",
    "epochs",
    "steps",
    "train_s",
    "train_cpu_s",
    "s_per_step",
    "eval_s",
    "val_eval_s",
    "final_loss",
    "eval_users",
    "val_users",
    "users",
    "items",
    "dim",
    "max_len",
    "blocks",
    "batch_size",
    "lr",
    "dropout",
    "git_commit",
    "machine",
    "torch",
    "threads",
    "timestamp",
]


class CausalMeanPool(nn.Module):
    """The attention-free baseline: row i = mean of v over the real positions <= i (q, k unused)."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        if not causal:
            raise ValueError("CausalMeanPool is the causal baseline; causal=False is not defined")
        w = (
            torch.ones_like(v[..., :1])
            if key_mask is None
            else key_mask[:, None, :, None].to(v.dtype)
        )
        return torch.cumsum(v * w, dim=2) / torch.cumsum(w, dim=2).clamp_min(1.0)


def parse_methods(spec: str | list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``dense,linrec,performer:features=128`` -> [(method, params)]; values parsed as JSON
    where they parse (numbers, true/false), else kept as strings."""
    items = spec if isinstance(spec, list) else [s for s in spec.split(",")]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, _, rest = item.partition(":")
        params: dict[str, Any] = {}
        for kv in filter(None, rest.split(":")):
            key, eq, val = kv.partition("=")
            if not eq or not key:
                raise ValueError(f"--methods: {kv!r} in {item!r} is not key=value")
            try:
                params[key] = json.loads(val)
            except json.JSONDecodeError:
                params[key] = val
        out.append((name, params))
    if not out:
        raise ValueError("--methods is empty")
    return out


def config_for(preset: Preset, seed: int) -> SASRecConfig:
    return replace(
        SASRecConfig(),
        dim=preset.dim,
        max_len=preset.max_len,
        blocks=preset.blocks,
        dropout=preset.dropout,
        lr=preset.lr,
        batch_size=preset.batch_size,
        epochs=preset.epochs,
        max_seconds=math.inf,
        seed=seed,
    )


def attention_factory(
    method: str, params: dict[str, Any], cfg: SASRecConfig
) -> tuple[Any, dict[str, Any], str]:
    """(factory or None, the layer's full parameters, reason it cannot run causally or '')."""
    if method == "mean_pool":
        if params:
            raise ValueError(f"mean_pool takes no parameters, got {params}")
        return CausalMeanPool, {}, ""
    extra = {"n": cfg.max_len} if method == "lrea" else {}
    layer = AttentionLayer(method, **extra, **params)  # unknown method/params: ValueError here
    shape = Shape(1, 1, cfg.max_len, cfg.max_len, cfg.dim, cfg.dim, causal=True)
    reasons = layer.op.check(shape)
    full = layer.params
    if reasons:
        return None, full, "; ".join(reasons)
    return (lambda: AttentionLayer(method, **extra, **params)), full, ""


def splits(
    sequences: list[np.ndarray], held_out: np.ndarray | None
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """(fit sequences, validation item, test input sequences, test item); -1 = no item."""
    test_in, test_target = split_for_training(sequences, held_out)
    fit, val_target = [], np.full(len(test_in), -1, dtype=np.int64)
    for u, s in enumerate(test_in):
        if len(s) >= 3:
            fit.append(s[:-1])
            val_target[u] = s[-1]
        else:
            fit.append(s)
    return fit, val_target, test_in, test_target


def case_id(dataset: str, method: str, params: dict[str, Any], seed: int, preset: str) -> str:
    return f"{TASK}|{dataset}|{method}|{json.dumps(params, sort_keys=True)}|seed={seed}|{preset}"


def _train_one(
    make_attn: Any,
    fit: list[np.ndarray],
    val_target: np.ndarray,
    test_in: list[np.ndarray],
    test_target: np.ndarray,
    n_items: int,
    cfg: SASRecConfig,
    progress: bool,
) -> dict[str, Any]:
    best: dict[str, Any] = {"ndcg": -1.0, "state": None, "epoch": -1, "hr": float("nan")}
    val_s = [0.0, 0.0]  # wall, thread CPU of the validation passes (kept out of train_*)

    def on_epoch(epoch: int, model: Any, loss: float) -> None:
        t, c = time.perf_counter(), time.thread_time()
        m = evaluate(model, fit, val_target, k=K)
        if m[f"ndcg@{K}"] > best["ndcg"]:
            best.update(
                ndcg=m[f"ndcg@{K}"],
                hr=m[f"hr@{K}"],
                epoch=epoch + 1,
                state=copy.deepcopy(model.state_dict()),
                users=m["eval_users"],
            )
        val_s[0] += time.perf_counter() - t
        val_s[1] += time.thread_time() - c

    usable = sum(len(s) >= 2 for s in fit)
    steps_per_epoch = math.ceil(usable / cfg.batch_size)
    t0, c0 = time.perf_counter(), time.thread_time()
    model, losses = train_sasrec(
        fit, n_items, cfg, progress=progress, on_epoch=on_epoch, make_attn=make_attn
    )
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    model.load_state_dict(best["state"])
    model.eval()
    t = time.perf_counter()
    test = evaluate(model, test_in, test_target, k=K)
    eval_s = time.perf_counter() - t
    steps = steps_per_epoch * len(losses)
    train_s = wall - val_s[0]
    return {
        f"hr@{K}": test[f"hr@{K}"],
        f"ndcg@{K}": test[f"ndcg@{K}"],
        f"val_hr@{K}": best["hr"],
        f"val_ndcg@{K}": best["ndcg"],
        "best_epoch": best["epoch"],
        "epochs": len(losses),
        "steps": steps,
        "train_s": train_s,
        "train_cpu_s": cpu - val_s[1],
        "s_per_step": train_s / max(steps, 1),
        "eval_s": eval_s,
        "val_eval_s": val_s[0],
        "final_loss": losses[-1],
        "eval_users": test["eval_users"],
        "val_users": best.get("users"),
    }


def run_quality(
    data: Any,
    methods: list[tuple[str, dict[str, Any]]],
    seeds: list[int],
    preset_name: str,
    out: str | Path,
    progress: bool = True,
) -> pd.DataFrame:
    """Train and evaluate every (method, seed) not already in ``out``; returns the table."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG_NAME
    sequences, held = data.sequences, data.held_out
    if preset.max_users is not None:
        sequences = sequences[: preset.max_users]
        held = None if held is None else held[: preset.max_users]
    fit, val_target, test_in, test_target = splits(list(sequences), held)
    done = {r["case_id"] for r in read_rows(log) if r.get("status") in ("ok", "unsupported")}
    cases = [
        (m, p, s) for s in seeds for m, p in methods
    ]  # seed-major: a cut run keeps whole seeds
    bar = tqdm(cases, desc="quality", disable=not progress)
    for method, params, seed in bar:
        cfg = config_for(preset, seed)
        if method == "pop":
            full: dict[str, Any] = dict(params)
            factory, reason = None, ""
        else:
            factory, full, reason = attention_factory(method, params, cfg)
        cid = case_id(data.name, method, full, seed, preset_name)
        if cid in done:
            continue
        bar.set_postfix(method=method, seed=seed)
        row: dict[str, Any] = {
            "case_id": cid,
            "task": TASK,
            "dataset": data.name,
            "method": method,
            "params": json.dumps(full, sort_keys=True),
            "seed": seed,
            "preset": preset_name,
            "users": len(sequences),
            "items": data.n_items,
            **{k: v for k, v in asdict(preset).items() if k != "max_users"},
            "git_commit": git_commit(),
            "machine": cpu_model(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "timestamp": timestamp(),
        }
        if method == "pop":
            t = time.perf_counter()
            test = popularity_baseline(test_in, test_target, data.n_items, k=K)
            val = popularity_baseline(fit, val_target, data.n_items, k=K)
            row.update(
                {
                    "status": "ok",
                    "reason": "",
                    f"hr@{K}": test[f"pop_hr@{K}"],
                    f"ndcg@{K}": test[f"pop_ndcg@{K}"],
                    f"val_hr@{K}": val[f"pop_hr@{K}"],
                    f"val_ndcg@{K}": val[f"pop_ndcg@{K}"],
                    "epochs": 0,
                    "steps": 0,
                    "train_s": 0.0,
                    "eval_s": time.perf_counter() - t,
                    "eval_users": int((test_target >= 0).sum()),
                    "val_users": int((val_target >= 0).sum()),
                }
            )
        elif factory is None:
            row.update({"status": "unsupported", "reason": reason})
        else:
            row.update(
                {
                    "status": "ok",
                    "reason": "",
                    **_train_one(
                        factory, fit, val_target, test_in, test_target, data.n_items, cfg, progress
                    ),
                }
            )
        append_row(log, row)
    df = write_quality_table(out)
    if (df["status"] == "ok").any():
        write_table(summary(df), out, name="summary.csv", parquet=False)
    return df


def write_quality_table(out: str | Path) -> pd.DataFrame:
    """``results.csv`` from the log (one row per case_id, the latest), written atomically."""
    rows = dedupe(read_rows(Path(out) / LOG_NAME))
    df = pd.DataFrame(rows)
    df = df.reindex(columns=QUALITY_COLUMNS + [c for c in df.columns if c not in QUALITY_COLUMNS])
    write_table(df, out, parquet=False)
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per method x params (sample std, ddof 1), the difference to dense,
    and whether it exceeds the seed spread: |mean - dense mean| > std(method) + std(dense)."""
    ok = df[df["status"] == "ok"]
    s = (
        ok.groupby(["method", "params"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            hr=(f"hr@{K}", "mean"),
            hr_std=(f"hr@{K}", "std"),
            ndcg=(f"ndcg@{K}", "mean"),
            ndcg_std=(f"ndcg@{K}", "std"),
            val_ndcg=(f"val_ndcg@{K}", "mean"),
            best_epoch=("best_epoch", "mean"),
            s_per_step=("s_per_step", "mean"),
            train_cpu_s=("train_cpu_s", "mean"),
        )
        .reset_index()
    )
    dense = s[s["method"] == "dense"]
    if len(dense) == 1:
        d = dense.iloc[0]
        for m in ("hr", "ndcg"):
            s[f"d_{m}"] = s[m] - d[m]
            beyond = s[f"d_{m}"].abs() > (s[f"{m}_std"] + d[f"{m}_std"])
            known = s[f"{m}_std"].notna() & pd.notna(d[f"{m}_std"])  # one seed: no spread
            s[f"d_{m}_beyond_spread"] = beyond.where(known, None)
    return s


def summary_markdown(s: pd.DataFrame) -> str:
    """The summary as a markdown table (what results/quality/README.md shows)."""
    has_d = "d_ndcg" in s.columns
    head = "| method | seeds | HR@10 | NDCG@10 | " + (
        "ΔHR@10 vs dense | ΔNDCG@10 vs dense | Δ beyond seed spread (HR / NDCG) | " if has_d else ""
    )
    head += "s / step | best epoch |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in s.iterrows():
        cells = [
            r["method"],
            str(r["seeds"]),
            f"{r['hr']:.4f} ± {r['hr_std']:.4f}",
            f"{r['ndcg']:.4f} ± {r['ndcg_std']:.4f}",
        ]
        if has_d:
            flag = {True: "yes", False: "no"}
            cells += [
                f"{r['d_hr']:+.4f}",
                f"{r['d_ndcg']:+.4f}",
                f"{flag.get(r['d_hr_beyond_spread'], 'n/a')} / "
                f"{flag.get(r['d_ndcg_beyond_spread'], 'n/a')}",
            ]
        cells += [
            f"{r['s_per_step']:.3f}" if pd.notna(r["s_per_step"]) else "-",
            f"{r['best_epoch']:.1f}" if pd.notna(r["best_epoch"]) else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
