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


def _reasons(h: pd.DataFrame) -> str:
    if "reason" not in h.columns:
        return ""
    return "; ".join(dict.fromkeys(h["reason"].dropna().astype(str)))


def config_summaries(raw: pd.DataFrame):
    """Per task x dataset x preset (each budget is its own comparison: dense of another preset is
    not a baseline): ``((task, dataset, preset), rows, metric, summaries)``, one summary per method x
    params with the per-seed headline values (``by_seed``), their mean and sample std, the
    seeds, status, reasons and mean s / step. The one reading of a quality table's seeds that
    ``decide --quality`` and the report's quality section share."""
    raw = raw.assign(preset=raw["preset"].fillna("").astype(str) if "preset" in raw else "")
    for key, g in raw.groupby(["task", "dataset", "preset"], sort=False):
        metric = headline_metric(key[0], g)
        summaries = []
        for (meth, params), h in g.groupby(["method", "params"], sort=False, dropna=False):
            p = params_of(params)
            ok = h[h["status"] == "ok"]
            by_seed = (
                pd.to_numeric(ok[metric]).groupby(ok["seed"]).mean()
                if metric and not ok.empty
                else pd.Series(dtype=float)
            )
            summaries.append(
                {
                    "method": meth,
                    "params": params,
                    "config": config_label(p),
                    "rank": p.get("rank"),
                    "features": p.get("features"),
                    "status": "ok" if not ok.empty else str(h["status"].iloc[0]),
                    "reason": _reasons(h),
                    "seeds": int(ok["seed"].nunique()),
                    "by_seed": by_seed,
                    "mean": float(by_seed.mean()) if by_seed.size else float("nan"),
                    "std": float(by_seed.std(ddof=1)) if by_seed.size > 1 else float("nan"),
                    "s_per_step": float(pd.to_numeric(ok["s_per_step"]).mean())
                    if "s_per_step" in ok.columns and not ok.empty
                    else float("nan"),
                }
            )
        yield key, g, metric, summaries


def deltas_vs_dense(s: pd.DataFrame, by: list[str], metrics) -> pd.DataFrame:
    """In place on a summary (one row per method x params, with ``m`` and ``m_std`` columns):
    ``d_m`` = the difference to the one dense row of the same ``by`` group (e.g. preset: each
    budget is its own comparison) and ``d_m_beyond_spread`` = |Δ| > std(method) + std(dense)
    (None where a std is missing: one seed, no spread). A group without exactly one dense row
    gets no Δ. Returns ``s``."""
    for _, grp in s.groupby(by, sort=False):
        dense = grp[grp["method"] == "dense"]
        if len(dense) != 1:
            continue
        d = dense.iloc[0]
        for m in metrics:
            delta = grp[m] - d[m]
            beyond = delta.abs() > (grp[f"{m}_std"] + d[f"{m}_std"])
            known = grp[f"{m}_std"].notna() & pd.notna(d[f"{m}_std"])
            s.loc[grp.index, f"d_{m}"] = delta
            s.loc[grp.index, f"d_{m}_beyond_spread"] = beyond.where(known, None).astype(object)
    return s
