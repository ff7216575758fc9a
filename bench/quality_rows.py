"""How a quality table (``analysis quality``'s results.csv) is read, for the two readers that
need it: ``decide --quality`` (analysis/quality_decide.py) and the report's quality section
(reports/quality.py). Kept here because reports import bench, never analysis."""

from __future__ import annotations

import json

import pandas as pd

# the headline metric of each task, first choice first (seqrec: seen-filtered when every
# ok row has it)
HEADLINE = {"seqrec": ("ndcg@10_filtered", "ndcg@10"), "target": ("auc",)}


def params_of(text) -> dict:
    """The row's ``params`` JSON as a dict ({} when empty or not a JSON object)."""
    try:
        p = json.loads(text) if isinstance(text, str) and text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return p if isinstance(p, dict) else {}


def config_label(params: dict) -> str:
    """rank / features named (what a decision row shows); 'default' when neither is set."""
    parts = [f"{k}={int(params[k])}" for k in ("rank", "features") if params.get(k) is not None]
    return ", ".join(parts) or "default"


def headline_metric(task: str, rows: pd.DataFrame) -> str | None:
    """The task's headline metric column for these rows: the first of ``HEADLINE[task]``
    filled in every ok row (None when none is)."""
    ok = rows[rows["status"] == "ok"]
    for col in HEADLINE.get(str(task), ("ndcg@10",)):
        if col in rows.columns and not ok.empty and pd.to_numeric(ok[col]).notna().all():
            return col
    return None
