"""Decision table: regime (route x N bin x M x KL budget x serving scenario) -> method, rank,
expected quality loss, expected time and speedup with its interval, on the bench table's device.

Every method is weighed by what it claims. ``svd_exact`` (and ``svd_tokens`` when
``kl_by_rank.csv`` holds its rows, column ``method``) by fidelity on real users: the rank is the
``quantile`` (default 0.9) over the bin's users of the smallest measured r whose mean KL meets
the budget; users meeting it at no measured r count as failing. LinRec, LREA and Performer
approximate a different operator, so only trained end-task quality can judge them: with the
results of ``analysis quality`` (``--quality`` folder or results.csv; ``quality_decide``) a
method is eligible only when the whole 95 % interval over seeds of its loss against dense
(NDCG@10, filtered where recorded, for next-item; AUC for target attention) lies inside the
quality budget (``quality_budget`` ΔNDCG, ``quality_budget_auc`` ΔAUC), and is timed at the
trained configuration's rank / features; without quality results their rows say "quality
unknown" with the command that measures it, and they cannot win. ``svd_exact`` / ``svd_tokens``
stay judged by KL; their trained loss, where recorded, is shown beside. Dense is the reference.

Times come from the bench table of one device (``decide_timing``), matched exactly: the
regime's N is the benched N inside the bin nearest the bin's median N (every method compared
at that same N), a method is timed at the rank it needs, and only against dense timed in the
same bench run (when several runs hold the pair, the one with the smallest relative IQR). A case missing from the table is
never bounded or interpolated: the row says "not benched" and the case goes into
``missing_cases.toml``, a sweep the harness runs (and resumes) with the printed command.

Scenarios: ``per-request`` (prepare + attend for every request), ``pre-stored`` (the per-user
state kept between requests: attend + prepare / R, state bytes per user and head stated, and
the crossover R above which it beats dense) and ``cascade`` (one prepare, one attend per stage
M). A method is chosen only when its speedup interval lies above 1; otherwise dense stays.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .closing_loop import BUDGETS, rank_needed
from .decide_timing import BenchView, TimeOpts, fmt_ci, state_bytes, view
from .quality_decide import QUALITY_CMD, is_aggregated, judge, pick
from .quality_decide import read_quality as _read_quality
from .spectra import N_BIN_LABELS

METHODS = ("dense", "svd_exact", "svd_tokens", "linrec", "lrea", "performer")
FIDELITY_METHODS = ("svd_exact", "svd_tokens")
QUALITY_METHODS = ("linrec", "lrea", "performer")
RANKED = ("svd_exact", "svd_tokens", "lrea")
NULL_ROUTES = ("random",)


@dataclass(frozen=True)
class DecideOpts:
    budgets: tuple[float, ...] = BUDGETS
    quantile: float = 0.9
    m_values: tuple[int, ...] | None = None
    requests: int = 100  # R of the pre-stored scenario
    cascade: tuple[int, ...] | None = None  # stage sizes; default every benched M, largest first
    quality_budget: float = 0.005  # ΔNDCG (loss of NDCG@10 against dense)
    quality_budget_auc: float = 0.002  # ΔAUC (loss of AUC against dense, target attention)
    device: str | None = None
    time: TimeOpts = field(default_factory=TimeOpts)
    missing_toml: str = "OUT/missing_cases.toml"
    bench_out: str = "BENCH_DIR/targeted"
    spectra: str = "SPECTRA_DIR"


def read_bench(*paths: str | Path) -> pd.DataFrame:
    """Bench results from CSV/parquet files or run folders holding results.csv (any depth); the
    ``source`` column names each row's file (one run), so comparisons stay within a run."""
    frames = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(p.rglob("results.csv"))
            if not files:
                raise ValueError(f"{p}: no results.csv under this folder")
            frames += [_tag(pd.read_csv(f), f) for f in files]
        elif p.suffix == ".parquet":
            frames.append(_tag(pd.read_parquet(p), p))
        else:
            frames.append(_tag(pd.read_csv(p), p))
        need = {"method", "n", "m", "status", "forward_ms_median"}
        missing = need - set(frames[-1].columns)
        if missing:
            raise ValueError(f"{p}: bench table lacks columns {sorted(missing)}")
    return pd.concat(frames, ignore_index=True)


