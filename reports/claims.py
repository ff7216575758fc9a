"""'What the seeds claim / what we measured': explicit rules from table to verdict.

Each rule states its threshold in `rule`; verdicts are one of CONFIRMED, REFUTED,
NOT_TESTABLE. Missing data never produces a verdict other than NOT_TESTABLE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .derive import CASE_KEYS, crossover_table, family_rank, m_text, representative_labels
from .load import ResultSet
from .noise import speedup_interval

CONFIRMED, REFUTED, NOT_TESTABLE = "confirmed", "refuted", "not testable here"
NOT_SHOWN = "not shown (within noise)"

SVD_KL_MAX = 1e-5
SVD_ERR_MAX = 1e-4
LINREC_KL_MIN = 0.05
LINREC_TV_MIN = 0.1
ABSORPTION_MAX = 0.01
LOW_RANK_RATIO = 0.5
LONG_N = 256

RUN_BENCH = "run the benchmark (python -m bench ...) to produce results/<device>/results.csv"
RUN_ANALYSIS = "run the spectra analysis (python -m analysis ...) to produce results/spectra/"


@dataclass
class Claim:
    key: str
    claim: str
    source: str
    rule: str
    verdict: str
    evidence: str
    figure: str  # anchor of the figure or table that says so


def _g(v: float) -> str:
    return f"{v:.3g}"


def svd_lossless(rs: ResultSet) -> Claim:
    c = Claim(
        "svd_lossless",
        "SVD-Attention is lossless when the behaviour matrix has rank <= r",
        "SOLAR (arXiv 2603.02561)",
        f"svd_exact on family exact_rank, r >= r*, fp32/fp64: max KL < {SVD_KL_MAX:g} and max output "
        f"error < {SVD_ERR_MAX:g} for at least one solver -> confirmed; otherwise refuted",
        NOT_TESTABLE,
        "",
        "fig-kl-vs-rank|fig-error-vs-n|tbl-fidelity",
    )
    ok = rs.ok
    d = ok[
        (ok["method"] == "svd_exact")
        & (ok["family"] == "exact_rank")
        & ok["dtype"].isin(["float32", "float64", "fp32", "fp64"])
    ].copy()
    if d.empty:
        c.evidence = (
            f"no svd_exact rows on exact_rank inputs; {RUN_BENCH} with an exact_rank family"
        )
        return c
    d["r_star"] = d["family_params"].map(family_rank)
    d = d[d["r_star"].notna() & (d["rank"] >= d["r_star"])]
    d = d[d["kl_mean"].notna() | d["out_err_mean"].notna()]
    if d.empty:
        c.evidence = (
            "no svd_exact rows with r >= r* and fidelity columns (family_params must give the rank)"
        )
        return c
    kl_col = "kl_max" if d["kl_max"].notna().any() else "kl_mean"
    err_col = "out_err_max" if d["out_err_max"].notna().any() else "out_err_mean"
    per = d.groupby(d["solver"].fillna("").astype(str))[[kl_col, err_col]].max()
    passing = per[(per[kl_col].fillna(0) < SVD_KL_MAX) & (per[err_col].fillna(0) < SVD_ERR_MAX)]
    parts = [
        f"{s or 'default'}: {kl_col} {_g(r[kl_col])}, {err_col} {_g(r[err_col])}"
        for s, r in per.iterrows()
    ]
    c.evidence = (
        f"{len(d)} row(s) (N {int(d['n'].min())}-{int(d['n'].max())}, r* "
        f"{', '.join(f'{x:g}' for x in sorted(d['r_star'].unique()))}); worst per solver - "
        + "; ".join(parts)
    )
    c.verdict = CONFIRMED if len(passing) else REFUTED
    return c


def _case_rows(ok: pd.DataFrame, case: pd.Series, n: int) -> pd.DataFrame:
    sel = ok[ok["n"] == n]
    for k in CASE_KEYS:
        if k in sel.columns and k in case.index:
            v = case[k]
            sel = (
                sel[sel[k].isna()]
                if v == "-" or (not isinstance(v, str) and pd.isna(v))
                else sel[sel[k] == v]
            )
    return sel


def svd_faster(rs: ResultSet) -> Claim:
    c = Claim(
        "svd_faster",
        "SVD-Attention costs O(N d r) and so beats dense attention on long sequences",
        "SOLAR (arXiv 2603.02561)",
        "svd_exact forward faster than dense at the largest N measured, with the 95 % interval of the "
        "speedup above 1 (bootstrap from each row's median, IQR and samples, plus 5 % run-to-run drift), "
        "for some M -> confirmed; interval above 1 nowhere but straddling 1 somewhere -> not shown; "
        "slower everywhere -> refuted",
        NOT_TESTABLE,
        "",
        "tbl-crossover|fig-speedup-",
    )
    ok = rs.ok
    x = crossover_table(ok[ok["method"].isin(["dense", "svd_exact"])])
    if x.empty or "speedup_at_max_n_forward" not in x.columns:
        c.evidence = f"needs timed dense and svd_exact rows at matching cases; {RUN_BENCH}"
        return c
    x = x[x["speedup_at_max_n_forward"].notna()].copy()
    if x.empty:
        c.evidence = "no forward timings at matching cases"
        return c
    dense_label = representative_labels(ok[ok["method"] == "dense"]).get("dense")
    los, his = [], []
    for _, case in x.iterrows():
        n = int(str(case["n_range"]).split("-")[-1])
        rows = _case_rows(ok, case, n)
        lo, hi = speedup_interval(
            rows[(rows["method"] == "dense") & (rows["label"] == dense_label)],
            rows[rows["label"] == case["label"]],
        )
        los.append(lo)
        his.append(hi)
    x["lo"], x["hi"] = los, his
    faster = x[x["lo"] > 1]
    within = x[(x["speedup_at_max_n_forward"] > 1) & ~(x["lo"] > 1)]
    best = x.sort_values("speedup_at_max_n_forward", ascending=False).iloc[0]
    c.verdict = (
        CONFIRMED
        if len(faster) == len(x)
        else f"{CONFIRMED} in {len(faster)} of {len(x)} cases"
        if len(faster)
        else NOT_SHOWN
        if len(within)
        else REFUTED
    )
    c.evidence = (
        f"faster than dense at the largest N, interval above 1, in {len(faster)} of {len(x)} "
        f"(label, device, M, d) cases; {len(within)} more faster by the median only (interval "
        f"straddles 1); best {best['label']} on {best['device']} at {m_text(best['m'])}, "
        f"d={best['d']:g}: {best['speedup_at_max_n_forward']:.2f}x [{best['lo']:.2f}, {best['hi']:.2f}] "
        f"at N={best['n_range'].split('-')[-1]} (crossover N {best['crossover_n_forward']})"
    )
    return c


def linrec_shift(rs: ResultSet) -> Claim:
    c = Claim(
        "linrec_shift",
        "Linear attention (LinRec) shifts the attention-score distribution away from softmax",
        "LinRec (arXiv 2411.01537) vs softmax",
        f"median over linrec rows of KL vs dense >= {LINREC_KL_MIN:g} or TV >= {LINREC_TV_MIN:g} -> "
        "confirmed; below both -> refuted",
        NOT_TESTABLE,
        "",
        "fig-error-vs-n|tbl-fidelity",
    )
    ok = rs.ok
    d = ok[(ok["method"] == "linrec") & (ok["kl_mean"].notna() | ok["tv_mean"].notna())]
    if d.empty:
        c.evidence = f"no linrec rows with fidelity columns; {RUN_BENCH}"
        return c
    kl, tv = d["kl_mean"].median(), d["tv_mean"].median()
    shifted = (kl == kl and kl >= LINREC_KL_MIN) or (tv == tv and tv >= LINREC_TV_MIN)
    c.verdict = CONFIRMED if shifted else REFUTED
    ref = ok[(ok["method"] == "svd_exact") & ok["kl_mean"].notna()]["kl_mean"].median()
    c.evidence = (
        f"{len(d)} rows: median KL {_g(kl)}, median TV {_g(tv)}, median negative-mass "
        f"{_g(d['neg_mass_mean'].median())}"
        + (f" (svd_exact median KL {_g(ref)})" if ref == ref else "")
    )
    return c


def lrea_absorption(rs: ResultSet) -> Claim:
    c = Claim(
        "lrea_absorption",
        "LREA's matrix absorption serves the compressed attention without changing it",
        "LREA (arXiv 2503.02542)",
        f"median relative absorption error ||phi(AB) - A phi(B)|| / ||phi(AB)|| < {ABSORPTION_MAX:g} -> "
        "confirmed; larger -> refuted",
        NOT_TESTABLE,
        "",
        "tbl-absorption|tbl-fidelity",
    )
    ok = rs.ok
    d = ok[ok["method"] == "lrea"]
    cols = [
        col for col in d.columns if "absorption" in col and pd.api.types.is_numeric_dtype(d[col])
    ]
    cols = [col for col in cols if d[col].notna().any()]
    if d.empty or not cols:
        c.evidence = (
            "no lrea_absorption_err column on lrea rows; the benchmark must record the absorption "
            f"error for lrea ({RUN_BENCH})"
        )
        return c
    col = next((x for x in cols if x.endswith("_mean")), cols[0])
    med = d[col].median()
    c.verdict = CONFIRMED if med < ABSORPTION_MAX else REFUTED
    c.evidence = (
        f"{int(d[col].notna().sum())} lrea rows: median {col} {_g(med)}, max {_g(d[col].max())}"
    )
    return c


def low_rank_premise(rs: ResultSet, long_n: int = LONG_N) -> Claim:
    c = Claim(
        "low_rank",
        "Real behaviour embedding matrices are low-rank",
        "SOLAR premise",
        f"over users with N >= {long_n} (all users where too few), median r_0.95 <= {LOW_RANK_RATIO:g} x "
        "the random null's of the same dimension, for most (dataset, route) pairs -> confirmed; "
        "otherwise refuted",
        NOT_TESTABLE,
        "",
        "fig-ranks-vs-n|tbl-ranks",
    )
    from .figures.spectra import is_null, series_name, uncentred

    pairs, wins, parts = 0, 0, []
    for ds in rs.spectra.values():
        u = ds.users
        if u is None or "r95" not in u.columns or "route" not in u.columns:
            continue
        u, _ = uncentred(u)
        u = u.assign(series=series_name(u), dim=u["dim"] if "dim" in u.columns else 0)
        if "n" in u.columns:
            long = u[pd.to_numeric(u["n"], errors="coerce") >= long_n]
            if (
                long.groupby("series").size().min() >= 10
                and long["series"].nunique() == u["series"].nunique()
            ):
                u = long
        med = u.groupby(["series", "dim"])["r95"].median()
        nulls = {dim: v for (name, dim), v in med.items() if is_null(name)}
        for (name, dim), v in med.items():
            if is_null(name):
                continue
            if dim not in nulls:
                parts.append(f"{ds.name}/{name} {v:g} (no null of dim {dim:g})")
                continue
            pairs += 1
            wins += int(v <= LOW_RANK_RATIO * nulls[dim])
            parts.append(f"{ds.name}/{name} {v:g} vs null {nulls[dim]:g}")
    if pairs == 0:
        c.evidence = f"needs users.csv with a random-null route; {RUN_ANALYSIS}"
        return c
    c.verdict = CONFIRMED if wins > pairs / 2 else REFUTED
    c.evidence = f"{wins} of {pairs} pairs pass; median r_0.95: " + "; ".join(parts)
    return c


def evaluate(rs: ResultSet) -> list[Claim]:
    return [
        svd_lossless(rs),
        svd_faster(rs),
        linrec_shift(rs),
        lrea_absorption(rs),
        low_rank_premise(rs),
    ]


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "claim": c.claim,
                "source": c.source,
                "verdict": c.verdict,
                "what we measured": c.evidence,
                "rule": c.rule,
                "see": c.figure,
            }
            for c in claims
        ]
    )


def absorption_table(ok: pd.DataFrame) -> pd.DataFrame:
    d = ok[ok["method"] == "lrea"]
    cols = [
        c
        for c in d.columns
        if "absorption" in c and pd.api.types.is_numeric_dtype(d[c]) and d[c].notna().any()
    ]
    if d.empty or not cols:
        return pd.DataFrame()
    g = d.groupby(["device", "label", "family"])[cols].median().reset_index()
    return g.replace({np.inf: np.nan})
