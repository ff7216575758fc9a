"""Compare two result tables case by case: ``python -m bench compare A B``.

For every case present in both runs (matched on the case's configuration, not its device, so a
CPU run and a GPU run of the same grid pair up) and every timed phase, the ratio
``median_B / median_A`` (above 1: B is slower) with a 95 % bootstrap interval, flagged
``faster``, ``slower`` or ``same``.

The harness stores each phase's median, IQR and number of samples, not the samples
themselves, so the interval is a parametric bootstrap: each run's samples are redrawn from the
log-normal with the recorded median and IQR (``sigma = asinh(IQR / 2 median) / z_0.75``,
which reproduces both exactly), the median of each redraw is taken, and the ratio's 2.5 and
97.5 percentiles form the interval. It covers the noise *within* each run only: two runs on a
shared machine also differ by load, which is what ``--min-effect`` is for.

A case is ``slower`` when its interval lies above 1 and the ratio is above ``1 + min_effect``
(``faster`` symmetrically), else ``same``. With ``--fail-above X`` the command exits 1 when a
case is ``slower`` with a ratio above X: a regression gate for CI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, ResultsFileError
from .markdown import table as md_table
from .store import read_table

# configuration columns that identify a case across devices and commits (case_id includes the
# device, so it cannot pair a CPU run with a GPU run)
CASE_KEYS = [
    "method",
    "label",
    "params",
    "setting",
    "causal",
    "family",
    "family_params",
    "batch",
    "heads",
    "n",
    "m",
    "d",
    "dv",
    "dtype",
    "seed",
    "query_scale",
    "padding",
]
PHASES = ("prepare", "attend", "forward", "attend_graph")
Z75 = 0.6744897501960817  # standard normal 75th percentile
FLAGS = ("faster", "same", "slower")


@dataclass(frozen=True)
class CompareOptions:
    phases: tuple[str, ...] = ("forward",)
    min_effect: float = 0.05
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    # auto: process CPU time when either run says its wall times are unusable (a loaded
    # machine, bench.summary.rank_by) and both have CPU-time columns, else wall time
    timing: str = "auto"


TIMINGS = ("auto", "wall", "process_cpu")


def choose_timing(a: pd.DataFrame, b: pd.DataFrame, timing: str = "auto") -> tuple[str, str]:
    """(``wall`` | ``process_cpu``, why): the clock both runs are compared by."""
    from .summary import rank_by

    if timing not in TIMINGS:
        raise ConfigError(f"unknown timing {timing!r}; use one of {', '.join(TIMINGS)}")
    has_cpu = all(
        "forward_process_cpu_ms_median" in df.columns
        and df["forward_process_cpu_ms_median"].notna().any()
        for df in (a, b)
    )
    if timing == "process_cpu" and not has_cpu:
        raise ConfigError(
            "--timing process_cpu: a run has no CPU-time columns (CUDA, or a table "
            "older than the harness's CPU-time columns)"
        )
    if timing != "auto":
        return timing, f"timed by {timing.replace('_', ' ')} (asked)"
    loaded = [name for name, df in (("A", a), ("B", b)) if rank_by(df)[0] == "process_cpu"]
    if loaded and has_cpu:
        return "process_cpu", (
            f"timed by process CPU time: run {' and '.join(loaded)} was measured on a loaded "
            "machine, where wall times are unusable"
        )
    if loaded:
        return "wall", (
            f"timed by wall time, although run {' and '.join(loaded)} was loaded: the other run "
            "has no CPU-time columns (treat the ratios as unreliable)"
        )
    return "wall", "timed by wall time"


def lognormal_sigma(median: float, iqr: float) -> float:
    """Sigma of the log-normal whose median and IQR are the given ones."""
    if median <= 0 or iqr < 0:
        raise ValueError(f"need median > 0 and IQR >= 0, got {median}, {iqr}")
    return math.asinh(iqr / (2.0 * median)) / Z75


def bootstrap_medians(
    median: float, iqr: float, samples: int, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Medians of ``resamples`` redraws of ``samples`` timings from the fitted log-normal."""
    n = max(1, int(samples))
    sigma = lognormal_sigma(median, iqr)
    if sigma == 0.0:
        return np.full(resamples, float(median))
    draws = rng.lognormal(math.log(median), sigma, size=(resamples, n))
    return np.median(draws, axis=1)