def _tag(df: pd.DataFrame, src: Path) -> pd.DataFrame:
    return pd.concat([df, pd.DataFrame({"source": str(src)}, index=df.index)], axis=1)


def read_quality(path: str | Path) -> pd.DataFrame:
    """Trained end-task quality: `analysis quality` output (a folder or its results.csv,
    aggregated per method x params with the loss against dense and its interval), or a legacy
    table with columns method, delta_ndcg (dense minus method, so positive = worse), optionally
    rank, route, dataset. Any other file is a ValueError naming what it is."""
    return _read_quality(path)


def _bin_bounds(label: str) -> tuple[float, float]:
    m = re.match(r"\[(\d+),(\d+|inf)\)", str(label))
    if not m:
        return 0.0, math.inf
    return float(m.group(1)), (math.inf if m.group(2) == "inf" else float(m.group(2)))


def _fidelity(kl: pd.DataFrame, budgets: tuple[float, ...], quantile: float) -> dict[tuple, dict]:
    """(method, route, n_bin, budget) -> rank needed, share of users meeting it, expected KL."""
    out: dict[tuple, dict] = {}
    kl = (
        kl.assign(method=kl["method"].fillna("svd_exact"))
        if "method" in kl.columns
        else kl.assign(method="svd_exact")
    )
    for meth, km in kl.groupby("method"):
        need = rank_needed(km, budgets, meth)
        for (route, nb), g in need.groupby(["route", "n_bin"], sort=False):
            kg = km[(km["route"] == route) & (km["n_bin"] == nb)]
            for b in budgets:
                col = g[f"r_kl_{b:g}"].fillna(np.inf).to_numpy()
                q = float(np.quantile(col, quantile, method="inverted_cdf"))
                r = int(q) if math.isfinite(q) else None
                out[(meth, route, nb, b)] = {
                    "rank": r,
                    "share": float(np.mean(col <= r))
                    if r is not None
                    else float(np.mean(np.isfinite(col))),
                    "kl": float(kg.loc[kg["rank"] == r, "kl_mean"].mean())
                    if r is not None
                    else None,
                    "max_rank": int(km["rank"].max()),
                }
    return out


@dataclass
class _Cost:
    point: float
    draws: np.ndarray


def _add(*cs: _Cost | None, scale: tuple[float, ...] | None = None) -> _Cost | None:
    if any(c is None for c in cs):
        return None
    s = scale or (1.0,) * len(cs)
    return _Cost(
        sum(w * c.point for w, c in zip(s, cs, strict=True)),
        sum(w * c.draws for w, c in zip(s, cs, strict=True)),
    )


def _phase(v: BenchView, rows: pd.DataFrame, phase: str) -> _Cost | None:
    got = v.draws(rows, phase)
    return None if got is None else _Cost(*got)


