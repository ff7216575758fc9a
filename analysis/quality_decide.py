"""Trained end-task quality as `decide` reads it: a results.csv written by `analysis quality`
(or a folder of them), reduced to one row per task x dataset x method x params with the loss
against dense of the same task and dataset and a 95 % t interval over seeds.

Headline metric: next-item (``seqrec``) rows use ``ndcg@10_filtered`` (seen items removed) when
that column is filled for every ok row of the task and dataset, else ``ndcg@10``; target
attention (``target``) rows use ``auc``. The loss is dense minus method (positive = worse).
With the same seeds on both sides the interval is the paired t interval of the per-seed losses,
otherwise Welch's; with one seed there is no interval, and `decide` cannot call the method
inside a budget. The older hand-made table (columns method, delta_ndcg) is still read as is.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.quality_rows import HEADLINE, config_summaries

LEGACY_COLS = ("method", "delta_ndcg")
RESULT_COLS = ("task", "dataset", "method", "params", "seed", "status")
METRIC_COLS = ("ndcg@10", "ndcg@10_filtered", "auc")
CONFIDENCE = 0.95
QUALITY_CMD = (
    "python -m analysis quality --task seqrec --data DATA --methods {method} --seeds 0,1,2 "
    "--out DIR"
)


def _what_is(cols: set[str]) -> str:
    """A name for a table that is not a quality table (for the error message)."""
    if {"n", "m", "forward_ms_median"} <= cols:
        return "a bench results table (pass it to --bench)"
    if {"rank", "kl_mean", "route"} <= cols:
        return "kl_by_rank.csv from `analysis spectrum --kl` (pass its folder to --spectra)"
    if {"regime", "method"} <= cols or {"scenario", "verdict"} <= cols:
        return "a decisions table written by `analysis decide`"
    if {"r90", "effective_rank"} & cols:
        return "a spectra table (users.csv / summary.csv)"
    if {"seeds", "d_ndcg"} <= cols:
        return "summary.csv of `analysis quality` (give its results.csv or the folder instead)"
    shown = ", ".join(sorted(cols)[:12]) + (" ..." if len(cols) > 12 else "")
    return f"a table with columns {shown}"


def _expected() -> str:
    return (
        "--quality expects results.csv from `python -m analysis quality` (or its folder; columns "
        + ", ".join(RESULT_COLS)
        + " and ndcg@10 or auc), or a CSV with columns method, delta_ndcg"
    )


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise ValueError(f"--quality {path}: no such file or folder")
    if path.is_dir():
        files = sorted(path.rglob("results.csv"))
        if not files:
            raise ValueError(f"--quality {path}: no results.csv under this folder. {_expected()}")
        return files
    return [path]


def read_quality(path: str | Path) -> pd.DataFrame:
    """A quality table for `decide`: the aggregated rows of ``quality_rows`` when the input is
    `analysis quality` output, else the legacy (method, delta_ndcg) table. Anything else is a
    ValueError naming what the file is and what is expected."""
    frames, legacy = [], []
    for f in _files(Path(path)):
        try:
            t = pd.read_csv(f)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"--quality {f}: not a readable CSV ({exc}). {_expected()}") from None
        cols = set(map(str, t.columns))
        if set(RESULT_COLS) <= cols and cols & set(METRIC_COLS):
            frames.append(t.assign(source=str(f)))
        elif set(LEGACY_COLS) <= cols and not set(RESULT_COLS) <= cols:
            legacy.append(t)
        else:
            raise ValueError(f"--quality {f}: this is {_what_is(cols)}. {_expected()}")
    if frames and legacy:
        raise ValueError(
            f"--quality {path}: mixes `analysis quality` results with a method, delta_ndcg table"
        )
    if legacy:
        return pd.concat(legacy, ignore_index=True)
    return quality_rows(pd.concat(frames, ignore_index=True))


def loss_interval(method: pd.Series, dense: pd.Series) -> tuple[float, float, float, str]:
    """(loss = dense - method, lo, hi, how) from per-seed metric values indexed by seed."""
    method, dense = method.dropna(), dense.dropna()
    if method.empty or dense.empty:
        return math.nan, math.nan, math.nan, "no dense rows to compare with"
    point = float(dense.mean() - method.mean())
    common = sorted(set(method.index) & set(dense.index))
    if len(method) < 2 or len(dense) < 2:
        return point, math.nan, math.nan, "one seed, no interval"
    q = (1 + CONFIDENCE) / 2
    if len(common) == len(method) == len(dense):
        diff = dense.loc[common].to_numpy() - method.loc[common].to_numpy()
        se = float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
        t = float(stats.t.ppf(q, len(diff) - 1))
        how = f"95 % paired t interval over seeds {','.join(map(str, common))}"
    else:
        va, vb = method.var(ddof=1) / len(method), dense.var(ddof=1) / len(dense)
        se = math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / (len(method) - 1) + vb**2 / (len(dense) - 1) or math.inf)
        t = float(stats.t.ppf(q, dof if math.isfinite(dof) and dof > 0 else 1))
        how = f"95 % Welch t interval ({len(method)} vs {len(dense)} seeds)"
    return point, point - t * se, point + t * se, how


def quality_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per task x dataset x method x params: status, reason, metric, seeds, mean, std,
    loss vs dense with its interval, rank / features read off params, s_per_step."""
    out = []
    for (task, ds, preset), _rows, metric, summaries in config_summaries(raw):
        # a method is compared with dense of the same task, data and budget (preset) only
        dense = [s["by_seed"] for s in summaries if s["method"] == "dense" and s["status"] == "ok"]
        dense_by_seed = (
            pd.concat(dense).groupby(level=0).mean() if dense else pd.Series(dtype=float)
        )
        for s in summaries:
            by_seed = s.pop("by_seed")
            row = {"task": task, "dataset": ds, "preset": preset, **s, "metric": metric}
            row.update(dict.fromkeys(("loss", "loss_lo", "loss_hi"), math.nan))
            row["interval"] = "no headline metric" if metric is None else ""
            if by_seed.size:
                loss, lo, hi, how = loss_interval(by_seed, dense_by_seed)
                row.update(loss=loss, loss_lo=lo, loss_hi=hi, interval=how)
            out.append(row)
    return pd.DataFrame(out)


