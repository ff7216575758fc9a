"""Decision table: regime (N bin x M x KL budget) -> method, rank, expected KL, expected time.

Inputs: ``kl_by_rank.csv`` rows (closing_loop) and optionally a bench results table
(docs/contracts.md section 2). For each route, N bin and budget the rank is the ``quantile``
(default 0.9) over the bin's users of the smallest measured r meeting the budget, so about
90 % of users meet it; users who meet it at no measured r count as needing dense.
Expected KL = mean over the bin's users of their KL at that r. Expected time: the bench
table's ``forward_ms_median`` (prepare + attend) of ``svd_exact`` at the smallest benched
rank >= r (when none is benched, the largest lower rank gives a lower bound on its time,
flagged in ``svd_time_is_lower_bound``: enough to rule svd_exact out when even that is
slower than dense) and of ``dense``, at the row's M, interpolated log-log in N between the two
benched N that bracket the bin's median N (nearest benched N outside the range; the
``time_source`` column says which). The faster of the two that meets the budget wins;
without timings the recommendation is svd_exact at r when r < d, with empty time columns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .closing_loop import BUDGETS, rank_needed
from .spectra import N_BIN_LABELS

TIME_COL = "forward_ms_median"


def read_bench(path: str | Path) -> pd.DataFrame:
    """A bench results table from a CSV/parquet file or a run folder holding results.csv."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.rglob("results.csv"))
        if not files:
            raise ValueError(f"{p}: no results.csv under this folder")
        df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    elif p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        df = pd.read_csv(p)
    need = {"method", "n", "m", "status", TIME_COL}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"{p}: bench table lacks columns {sorted(missing)}")
    return df


def _interp_time(rows: pd.DataFrame, n: float, col: str = TIME_COL) -> tuple[float, str]:
    """Median time over repeated configs per N, then log-log interpolation in N."""
    if col not in rows.columns:
        return math.nan, f"no column {col}"
    t = rows.groupby("n")[col].median().dropna().sort_index()
    if t.empty:
        return math.nan, "no bench row"
    ns = t.index.to_numpy(dtype=float)
    if n <= ns[0] or n >= ns[-1] or len(ns) == 1:
        j = int(np.argmin(np.abs(np.log(ns) - math.log(max(n, 1.0)))))
        return float(t.iloc[j]), f"nearest benched n={int(ns[j])}"
    hi = int(np.searchsorted(ns, n))
    lo = hi - 1
    w = (math.log(n) - math.log(ns[lo])) / (math.log(ns[hi]) - math.log(ns[lo]))
    val = math.exp((1 - w) * math.log(t.iloc[lo]) + w * math.log(t.iloc[hi]))
    return float(val), f"log-log interpolated between n={int(ns[lo])} and n={int(ns[hi])}"


def _bench_rows(
    bench: pd.DataFrame, method: str, m: int, d: int, rank: int | None
) -> tuple[pd.DataFrame, int | None, bool]:
    """Rows of one method at M (and d, target setting, gram solver); for svd_exact the rank
    used: the smallest benched rank >= r, else the largest below it (a lower bound on time)."""
    sel = bench[(bench["method"] == method) & (bench["m"] == m) & (bench["status"] == "ok")]
    if "d" in sel.columns and (sel["d"] == d).any():
        sel = sel[sel["d"] == d]
    if "setting" in sel.columns and (sel["setting"] == "target").any():
        sel = sel[sel["setting"] == "target"]
    if rank is None:
        return sel, None, False
    if "rank" not in sel.columns:
        return sel.iloc[0:0], None, False
    if "solver" in sel.columns and (sel["solver"] == "gram").any():
        sel = sel[sel["solver"] == "gram"]
    ranks = np.sort(sel["rank"].dropna().unique())
    if not len(ranks):
        return sel.iloc[0:0], None, False
    above = ranks[ranks >= rank]
    used = int(above[0]) if len(above) else int(ranks[-1])
    return sel[sel["rank"] == used], used, not len(above)


def _bench_time(
    bench: pd.DataFrame, method: str, m: int, n: float, d: int, rank: int | None
) -> tuple[float, str, Any]:
    """(forward ms, source note, rank used; negative = lower bound from a lower rank)."""
    rows, used, lower = _bench_rows(bench, method, m, d, rank)
    if rank is not None and used is None:
        return math.nan, "no svd_exact rows", None
    t, src = _interp_time(rows, n)
    if lower:
        return t, f"LOWER BOUND from benched rank {used} < {rank}; {src}", -used
    return t, src, used


def _attend_time(
    bench: pd.DataFrame, method: str, m: int, n: float, d: int, rank: int | None
) -> float:
    """Attend-only ms (the per-user state reused across candidate batches), same row choice."""
    rows, _, _ = _bench_rows(bench, method, m, d, rank)
    return _interp_time(rows, n, "attend_ms_median")[0]