class _Timer:
    """Costs of one method at one (N, stages, d, rank) from one bench run (source), recording
    the cases not benched. A method is only ever compared with dense timed in the same run.
    ``rank`` is Performer's feature count for Performer (None = its most benched count)."""

    def __init__(self, v: BenchView, missing: set[tuple]) -> None:
        self.v, self.missing = v, missing

    def select(
        self, method: str, n: int, m: int, d: int, rank: int | None, source: str | None = None
    ) -> pd.DataFrame:
        if method == "performer":
            return self.v.select(method, n, m, d, None, source, features=rank)
        return self.v.select(method, n, m, d, rank, source)

    def sources(
        self, method: str, n: int, stages: tuple[int, ...], d: int, rank: int | None
    ) -> list[str]:
        """Runs holding every stage of this case, oldest first (the order the tables were given)."""
        common: list[str] | None = None
        for m in stages:
            got = list(dict.fromkeys(self.select(method, n, m, d, rank)["source"].astype(str)))
            common = got if common is None else [x for x in common if x in got]
        return common or []

    def noise(
        self, method: str, n: int, stages: tuple[int, ...], d: int, rank: int | None, source: str
    ) -> float:
        """Median relative IQR of the case's timed phases in one run (to prefer the quietest run)."""
        rel = []
        for m in stages:
            rows = self.select(method, n, m, d, rank, source)
            for ph in ("forward", "attend", "prepare"):
                med, iqr = rows.get(f"{ph}_ms_median"), rows.get(f"{ph}_ms_iqr")
                if med is not None and iqr is not None:
                    rel += [
                        float(i) / float(x)
                        for x, i in zip(med, iqr, strict=True)
                        if np.isfinite(x) and np.isfinite(i) and x > 0
                    ]
        return float(np.median(rel)) if rel else math.inf

    def note_missing(
        self, method: str, n: int, stages: tuple[int, ...], d: int, rank: int | None
    ) -> None:
        extra = (
            (rank or self.v.default_param("performer", "features"))
            if method == "performer"
            else rank
        )
        if method != "performer" and rank is not None and rank > n:
            return  # cannot run: the rank exceeds the sequence length
        for m in stages:
            self.missing.add((method, n, m, d, extra))
            self.missing.add(("dense", n, m, d, None))  # re-timed in the same run as the method

    def costs(
        self,
        method: str,
        n: int,
        stages: tuple[int, ...],
        d: int,
        rank: int | None,
        requests: int,
        source: str,
    ) -> dict[str, _Cost | None]:
        per_m = {m: self.select(method, n, m, d, rank, source) for m in stages}
        first = per_m[stages[0]]
        prep = _phase(self.v, first, "prepare")
        attends = [_phase(self.v, per_m[m], "attend") for m in stages]
        if len(stages) == 1:
            once = _phase(self.v, first, "forward") or _add(prep, attends[0])
        else:
            once = _add(prep, *attends)
        total_attend = _add(*attends)
        stored = _add(total_attend, prep, scale=(1.0, 1.0 / requests)) if prep else None
        return {
            "once": once,
            "prepare": prep,
            "attend": total_attend,
            "stored": stored,
            "source": source,
        }


def _speedup(v: BenchView, dense: _Cost | None, c: _Cost | None) -> tuple[float, float, float]:
    if dense is None or c is None:
        return math.nan, math.nan, math.nan
    lo, hi = v.interval(dense.draws / c.draws)
    return dense.point / c.point, lo, hi


def _crossover(v: BenchView, dense: dict, c: dict) -> tuple[float, float, float]:
    """Smallest R at which attend + prepare / R beats dense's (point, interval); inf = never."""
    if not (dense.get("attend") and dense.get("prepare") and c.get("attend") and c.get("prepare")):
        return math.nan, math.nan, math.nan

    def solve(pd_, ad, pm, am):
        gain = ad - am
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(
                gain > 0, np.maximum(pm - pd_, 0.0) / np.where(gain > 0, gain, 1.0), np.inf
            )
        return np.ceil(np.maximum(r, 1.0))

    point = float(
        solve(
            np.array(dense["prepare"].point),
            np.array(dense["attend"].point),
            np.array(c["prepare"].point),
            np.array(c["attend"].point),
        )
    )
    draws = solve(
        dense["prepare"].draws, dense["attend"].draws, c["prepare"].draws, c["attend"].draws
    )
    lo, hi = v.interval(draws)
    return point, lo, hi