def ratio_interval(
    a: tuple[float, float, int],
    b: tuple[float, float, int],
    opts: CompareOptions,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Bootstrap interval of median_B / median_A from (median, IQR, samples) of each run."""
    ma = bootstrap_medians(*a, opts.resamples, rng)
    mb = bootstrap_medians(*b, opts.resamples, rng)
    tail = (1.0 - opts.confidence) / 2.0 * 100.0
    lo, hi = np.percentile(mb / ma, [tail, 100.0 - tail])
    return float(lo), float(hi)


def flag(ratio: float, lo: float, hi: float, min_effect: float) -> str:
    if lo > 1.0 and ratio > 1.0 + min_effect:
        return "slower"
    if hi < 1.0 and ratio < 1.0 - min_effect:
        return "faster"
    return "same"


def _keyed(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``df`` plus one ``_k_<col>`` string column per key (NaN never equals NaN in a merge, and
    a column read as float in one table and int in the other must still match)."""
    out = df.copy()
    for k in keys:
        out["_k_" + k] = [
            ""
            if v is None or (isinstance(v, float) and math.isnan(v))
            else repr(float(v)).removesuffix(".0")
            if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
            else str(v)
            for v in out[k]
        ]
    return out


def _run_label(df: pd.DataFrame, path: str) -> str:
    parts = [str(path)]
    for col, fmt in (("device_name", "{}"), ("git_commit", "{:.7}"), ("threads", "{} thread(s)")):
        if col in df.columns:
            vals = sorted({fmt.format(str(v).removesuffix(".0")) for v in df[col].dropna()})
            if vals:
                parts.append("/".join(vals).replace("1 thread(s)", "1 thread").replace("(s)", "s"))
    return ", ".join(parts)


def compare(
    a: pd.DataFrame, b: pd.DataFrame, opts: CompareOptions = CompareOptions()
) -> pd.DataFrame:
    """One row per case x phase timed in both tables: medians, ratio, interval, flag."""
    bad = [p for p in opts.phases if p not in PHASES]
    if bad:
        raise ConfigError(f"unknown phase(s) {bad}; choose from {', '.join(PHASES)}")
    for name, df in (("A", a), ("B", b)):
        if "method" not in df.columns or "n" not in df.columns:
            raise ResultsFileError(
                f"table {name} is not a bench results table (no method/n columns)"
            )
    keys = [k for k in CASE_KEYS if k in a.columns and k in b.columns]
    ok_a = a[a["status"] == "ok"] if "status" in a.columns else a
    ok_b = b[b["status"] == "ok"] if "status" in b.columns else b
    timing, why = choose_timing(a, b, opts.timing)
    clock = "_process_cpu_ms" if timing == "process_cpu" else "_ms"

    def cols(p: str) -> list[str]:
        return [f"{p}{clock}_median", f"{p}{clock}_iqr", f"timing_samples_{p}"]

    rng = np.random.default_rng(opts.seed)
    out = []
    for phase in opts.phases:
        need = cols(phase)[:2]
        if not all(c in ok_a.columns and c in ok_b.columns for c in need):
            continue
        kcols = ["_k_" + k for k in keys]
        have = [c for c in cols(phase) if c in ok_a.columns and c in ok_b.columns]
        merged = _keyed(ok_a, keys)[kcols + keys + have].merge(
            _keyed(ok_b, keys)[kcols + have], on=kcols, suffixes=("_a", "_b")
        )
        for _, r in merged.iterrows():
            med_a, med_b = r[f"{phase}{clock}_median_a"], r[f"{phase}{clock}_median_b"]
            if not (pd.notna(med_a) and pd.notna(med_b) and med_a > 0 and med_b > 0):
                continue
            iqr_a = r[f"{phase}{clock}_iqr_a"] if pd.notna(r[f"{phase}{clock}_iqr_a"]) else 0.0
            iqr_b = r[f"{phase}{clock}_iqr_b"] if pd.notna(r[f"{phase}{clock}_iqr_b"]) else 0.0
            sk = f"timing_samples_{phase}"
            n_a = int(r[f"{sk}_a"]) if f"{sk}_a" in r and pd.notna(r[f"{sk}_a"]) else 5
            n_b = int(r[f"{sk}_b"]) if f"{sk}_b" in r and pd.notna(r[f"{sk}_b"]) else 5
            lo, hi = ratio_interval((med_a, iqr_a, n_a), (med_b, iqr_b, n_b), opts, rng)
            ratio = float(med_b / med_a)
            row = {k: r[k] for k in keys}
            row.update(
                phase=phase,
                a_ms=float(med_a),
                b_ms=float(med_b),
                ratio=ratio,
                ci_low=lo,
                ci_high=hi,
                flag=flag(ratio, lo, hi, opts.min_effect),
                a_samples=n_a,
                b_samples=n_b,
            )
            out.append(row)
    cols_out = keys + [
        "phase",
        "a_ms",
        "b_ms",
        "ratio",
        "ci_low",
        "ci_high",
        "flag",
        "a_samples",
        "b_samples",
    ]
    t = pd.DataFrame(out, columns=cols_out)
    t.attrs["timing"], t.attrs["timing_note"] = timing, why
    return t


SHOW = [
    "label",
    "setting",
    "family",
    "n",
    "m",
    "d",
    "dtype",
    "phase",
    "a_ms",
    "b_ms",
    "ratio",
    "ci",
    "flag",
]


def to_markdown(
    t: pd.DataFrame, label_a: str, label_b: str, fail_above: float | None = None
) -> str:
    counts = t["flag"].value_counts().to_dict() if len(t) else {}
    lines = [
        f"A: {label_a}",
        f"B: {label_b}",
        "",
        f"{len(t)} case x phase pairs; ratio = median B / median A (above 1: B slower); "
        f"95 % bootstrap interval; " + ", ".join(f"{counts.get(f, 0)} {f}" for f in FLAGS),
    ]
    if t.attrs.get("timing_note"):
        lines.append(t.attrs["timing_note"])
    lines.append("")
    if not len(t):
        note = t.attrs.get("note")
        return (
            "\n".join(lines + ["(no case timed in both runs" + (f"; {note})" if note else ")")])
            + "\n"
        )
    d = t.copy()
    d["ci"] = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(d["ci_low"], d["ci_high"], strict=True)]
    for c in ("a_ms", "b_ms", "ratio"):
        d[c] = d[c].map(lambda v: f"{v:.4g}")
    if fail_above is not None:
        d["flag"] = [
            f"**{f}** (> {fail_above:g})" if f == "slower" and float(r) > fail_above else f
            for f, r in zip(d["flag"], t["ratio"], strict=True)
        ]
    show = [c for c in SHOW if c in d.columns]
    return "\n".join(lines + [md_table(d, show)]) + "\n"


