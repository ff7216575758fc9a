"""``svd_exact`` swapped at rank r into the trained dense target-attention model (issue 16, the
closing loop on the DIN-style task): every candidate attends over the user's whole history
through ``svd_exact`` instead of softmax, nothing retrained; ΔAUC, ΔGAUC (paired bootstrap over
users), ΔNDCG@10 and HR@10 by rank.

The target runs keep no weights, so each dense row is retrained from its preset and seed:
training is deterministic on one CPU thread, and the retrained model must reproduce the
row's test AUC (to 1e-9) or the swap refuses to go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attention_impls import AttentionLayer

from .target_kl import RANKS as KL_RANKS
from .target_kl import target_kl_by_rank
from .target_metrics import auc, ranked_hit_ndcg
from .target_quality import PRESETS, fit_model, layer_for, prepare_run, preset_named
from .target_task import K, score_users

RANKS = (2, 4, 8, 16, 32)
BOOT = 1000


def user_aucs(s: np.ndarray) -> np.ndarray:
    """Per user: the share of its negatives (columns 1..) scored below its positive (column
    0), ties half; their mean is GAUC when every user has the same number of candidates."""
    pos = s[:, :1]
    return (s[:, 1:] < pos).mean(1) + 0.5 * (s[:, 1:] == pos).mean(1)


def _metrics(s: np.ndarray) -> dict[str, float]:
    labels = np.zeros(s.shape, dtype=bool)
    labels[:, 0] = True
    hr, ndcg = ranked_hit_ndcg(s[:, 0], s[:, 1:], k=K)
    return {
        "auc": auc(labels.ravel(), s.ravel()),
        "gauc": float(user_aucs(s).mean()),
        f"hr@{K}": hr,
        f"ndcg@{K}": ndcg,
    }


def run_target_swap(
    quality: str | Path,
    data: Any,
    ranks: tuple[int, ...] = RANKS,
    seeds: list[int] | None = None,
    boot_seed: int = 0,
) -> pd.DataFrame:
    """One row per dense target row x rank (plus the dense row itself, rank None)."""
    return run_target_closing_loop(quality, data, ranks, seeds, boot_seed, kl_users=0)[0]


def run_target_closing_loop(
    quality: str | Path,
    data: Any,
    ranks: tuple[int, ...] = RANKS,
    seeds: list[int] | None = None,
    boot_seed: int = 0,
    kl_users: int = 300,
    kl_ranks: tuple[int, ...] = KL_RANKS,
    presets: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the swap table of ``run_target_swap``, ``kl_by_rank.csv`` rows of up to ``kl_users``
    test users per dense row on that retrained model's own Q, K, V: ``target_kl``);
    ``presets``: only the dense rows of these presets (default all)."""
    path = Path(quality) / "results.csv"
    if not path.is_file():
        raise ValueError(f"{path}: no target-task table; run `analysis quality --task target`")
    tab = pd.read_csv(path)
    need = {"task", "method", "status", "preset", "seed", "auc", "params"}
    if not need <= set(tab.columns):
        raise ValueError(
            f"{path}: not a target-task table (missing {sorted(need - set(tab.columns))})"
        )
    dense = tab[(tab["task"] == "target") & (tab["method"] == "dense") & (tab["status"] == "ok")]
    dense = dense[dense["dataset"].astype(str) == data.name] if "dataset" in dense else dense
    if seeds is not None:
        dense = dense[dense["seed"].isin(seeds)]
    if presets is not None:
        for name in presets:
            preset_named(name)  # an unknown name is a ValueError that lists the presets
        dense = dense[dense["preset"].astype(str).isin(presets)]
    if dense.empty:
        raise ValueError(f"{path}: no trained dense target row for {data.name}")
    rows: list[dict[str, Any]] = []
    kl: list[pd.DataFrame] = []
    runs: dict[str, tuple] = {}  # one split and evaluation set per preset, shared by its seeds
    for _, r in dense.iterrows():
        p = PRESETS[str(r["preset"])]
        if r["preset"] not in runs:
            runs[r["preset"]] = prepare_run(data, p)
        _, split, val, test, max_hist, recency = runs[r["preset"]]
        factory, full, _ = layer_for("dense", {}, max_hist, p.neg_eval + 1, p.dim)
        model, cfg, _ = fit_model(
            factory, split, val, p, int(r["seed"]), recency, max_hist, "dense", full, data.n_items
        )
        cands = np.concatenate([test.pos[:, None], test.negs], 1)
        base = score_users(model, test.hists, cands, cfg)
        m0 = _metrics(base)
        if abs(m0["auc"] - float(r["auc"])) > 1e-9:
            raise ValueError(
                f"retrained dense (preset {r['preset']}, seed {r['seed']}) gives test AUC "
                f"{m0['auc']:.10f}, the row says {float(r['auc']):.10f}: not the same model"
            )
        ids = {"dataset": data.name, "preset": r["preset"], "seed": int(r["seed"])}
        rows.append({**ids, "rank": None, **m0, "d_auc": 0.0, "d_gauc": 0.0})
        if kl_users > 0:
            kl.append(target_kl_by_rank(model, test.hists, cands, ids, kl_ranks, kl_users))
        u0 = user_aucs(base)
        rng = np.random.default_rng([boot_seed, int(r["seed"])])
        draws = rng.integers(0, len(u0), size=(BOOT, len(u0)))
        for rank in ranks:
            model.attn = AttentionLayer("svd_exact", rank=rank)
            model.pad_to = rank  # svd_exact needs N >= rank: masked zero slots, as in training
            s = score_users(model, test.hists, cands, cfg)
            m = _metrics(s)
            diff = user_aucs(s) - u0
            boot = diff[draws].mean(1)
            rows.append(
                {
                    **ids,
                    "rank": rank,
                    **m,
                    "d_auc": m["auc"] - m0["auc"],
                    "d_gauc": float(diff.mean()),
                    "d_gauc_lo": float(np.quantile(boot, 0.025)),
                    "d_gauc_hi": float(np.quantile(boot, 0.975)),
                    f"d_ndcg@{K}": m[f"ndcg@{K}"] - m0[f"ndcg@{K}"],
                }
            )
    return pd.DataFrame(rows), (pd.concat(kl, ignore_index=True) if kl else pd.DataFrame())