def _quality(
    method: str,
    route: str,
    nb: str,
    b: float,
    rank: int | None,
    fid: dict,
    quality: pd.DataFrame | None,
    opts: DecideOpts,
    datasets: list[str] | None = None,
) -> dict[str, Any]:
    """How a method stands against the budget: eligible, rank, expected KL / ΔNDCG, words."""
    if is_aggregated(quality):
        return _quality_trained(method, route, nb, b, rank, fid, quality, opts, datasets or [])
    if method == "dense":
        return {
            "eligible": True,
            "rank": None,
            "expected_kl": 0.0,
            "quality": "exact (the reference)",
        }
    if method in FIDELITY_METHODS:
        f = fid.get((method, route, nb, b))
        if f is None:
            return {
                "eligible": False,
                "rank": rank,
                "expected_kl": None,
                "quality": f"KL on these users not measured: run `python -m analysis kl --data DATA "
                f"--embedding ROUTES --kl-methods svd_exact,svd_tokens --out {opts.spectra}`",
            }
        if f["rank"] is None:
            return {
                "eligible": False,
                "rank": None,
                "expected_kl": None,
                "quality": f"over the KL budget {b:g} at every measured rank <= {f['max_rank']} "
                f"(only {f['share']:.0%} of users meet it at some rank)",
            }
        return {
            "eligible": True,
            "rank": f["rank"],
            "expected_kl": f["kl"],
            "quality": f"KL {f['kl']:.2g} at r = {f['rank']} ({f['share']:.0%} of users <= {b:g})",
        }
    q = None
    if quality is not None:
        q = quality[quality["method"] == method]
        for col, val in (("route", route), ("rank", rank)):
            if col in q.columns and val is not None and (q[col] == val).any():
                q = q[q[col] == val]
    if q is None or q.empty:
        return {
            "eligible": False,
            "rank": rank,
            "expected_kl": None,
            "quality": f"quality unknown: measure it with `{QUALITY_CMD.format(method=method)}`, "
            "then decide again with --quality DIR",
        }
    dq = float(q["delta_ndcg"].median())
    ok = dq <= opts.quality_budget
    return {
        "eligible": ok,
        "rank": rank,
        "expected_kl": None,
        "expected_dndcg": dq,
        "quality": f"ΔNDCG {dq:+.3g} {'<=' if ok else '>'} budget {opts.quality_budget:g}",
    }


def _trained_cols(r: pd.Series | None, note: str) -> dict[str, Any]:
    """The quality columns of a candidate row from its quality_decide row (None = none)."""
    if r is None:
        return {}
    val = lambda k: None if pd.isna(r.get(k)) else r.get(k)  # noqa: E731
    out = {
        "params": r["config"],
        "quality_task": r["task"],
        "quality_dataset": r["dataset"],
        "quality_preset": r.get("preset") or None,  # the budget the loss comes from
        "quality_metric": r.get("metric"),
        "quality_seeds": int(r["seeds"]),
        "quality_loss": val("loss"),
        "quality_loss_lo": val("loss_lo"),
        "quality_loss_hi": val("loss_hi"),
        "quality_interval": r.get("interval") if r["status"] == "ok" else r["status"],
        "quality_note": note or None,
    }
    if str(r.get("metric", "")).startswith("ndcg"):
        out["expected_dndcg"] = out["quality_loss"]
    elif r.get("metric") == "auc":
        out["expected_dauc"] = out["quality_loss"]
    return out


def _quality_trained(
    method: str,
    route: str,
    nb: str,
    b: float,
    rank: int | None,
    fid: dict,
    quality: pd.DataFrame,
    opts: DecideOpts,
    datasets: list[str],
) -> dict[str, Any]:
    """`_quality` with `analysis quality` results: trained methods judged by the interval of
    their loss against dense; svd_exact / svd_tokens by KL with the trained loss beside."""
    rows, note = pick(quality, method, datasets)
    if method == "dense" or method in FIDELITY_METHODS:
        base = _quality(method, route, nb, b, rank, fid, None, opts)
        if method == "dense" or rows.empty:
            return base
        r, _, words, _ = judge(rows, opts.quality_budget, opts.quality_budget_auc)
        extra = {k: v for k, v in _trained_cols(r, note).items() if k != "params"}
        return {
            **base,
            **extra,
            "quality": f"{base['quality']}; trained, shown beside (not judged): {words}",
            "_short": base["quality"].split(":")[0],
        }
    if rows.empty:
        return _quality(method, route, nb, b, rank, fid, None, opts)
    r, ok, words, short = judge(rows, opts.quality_budget, opts.quality_budget_auc)
    rk, ft = r.get("rank"), r.get("features")
    if note:  # another dataset's quality is shown, never taken as this dataset's
        ok, short = False, "quality unknown on this dataset"
        words = f"{short} ({note}: {words}); measure it with `{QUALITY_CMD.format(method=method)}`"
    return {
        "eligible": ok,
        "rank": int(rk) if rk is not None and not pd.isna(rk) else rank,
        "features": int(ft) if ft is not None and not pd.isna(ft) else None,
        "expected_kl": None,
        "quality": words,
        "_short": short,
        **_trained_cols(r, note),
    }