def decide(
    kl: pd.DataFrame,
    bench: pd.DataFrame | None = None,
    budgets: tuple[float, ...] = BUDGETS,
    quantile: float = 0.9,
    m_values: list[int] | None = None,
) -> pd.DataFrame:
    """Decision rows, one per route x N bin x M x budget."""
    need = rank_needed(kl, budgets)
    if m_values is None:
        m_values = (
            sorted(int(v) for v in bench["m"].dropna().unique()) if bench is not None else [-1]
        )
    rows = []
    d_by_route = kl.groupby("route")["d"].max().to_dict()
    for (route, nb), g in need.groupby(["route", "n_bin"], sort=False):
        d = int(d_by_route[route])
        kg = kl[(kl["route"] == route) & (kl["n_bin"] == nb)]
        n_rep = float(g["n"].median())
        for b in budgets:
            col = g[f"r_kl_{b:g}"].fillna(np.inf).to_numpy()
            r_q = float(np.quantile(col, quantile))
            r = None if not math.isfinite(r_q) else int(r_q)
            if r is not None:
                # snap to a measured rank (quantile of measured ranks is one of them with 'inverted_cdf')
                r = int(np.quantile(col, quantile, method="inverted_cdf"))
            exp_kl = float(kg.loc[kg["rank"] == r, "kl_mean"].mean()) if r is not None else 0.0
            for m in m_values:
                row: dict[str, Any] = {
                    "route": route,
                    "n_bin": nb,
                    "n_median": n_rep,
                    "users": len(g),
                    "m": (m if m >= 0 else None),
                    "kl_budget": b,
                    "rank_quantile": quantile,
                    "svd_rank_needed": r,
                    "share_users_meeting_at_rank": float(np.mean(col <= r))
                    if r is not None
                    else 0.0,
                    "svd_expected_kl": exp_kl if r is not None else None,
                }
                svd_t = dense_t = math.nan
                src = "no bench table given: time columns empty"
                bench_rank = None
                if bench is not None and m >= 0:
                    dense_t, dsrc, _ = _bench_time(bench, "dense", m, n_rep, d, None)
                    if r is not None:
                        svd_t, ssrc, bench_rank = _bench_time(bench, "svd_exact", m, n_rep, d, r)
                    else:
                        ssrc = "-"
                    src = f"dense: {dsrc}; svd_exact: {ssrc}"
                    dense_att = _attend_time(bench, "dense", m, n_rep, d, None)
                    svd_att = (
                        _attend_time(bench, "svd_exact", m, n_rep, d, r)
                        if r is not None
                        else math.nan
                    )
                    row["dense_attend_ms"] = _nan_none(dense_att)
                    row["svd_attend_ms"] = _nan_none(svd_att)
                lower_bound = bench_rank is not None and bench_rank < 0
                if lower_bound:
                    bench_rank = -bench_rank
                row.update(
                    {
                        "svd_bench_rank": bench_rank,
                        "svd_time_is_lower_bound": lower_bound,
                        "svd_expected_ms": _nan_none(svd_t),
                        "dense_expected_ms": _nan_none(dense_t),
                    }
                )
                if r is None:
                    method, exp_t, note = (
                        "dense",
                        dense_t,
                        f"svd_exact meets the budget at no measured rank <= {kl['rank'].max()}",
                    )
                elif lower_bound and math.isfinite(svd_t) and math.isfinite(dense_t):
                    if svd_t >= dense_t:
                        method, exp_t = "dense", dense_t
                        note = f"svd_exact is slower than dense even at benched rank {bench_rank} < {r}"
                    else:
                        method, exp_t = "dense", dense_t
                        note = f"svd_exact not benched at rank >= {r}; dense is the measured choice"
                elif math.isfinite(svd_t) and math.isfinite(dense_t):
                    faster = svd_t < dense_t
                    method = "svd_exact" if faster else "dense"
                    exp_t = svd_t if faster else dense_t
                    note = "faster of the two that meet the budget"
                elif bench is not None and m >= 0 and math.isfinite(dense_t):
                    method, exp_t = "dense", dense_t
                    note = f"svd_exact meets the budget at r={r} but has no benched time here; dense is measured"
                elif r < d:
                    method, exp_t, note = "svd_exact", svd_t, "no timing to compare; rank below d"
                else:
                    method, exp_t, note = "dense", dense_t, "rank needed is not below d"
                row.update(
                    {
                        "method": method,
                        "rank": (r if method == "svd_exact" else None),
                        "expected_kl": (exp_kl if method == "svd_exact" else 0.0),
                        "expected_ms": _nan_none(exp_t),
                        "speedup_vs_dense": _nan_none(dense_t / svd_t)
                        if method == "svd_exact" and math.isfinite(svd_t) and math.isfinite(dense_t)
                        else None,
                        "time_source": src,
                        "note": note,
                    }
                )
                rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        order = {b: i for i, b in enumerate(N_BIN_LABELS)}
        out = out.sort_values(
            ["route", "kl_budget", "m", "n_bin"],
            key=lambda s: s.map(order) if s.name == "n_bin" else s,
            ascending=[True, False, True, True],
        )
    return out.reset_index(drop=True)


def _nan_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def write_decisions(
    table: pd.DataFrame, out_dir: str | Path, meta: dict[str, Any]
) -> tuple[Path, Path]:
    """decisions.csv and decisions.json (metadata + one record per row; nulls for missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "decisions.csv"
    js = out / "decisions.json"
    table.to_csv(csv, index=False)
    records = json.loads(table.to_json(orient="records"))
    js.write_text(
        json.dumps({**meta, "protocol": __doc__.strip(), "decisions": records}, indent=2) + "\n"
    )
    return csv, js
