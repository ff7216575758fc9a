"""Build or load the item embeddings of each route, cached as .npz (never pickle).

A route yields ``RouteEmbeddings``: the item table X (n_items x d) and, for sasrec, the
first block's W_q, W_k, W_v plus its HR@10 / NDCG@10. The cache key hashes the data
(source, sizes, a checksum of the sequences) and every parameter, so a stale cache is
never reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .embeddings_ppmi import ppmi_embeddings, random_embeddings
from .loaders import Interactions

ROUTES = ("ppmi", "sasrec", "random")
DEFAULT_CACHE = Path(".cache/analysis")


@dataclass
class RouteEmbeddings:
    route: str
    item: np.ndarray  # [n_items, d] float32
    w_q: np.ndarray | None = None
    w_k: np.ndarray | None = None
    w_v: np.ndarray | None = None
    item_raw: np.ndarray | None = (
        None  # sasrec: the raw learned table (item = LN1(sqrt(d) * item_raw))
    )
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.item.shape[1])


def data_fingerprint(data: Interactions) -> str:
    h = hashlib.sha256()
    h.update(f"{data.name}|{data.n_users}|{data.n_items}|{data.n_interactions}".encode())
    for s in data.sequences[:: max(1, data.n_users // 500)]:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
    if data.held_out is not None:
        h.update(np.asarray(data.held_out, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _key(data: Interactions, route: str, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"data": data_fingerprint(data), "route": route, **params}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_npz(path: Path, emb: RouteEmbeddings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"item": emb.item}
    for k in ("w_q", "w_k", "w_v", "item_raw"):
        v = getattr(emb, k)
        if v is not None:
            arrays[k] = v
    arrays["meta_json"] = np.array(json.dumps({"route": emb.route, **emb.meta}, default=str))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_npz(path: Path) -> RouteEmbeddings:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta_json"]))
        return RouteEmbeddings(
            route=meta.pop("route"),
            item=z["item"],
            w_q=z["w_q"] if "w_q" in z else None,
            w_k=z["w_k"] if "w_k" in z else None,
            w_v=z["w_v"] if "w_v" in z else None,
            item_raw=z["item_raw"] if "item_raw" in z else None,
            meta=meta,
        )


def build(
    data: Interactions,
    route: str,
    dim: int = 64,
    seed: int = 0,
    cache_dir: Path | None = DEFAULT_CACHE,
    window: int = 5,
    sasrec_epochs: int | None = None,
    sasrec_max_seconds: float | None = None,
    progress: bool = True,
    sasrec_model: str | Path | None = None,
) -> RouteEmbeddings:
    """Embeddings of ``route`` for ``data`` (from the cache when the key matches).
    ``sasrec_model``: a dense SASRec saved by ``analysis quality`` (``models/*.pt`` of its
    folder); the sasrec route then reads that trained model instead of training its own."""
    if route not in ROUTES:
        raise ValueError(f"unknown embedding route {route!r}; choose one of {ROUTES}")
    if sasrec_model is not None and route == "sasrec":
        return trained_sasrec(data, Path(sasrec_model))
    params: dict[str, Any] = {"dim": dim, "seed": seed}
    cfg = None
    if route == "ppmi":
        params["window"] = window
    if route == "sasrec":
        from .sasrec import SASRecConfig, config_dict

        cfg = SASRecConfig(dim=dim, seed=seed)
        if sasrec_epochs is not None:
            cfg = replace(cfg, epochs=sasrec_epochs)
        if sasrec_max_seconds is not None:
            cfg = replace(cfg, max_seconds=sasrec_max_seconds)
        params.update(config_dict(cfg))
        params["export"] = "ln1_input"  # X = LN1(sqrt(d) E); bump when the exported tables change
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{data.name}-{route}-d{dim}-{_key(data, route, params)}.npz"
        if path.exists():
            emb = load_npz(path)
            emb.meta["cache"] = f"hit: {path}"
            return emb
    t0 = time.perf_counter()
    if route == "ppmi":
        emb = RouteEmbeddings(
            "ppmi", ppmi_embeddings(data.sequences, data.n_items, dim, window, seed)
        )
    elif route == "random":
        emb = RouteEmbeddings("random", random_embeddings(data.n_items, dim, seed))
    else:
        emb = _build_sasrec(data, cfg, progress)
    emb.meta.update({"params": params, "build_seconds": round(time.perf_counter() - t0, 2)})
    if path is not None:
        save_npz(path, emb)
        emb.meta["cache"] = f"written: {path}"
    return emb


def trained_sasrec(data: Interactions, model_path: Path) -> RouteEmbeddings:
    """The sasrec route from a model trained by ``analysis quality``: its result row (in the
    folder's results.csv) gives the config, the metrics and the protocol."""
    import pandas as pd

    from .quality_swap import load_trained

    if not model_path.is_file():
        raise ValueError(f"--sasrec-model {model_path}: no such file")
    res = model_path.parent.parent / "results.csv"
    if not res.exists():
        raise ValueError(
            f"--sasrec-model {model_path}: expected it in the models/ folder of an "
            f"`analysis quality` output (no {res})"
        )
    rows = pd.read_csv(res)
    row = rows[rows.get("model_file", pd.Series(dtype=str)) == model_path.name]
    if row.empty:
        raise ValueError(f"{res}: no row for model file {model_path.name}")
    row = row.iloc[-1]
    if row["method"] != "dense" or row["dataset"] != data.name:
        raise ValueError(
            f"--sasrec-model {model_path.name}: a {row['method']} model on {row['dataset']}; "
            f"needs a dense model trained on {data.name}"
        )
    model = load_trained(model_path, row, data.n_items)
    w = model.weights()
    metrics = {
        key: float(row[key])
        for key in ("hr@10", "ndcg@10", "hr@10_filtered", "ndcg@10_filtered")
        if key in row and pd.notna(row[key])
    }
    metrics["eval_users"] = int(row["eval_users"])
    pop = rows[(rows["method"] == "pop") & (rows["dataset"] == data.name)]
    if len(pop):
        metrics["pop_hr@10"] = float(pop.iloc[0]["hr@10"])
        metrics["pop_ndcg@10"] = float(pop.iloc[0]["ndcg@10"])
    meta = {
        "metrics": metrics,
        "epochs_run": int(row["epochs"]),
        "train_seconds": round(float(row["train_s"]), 1),
        "eval_protocol": str(row["protocol"]),
        "loss": "full softmax CE",
        "trained_by": f"analysis quality ({row['preset']} preset, seed {int(row['seed'])}, "
        f"best epoch {int(row['best_epoch'])}, commit {row['git_commit']})",
        "model_file": str(model_path),
        "params": {
            "model_file": model_path.name,
            "preset": row["preset"],
            "seed": int(row["seed"]),
        },
    }
    return RouteEmbeddings("sasrec", w["item"], w["w_q"], w["w_k"], w["w_v"], w["item_raw"], meta)


def _build_sasrec(data: Interactions, cfg: Any, progress: bool) -> RouteEmbeddings:
    from .sasrec import evaluate, popularity_baseline, split_for_training, train_sasrec

    train, target = split_for_training(data.sequences, data.held_out)
    t0 = time.perf_counter()
    model, losses = train_sasrec(train, data.n_items, cfg, progress=progress)
    train_s = time.perf_counter() - t0
    metrics = evaluate(model, train, target)
    metrics.update(popularity_baseline(train, target, data.n_items))
    held = (
        data.held_out_note
        if data.held_out is not None
        else "held-out = last item of each sequence (users with >= 3 items)"
        + (
            ""
            if data.time_ordered
            else "; data NOT time-ordered, so 'last' is file order, not the latest"
        )
    )
    w = model.weights()
    meta = {
        "metrics": metrics,
        "losses": losses,
        "epochs_run": len(losses),
        "train_seconds": round(train_s, 1),
        "eval_protocol": "held-out item ranked against all items, no filtering; " + held,
        "loss": "full softmax CE"
        if data.n_items <= cfg.full_softmax_max_items
        else f"sampled softmax, {cfg.negatives} shared uniform negatives",
    }
    return RouteEmbeddings("sasrec", w["item"], w["w_q"], w["w_k"], w["w_v"], w["item_raw"], meta)