def _bench_n(v: BenchView, stages: tuple[int, ...], d: int, nb: str, n_med: float) -> int | None:
    lo, hi = _bin_bounds(nb)
    common = None
    for m in stages:
        ns = {n for n in v.benched_n("dense", m, d) if lo <= n < hi}
        common = ns if common is None else common & ns
    if not common:
        return None
    return min(common, key=lambda n: (abs(math.log(n) - math.log(max(n_med, 1.0))), n))


def decide(
    kl: pd.DataFrame,
    bench: pd.DataFrame | None = None,
    opts: DecideOpts = DecideOpts(),
    quality: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple]]:
    """(decisions: one row per regime x scenario, candidates: one row per regime x scenario x
    method, missing bench cases)."""
    fid = _fidelity(kl, opts.budgets, opts.quantile)
    v = view(bench, opts.device, opts.time) if bench is not None else None
    missing: set[tuple] = set()
    timer = _Timer(v, missing) if v is not None else None
    if opts.m_values:
        ms = list(opts.m_values)
    else:
        ms = sorted(int(x) for x in v.rows["m"].unique()) if v is not None else []
    stages = tuple(opts.cascade) if opts.cascade else tuple(sorted(ms, reverse=True))
    regimes: list[tuple[tuple[int, ...], str]] = [((m,), "per-request") for m in ms]
    regimes += [((m,), "pre-stored") for m in ms]
    if len(stages) > 1:
        regimes.append((stages, "cascade"))
    if not regimes:
        regimes = [((), "per-request")]
    d_by_route = kl.groupby("route")["d"].max().to_dict()
    datasets = sorted(kl["dataset"].astype(str).unique()) if "dataset" in kl.columns else []
    groups = kl.groupby(["route", "n_bin"], sort=False)
    dec_rows, cand_rows = [], []
    sb_cache: dict[tuple, int | None] = {}
    for (route, nb), g in groups:
        d = int(d_by_route[route])
        n_med = float(g.groupby("user")["n"].first().median())
        users = int(g["user"].nunique())
        for b in opts.budgets:
            for st, scen in regimes:
                base = {
                    "route": route,
                    "baseline_route": route in NULL_ROUTES,
                    "n_bin": nb,
                    "n_median": n_med,
                    "users": users,
                    "m": ("/".join(map(str, st)) if len(st) > 1 else (st[0] if st else None)),
                    "kl_budget": b,
                    "scenario": scen if scen != "pre-stored" else f"pre-stored (R={opts.requests})",
                    "device": v.device_label if v else "none (no bench table)",
                    "dtype": v.fixed.get("dtype") if v else None,
                }
                n = _bench_n(v, st, d, nb, n_med) if v is not None and st else None
                if v is not None and st and n is None:
                    n_t = max(int(round(n_med)), 2)
                    for m in st:
                        missing.add(("dense", n_t, m, d, None))
                    for meth in FIDELITY_METHODS:
                        f = fid.get((meth, route, nb, b))
                        if f and f["rank"] is not None:
                            for m in st:
                                missing.add((meth, n_t, m, d, min(f["rank"], n_t, 2 * d)))
                    # timed too, so the rows can say what they would buy; at the trained
                    # rank / features when the quality results name them
                    for meth in QUALITY_METHODS:
                        tq = _quality(meth, route, nb, b, None, fid, quality, opts, datasets)
                        col = "rank" if meth in RANKED else "features"
                        rk = (
                            (tq.get(col) or v.default_param(meth, col))
                            if meth in RANKED or meth == "performer"
                            else None
                        )
                        if rk is None or meth == "performer" or rk <= n_t:
                            for m in st:
                                missing.add((meth, n_t, m, d, rk))
                base["bench_n"] = n
                cands = []
                dense_src = (
                    timer.sources("dense", n, st, d, None)
                    if timer is not None and n is not None
                    else []
                )
                dense_by_src: dict[str, dict] = {}
                for meth in METHODS:
                    qual = _quality(meth, route, nb, b, None, fid, quality, opts, datasets)
                    rank = qual["rank"]
                    if (
                        meth in RANKED
                        and rank is None
                        and meth not in FIDELITY_METHODS
                        and v is not None
                    ):
                        rank = v.default_param(meth, "rank")
                        qual["rank"] = rank
                    if meth in FIDELITY_METHODS and rank is not None and n is not None:
                        rank = min(rank, n, 2 * d)
                    feats = qual.get("features")
                    if meth == "performer" and feats is None and v is not None:
                        feats = v.default_param("performer", "features")
                    c = {
                        **base,
                        "method": meth,
                        "rank": rank,
                        "eligible": qual["eligible"],
                        "expected_kl": qual.get("expected_kl"),
                        "expected_dndcg": qual.get("expected_dndcg"),
                        "quality": qual["quality"],
                        "features": feats,
                        **{
                            k: x
                            for k, x in qual.items()
                            if k.startswith(("quality_", "expected_d", "_short"))
                        },
                    }
                    if "params" in qual:
                        c["params"] = qual["params"]
                    costs = dense = None
                    if dense_src and (meth not in FIDELITY_METHODS or rank is not None):
                        r_ = rank if meth in RANKED else feats if meth == "performer" else None
                        both = [x for x in timer.sources(meth, n, st, d, r_) if x in dense_src]
                        if both:  # the run that measured this pair most precisely
                            src = min(
                                both,
                                key=lambda x: (
                                    timer.noise("dense", n, st, d, None, x)
                                    + timer.noise(meth, n, st, d, r_, x)
                                ),
                            )
                            if src not in dense_by_src:
                                dense_by_src[src] = timer.costs(
                                    "dense", n, st, d, None, opts.requests, src
                                )
                            dense = dense_by_src[src]
                            costs = timer.costs(meth, n, st, d, r_, opts.requests, src)
                        else:
                            timer.note_missing(meth, n, st, d, r_)
                    c["_costs"], c["_dense"] = costs, dense
                    cands.append(c)
                for c in cands:
                    _time_columns(v, c, c["_dense"], scen, n, sb_cache, d, opts)
                cand_rows += cands
                dec_rows.append(_choose(base, cands, scen, n, nb, n_med, opts))
    cand = pd.DataFrame([{k: x for k, x in c.items() if not k.startswith("_")} for c in cand_rows])
    dec = pd.DataFrame(dec_rows)
    for t in (dec, cand):
        for col in ("rank", "bench_n", "crossover_r", "features", "quality_seeds"):
            if col in t.columns:
                t[col] = (
                    pd.to_numeric(t[col], errors="coerce").replace([np.inf], np.nan).astype("Int64")
                )
    dec = _sort(dec)
    return dec, _sort(cand), sorted(missing, key=lambda x: (x[0], x[1], x[2], x[4] or 0))


