"""``python -m analysis quality --rescore``: add the anchor-protocol columns to finished rows.

Rows written before ``analysis/quality_anchor.py`` existed lack the ``anchor_*`` columns. Their
best models are kept in ``models/``; this re-evaluates each one (nothing is trained) and
appends the row again with the columns filled, so the table (latest row per ``case_id``)
carries them. Rows whose model file is not on this machine are left as they are and counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.store import LOG_NAME, append_row, dedupe, read_rows

from .quality import PRESETS, K, Split, attention_factory, config_for, make_split
from .quality_anchor import anchor_metrics, pop_anchor_metrics
from .sasrec import SASRec


def _missing(row: dict[str, Any]) -> bool:
    val = row.get(f"anchor_ndcg@{K}_filtered")
    return row.get("status") == "ok" and (val is None or (isinstance(val, float) and np.isnan(val)))


def rescore_anchor(data: Any, out: str | Path, device: str = "cpu") -> dict[str, int]:
    """Fill the ``anchor_*`` columns of ``out``'s finished rows of ``data``; returns counts
    (rescored, no model file here, not applicable)."""
    out = Path(out)
    counts = {"rescored": 0, "model file absent": 0, "no anchor set": 0}
    split_for: dict[int | None, Split] = {}  # one split per user cap, not one per row
    for row in dedupe(read_rows(out / LOG_NAME)):
        if not _missing(row) or row.get("dataset") != data.name:
            continue
        preset = PRESETS.get(str(row.get("preset")))
        if preset is None:
            raise ValueError(
                f"{out}: row {row['case_id']!r} has unknown preset {row.get('preset')!r}"
            )
        if preset.max_users not in split_for:
            split_for[preset.max_users] = make_split(data, preset.max_users)
        split = split_for[preset.max_users]
        if split.anchor is None:
            counts["no anchor set"] += 1
            continue
        if row["method"] == "pop":
            extra = pop_anchor_metrics(split.anchor, split.fit, data.n_items, K)
        else:
            path = out / "models" / str(row.get("model_file"))
            if not row.get("model_file") or not path.exists():
                counts["model file absent"] += 1
                continue
            cfg = config_for(preset, int(row["seed"]))
            factory, _, reason = attention_factory(row["method"], json.loads(row["params"]), cfg)
            if factory is None:
                raise ValueError(f"{row['case_id']!r}: cannot rebuild its model: {reason}")
            model = SASRec(data.n_items, cfg, factory).to(device)
            state = torch.load(path, weights_only=True, map_location=device)["model"]
            model.load_state_dict(state)
            extra = anchor_metrics(model, split.anchor, K)
        append_row(out / LOG_NAME, {**row, **extra, "protocol": split.protocol})
        counts["rescored"] += 1
    return counts
