"""Assemble the eight report sections (text, figures, tables) from a ResultSet, plus a ninth,
quality vs speed (``quality_section``), when the inputs hold `analysis quality` results."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from . import claims as claims_mod
from .derive import (
    EXP_NOT_RECORDED,
    crossover_table,
    inputs_note,
    method_sort_key,
    roofline_case_table,
    roofline_phases,
    status_rows,
)
from .figures import cascade as fig_cascade
from .figures import fidelity, memory, roofline, spectra, timing
from .figures import runs as fig_runs
from .figures.common import Fig
from .load import ResultSet

HOW_BENCH = (
    "python -m bench run --preset quick --out results/cpu "
    "(on a GPU: --preset paper --out results/<gpu>); then pass that directory to --results"
)
HOW_SPECTRA = (
    "python -m analysis spectrum --data DATA --kl --out results/spectra/<dataset>, then "
    "python -m analysis decide --spectra results/spectra/<dataset> --bench results/cpu "
    "--out results/spectra/<dataset>; then pass results/spectra to --results"
)
DECISION_COLS = [
    "regime",
    "route",
    "n_bin",
    "n_median",
    "users",
    "m",
    "kl_budget",
    "method",
    "rank",
    "r",
    "expected_kl",
    "expected_ms",
    "speedup_vs_dense",
    "share_users_meeting_at_rank",
    "note",
]
SPECTRA_PER_FIG = 4  # datasets per scree / rank figure (keeps PDF pages readable)
VARYING = ["dtype", "setting", "batch", "heads", "causal", "padding", "query_scale"]

# the route analysis/seeds_regime.py writes (reports read files; they never import analysis)
SYNTHETIC_ROUTE = "synthetic-from-real"


@dataclass
class Table:
    key: str
    title: str
    df: pd.DataFrame
    caption: str = ""
    full: bool = False  # always shown in full (no scroll box), e.g. the decision rows


@dataclass
class Section:
    num: int
    key: str
    title: str
    badge: str = ""
    intro: list[str] = field(default_factory=list)
    figures: list[Fig] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)  # the plain verdict, shown first in the report


def _join(vals) -> str:
    vals = [
        str(v) for v in pd.Series(list(vals)).dropna().unique() if str(v) not in ("", "nan", "<NA>")
    ]
    return ", ".join(sorted(vals)) if vals else "-"


def _groups(ok: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(device, dtype, setting) combinations with timings, most rows first per device."""
    g = ok[ok["forward_ms_median"].notna()].groupby(["device", "dtype", "setting"]).size()
    g = g.reset_index(name="rows").sort_values(["device", "rows"], ascending=[True, False])
    return [(r.device, r.dtype, r.setting) for r in g.itertuples()]