def _time_columns(
    v: BenchView | None,
    c: dict,
    dense_c: dict | None,
    scen: str,
    n: int | None,
    sb_cache: dict,
    d: int,
    opts: DecideOpts,
) -> None:
    costs = c["_costs"]
    key = "stored" if scen == "pre-stored" else "once"
    c["expected_ms"] = costs[key].point if costs and costs.get(key) else None
    c["bench_source"] = costs["source"] if costs else None
    sp, lo, hi = (
        _speedup(v, dense_c.get(key) if dense_c else None, costs.get(key) if costs else None)
        if v is not None
        else (math.nan,) * 3
    )
    c.update({"speedup": sp, "speedup_lo": lo, "speedup_hi": hi})
    c["time"] = (
        "measured"
        if costs and costs.get(key)
        else "no bench table"
        if v is None
        else f"not benched at N in {c['n_bin']}"
        if n is None
        else f"not benched with dense in one run at N = {n}"
        + (f", rank {c['rank']}" if c["rank"] is not None else "")
        if costs is None
        else "phase not timed"
    )
    if scen == "pre-stored" and costs and dense_c:
        xr, xlo, xhi = _crossover(v, dense_c, costs)
        c.update({"crossover_r": xr, "crossover_r_lo": xlo, "crossover_r_hi": xhi})
        params = {"rank": c["rank"]} if c["method"] in RANKED and c["rank"] else {}
        if c["method"] == "performer" and c.get("features"):
            params["features"] = int(c["features"])
        k = (c["method"], n, d, tuple(sorted(params.items())), c["dtype"])
        if k not in sb_cache:
            sb_cache[k] = state_bytes(c["method"], n, d, params, str(c["dtype"] or "fp32"))
        c["state_bytes_per_user_head"] = sb_cache[k]


