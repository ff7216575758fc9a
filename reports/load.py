"""Find, read and normalise result tables (bench run dirs, spectra dirs and quality dirs).

The reports package only reads files written by `bench` and `analysis` (see
docs/contracts.md sections 2 and 3). Every optional column may be missing; the
loader adds it as empty so the figure code can test for data, not for columns.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import schema

from .runs import separate_runs
from .sanity import bad_times, read_csv_whole_lines

BENCH_FILES = ("results.csv", "results.parquet")
CASCADE_FILES = ("cascade.csv", "cascade.parquet")
TARGETS_FILE = "targets.csv"  # written by `python -m bench targets DIR`
# `python -m analysis quality --out DIR` writes DIR/results.csv too; its columns tell it apart
QUALITY_FILE = "results.csv"
QUALITY_COLS = ("task", "dataset", "method", "params", "seed", "status")
QUALITY_METRICS = ("ndcg@10", "ndcg@10_filtered", "auc")
SPECTRA_FILES = (
    "users.csv",
    "users.parquet",
    "summary.csv",
    "scree.csv",
    "profile.json",
    "kl_by_rank.csv",
    "kl_bound.csv",
    "kl_by_temperature.csv",
    "decisions.json",
    "decisions.csv",
)

# The bench table's columns and types come from bench/schema.py (the one schema, issue 13):
# every schema column is created empty when a table lacks it, and typed on read.
BENCH_STR_COLS = [c.name for c in schema.BENCH if c.type == "string"]
BENCH_NUM_COLS = [c.name for c in schema.BENCH if c.type in ("float", "int")]
CASCADE_NUM_COLS = [
    "n",
    "m",
    "rank",
    "attend_ms_median",
    "prepare_ms_median",
    "prepare_amortised_ms",
    "total_ms",
]


class ReportInputError(ValueError):
    """A --results directory cannot be used (missing, unreadable, or empty)."""


@dataclass
class DatasetSpectra:
    """Everything `analysis` wrote for one dataset; each part may be None."""

    name: str
    path: Path
    users: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    scree: pd.DataFrame | None = None
    kl_by_rank: pd.DataFrame | None = None
    kl_bound: pd.DataFrame | None = None  # measured KL against the score-error bound
    kl_by_temperature: pd.DataFrame | None = None  # rank needed by query temperature
    decisions: pd.DataFrame | None = None
    profile: dict | None = None
    # decisions per bench device: "" = decisions.csv beside the spectra, else a subfolder
    # (e.g. "h100") holding the same files decided from another device's bench table
    decision_sets: dict[str, pd.DataFrame] = field(default_factory=dict)
    verdicts: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Source:
    path: Path
    kind: str  # "bench" | "spectra" | "quality"
    files: list[str] = field(default_factory=list)


@dataclass
class ResultSet:
    bench: pd.DataFrame
    cascade: pd.DataFrame
    spectra: dict[str, DatasetSpectra]
    sources: list[Source]
    warnings: list[str] = field(default_factory=list)
    targets: pd.DataFrame | None = None  # targets.csv rows of every bench dir (with source_dir)
    quality: pd.DataFrame | None = None  # `analysis quality` rows of every quality dir

    @property
    def has_bench(self) -> bool:
        return not self.bench.empty

    @property
    def ok(self) -> pd.DataFrame:
        """Bench rows with status ok (the only rows plotted as numbers)."""
        return self.bench[self.bench["status"] == "ok"]


def _read_table(path: Path, warnings: list[str] | None = None) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return read_csv_whole_lines(path, warnings if warnings is not None else [])


def _first_existing(d: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (d / name).is_file():
            return d / name
    return None


def _is_bench_dir(d: Path) -> bool:
    return _first_existing(d, BENCH_FILES + CASCADE_FILES) is not None


def _is_quality_dir(d: Path) -> bool:
    """A folder written by `python -m analysis quality`: results.csv with its columns (read
    from the header line only)."""
    f = d / QUALITY_FILE
    if not f.is_file():
        return False
    try:
        with open(f, newline="", encoding="utf-8") as fh:
            head = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    cols = set(head)
    return set(QUALITY_COLS) <= cols and bool(cols & set(QUALITY_METRICS))


def _is_spectra_dataset_dir(d: Path) -> bool:
    return any((d / f).is_file() for f in SPECTRA_FILES)


def _parse_bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    low = s.astype(str).str.strip().str.lower()
    out = pd.Series(np.nan, index=s.index, dtype=object)
    out[low.isin(["true", "1", "1.0", "yes", "y", "t"])] = True
    out[low.isin(["false", "0", "0.0", "no", "n", "f"])] = False
    return out


def _coerce_numeric(df: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """Numbers for the schema's numeric columns, for ``extra`` and for the optional numeric
    diagnostics (``schema.OPTIONAL``); every other column is left as read."""
    cols = [c for c in df.columns if c in extra or schema.type_of(str(c)) in ("float", "int")]
    if cols:  # one assignment, not one per column (keeps the frame unfragmented)
        df = df.copy()
        df[cols] = df[cols].apply(pd.to_numeric, errors="coerce")
    return df


def normalise_bench(df: pd.DataFrame, default_device: str) -> pd.DataFrame:
    """Add missing columns, coerce types, fill derivable fields."""
    df = df.copy()
    if "method" not in df.columns or "n" not in df.columns:
        raise ReportInputError(
            "results table lacks the required columns 'method' and 'n' "
            f"(has: {', '.join(map(str, df.columns[:20]))})"
        )
    missing = {
        c: pd.Series(pd.NA, index=df.index, dtype=object)
        for c in BENCH_STR_COLS
        if c not in df.columns
    }
    missing.update(
        {c: pd.Series(np.nan, index=df.index) for c in BENCH_NUM_COLS if c not in df.columns}
    )
    if missing:  # one concat, not one insert per column (keeps the frame unfragmented)
        df = pd.concat([df, pd.DataFrame(missing, index=df.index)], axis=1)
    df = _coerce_numeric(df, BENCH_NUM_COLS)
    df[BENCH_STR_COLS] = df[BENCH_STR_COLS].astype("string")
    df = df.copy()  # consolidated before the column-by-column fixes below
    df["method"] = df["method"].fillna("?")
    df["label"] = df["label"].fillna(df["method"])
    df["device"] = df["device"].fillna(default_device)
    df["dtype"] = df["dtype"].fillna("fp32")
    df["setting"] = df["setting"].fillna("target")
    df["family"] = df["family"].fillna("unknown")
    # status: rows without one but with a time are ok; without both, unknown.
    has_time = df["forward_ms_median"].notna() | df["attend_ms_median"].notna()
    df["status"] = df["status"].str.strip().str.lower()
    df.loc[df["status"].isna() & has_time, "status"] = "ok"
    df["status"] = df["status"].fillna("unknown")
    if "synthetic" in df.columns:
        syn = _parse_bool(df["synthetic"])
    else:
        syn = pd.Series(np.nan, index=df.index, dtype=object)
    syn = syn.where(syn.notna(), df["family"] != "real")
    df["synthetic"] = syn.astype(bool)
    if "causal" in df.columns:
        df["causal"] = _parse_bool(df["causal"]).fillna(False).astype(bool)
    else:
        df["causal"] = False
    for col in ("batch", "heads"):
        df[col] = df[col].fillna(1)
    df["m"] = df["m"].where(df["m"].notna(), df["n"].where(df["setting"] == "self"))
    return df.copy()  # one consolidated block per dtype after the column-by-column fixes


def normalise_cascade(df: pd.DataFrame, default_device: str) -> pd.DataFrame:
    df = df.copy()
    for col in ("method", "label", "stage", "device", "dtype"):
        if col not in df.columns:
            df[col] = pd.NA
        df[col] = df[col].astype("string")
    for col in CASCADE_NUM_COLS:
        if col not in df.columns:
            df[col] = np.nan
    df = _coerce_numeric(df, CASCADE_NUM_COLS)
    if df["method"].isna().all() and df["label"].isna().all():
        raise ReportInputError("cascade table lacks both 'method' and 'label' columns")
    df["label"] = df["label"].fillna(df["method"])
    df["method"] = df["method"].fillna(df["label"].str.split("[").str[0])
    df["device"] = df["device"].fillna(default_device)
    df["stage"] = df["stage"].fillna("all")
    return df


def _read_optional_csv(path: Path, warnings: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a warning
        warnings.append(f"could not read {path}: {exc}")
        return None
    return df if not df.empty else None


def _read_json(path: Path, warnings: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"could not read {path}: {exc}")
        return None


def decisions_from_json(obj) -> pd.DataFrame | None:
    """Accept a list of rows, {"rows": [...]}, {"decisions": [...]} or {regime: {...}}."""
    if obj is None:
        return None
    rows = obj
    if isinstance(obj, dict):
        for key in ("decisions", "rows", "table"):
            if isinstance(obj.get(key), list):
                rows = obj[key]
                break
        else:
            if all(isinstance(v, dict) for v in obj.values()):
                rows = [{"regime": k, **v} for k, v in obj.items()]
            else:
                return None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return None
    return pd.json_normalize(rows)


def read_dataset_dir(d: Path, warnings: list[str]) -> DatasetSpectra:
    ds = DatasetSpectra(name=d.name, path=d)
    ds.users = _read_optional_csv(d / "users.csv", warnings)
    if ds.users is None and (d / "users.parquet").is_file():  # large datasets: parquet only
        try:
            ds.users = pd.read_parquet(d / "users.parquet")
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"could not read {d / 'users.parquet'}: {exc}")
    ds.summary = _read_optional_csv(d / "summary.csv", warnings)
    ds.scree = _read_optional_csv(d / "scree.csv", warnings)
    ds.kl_by_rank = _read_optional_csv(d / "kl_by_rank.csv", warnings)
    ds.kl_bound = _read_optional_csv(d / "kl_bound.csv", warnings)
    ds.kl_by_temperature = _read_optional_csv(d / "kl_by_temperature.csv", warnings)
    ds.decisions = _read_optional_csv(d / "decisions.csv", warnings)
    js = _read_json(d / "decisions.json", warnings) if (d / "decisions.json").is_file() else None
    if ds.decisions is None:
        ds.decisions = decisions_from_json(js)
    if ds.decisions is not None:
        ds.decision_sets[""] = ds.decisions
        if isinstance(js, dict) and isinstance(js.get("verdict"), list):
            ds.verdicts[""] = [str(x) for x in js["verdict"]]
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and (p / "decisions.csv").is_file()):
        t = _read_optional_csv(sub / "decisions.csv", warnings)
        if t is not None:
            ds.decision_sets[sub.name] = t
            sj = (
                _read_json(sub / "decisions.json", warnings)
                if (sub / "decisions.json").is_file()
                else None
            )
            if isinstance(sj, dict) and isinstance(sj.get("verdict"), list):
                ds.verdicts[sub.name] = [str(x) for x in sj["verdict"]]
    prof = _read_json(d / "profile.json", warnings)
    ds.profile = prof if isinstance(prof, dict) else None
    for name in ("users", "summary"):
        df = getattr(ds, name)
        if df is not None and "dataset" in df.columns and df["dataset"].notna().any():
            ds.name = str(df["dataset"].dropna().iloc[0])
            break
    return ds


def _has_any_table(ds: DatasetSpectra) -> bool:
    return any(
        x is not None
        for x in (ds.users, ds.summary, ds.scree, ds.kl_by_rank, ds.decisions, ds.profile)
    )


def detect(path: Path) -> list[Source]:
    """Classify a --results path by its content (bench run, spectra root, dataset dir)."""
    if not path.exists():
        raise ReportInputError(f"--results {path}: no such directory")
    if path.is_file():
        path = path.parent
    found: list[Source] = []
    candidates = [path] + sorted(p for p in path.iterdir() if p.is_dir())
    candidates += sorted(q for p in path.iterdir() if p.is_dir() for q in p.iterdir() if q.is_dir())
    seen: set[Path] = set()
    for d in candidates:
        if any(s in d.parents for s in seen):
            continue
        if _is_quality_dir(d):
            files = [f for f in (QUALITY_FILE, "summary.csv") if (d / f).is_file()]
            found.append(Source(d, "quality", files))
            seen.add(d)
        elif _is_bench_dir(d):
            found.append(
                Source(d, "bench", [f for f in BENCH_FILES + CASCADE_FILES if (d / f).is_file()])
            )
            seen.add(d)
        elif _is_spectra_dataset_dir(d):
            found.append(Source(d, "spectra", [f for f in SPECTRA_FILES if (d / f).is_file()]))
            seen.add(d)
        if d == path and d in seen:
            break  # the path itself is a table dir: do not descend
    return found


def load(paths: list[Path]) -> ResultSet:
    """Read every table under the given --results paths.

    Raises ReportInputError when a path does not exist or holds no readable table.
    """
    warnings: list[str] = []
    benches: list[pd.DataFrame] = []
    cascades: list[pd.DataFrame] = []
    targets: list[pd.DataFrame] = []
    spectra: dict[str, DatasetSpectra] = {}
    quality: list[pd.DataFrame] = []
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        found = detect(path)
        usable = 0
        for src in found:
            if src.kind == "bench":
                device = src.path.name
                f = _first_existing(src.path, BENCH_FILES)
                if f is not None:
                    try:
                        df = _read_table(f, warnings)
                    except Exception as exc:  # noqa: BLE001
                        msg = (
                            str(exc).strip().splitlines()[0]
                            if str(exc).strip()
                            else type(exc).__name__
                        )
                        raise ReportInputError(f"cannot read {f}: {msg}") from None
                    if not df.empty:
                        df = normalise_bench(df, device).assign(source_dir=str(src.path))
                        df = bad_times(df, f, warnings)
                        benches.append(df)
                        usable += 1
                    else:
                        warnings.append(f"{f} has no rows")
                tpath = src.path / TARGETS_FILE
                if tpath.is_file():
                    tdf = _read_optional_csv(tpath, warnings)
                    if tdf is not None and not tdf.empty:
                        tdf["source_dir"] = str(src.path)
                        targets.append(tdf)
                c = _first_existing(src.path, CASCADE_FILES)
                if c is not None:
                    try:
                        cdf = _read_table(c)
                        if not cdf.empty:
                            cascades.append(
                                normalise_cascade(cdf, device).assign(source_dir=str(src.path))
                            )
                            usable += 1
                    except ReportInputError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        warnings.append(f"could not read {c}: {exc}")
            elif src.kind == "quality":
                q = _read_optional_csv(src.path / QUALITY_FILE, warnings)
                if q is not None:
                    quality.append(q.assign(source_dir=str(src.path)))
                    usable += 1
            else:
                ds = read_dataset_dir(src.path, warnings)
                if _has_any_table(ds):
                    name = ds.name
                    while name in spectra:
                        name += "'"
                    ds.name = name
                    spectra[name] = ds
                    usable += 1
            sources.append(src)
        if usable == 0:
            detail = (
                "; ".join(warnings)
                if warnings
                else "found none of " + ", ".join(BENCH_FILES + CASCADE_FILES + SPECTRA_FILES)
            )
            raise ReportInputError(
                f"--results {path}: no readable result table ({detail}). Point it at a "
                "bench run directory (results.csv), results/spectra, one dataset folder, or "
                "results/quality (folders written by `python -m analysis quality`)."
            )
    bench = (
        pd.concat(benches, ignore_index=True)
        if benches
        else normalise_bench(pd.DataFrame({"method": [], "n": []}), "none")
    )
    cascade = pd.concat(cascades, ignore_index=True) if cascades else pd.DataFrame()
    bench, cascade = separate_runs(bench, cascade)
    return ResultSet(
        bench=bench,
        cascade=cascade,
        spectra=spectra,
        sources=sources,
        warnings=warnings,
        targets=pd.concat(targets, ignore_index=True) if targets else None,
        quality=pd.concat(quality, ignore_index=True) if quality else None,
    )