def _main_groups(ok: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The most measured (dtype, setting) per device."""
    out, seen = [], set()
    for dev, dt, st in _groups(ok):
        if dev not in seen:
            out.append((dev, dt, st))
            seen.add(dev)
    return out


def _slug(*parts) -> str:
    """An HTML id fragment: run labels ("cpu @b60223f, 2 threads") become "cpu-b60223f-2-threads"."""
    raw = "-".join(str(p).replace("_", "-").replace(".", "") for p in parts)
    return re.sub(r"[^A-Za-z0-9:-]+", "-", raw).strip("-")


# ---------------------------------------------------------------- 1
def environment(rs: ResultSet) -> Section:
    s = Section(1, "environment", "Environment and provenance")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    s.intro.append(
        f"Report built {now} from {len(rs.sources)} result location(s). Every bench figure "
        "title says whether its inputs are synthetic (and which family) or real data."
    )
    src = pd.DataFrame(
        [{"path": str(x.path), "kind": x.kind, "files": ", ".join(x.files)} for x in rs.sources]
    )
    s.tables.append(Table("tbl-sources", "Inputs read", src))
    b = rs.bench
    if not b.empty:
        rows = []
        for dev, g in b.groupby("device"):
            ts = g["timestamp"].dropna().astype(str)
            rows.append(
                {
                    "device": dev,
                    "device name": _join(g["device_name"]),
                    "CPU": _join(g["cpu_model"]),
                    "threads": _join(g["threads"].dropna().astype(int)),
                    "torch": _join(g["torch_version"]),
                    "CUDA / driver": f"{_join(g['cuda_version'])} / {_join(g['driver'])}",
                    "git commit": _join(g["git_commit"].astype(str).str[:10]),
                    "host": _join(g["hostname"]),
                    "when": f"{ts.min()} .. {ts.max()}" if len(ts) else "-",
                    "presets": _join(g["preset"]),
                    "timer": _join(g["timer"]),
                    "rows (ok / all)": f"{int((g['status'] == 'ok').sum())} / {len(g)}",
                    "inputs": inputs_note(g),
                }
            )
        env = (
            pd.DataFrame(rows)
            .set_index("device")
            .T.reset_index()
            .rename(columns={"index": "field"})
        )
        s.tables.append(Table("tbl-env", "Benchmark environment per device", env))
    else:
        s.missing.append(f"No benchmark table was given. To produce one: {HOW_BENCH}.")
    if rs.spectra:
        rows = []
        for ds in rs.spectra.values():
            u = ds.users
            rows.append(
                {
                    "dataset": ds.name,
                    "inputs": "real data",
                    "folder": str(ds.path),
                    "routes": _join(u["route"]) if u is not None and "route" in u.columns else "-",
                    "users": int(u["user"].nunique())
                    if u is not None and "user" in u.columns
                    else "-",
                    "N range": f"{int(u['n'].min())}-{int(u['n'].max())}"
                    if u is not None and "n" in u.columns
                    else "-",
                    "tables": ", ".join(
                        n
                        for n in ("users", "summary", "scree", "kl_by_rank", "decisions", "profile")
                        if getattr(ds, n) is not None
                    ),
                }
            )
        s.tables.append(Table("tbl-datasets", "Spectra datasets (real data)", pd.DataFrame(rows)))
    else:
        s.missing.append(f"No spectra directory was given. To produce one: {HOW_SPECTRA}.")
    if rs.warnings:
        s.intro.append("Warnings while reading: " + "; ".join(rs.warnings))
    return s


# ---------------------------------------------------------------- 2
def cpu_timing_note(ok: pd.DataFrame) -> str | None:
    """What the CPU rows' wall times are worth (issue 11): how many were timed on a loaded
    machine, and the CPU-time columns to rank those by. None for tables without CPU time."""
    col = "forward_process_cpu_ms_median"
    if col not in ok.columns or "timing_rank_by" not in ok.columns:
        return None
    cpu = ok[pd.to_numeric(ok[col], errors="coerce").notna()]
    if not len(cpu):
        return None
    loaded = cpu[cpu["timing_rank_by"] == "process_cpu"]
    if not len(loaded):
        return (
            f"CPU rows ({len(cpu)}) were timed on an idle machine: wall time is used; their "
            "thread and process CPU times are in the *_cpu_ms_median columns."
        )
    why = loaded["timing_wall_warning"].dropna()
    return (
        f"Warning: {len(loaded)} of {len(cpu)} CPU rows were timed on a loaded machine"
        + (f" ({why.iloc[0]})" if len(why) else "")
        + ", where wall times are unusable; the harness "
        "ranks them by process CPU time (forward_process_cpu_ms_median; thread CPU time beside it). "
        "The figures below plot wall time."
    )


def timing_section(rs: ResultSet) -> Section:
    s = Section(2, "time", "Time vs N")
    if not rs.has_bench or rs.ok["forward_ms_median"].notna().sum() == 0:
        s.missing.append(f"No timed benchmark rows. To produce them: {HOW_BENCH}.")
        _status(s, rs)
        return s
    ok = rs.ok
    s.badge = inputs_note(ok)
    s.intro.append(
        "Median time per call (log-log), one line per method, faceted by M (candidates) and "
        "d (head dimension); devices are never mixed in one line. The prepare/attend split "
        "separates per-user from per-candidate work."
    )
    note = cpu_timing_note(ok)
    if note:
        s.intro.append(note)
    single = []
    for dev, dt, st in _groups(ok):
        f = timing.time_vs_n(ok, dev, dt, st, "fig-time-" + _slug(dev, dt, st))
        if f:
            s.figures.append(f)
        else:
            single.append(ok[(ok["device"] == dev) & (ok["dtype"] == dt) & (ok["setting"] == st)])
    for dev, dt, st in _main_groups(ok):
        for fn, k in (
            (timing.prepare_attend_split, "fig-split-"),
            (timing.speedup_vs_n, "fig-speedup-"),
        ):
            f = fn(ok, dev, dt, st, k + _slug(dev, dt, st))
            if f:
                s.figures.append(f)
    for kind, dt, st in fig_runs.overlay_groups(ok):
        f = fig_runs.runs_overlay(ok, kind, dt, st, "fig-runs-" + _slug(kind, dt, st))
        if f:
            s.figures.append(f)
    if single:
        t = pd.concat(single)
        cols = [
            "device",
            "dtype",
            "setting",
            "method",
            "label",
            "n",
            "m",
            "d",
            "prepare_ms_median",
            "attend_ms_median",
            "forward_ms_median",
        ]
        t = t.groupby(cols[:8], dropna=False)[cols[8:]].median().reset_index()
        t["_o"] = t["method"].map(method_sort_key)
        s.tables.append(
            Table(
                "tbl-single-n",
                "Cases measured at a single N (no line to draw)",
                t.sort_values(["device", "setting", "_o", "label"]).drop(columns="_o"),
                "Median times in ms (median over input families).",
            )
        )
    x = crossover_table(ok)
    if not x.empty:
        varying = [c for c in VARYING if c in x.columns and x[c].astype(str).nunique() > 1]
        keep = [
            c
            for c in ["device"]
            + varying
            + [
                "m",
                "d",
                "method",
                "label",
                "n_range",
                "crossover_n_forward",
                "crossover_n_attend",
                "speedup_at_max_n_forward",
                "speedup_at_max_n_attend",
            ]
            if c in x.columns
        ]
        x = x[keep].copy()
        x["m"] = x["m"].map(lambda v: "self (M = N)" if isinstance(v, float) and v < 0 else v)
        x = x.rename(
            columns={
                "crossover_n_forward": "crossover N (forward)",
                "crossover_n_attend": "crossover N (attend)",
                "speedup_at_max_n_forward": "speedup @max N (fwd)",
                "speedup_at_max_n_attend": "speedup @max N (attend)",
                "m": "M",
                "n_range": "N range",
            }
        )
        s.tables.append(
            Table(
                "tbl-crossover",
                "Crossover N: where each method overtakes dense",
                x,
                "The smallest N from which the method's median time stays below dense's at the "
                "same device, dtype, M, d (and batch, heads); '<= N' means faster at every N "
                "measured; 'none in range' means never faster. Forward = prepare + attend.",
            )
        )
    elif not (ok["method"] == "dense").any():
        s.missing.append("No dense rows to compare against, so no crossover N.")
    else:
        s.intro.append(
            "No crossover N: every case was measured at a single N (per device, dtype, M "
            "and d), so there is no N range over which a method could overtake dense. "
            "Sweep more than one N to get one."
        )
    _status(s, rs)
    return s


def _status(s: Section, rs: ResultSet) -> None:
    st = status_rows(rs.bench)
    if not st.empty:
        s.tables.append(
            Table(
                "tbl-status",
                "Rows without numbers (oom / unsupported / error)",
                st,
                "These cases ran and are recorded, but produced no measurement; they are not "
                "plotted.",
            )
        )


# ---------------------------------------------------------------- 3
def memory_section(rs: ResultSet) -> Section:
    s = Section(3, "memory", "Peak memory vs N")
    ok = rs.ok
    for dev, dt, st in _main_groups(ok) if rs.has_bench else []:
        f = memory.memory_vs_n(ok, dev, dt, st, "fig-mem-" + _slug(dev, dt, st))
        if f:
            s.figures.append(f)
    if not s.figures:
        s.missing.append(
            f"No peak-memory columns (peak_mem_alloc_bytes / peak_mem_cpu_bytes / "
            f"mem_model_bytes) in the benchmark rows. To produce them: {HOW_BENCH}."
        )
    else:
        s.badge = inputs_note(ok)
        s.intro.append(
            "Measured peak memory (solid) next to the analytic model (dashed, modelled)."
        )
    return s


# ---------------------------------------------------------------- 4
def fidelity_section(rs: ResultSet) -> Section:
    s = Section(4, "fidelity", "Fidelity to softmax")
    ok = rs.ok
    devices = sorted(ok["device"].unique()) if rs.has_bench else []
    # fidelity does not depend on the device; draw it from the first device that has it
    for dev in devices:
        figs = [
            fidelity.kl_vs_rank(ok, dev, "fig-kl-vs-rank"),
            fidelity.error_vs_n(ok, dev, "fig-error-vs-n"),
        ]
        if any(figs):
            s.figures += [f for f in figs if f]
            break
    for dev in devices:
        f = fidelity.pareto(ok, dev, "fig-pareto-" + _slug(dev))
        if f:
            s.figures.append(f)
    if not s.figures:
        s.missing.append(
            f"No fidelity columns (kl_*, out_err_*) in the benchmark rows. To produce them: {HOW_BENCH}."
        )
        return s
    s.badge = inputs_note(ok)
    s.intro.append(
        "KL(P || Q) between dense softmax weights P and each method's implied weights Q, total "
        "variation and output error, per query row. Signed weights (svd_tokens, linrec, lrea) "
        "are clipped at zero and renormalised; their negative mass is reported."
    )
    cols = [
        "kl_mean",
        "kl_p99",
        "tv_mean",
        "out_err_mean",
        "out_err_p99",
        "neg_mass_mean",
        "top10_recall_mean",
    ]
    d = ok[ok["kl_mean"].notna() | ok["out_err_mean"].notna()]
    if not d.empty:
        t = d.groupby(["method", "label", "family"])[cols].median().reset_index()
        t = t.dropna(axis=1, how="all")
        t = t.sort_values(
            ["method", "label", "family"],
            key=lambda c: c.map(lambda v: method_sort_key(v)) if c.name == "method" else c,
        )
        s.tables.append(
            Table("tbl-fidelity", "Fidelity per configuration (median over N, M, d)", t)
        )
    ab = claims_mod.absorption_table(ok)
    if not ab.empty:
        s.tables.append(Table("tbl-absorption", "LREA absorption error (relative)", ab))
    return s


# ---------------------------------------------------------------- 5
def roofline_section(rs: ResultSet) -> Section:
    s = Section(5, "roofline", "Roofline")
    f = roofline.roofline(rs.ok, "fig-roofline") if rs.has_bench else None
    if f is None:
        s.missing.append(
            f"No work columns (flops, bytes or flops_per_s, arithmetic_intensity) in the "
            f"benchmark rows. To produce them: {HOW_BENCH}."
        )
        return s
    s.badge = inputs_note(rs.ok)
    s.figures.append(f)
    ph = roofline_phases(rs.ok)
    s.intro.append(
        "Roofline floor of a call = max(FLOPs / peak FLOP/s, bytes / peak bytes/s, exps / peak "
        "exp/s), from the modelled work (the operators' cost models) and the device's ceilings "
        "(measured by probes, or the vendor table: see peak_source); its bound is the term that "
        "attains the max (matmul, memory or exp). Fraction = floor / measured median time: 1 is at "
        "the floor; above 1 would mean the model undercounts the work."
    )
    if (ph["roofline_exp_forward"] == EXP_NOT_RECORDED).any():
        s.intro.append(
            f"Some rows come from an older harness: {EXP_NOT_RECORDED}, so their bound and floor "
            "use the matmul and memory terms only (derived from flops, bytes and the peaks), and "
            "their attend floor is not recorded (no per-phase bytes)."
        )
    cases = roofline_case_table(ph)
    over = 0
    for dev in sorted(cases["device"].unique()) if not cases.empty else []:
        t = cases[cases["device"] == dev].drop(columns="device")
        frac = [c for c in t.columns if c.endswith("fraction")]
        note = _over_one_note(t, frac)
        if any(note):
            t["check"] = note
            over += sum(1 for x in note if x)
        t = t.rename(columns={"B x H": "B\u00a0x\u00a0H"})  # one line in the header
        s.tables.append(
            Table(
                "tbl-roofline-" + _slug(dev),
                f"Roofline bound at each method's largest case - {dev}",
                t,
                "Largest N x M x B x H of each method's representative variant (the device's "
                "most measured dtype and setting). floor ms = the time at the roofline floor; "
                f"fraction = floor / measured. {FRACTION_OVER_1}",
            )
        )
    if over:
        s.intro.append(
            f"{over} case(s) have a roofline fraction above 1 (see the 'check' column): "
            f"{FRACTION_OVER_1}"
        )
    if rs.targets is not None:
        keep = [
            c
            for c in (
                "target",
                "what",
                "value",
                "goal",
                "status",
                "device_name",
                "commit",
                "detail",
            )
            if c in rs.targets.columns
        ]
        s.tables.append(
            Table(
                "tbl-targets",
                "The GPU issue's targets (targets.csv)",
                rs.targets[keep],
                "From python -m bench targets DIR on the same results table: attend "
                "ratios at N = 10,000, M = 2,048, d = 64, bf16 (eager and, on CUDA, "
                "CUDA-graph replay), roofline fraction of each method's largest case, and "
                "timing noise (IQR/median). 'not measured' / 'not recorded' = the table "
                "lacks the case or the column.",
            )
        )
    pts = roofline.roofline_points(ph)
    if pts["roofline_fraction"].notna().any():
        t = (
            pts.groupby(["device", "method"])["roofline_fraction"]
            .agg(["median", "max"])
            .reset_index()
        )
        t = t.rename(
            columns={"median": "forward fraction (median)", "max": "forward fraction (max)"}
        )
        note = _over_one_note(t, ["forward fraction (max)"])
        if any(note):
            t["check"] = note
        s.tables.append(
            Table(
                "tbl-roofline",
                "Fraction of the forward roofline floor reached, all cases",
                t,
                FRACTION_OVER_1,
            )
        )
    return s


FRACTION_OVER_1 = (
    "A fraction above 1 means a time below the modelled floor, which cannot happen: "
    "the cost model undercounts the work or the device ceiling was under-measured; such "
    "values are flagged in a 'check' column."
)


def _over_one_note(t: pd.DataFrame, cols: list[str]) -> list[str]:
    """Per row: which of ``cols`` hold a fraction above 1 ("" when none)."""
    vals = t[cols].apply(pd.to_numeric, errors="coerce")
    return [
        ", ".join(f"{c} > 1: suspect" for c in cols if row[c] > 1) for _, row in vals.iterrows()
    ]


# ---------------------------------------------------------------- 6
def cascade_section(rs: ResultSet) -> Section:
    s = Section(6, "cascade", "Cascade: prepare amortised over candidate stages")
    cas = rs.cascade
    if cas is None or cas.empty:
        s.missing.append(
            f"No cascade.csv next to the results table. To produce it: {HOW_BENCH} "
            "(the cascade runs as part of the quick and GPU presets)."
        )
        return s
    for dev in sorted(cas["device"].unique()):
        f = fig_cascade.cascade(cas, dev, "fig-cascade-" + _slug(dev))
        if f:
            s.figures.append(f)
    per = (
        cas.groupby(["device", "label", "n"], dropna=False)
        .agg(
            stages=("stage", "nunique"),
            prepare_ms=("prepare_ms_median", "first"),
            attend_ms_all_stages=("attend_ms_median", "sum"),
        )
        .reset_index()
    )
    per["total_ms_per_request"] = per["prepare_ms"].fillna(0) + per["attend_ms_all_stages"]
    dense = per[per["label"].str.startswith("dense")][["device", "n", "total_ms_per_request"]]
    if not dense.empty:
        per = per.merge(
            dense.rename(columns={"total_ms_per_request": "dense_ms"}),
            on=["device", "n"],
            how="left",
        )
        per["speedup vs dense"] = per["dense_ms"] / per["total_ms_per_request"]
        per = per.drop(columns="dense_ms")
    s.tables.append(Table("tbl-cascade", "Per-request cost over all stages", per))
    s.intro.append(
        "A request scores candidates in stages of decreasing M; methods with a per-user prepare "
        "step pay it once and reuse it for every stage."
    )
    if "family" in cas.columns and cas["family"].notna().any():
        fams = ", ".join(sorted(cas["family"].dropna().astype(str).unique()))
        s.badge = f"synthetic inputs (family {fams})" if fams != "real" else "real data"
    return s


# ---------------------------------------------------------------- 7
def spectra_section(rs: ResultSet) -> Section:
    s = Section(7, "spectra", "Rank spectra of real behaviour embeddings")
    if not rs.spectra:
        s.missing.append(f"No spectra tables. To produce them: {HOW_SPECTRA}.")
        return s
    s.badge = "real data"
    s.intro.append(
        "Singular-value spectra of each user's behaviour matrix, per dataset and embedding route, "
        "against random embeddings of the same shape (the null model)."
    )
    names = list(rs.spectra)
    chunks = [
        {k: rs.spectra[k] for k in names[i : i + SPECTRA_PER_FIG]}
        for i in range(0, len(names), SPECTRA_PER_FIG)
    ]
    for fn, key in ((spectra.scree, "fig-spectra"), (spectra.ranks_vs_n, "fig-ranks-vs-n")):
        for i, chunk in enumerate(chunks):
            f = fn(chunk, key if i == 0 else f"{key}-{i + 1}")
            if f:
                if len(chunks) > 1:
                    f.title += f" ({i + 1}/{len(chunks)})"
                    f.fig.suptitle(f.title, fontsize=11)
                s.figures.append(f)
    f = spectra.kl_by_rank(rs.spectra, "fig-kl-real")
    if f:
        s.figures.append(f)
    s.tables += kl_tables(rs)
    rows = []
    for ds in rs.spectra.values():
        u = ds.users
        if u is None or "route" not in u.columns:
            continue
        u, cen = spectra.uncentred(u)
        u = u.assign(series=spectra.series_name(u))
        cols = [c for c in ("r90", "r95", "r99", "effective_rank", "stable_rank") if c in u.columns]
        g = u.groupby("series")[cols].median()
        g.insert(0, "users", u.groupby("series").size())
        if "n" in u.columns:
            g.insert(1, "median N", u.groupby("series")["n"].median())
        g = g.reset_index().rename(columns={"series": "route"})
        g.insert(0, "dataset", ds.name + cen)
        rows.append(g)
    if rows:
        s.tables.append(
            Table(
                "tbl-ranks",
                "Median ranks per dataset and route (all users)",
                pd.concat(rows),
                "Medians over users of every history length; ranks of short histories are "
                "capped by N (see the figure for the N dependence).",
            )
        )
    profs = [_profile_row(ds.name, ds.profile) for ds in rs.spectra.values() if ds.profile]
    if profs:
        s.tables.append(
            Table(
                "tbl-profile",
                "Fitted decay profiles (used by the spectrum_matched family)",
                pd.DataFrame(profs),
                "s_i / s_1 fitted over each user's spectrum (exponential: exp(-beta i); "
                "powerlaw: i^-alpha) down to a noise floor, on users with N >= the fit's "
                "minimum; rmse on log s. The runner-up model is shown for comparison.",
            )
        )
    if not s.figures:
        s.missing.append(
            "The spectra folders hold no scree.csv, users.csv or kl_by_rank.csv to plot."
        )
    return s


def kl_tables(rs: ResultSet) -> list[Table]:
    """The KL bound against the measured KL, and the rank a KL budget needs by query
    temperature, for the datasets whose spectra folders hold them."""
    bound, temp = [], []
    for ds in rs.spectra.values():
        if ds.kl_bound is not None and not ds.kl_bound.empty:
            bound.append(ds.kl_bound.assign(dataset=ds.name))
        t = ds.kl_by_temperature
        if (
            t is not None
            and not t.empty
            and {"temperature", "budget", "r_median"} <= set(t.columns)
        ):
            temp.append(t.assign(dataset=ds.name))
    out = []
    if bound:
        b = pd.concat(bound, ignore_index=True)
        b = b[b["rank"].isin([4, 8, 16, 32, 64])]
        cols = ["dataset", "route", "n_bin", "rank", "users", "kl_max_median", "kl_bound_median"]
        cols += ["looseness_median", "bound_holds"]
        b = b[[c for c in cols if c in b.columns]]
        loose = pd.to_numeric(b.get("looseness_median"), errors="coerce")
        med = float(loose.median()) if loose.notna().any() else float("nan")
        out.append(
            Table(
                "tbl-kl-bound",
                "svd_exact: the KL bound against the KL measured on real users",
                b,
                "Bound: KL(P || P_r) <= 2 s_{r+1} max_i ||q_i|| / sqrt(d) (DESIGN.md), s_{r+1} "
                "the largest singular value of the user's [K | V] that rank r drops; measured: "
                "the worst query row's KL per user; medians over users. The bound held for "
                "every user where 'bound_holds' is true, but it is loose: "
                + (
                    f"the median bound / measured ratio is {med:.3g} over these rows, "
                    if med == med
                    else ""
                )
                + "so it cannot pick a rank; the measured KL does.",
            )
        )
    if temp:
        t = pd.concat(temp, ignore_index=True)
        cols = ["dataset", "route", "n_bin", "budget", "temperature", "users", "unmet"]
        cols += ["r_median", "r_p90"]
        t = t[[c for c in cols if c in t.columns]].sort_values(
            ["dataset", "route", "n_bin", "budget", "temperature"]
        )
        out.append(
            Table(
                "tbl-kl-temperature",
                "Rank svd_exact needs for a KL budget, by query temperature",
                t,
                "Queries scaled by t (logits x t) before the KL: a KL budget depends on the "
                "score scale, not only on the data, so read the rank at the temperature your "
                "model runs at. Decisions use t = 1, the embeddings' own scale.",
            )
        )
    return out


def _fmt_params(params) -> str:
    if not isinstance(params, dict):
        return str(params)
    return ", ".join(
        f"{k} = {v:.3g}" if isinstance(v, (int, float)) else f"{k} = {v}" for k, v in params.items()
    )


def _profile_row(name: str, prof) -> dict:
    """profile.json as readable columns (not raw JSON)."""
    if not isinstance(prof, dict):
        return {"dataset": name, "model": str(prof)[:80]}

    def num(key: str) -> str:
        v = prof.get(key)
        return f"{v:.3g}" if isinstance(v, (int, float)) else "-"

    alts = [
        a
        for a in prof.get("alternatives") or []
        if isinstance(a, dict) and a.get("model") != prof.get("model")
    ]  # the list holds the winner too
    alt = min(alts, key=lambda a: a.get("fit_rmse_log", float("inf"))) if alts else None
    src = "/".join(str(prof[k]) for k in ("route", "matrix") if prof.get(k) is not None)
    return {
        "dataset": name,
        "embedding": src + (" (centred)" if prof.get("centred") else "") or "-",
        "model": f"{prof.get('model', '?')}: {_fmt_params(prof.get('params'))}",
        "noise floor": num("noise_floor"),
        "s1 / sqrt(N)": num("s1_per_sqrt_n"),
        "fit users": f"{prof.get('fit_users', '-')} (N >= {prof.get('fit_min_n', '-')})",
        "rmse (log)": num("fit_rmse_log"),
        "runner-up": (
            f"{alt.get('model')}: {_fmt_params(alt.get('params'))}, rmse "
            f"{alt.get('fit_rmse_log', float('nan')):.3g}"
        )
        if alt
        else "-",
    }


# ---------------------------------------------------------------- 8
SHOW_DECISION = {
    "route": "route",
    "n_bin": "N bin",
    "bench_n": "N benched",
    "m": "M",
    "kl_budget": "KL budget",
    "scenario": "scenario",
    "method": "method",
    "rank": "rank",
    "params": "trained config",
    "expected_kl": "expected KL",
    "quality_ci": "trained quality loss [95 % CI], seeds",
    "expected_ms": "expected ms",
    "speedup_ci": "speedup vs dense [95 % CI]",
    "crossover_r": "crossover R",
    "state_kib": "state KiB/user-head",
    "device": "device",
    "why": "why (other methods)",
}


_WHY_SHORT = (
    (re.compile(r"\. Missing cases: run .*$"), ""),
    (
        re.compile(r"quality unknown; ([0-9.]+x) \[[^\]]*\] if it were acceptable"),
        r"quality unknown (\1 if acceptable)",
    ),
    (re.compile(r"KL on these users not measured"), "KL not measured"),
    (re.compile(r"not benched with dense in one run at N = \d+(, rank \d+)?"), "not benched"),
    (re.compile(r" \(interval straddles 1\)"), ""),
    (
        re.compile(r"over the KL budget [0-9.e-]+ at every measured rank <= \d+ \([^)]*\)"),
        "over the KL budget",
    ),
)


def _short_why(text) -> str:
    """The 'why' cell in brief (the full text is in decisions.csv)."""
    t = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text)
    for pat, rep in _WHY_SHORT:
        t = pat.sub(rep, t)
    return t


def _quality_ci(r: pd.Series) -> str:
    """'NDCG +0.0001 [-0.002, +0.002], 3' from decide's quality columns ('' without them)."""
    loss = r.get("quality_loss")
    if loss is None or pd.isna(loss):
        return ""
    name = "AUC" if r.get("quality_metric") == "auc" else "NDCG"
    lo, hi = r.get("quality_loss_lo"), r.get("quality_loss_hi")
    iv = "no interval" if lo is None or pd.isna(lo) else f"[{lo:+.2g}, {hi:+.2g}]"
    seeds = r.get("quality_seeds")
    return f"{name} {loss:+.2g} {iv}, {'' if pd.isna(seeds) else int(seeds)}"


def _decision_view(dec: pd.DataFrame) -> pd.DataFrame:
    """The decision rows as shown: speedup with its interval as one cell, ranks as integers."""
    if "scenario" not in dec.columns:  # an older decisions file: its own columns
        cols = [c for c in DECISION_COLS if c in dec.columns]
        return dec[cols] if dec.shape[1] > 10 and len(cols) >= 3 else dec
    d = dec.copy()
    d["speedup_ci"] = [
        ("-" if pd.isna(s) else f"{s:.2f}x [{lo:.2f}, {hi:.2f}]")
        for s, lo, hi in zip(d["speedup"], d["speedup_lo"], d["speedup_hi"], strict=True)
    ]
    if "state_bytes_per_user_head" in d.columns:
        d["state_kib"] = d["state_bytes_per_user_head"] / 1024
    if "quality_loss" in d.columns and d["quality_loss"].notna().any():
        d["quality_ci"] = [_quality_ci(r) for _, r in d.iterrows()]
    if "why" in d.columns:
        d["why"] = d["why"].map(_short_why)
    for c in ("rank", "bench_n", "crossover_r"):
        if c in d.columns:
            d[c] = [("" if pd.isna(v) else str(int(v))) for v in d[c]]
    cols = [c for c in SHOW_DECISION if c in d.columns]
    return d[cols].rename(columns=SHOW_DECISION)


def _pick_decisions(ds, devices: set[str]) -> tuple[list[tuple[str, pd.DataFrame]], str]:
    """The decision sets decided on one of the report's devices; else the first, with a warning."""
    sets = ds.decision_sets or ({"": ds.decisions} if ds.decisions is not None else {})
    if not sets:
        return [], ""

    def dev(t: pd.DataFrame) -> str:
        return (
            str(t["device"].dropna().iloc[0])
            if "device" in t.columns and t["device"].notna().any()
            else "unknown"
        )

    hits = [
        (k, t)
        for k, t in sets.items()
        if not devices or dev(t) == "unknown" or dev(t).split(" ")[0] in devices
    ]
    if hits:
        return hits, ""
    key, t = next(iter(sets.items()))
    return [(key, t)], (
        f"{ds.name}: these decisions use timings from {dev(t)}, not from this report's device "
        f"({', '.join(sorted(devices))}); decide with that device's bench table: python -m "
        f"analysis decide --spectra {ds.path} --bench results/<device> --out {ds.path}/<device>"
    )


def _decision_tables(s: Section, ds, key: str, dec: pd.DataFrame) -> None:
    s.answer += ds.verdicts.get(key, [])
    dev = (
        ", ".join(sorted(dec["device"].dropna().astype(str).unique()))
        if "device" in dec.columns
        else "device not recorded (an older decisions file)"
    )
    base = (
        dec["baseline_route"].fillna(False).astype(bool)
        if "baseline_route" in dec.columns
        else pd.Series(False, index=dec.index)
    )
    slug = _slug(ds.name) + (f"-{_slug(key)}" if key else "")
    synthetic = "route" in dec.columns and dec["route"].astype(str).eq(SYNTHETIC_ROUTE).all()
    what = (
        "synthetic-from-real: N = 1k..64k with the dataset's fitted spectrum and score scale, "
        "from analysis seeds-regime"
        if synthetic
        else "real data"
    )
    parts = (
        (
            "",
            dec[~base],
            f"Decision table - {ds.name} ({what}; timings: {dev})",
            "Every regime (route, N bin, M, KL budget) x serving scenario: the method chosen, its rank, "
            "expected KL, time and speedup with the 95 % interval. A method wins only inside its quality "
            "budget and when the whole interval is above 1. 'why' lists every other method and what "
            "stopped it. All rows shown.",
        ),
        (
            "-baseline",
            dec[base],
            f"Baseline (null model, random embeddings) - {ds.name}; timings: {dev}",
            "The same decision on random embeddings: a baseline for the real routes above, not a "
            "deployment option.",
        ),
    )
    for suffix, part, title, cap in parts:
        if not part.empty:
            s.tables.append(
                Table("tbl-decisions-" + slug + suffix, title, _decision_view(part), cap, full=True)
            )


def decisions_section(rs: ResultSet) -> Section:
    s = Section(8, "decisions", "Decisions and claims")
    devices = (
        set(rs.bench["device"].dropna().astype(str))
        if rs.has_bench and "device" in rs.bench.columns
        else set()
    )
    found = False
    for ds in rs.spectra.values():
        picked, warn = _pick_decisions(ds, devices)
        if warn:
            s.missing.append(warn)
            s.answer.append("Warning: " + warn)
        for key, dec in picked:
            if dec is None or dec.empty:
                continue
            found = True
            _decision_tables(s, ds, key, dec)
    if not found:
        s.missing.append(f"No decisions.csv / decisions.json. To produce them: {HOW_SPECTRA}.")
    cl = claims_mod.evaluate(rs)
    s.tables.append(
        Table(
            "tbl-claims",
            "What the seeds claim / what we measured",
            claims_mod.claims_frame(cl),
            "Each verdict follows the stated rule from the tables above; 'not testable here' "
            "says what to run.",
            full=True,
        )
    )
    s.intro.append(
        "The answer first: the verdict lines (also at the top of the report) come from the decision "
        "tables below, which turn the measurements into a recommendation; the claims list checks "
        "the papers' statements against what this suite measured, with the same interval rule."
    )
    return s


SECTION_BUILDERS = (
    environment,
    timing_section,
    memory_section,
    fidelity_section,
    roofline_section,
    cascade_section,
    spectra_section,
    decisions_section,
)


def build_sections(rs: ResultSet, progress: Callable[[str], None] | None = None) -> list[Section]:
    """Every section in order; ``progress`` gets one line per section (name, figures, seconds).
    The quality section is added only when the inputs hold quality results."""
    from .quality_section import quality_section  # it builds on Section / Table defined here

    has_quality = rs.quality is not None and not rs.quality.empty
    builders = (*SECTION_BUILDERS, quality_section) if has_quality else SECTION_BUILDERS
    out = []
    for i, make in enumerate(builders, 1):
        t0 = time.perf_counter()
        sec = make(rs)
        if sec is None:
            continue
        out.append(sec)
        if progress:
            progress(
                f"  section {i}/{len(builders)} {sec.title}: {len(sec.figures)} figures, "
                f"{len(sec.tables)} tables ({time.perf_counter() - t0:.1f} s)"
            )
    return out


def anchor_titles(sections: list[Section]) -> dict[str, str]:
    """Anchor id -> short title ('Figure 2.1', table titles) for cross-references."""
    titles = {f.key: f"Figure {s.num}.{i + 1}" for s in sections for i, f in enumerate(s.figures)}
    titles.update({t.key: t.title for s in sections for t in s.tables})
    return titles


def resolve_anchor(alts: str, titles: dict[str, str]) -> str | None:
    """First existing anchor among 'a|b|c' (an entry ending in '-' matches as a prefix)."""
    for a in alts.split("|"):
        if a in titles:
            return a
        if a.endswith("-"):
            hit = next((k for k in titles if k.startswith(a)), None)
            if hit:
                return hit
    return None