def _verdict(c: dict) -> str:
    if c["method"] == "dense":
        return "reference"
    if not math.isfinite(c.get("speedup", math.nan)):
        return "no time"
    if c["speedup_lo"] > 1:
        return "faster"
    if c["speedup_hi"] < 1:
        return "slower"
    return "no faster (interval straddles 1)"


def _run_cmd(opts: DecideOpts) -> str:
    return (
        f"python -m bench run --config {opts.missing_toml} --out {opts.bench_out} --no-cascade, "
        f"then decide again with --bench including {opts.bench_out}"
    )


def _who(c: dict) -> str:
    """The method with the rank / features it is decided at (e.g. 'performer m=256')."""
    if c["rank"] is not None and c["method"] in RANKED:
        return f"{c['method']} r={c['rank']}"
    if c["method"] == "performer" and c.get("features"):
        return f"performer m={int(c['features'])}"
    return c["method"]


TRAINED_COLS = (
    "features",
    "params",
    "expected_dauc",
    "quality_task",
    "quality_dataset",
    "quality_preset",
    "quality_metric",
    "quality_seeds",
    "quality_loss",
    "quality_loss_lo",
    "quality_loss_hi",
    "quality_interval",
)


def _choose(
    base: dict, cands: list[dict], scen: str, n: int | None, nb: str, n_med: float, opts: DecideOpts
) -> dict[str, Any]:
    for c in cands:
        c["verdict"] = _verdict(c)
    dense = cands[0]
    row = {
        **base,
        "method": None,
        "rank": None,
        "expected_kl": None,
        "expected_ms": None,
        "speedup": math.nan,
        "speedup_lo": math.nan,
        "speedup_hi": math.nan,
    }
    others = []
    for c in cands[1:]:
        who = _who(c)
        if not c["eligible"]:
            tail = (
                f"; {fmt_ci(c['speedup'], c['speedup_lo'], c['speedup_hi'])} if it were acceptable"
                if math.isfinite(c.get("speedup", math.nan))
                else ""
            )
            short = c.get("_short") or c["quality"].split(":")[0]
            others.append(f"{who}: {short}{tail}")
        elif c["time"] != "measured":
            others.append(f"{who}: {c['time']}")
        else:
            others.append(
                f"{who}: {fmt_ci(c['speedup'], c['speedup_lo'], c['speedup_hi'])} {c['verdict']}"
            )
    if dense["time"] != "measured":
        why = (
            f"dense not benched in {nb} (median N {n_med:g}): run {_run_cmd(opts)}"
            if base["device"] != "none (no bench table)"
            else "no bench table: give --bench"
        )
        row.update(
            {
                "method": "undecided",
                "verdict": "not benched",
                "why": why,
                "others": "; ".join(others),
            }
        )
        return row
    winners = [c for c in cands[1:] if c["eligible"] and c["verdict"] == "faster"]
    best = max(winners, key=lambda c: c["speedup"]) if winners else dense
    row.update(
        {
            k: best.get(k)
            for k in (
                "method",
                "rank",
                "expected_kl",
                "expected_dndcg",
                "expected_ms",
                "speedup",
                "speedup_lo",
                "speedup_hi",
                *TRAINED_COLS,
            )
        }
    )
    if best is dense:
        row.update({"speedup": 1.0, "speedup_lo": 1.0, "speedup_hi": 1.0})
    row["verdict"] = "faster than dense" if winners else "dense (no acceptable method is faster)"
    if scen == "pre-stored" and best is not dense:
        row["crossover_r"] = best.get("crossover_r")
        row["state_bytes_per_user_head"] = best.get("state_bytes_per_user_head")
    elif scen == "pre-stored":
        xs = [
            c
            for c in cands[1:]
            if c["eligible"] and math.isfinite(c.get("crossover_r", math.nan) or math.nan)
        ]
        if xs:
            x = min(xs, key=lambda c: c["crossover_r"])
            row["crossover_r"] = x["crossover_r"]
            row["state_bytes_per_user_head"] = x.get("state_bytes_per_user_head")
            others.append(f"{_who(x)} would need R >= {int(x['crossover_r'])}")
    row["why"] = "; ".join(others)
    if any("not benched" in o for o in others):
        row["why"] += f". Missing cases: run {_run_cmd(opts)}"
    return row


