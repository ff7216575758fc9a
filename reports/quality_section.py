"""Section 9, quality vs speed: present only when a --results folder holds the output of
`python -m analysis quality` (results/quality/<dataset>/results.csv)."""

from __future__ import annotations

import math

import pandas as pd

from .derive import METHOD_ORDER
from .figures.quality import quality_vs_speed
from .load import ResultSet
from .quality import BASELINES, Matched, QualityGroup, attend_times, summarise
from .sections import Section, Table, _slug

HOW_QUALITY = (
    "python -m analysis quality --task seqrec --data DATA --methods dense,linrec,performer,"
    "mean_pool,pop --seeds 0,1,2 --out results/quality/<dataset>; then pass results/quality "
    "to --results"
)


def _fmt(x: float, nd: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _order(t: pd.DataFrame) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(METHOD_ORDER + list(BASELINES))}
    return t.assign(_o=t["method"].map(rank).fillna(99)).sort_values(
        ["_o", "params"], kind="stable"
    )


def _view(g: QualityGroup, matched: list[Matched]) -> pd.DataFrame:
    rows = []
    for r in _order(g.table).itertuples():
        beyond = (
            "-"
            if r.method == "dense"
            else "n/a (one seed)"
            if r.beyond is None and r.status == "ok"
            else "-"
            if r.beyond is None
            else "yes"
            if r.beyond
            else "no"
        )
        row = {
            "method": r.method,
            "params": r.params,
            "status": r.status,
            "seeds": r.seeds,
            f"{g.metric} mean ± std": "-"
            if math.isnan(r.mean)
            else f"{_fmt(r.mean)} ± {_fmt(r.std)}",
            "Δ vs dense": "-" if math.isnan(r.delta) else f"{r.delta:+.4f}",
            "beyond seed spread": beyond,
            "s / step": _fmt(r.s_per_step, 3),
        }
        if (g.table["anchor"] != "").any():
            row["NDCG@10, gSASRec's own test input"] = r.anchor or "-"
        for mt in matched:
            x = mt.times.get((r.method, r.params))
            row[f"attend ms ({mt.device}, N={mt.n}, M={mt.m})"] = "-" if x is None else f"{x:.3g}"
        row["note"] = r.reason or ("baseline: no attention" if r.method in BASELINES else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _words(g: QualityGroup) -> list[str]:
    t = g.table[(g.table["method"] != "dense") & (g.table["status"] == "ok")]
    same = [f"{r.method} ({r.params})" for r in t.itertuples() if r.beyond is False]
    diff = [f"{r.method} ({r.params}) {r.delta:+.4f}" for r in t.itertuples() if r.beyond is True]
    unk = [f"{r.method} ({r.params})" for r in t.itertuples() if r.beyond is None]
    seeds = sorted(set(g.table.loc[g.table["status"] == "ok", "seeds"]))
    head = f"{g.task}, {g.dataset} ({g.metric}, {'/'.join(map(str, seeds))} seeds per method)"
    parts = []
    if same:
        parts.append("no difference beyond seed spread: " + ", ".join(same))
    if diff:
        parts.append("beyond the seed spread: " + ", ".join(diff))
    if unk:
        parts.append("spread unknown (one seed): " + ", ".join(unk))
    bad = g.table[g.table["status"] != "ok"]
    if not bad.empty:
        parts.append(
            "not trained: " + ", ".join(f"{r.method} ({r.status})" for r in bad.itertuples())
        )
    line = f"{head}: " + "; ".join(parts) + "."
    dense = g.table[(g.table["method"] == "dense") & (g.table["anchor"] != "")]
    if not dense.empty:
        line += (
            f" On gSASRec's own test input (the validation users, where the split allows "
            f"rebuilding it; anchor_* columns) dense reaches NDCG@10 {dense['anchor'].iloc[0]}."
        )
    mp = g.table[(g.table["method"] == "mean_pool") & (g.table["status"] == "ok")]
    if not mp.empty and mp["beyond"].iloc[0] is False:
        line += (
            " Attention does not beat mean pooling beyond the seed spread here, so this setting "
            "cannot rank the attention methods."
        )
    return [line]


def quality_section(rs: ResultSet) -> Section | None:
    if rs.quality is None or rs.quality.empty:
        return None
    s = Section(9, "quality", "Quality vs speed (trained end-task quality)")
    s.badge = "real data (trained models); times from synthetic bench inputs"
    s.intro.append(
        "Each method trained end to end as the model's attention core (`python -m analysis "
        "quality`), against dense trained the same way, with baselines without attention. "
        "Δ = method minus dense (positive = better); 'beyond seed spread' = |Δ| > std(method) + "
        "std(dense), the sample std over seeds. Attend times come from this report's bench table "
        "at N = 10k, M = 2k or the nearest benched case (named in each figure)."
    )
    ok = rs.ok
    for g in summarise(rs.quality):
        slug = _slug(g.task, g.dataset)
        if g.metric is None:
            s.missing.append(f"{g.task}, {g.dataset}: no headline metric in the ok rows")
            continue
        matched = attend_times(ok, g.table, g.model_d)
        s.intro += _words(g)
        s.answer += ["Quality: " + w for w in _words(g)]
        s.tables.append(
            Table(
                f"tbl-quality-{slug}",
                f"Trained quality - {g.task}, {g.dataset} ({g.metric})",
                _view(g, matched),
                f"From {', '.join(g.sources)}. Mean ± sample std over seeds; unsupported rows "
                "give the operator's reason; s / step is wall time per training step on the "
                f"machine that trained ({', '.join(g.machines) or 'not recorded'}), not this "
                "report's device; attend ms is from this report's bench table.",
                full=True,
            )
        )
        f = quality_vs_speed(g, matched, f"fig-quality-{slug}")
        if f is not None:
            s.figures.append(f)
        elif not rs.has_bench:
            s.missing.append(
                f"{g.task}, {g.dataset}: no bench table in this report, so no attend times to "
                "plot quality against; add a bench run with --results."
            )
    if not s.tables:
        s.missing.append(f"No usable quality rows. To produce them: {HOW_QUALITY}.")
    return s
