"""Evidence for the anchor comparison (issue 16): each committed dense SASRec of this folder
scored on gSASRec's own test protocol (the 512 validation users, whose test input
val/input.txt + val/output.txt is rebuilt item for item; analysis/quality_anchor.py) and,
for contrast, on the same users with the training line as input (what the full test does
without test/input.txt). Intervals: 95 % percentile bootstrap over users (2,000 resamples,
seed 0) of the mean over a preset's seeds, the users shared by every seed.

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/quality/ml-1m/anchor_protocol.py \
        ../shared/data/ml-1m > results/quality/ml-1m/anchor_protocol.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.loaders import load
from analysis.quality import PRESETS, attention_factory, config_for
from analysis.quality_anchor import anchor_set
from analysis.sasrec import SASRec, evaluate_ranks, ndcg_gain

HERE = Path(__file__).parent
ANCHOR = {"ndcg@10": 0.1259, "recall@10": 0.2392}  # gSASRec's code, its SASRec (issue 16)


def per_user(model: SASRec, inputs: list[np.ndarray], target: np.ndarray) -> dict[str, np.ndarray]:
    _, _, rank_f = evaluate_ranks(model, inputs, target)
    return {"ndcg@10": ndcg_gain(rank_f, 10), "recall@10": (rank_f < 10).astype(float)}


def main(data_dir: str) -> None:
    torch.set_num_threads(1)
    data = load(data_dir)
    inputs, target = anchor_set(data, None)
    train_lines = [data.sequences[u] for u in data.val_users]
    df = pd.read_csv(HERE / "results.csv")
    dense = df[(df["method"] == "dense") & df["model_file"].notna()].sort_values(["preset", "seed"])
    rng = np.random.default_rng(0)
    boot = rng.integers(0, len(target), size=(2000, len(target)))
    print(f"{len(target)} validation users; anchor (gSASRec code, SASRec): {ANCHOR}")
    print("preset | seeds | protocol | NDCG@10 [95% CI] | Recall@10 [95% CI]")
    for preset, rows in dense.groupby("preset", sort=False):
        scores: dict[str, list[dict[str, np.ndarray]]] = {"anchor": [], "training line": []}
        for _, r in rows.iterrows():
            cfg = config_for(PRESETS[r["preset"]], int(r["seed"]))
            factory, _, _ = attention_factory("dense", json.loads(r["params"]), cfg)
            model = SASRec(data.n_items, cfg, factory)
            state = torch.load(HERE / "models" / r["model_file"], weights_only=True)["model"]
            model.load_state_dict(state)
            scores["anchor"].append(per_user(model, inputs, target))
            scores["training line"].append(per_user(model, train_lines, target))
        for proto, per_seed in scores.items():
            cells = []
            for metric in ("ndcg@10", "recall@10"):
                u = np.mean([s[metric] for s in per_seed], axis=0)  # per user, mean over seeds
                lo, hi = np.percentile(u[boot].mean(1), [2.5, 97.5])
                seeds = " / ".join(f"{s[metric].mean():.4f}" for s in per_seed)
                cells.append(f"{u.mean():.4f} [{lo:.4f}, {hi:.4f}] (seeds {seeds})")
            print(f"{preset} | {len(per_seed)} | {proto} | " + " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ml-1m")