def regressions(t: pd.DataFrame, fail_above: float) -> pd.DataFrame:
    """Cases flagged slower with a ratio above the threshold."""
    if fail_above <= 0:
        raise ConfigError(f"--fail-above must be > 0, got {fail_above}")
    return t[(t["flag"] == "slower") & (t["ratio"] > fail_above)]


def mismatch_note(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why no case pairs up: the configuration columns whose values the two runs never share."""
    parts = []
    for k in CASE_KEYS:
        if k in a.columns and k in b.columns:
            va, vb = set(_keyed(a, [k])["_k_" + k]), set(_keyed(b, [k])["_k_" + k])
            if not va & vb:
                parts.append(f"{k}: A {sorted(va)[:4]} vs B {sorted(vb)[:4]}")
    return "no value in common for " + "; ".join(parts) if parts else ""


def run_compare(a_path: str, b_path: str, opts: CompareOptions) -> tuple[pd.DataFrame, str, str]:
    """Read both tables (run directories or CSV files) and compare them."""
    for p in (a_path, b_path):
        q = Path(p)
        if not (q.is_file() or (q / "results.csv").is_file()):
            raise ResultsFileError(
                f"{p}: no results table (expected a run directory with "
                "results.csv, or the CSV file)"
            )
    a, b = read_table(a_path), read_table(b_path)
    t = compare(a, b, opts)
    t.attrs["note"] = "" if len(t) else mismatch_note(a, b)
    return t, _run_label(a, a_path), _run_label(b, b_path)
