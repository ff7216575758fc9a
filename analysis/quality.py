"""End-task quality (issue 16, self-attention next-item slice): SASRec trained with each
attention method as its core, ranked on held-out items, one tidy row per method x seed.

The model is ``analysis/sasrec.py``'s SASRec with each block's attention replaced by
``attention_impls.AttentionLayer(method, **params)`` called with ``causal=True`` (``dense``
goes through the same layer, so no method has attention dropout), ``mean_pool`` by causal
mean pooling over the prefix of real items, and ``pop`` is the popularity ranking. Every
trained method gets the same preset: same epochs, batch, learning rate, seed, hence the same
optimizer steps. A method whose operator has no causal form (``check`` says why) becomes a
row with status ``unsupported`` and that reason.

Split: with a separate validation split (gSASRec's ML-1M ``val/``) the model trains on every
training line, validates on the validation users and tests each user's held-out item after
the training line (gSASRec's split; without its ``test/input.txt`` that item is two steps
ahead, so the ``anchor_*`` columns also score gSASRec's exact test input on the validation
users, see ``quality_anchor.py``). Otherwise leave-one-out: test item = the data's
held-out item when it has one, else each user's last item; validation item = the last item
of the remaining training sequence, which the model then never trains on. Metrics as
``sasrec.evaluate``: full ranking over all items, HR@10 / NDCG@10 as is and with seen items
removed (``_filtered``). The epoch with the best validation NDCG@10 (filtered under the
gSASRec protocol) is the one tested; a preset with ``patience`` stops after that many epochs
without a better one (early stopping).

Rows go through ``bench.store`` (append-only ``rows.jsonl``, fsync per row; ``results.csv``
rewritten atomically), keyed by ``case_id``: a re-run with the same ``--out`` skips
finished rows. Training checkpoints after every epoch (``checkpoints/``, written
atomically, read back with ``torch.load(weights_only=True)``), so a killed run resumes at its
last finished epoch; the best model of each finished run is kept in ``models/``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
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
from bench.quality_rows import config_label, deltas_vs_dense, params_of
from bench.store import LOG_NAME, _atomic_write, append_row, dedupe, read_rows, write_table

from .mean_pool import MeanPool
from .quality_anchor import (
    AnchorSet,
    anchor_columns,
    anchor_metrics,
    anchor_set,
    pop_anchor_metrics,
)
from .sasrec import (
    SASRecConfig,
    Trainer,
    evaluate,
    popularity_baseline,
    split_for_training,
)

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
    patience: int | None = None  # stop after this many epochs without a better validation


_CPU_ML1M = Preset(
    dim=64,
    max_len=200,
    blocks=2,
    epochs=30,
    batch_size=64,
    lr=2e-3,
    dropout=0.2,
    max_users=None,
    patience=4,
)

PRESETS: dict[str, Preset] = {
    # seconds: a few hundred users, a tiny model, 2 epochs (the test runs it)
    "smoke": Preset(
        dim=16, max_len=20, blocks=1, epochs=2, batch_size=32, lr=2e-3, dropout=0.2, max_users=150
    ),
    # the committed CPU run (results/quality/): sized to finish on a loaded 2-vCPU VM
    "cpu": replace(_CPU_ML1M, max_len=100, patience=None),
    # ML-1M at the anchor's length (200) on a 2-core CPU: the committed ml-1m runs
    "cpu-ml1m": _CPU_ML1M,
    # cpu-ml1m trained to convergence (dense was still improving at epoch 30): resumable per
    # epoch, so a run cut off by a session's end continues where it stopped
    "cpu-ml1m-long": replace(_CPU_ML1M, epochs=120, patience=10),
    # cpu-ml1m-long with gSASRec's SASRec dropout (0.5, its config_ml1m_sasrec.py): at 0.2
    # the dense model peaked at epoch 24-31 and stopped there
    "cpu-ml1m-drop5": replace(_CPU_ML1M, epochs=120, patience=10, dropout=0.5),
    # the SASRec+ recipe (Klenitskiy & Vasilev, RecSys 2023: full softmax CE, d = 64, dropout
    # 0.1, lr 1e-3, batch 128, at most 100 epochs, patience 10) on this model and split
    "cpu-ml1m-plus": replace(
        _CPU_ML1M, epochs=100, patience=10, dropout=0.1, lr=1e-3, batch_size=128
    ),
    # a GPU budget near the anchors' (d = 128, long training, early stopping)
    "paper": Preset(
        dim=128,
        max_len=200,
        blocks=2,
        epochs=300,
        batch_size=128,
        lr=1e-3,
        dropout=0.2,
        max_users=None,
        patience=20,
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
    f"hr@{K}_filtered",
    f"ndcg@{K}_filtered",
    *anchor_columns(K),
    f"val_hr@{K}",
    f"val_ndcg@{K}",
    f"val_ndcg@{K}_filtered",
    "selected_on",
    "protocol",
    "best_epoch",
    "epochs",
    "stopped_early",
    "steps",
    "train_s",
    "train_cpu_s",
    "s_per_step",
    "eval_s",
    "val_eval_s",
    "attn_share",
    "model_file",
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
    "patience",
    "device",
    "git_commit",
    "machine",
    "torch",
    "threads",
    "timestamp",
]


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
        return MeanPool, {}, ""
    extra = {"n": cfg.max_len} if method == "lrea" else {}
    layer = AttentionLayer(method, **extra, **params)  # unknown method/params: ValueError here
    shape = Shape(1, 1, cfg.max_len, cfg.max_len, cfg.dim, cfg.dim, causal=True)
    reasons = layer.op.check(shape)
    full = layer.params
    if reasons:
        return None, full, "; ".join(reasons)
    return (lambda: AttentionLayer(method, **extra, **params)), full, ""


@dataclass
class Split:
    """What a run trains on, selects on and tests on, and how it was made."""

    fit: list[np.ndarray]
    val_in: list[np.ndarray]
    val_target: np.ndarray
    test_in: list[np.ndarray]
    test_target: np.ndarray
    protocol: str
    select: str  # the validation metric that picks the epoch
    anchor: AnchorSet | None = None  # gSASRec's own test inputs, where rebuildable


def splits(
    sequences: list[np.ndarray], held_out: np.ndarray | None
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """Leave-one-out: (fit sequences, validation item, test input sequences, test item); -1 =
    no item. The validation ranking reads the fit sequence."""
    test_in, test_target = split_for_training(sequences, held_out)
    fit, val_target = [], np.full(len(test_in), -1, dtype=np.int64)
    for u, s in enumerate(test_in):
        if len(s) >= 3:
            fit.append(s[:-1])
            val_target[u] = s[-1]
        else:
            fit.append(s)
    return fit, val_target, test_in, test_target


def make_split(data: Any, max_users: int | None) -> Split:
    """gSASRec's protocol when the data has a validation split, else leave-one-out."""
    sequences, held = list(data.sequences), data.held_out
    if max_users is not None:
        sequences = sequences[:max_users]
        held = None if held is None else held[:max_users]
    val_in = getattr(data, "val_inputs", None)
    anchor = anchor_set(data, max_users)
    if val_in is not None and held is not None:
        vt = np.asarray(data.val_targets)
        if max_users is not None:
            val_in, vt = val_in[:max_users], vt[:max_users]
        return Split(
            fit=sequences,
            val_in=list(val_in),
            val_target=vt,
            test_in=sequences,
            test_target=np.asarray(held, dtype=np.int64),
            protocol="gsasrec: train on every training line, validate on the "
            f"{len(val_in)} validation users, test the held-out item after the training line "
            "(without test/input.txt: two steps ahead); anchor_* = gSASRec's test input on "
            f"{0 if anchor is None else len(anchor[1])} validation users; seen items filtered",
            select=f"ndcg@{K}_filtered",
            anchor=anchor,
        )
    fit, val_target, test_in, test_target = splits(sequences, held)
    return Split(
        fit=fit,
        val_in=fit,
        val_target=val_target,
        test_in=test_in,
        test_target=test_target,
        protocol="leave-one-out: validation = last training item (never trained on), test = "
        "held-out item after it",
        select=f"ndcg@{K}",
    )