def is_aggregated(q: pd.DataFrame | None) -> bool:
    return q is not None and "loss_hi" in q.columns


def budget_for(metric: str | None, ndcg_budget: float, auc_budget: float) -> tuple[float, str]:
    return (auc_budget, "ΔAUC") if metric == "auc" else (ndcg_budget, "ΔNDCG")


def pick(q: pd.DataFrame, method: str, datasets: list[str]) -> tuple[pd.DataFrame, str]:
    """The method's quality rows to judge it by: the decided datasets when the table has them
    (else every dataset, said in the note), target attention before next-item when both exist."""
    rows = q[q["method"] == method]
    if rows.empty:
        return rows, ""
    note = ""
    same = rows[rows["dataset"].astype(str).isin(datasets)]
    if same.empty:
        note = f"trained on {', '.join(sorted(rows['dataset'].astype(str).unique()))}, not on this dataset"
    else:
        rows = same
    if (rows["task"] == "target").any():
        rows = rows[rows["task"] == "target"]
    else:
        rows = rows[rows["task"] == rows["task"].iloc[0]]
    return rows, note


def judge(
    rows: pd.DataFrame, ndcg_budget: float, auc_budget: float
) -> tuple[pd.Series, bool, str, str]:
    """(configuration the method is decided at, eligible, words, the words in brief).

    Eligible = the whole interval of the loss inside the budget; among eligible configurations
    the cheapest (smallest rank / features) is taken, else the one with the smallest loss."""
    ok = rows[(rows["status"] == "ok") & rows["loss"].notna()] if "loss" in rows else rows[:0]
    if ok.empty:
        r = rows.iloc[0]
        where = f"({r['task']}, {r['dataset']})"
        if r["status"] != "ok":
            head = f"trained quality {r['status']} {where}"
            return r, False, f"{head}: {r['reason'] or 'no ok rows'}", head
        want = " or ".join(HEADLINE.get(str(r["task"]), ("ndcg@10",)))
        head = f"trained quality not comparable {where}"
        why = f"{want} not filled in every ok row, or no ok dense rows to compare with"
        return r, False, f"{head}: {why}", head
    budgets = ok["metric"].map(lambda m: budget_for(m, ndcg_budget, auc_budget)[0])
    inside = ok[ok["loss_hi"].notna() & (ok["loss_hi"] <= budgets)]
    if not inside.empty:
        cost = inside[["rank", "features"]].apply(pd.to_numeric, errors="coerce").fillna(0)
        r = inside.loc[cost.sum(axis=1).sort_values(kind="stable").index[0]]
    else:
        r = ok.loc[ok["loss"].sort_values(kind="stable").index[0]]
    budget, name = budget_for(r["metric"], ndcg_budget, auc_budget)
    name = name.lstrip("Δ")  # "NDCG loss", "AUC loss"
    preset = f", preset {r['preset']}" if r.get("preset") else ""  # "" when the rows had none
    where = (
        f"{r['task']} {r['dataset']}{preset}, {r['metric']}, {r['config']}, {r['seeds']} seed(s)"
    )
    if pd.isna(r["loss_lo"]):
        short = f"quality interval unknown ({r['interval']})"
        return r, False, f"{short}: {name} loss {r['loss']:+.3g} ({where}); run more seeds", short
    iv = f"[{r['loss_lo']:+.3g}, {r['loss_hi']:+.3g}]"
    words = f"{name} loss {r['loss']:+.3g} {iv} ({where}; {r['interval']})"
    if r.name in inside.index:
        return r, True, f"{words}, inside budget {budget:g}", f"{name} loss inside budget"
    short = f"over the quality budget ({name} loss {r['loss']:+.2g} {iv} > {budget:g}{preset})"
    return r, False, f"over the quality budget: {words}, upper end > budget {budget:g}", short