def _sort(t: pd.DataFrame) -> pd.DataFrame:
    if t.empty:
        return t
    order = {b: i for i, b in enumerate(N_BIN_LABELS)}
    t = t.assign(_bin=t["n_bin"].map(order).fillna(99), _m=t["m"].astype(str).str.len())
    t = t.sort_values(
        ["baseline_route", "route", "kl_budget", "_bin", "scenario", "_m", "m"],
        ascending=[True, True, False, True, True, True, True],
        key=None,
        kind="stable",
    )
    return t.drop(columns=["_bin", "_m"]).reset_index(drop=True)


def missing_toml(missing: list[tuple], v_fixed: dict[str, Any], device: str) -> str:
    """A sweep of the cases the decision table needed and the bench table lacks."""
    lines = [
        "# Cases the decision table needed and the bench table lacks (written by",
        "# `python -m analysis decide`). Only times are used (fidelity comes from the real users' KL),",
        "# so memory and fidelity are off; inputs are synthetic power-law keys.",
        'name = "decide_missing"',
        f'device = "{device}"',
        "methods = [" + ", ".join(f'"{m}"' for m in sorted({x[0] for x in missing})) + "]",
        "[memory]",
        "enabled = false",
        "[fidelity]",
        "enabled = false",
        "[method_params.svd_exact]",
        'solver = ["gram"]',
    ]
    groups: dict[tuple, set[int]] = {}
    for meth, n, m, d, rank in missing:
        groups.setdefault((meth, n, d, rank), set()).add(m)
    for (meth, n, d, rank), mset in sorted(
        groups.items(), key=lambda x: (x[0][0], x[0][1], x[0][3] or 0)
    ):
        lines += [
            "[[grid]]",
            f'methods = ["{meth}"]',
            f"n = [{n}]",
            "m = [" + ", ".join(str(m) for m in sorted(mset)) + "]",
            f"d = [{d}]",
        ]
        if rank is not None:  # the rank, or Performer's feature count
            lines.append(f"{'features' if meth == 'performer' else 'rank'} = [{rank}]")
        for col in ("dtype", "batch", "heads"):
            if col in v_fixed:
                val = v_fixed[col]
                lines.append(
                    f'{col} = ["{val}"]' if isinstance(val, str) else f"{col} = [{int(val)}]"
                )
        lines += [
            'setting = ["target"]',
            'family = [{kind = "powerlaw", alpha = 1.0, noise_floor = 0.001}]',
        ]
    return "\n".join(lines) + "\n"


def write_decisions(
    dec: pd.DataFrame,
    cand: pd.DataFrame,
    out_dir: str | Path,
    meta: dict[str, Any],
    toml: str | None = None,
) -> list[Path]:
    """decisions.csv/json (one row per regime x scenario), candidates.csv (every method) and,
    when cases are missing, missing_cases.toml."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "decisions.csv", out / "decisions.json", out / "candidates.csv"]
    dec.to_csv(paths[0], index=False)
    records = json.loads(dec.to_json(orient="records"))
    paths[1].write_text(
        json.dumps({**meta, "protocol": __doc__.strip(), "decisions": records}, indent=2) + "\n"
    )
    cand.to_csv(paths[2], index=False)
    tpath = out / "missing_cases.toml"
    if toml:
        tpath.write_text(toml)
        paths.append(tpath)
    elif tpath.exists():
        tpath.unlink()
    return paths