def case_id(dataset: str, method: str, params: dict[str, Any], seed: int, preset: str) -> str:
    return f"{TASK}|{dataset}|{method}|{json.dumps(params, sort_keys=True)}|seed={seed}|{preset}"


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    def save_fsynced(tmp: Path) -> None:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())

    _atomic_write(path, save_fsynced)


class _PassV(nn.Module):
    """A no-op attention core (returns v): the rest of the step without the attention."""

    def forward(self, q: Any, k: Any, v: torch.Tensor, **_: Any) -> torch.Tensor:
        return v


def attention_share(trainer: Trainer, rounds: int = 3) -> float:
    """Share of a training step (forward + backward, the longest batch) spent in attention:
    1 - CPU time with a no-op core / CPU time with the method's core, medians over
    interleaved rounds (thread CPU time; on a GPU, wall time after a synchronize)."""
    order = np.argsort(-trainer.lengths, kind="stable")[: trainer.cfg.batch_size]
    inp, tgt = trainer.batch(order)
    cuda = trainer.device.type == "cuda"
    clock = time.perf_counter if cuda else time.thread_time
    cores = [b.attn for b in trainer.model.blocks]
    times: dict[str, list[float]] = {"method": [], "none": []}
    try:
        for _ in range(rounds):
            for name in ("method", "none"):
                for blk, core in zip(trainer.model.blocks, cores, strict=True):
                    blk.attn = core if name == "method" else _PassV()
                if cuda:
                    torch.cuda.synchronize()
                t = clock()
                trainer.loss(inp, tgt).backward()
                if cuda:
                    torch.cuda.synchronize()
                times[name].append(clock() - t)
                trainer.model.zero_grad(set_to_none=True)
    finally:
        for blk, core in zip(trainer.model.blocks, cores, strict=True):
            blk.attn = core
    full, rest = float(np.median(times["method"])), float(np.median(times["none"]))
    return max(0.0, 1.0 - rest / full) if full > 0 else float("nan")


def _train_one(
    make_attn: Any,
    split: Split,
    n_items: int,
    cfg: SASRecConfig,
    preset: Preset,
    ckpt: Path,
    model_path: Path,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    trainer = Trainer(split.fit, n_items, cfg, make_attn, device)
    st: dict[str, Any] = {
        "best": -1.0,
        "best_epoch": -1,
        "best_val": {},
        "best_state": None,
        "since_best": 0,
        "train_s": 0.0,
        "train_cpu_s": 0.0,
        "val_s": 0.0,
    }
    if ckpt.exists():  # resume at the last finished epoch
        saved = torch.load(ckpt, weights_only=True, map_location=trainer.device)
        trainer.load_state_dict(saved["trainer"])
        st.update(saved["progress"])

    def patience_left() -> bool:
        return preset.patience is None or st["since_best"] < preset.patience

    bar = tqdm(total=cfg.epochs, initial=len(trainer.losses), desc="epochs", disable=not progress)
    while len(trainer.losses) < cfg.epochs and patience_left():
        t, c = time.perf_counter(), time.thread_time()
        loss = trainer.epoch(progress)
        st["train_s"] += time.perf_counter() - t
        st["train_cpu_s"] += time.thread_time() - c
        t = time.perf_counter()
        m = evaluate(trainer.model, split.val_in, split.val_target, k=K)
        st["val_s"] += time.perf_counter() - t
        if m[split.select] > st["best"]:
            state = copy.deepcopy(trainer.model.state_dict())
            st.update(best=m[split.select], best_epoch=len(trainer.losses), best_val=m)
            st.update(best_state=state, since_best=0)
        else:
            st["since_best"] += 1
        _save_atomic({"trainer": trainer.state_dict(), "progress": st}, ckpt)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{m[split.select]:.4f}", best=st["best_epoch"])
    bar.close()
    share = attention_share(trainer)
    model = trainer.model
    model.load_state_dict(st["best_state"])
    model.eval()
    _save_atomic({"model": st["best_state"]}, model_path)
    t = time.perf_counter()
    test = evaluate(model, split.test_in, split.test_target, k=K)
    eval_s = time.perf_counter() - t
    anchor = anchor_metrics(model, split.anchor, K)
    epochs = len(trainer.losses)
    steps = trainer.steps_per_epoch * epochs
    v = st["best_val"]
    return {
        f"hr@{K}": test[f"hr@{K}"],
        f"ndcg@{K}": test[f"ndcg@{K}"],
        f"hr@{K}_filtered": test[f"hr@{K}_filtered"],
        f"ndcg@{K}_filtered": test[f"ndcg@{K}_filtered"],
        **anchor,
        f"val_hr@{K}": v[f"hr@{K}"],
        f"val_ndcg@{K}": v[f"ndcg@{K}"],
        f"val_ndcg@{K}_filtered": v[f"ndcg@{K}_filtered"],
        "selected_on": f"val_{split.select}",
        "protocol": split.protocol,
        "best_epoch": st["best_epoch"],
        "epochs": epochs,
        "stopped_early": epochs < cfg.epochs,
        "steps": steps,
        "train_s": st["train_s"],
        "train_cpu_s": st["train_cpu_s"],
        "s_per_step": st["train_s"] / max(steps, 1),
        "eval_s": eval_s,
        "val_eval_s": st["val_s"],
        "attn_share": share,
        "final_loss": trainer.losses[-1],
        "eval_users": test["eval_users"],
        "val_users": v["eval_users"],
    }


def _file_key(cid: str) -> str:
    return hashlib.sha1(cid.encode()).hexdigest()[:16]


def run_quality(
    data: Any,
    methods: list[tuple[str, dict[str, Any]]],
    seeds: list[int],
    preset_name: str,
    out: str | Path,
    progress: bool = True,
    device: str = "cpu",
) -> pd.DataFrame:
    """Train and evaluate every (method, seed) not already in ``out``; returns the table.
    An interrupted training run resumes from its checkpoint (same ``out``)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    log = out / LOG_NAME
    split = make_split(data, preset.max_users)
    done = {r["case_id"] for r in read_rows(log) if r.get("status") in ("ok", "unsupported")}
    cases = [(m, p, s) for s in seeds for m, p in methods]  # seed-major: a cut run keeps seeds
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
            "protocol": split.protocol,
            "users": len(split.fit),
            "items": data.n_items,
            **{k: v for k, v in asdict(preset).items() if k != "max_users"},
            "device": device,
            "git_commit": git_commit(),
            "machine": cpu_model(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "timestamp": timestamp(),
        }
        ckpt = out / "checkpoints" / f"{_file_key(cid)}.pt"
        if method == "pop":
            t = time.perf_counter()
            test = popularity_baseline(split.test_in, split.test_target, data.n_items, k=K)
            val = popularity_baseline(split.val_in, split.val_target, data.n_items, k=K)
            row.update(
                {
                    "status": "ok",
                    "reason": "",
                    **{m: test[f"pop_{m}"] for m in _METRICS},
                    **pop_anchor_metrics(split.anchor, split.fit, data.n_items, K),
                    f"val_hr@{K}": val[f"pop_hr@{K}"],
                    f"val_ndcg@{K}": val[f"pop_ndcg@{K}"],
                    f"val_ndcg@{K}_filtered": val[f"pop_ndcg@{K}_filtered"],
                    "epochs": 0,
                    "steps": 0,
                    "train_s": 0.0,
                    "eval_s": time.perf_counter() - t,
                    "eval_users": int((split.test_target >= 0).sum()),
                    "val_users": int((split.val_target >= 0).sum()),
                }
            )
        elif factory is None:
            row.update({"status": "unsupported", "reason": reason})
        else:
            model_path = out / "models" / f"{method}-{_file_key(cid)}.pt"
            res = _train_one(
                factory, split, data.n_items, cfg, preset, ckpt, model_path, device, progress
            )
            row.update({"status": "ok", "reason": "", "model_file": model_path.name, **res})
        append_row(log, row)
        ckpt.unlink(missing_ok=True)
    df = write_quality_table(out)
    if (df["status"] == "ok").any():
        write_table(summary(df), out, name="summary.csv", parquet=False)
    return df


_METRICS = (f"hr@{K}", f"ndcg@{K}", f"hr@{K}_filtered", f"ndcg@{K}_filtered")


def write_quality_table(out: str | Path) -> pd.DataFrame:
    """``results.csv`` from the log (one row per case_id, the latest), written atomically."""
    rows = dedupe(read_rows(Path(out) / LOG_NAME))
    df = pd.DataFrame(rows)
    df = df.reindex(columns=QUALITY_COLUMNS + [c for c in df.columns if c not in QUALITY_COLUMNS])
    write_table(df, out, parquet=False)
    return df


def headline_suffix(df: pd.DataFrame) -> str:
    """``"_filtered"`` when every ok row has the seen-filtered metrics (gSASRec's protocol and
    every row written since they exist), else ``""`` (older rows: unfiltered only)."""
    ok = df[df["status"] == "ok"]
    col = f"ndcg@{K}_filtered"
    return "_filtered" if col in ok.columns and ok[col].notna().all() else ""


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per preset x method x params (sample std, ddof 1), the difference
    to dense of the same preset (each preset is its own budget), and whether it exceeds the
    seed spread: |mean - dense mean| > std(method) + std(dense). Metrics are the seen-filtered
    ones when every row has them (``metrics`` says which)."""
    suf = headline_suffix(df)
    ok = df[df["status"] == "ok"].copy()
    for col in ("attn_share", f"anchor_ndcg@{K}_filtered", f"anchor_hr@{K}_filtered"):
        if col not in ok.columns:
            ok[col] = np.nan
    ok["preset"] = ok["preset"].fillna("").astype(str) if "preset" in ok.columns else ""
    s = (
        ok.groupby(["preset", "method", "params"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            hr=(f"hr@{K}{suf}", "mean"),
            hr_std=(f"hr@{K}{suf}", "std"),
            ndcg=(f"ndcg@{K}{suf}", "mean"),
            ndcg_std=(f"ndcg@{K}{suf}", "std"),
            val_ndcg=(f"val_ndcg@{K}{suf}", "mean"),
            anchor_hr=(f"anchor_hr@{K}_filtered", "mean"),
            anchor_ndcg=(f"anchor_ndcg@{K}_filtered", "mean"),
            anchor_ndcg_std=(f"anchor_ndcg@{K}_filtered", "std"),
            best_epoch=("best_epoch", "mean"),
            epochs=("epochs", "mean"),
            s_per_step=("s_per_step", "mean"),
            train_cpu_s=("train_cpu_s", "mean"),
            attn_share=("attn_share", "mean"),
        )
        .reset_index()
    )
    s.insert(3, "metrics", "seen items filtered" if suf else "unfiltered")
    return deltas_vs_dense(s, ["preset"], ("hr", "ndcg"))


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}" if pd.notna(std) else f"{mean:.4f} (one seed)"


def summary_markdown(s: pd.DataFrame) -> str:
    """The summary as a markdown table (what the results/quality/*/README.md tables show)."""
    has_d = "d_ndcg" in s.columns
    presets = "preset" in s.columns and s["preset"].nunique() > 1
    head = (
        "| "
        + ("preset | " if presets else "")
        + "method | seeds | HR@10 | NDCG@10 | "
        + (
            "ΔHR@10 vs dense | ΔNDCG@10 vs dense | Δ beyond seed spread (HR / NDCG) | "
            if has_d
            else ""
        )
    )
    anchor = "anchor_ndcg" in s.columns and s["anchor_ndcg"].notna().any()
    if anchor:
        head += "NDCG@10, anchor protocol | "
    head += "s / step | attention share of a step | best epoch |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    several = s.groupby(["preset", "method"] if "preset" in s.columns else ["method"])[
        "params"
    ].transform("nunique")
    for i, r in s.iterrows():
        name = r["method"]
        if several[i] > 1:  # the same method at two settings: say which
            name += f" ({config_label(params_of(r['params']))})"
        cells = ([r["preset"]] if presets else []) + [
            name,
            str(r["seeds"]),
            _pm(r["hr"], r["hr_std"]),
            _pm(r["ndcg"], r["ndcg_std"]),
        ]
        if has_d:
            flag = {True: "yes", False: "no"}
            cells += [
                f"{r['d_hr']:+.4f}" if pd.notna(r["d_hr"]) else "-",
                f"{r['d_ndcg']:+.4f}" if pd.notna(r["d_ndcg"]) else "-",
                f"{flag.get(r['d_hr_beyond_spread'], 'n/a')} / "
                f"{flag.get(r['d_ndcg_beyond_spread'], 'n/a')}",
            ]
        if anchor:
            cells.append(
                _pm(r["anchor_ndcg"], r["anchor_ndcg_std"]) if pd.notna(r["anchor_ndcg"]) else "-"
            )
        cells += [
            f"{r['s_per_step']:.3f}" if pd.notna(r["s_per_step"]) else "-",
            f"{r['attn_share']:.0%}" if pd.notna(r.get("attn_share")) else "-",
            f"{r['best_epoch']:.1f}" if pd.notna(r["best_epoch"]) else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
