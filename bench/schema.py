"""The benchmark results table's schema, in one place (issue 13).

Every column of ``DIR/results.csv`` / ``results.parquet``: its name, its type and what kind
of column it is (``config``: what was asked; ``status``; ``measurement``; ``model``: analytic
counts and ceilings; ``env``: where it ran). ``bench.store`` writes in this order and with
these types (parquet keeps them), ``reports.load`` types what it reads with them, and
``docs/contracts.md`` section 2 documents them (``tests/test_results_schema.py`` holds the
three together). Columns a newer harness adds go here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .errors import ResultsFileError

PHASES = ("prepare", "attend", "forward")
TYPES = ("string", "float", "int", "bool")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | float | int (nullable) | bool (nullable)
    kind: str  # config | status | measurement | model | env


def _cols(kind: str, type_: str, names: list[str]) -> list[Column]:
    return [Column(n, type_, kind) for n in names]


def _bench_columns() -> list[Column]:
    time_cols = [
        f"{p}_{s}"
        for p in (*PHASES, "attend_graph")
        for s in ("ms_median", "ms_iqr", "ms_min", "calls", "ms_iqr_rel")
    ]
    fidelity = [
        f"{m}_{s}"
        for m in ("kl", "tv", "js", "top10_recall", "out_err")
        for s in ("mean", "p50", "p99", "max")
    ]
    return (
        _cols("config", "string", ["case_id", "preset", "method", "label", "params"])
        + _cols("config", "int", ["rank", "features"])
        + _cols("config", "string", ["solver", "setting"])
        + _cols("config", "bool", ["causal"])
        + _cols("config", "string", ["family", "family_params"])
        + _cols("config", "bool", ["synthetic"])
        + _cols("config", "string", ["dataset"])
        + _cols("config", "int", ["batch", "heads", "n", "m", "d", "dv"])
        + _cols("config", "string", ["dtype"])
        + _cols("config", "int", ["seed"])
        + _cols("config", "float", ["query_scale", "padding"])
        + _cols("config", "string", ["backend"])
        + _cols("status", "string", ["status", "reason"])
        + _cols("measurement", "float", time_cols)
        + _cols("measurement", "string", ["timer"])
        + _cols("measurement", "int", ["timing_input_sets"])
        + _cols("measurement", "float", ["timing_sample_min_ms"])
        + _cols("measurement", "string", ["timing_rotation_note"])
        + _cols("measurement", "int", ["timing_graph_calls_attend"])
        + _cols("measurement", "string", ["timing_graph_note"])
        + [
            Column(f"timing_{s}_{p}", "string" if s == "cache" else "float", "measurement")
            for p in PHASES
            for s in ("inner_calls", "samples", "input_sets", "cache", "working_set_bytes")
        ]
        # CPU runs: CPU time of the same samples (issue 11); empty on CUDA and in older files
        + _cols(
            "measurement",
            "float",
            [
                f"{p}_{s}"
                for p in PHASES
                for s in (
                    "thread_cpu_ms_median",
                    "thread_cpu_ms_iqr",
                    "process_cpu_ms_median",
                    "process_cpu_ms_iqr",
                    "wall_per_cpu",
                )
            ],
        )
        + _cols("env", "float", ["load_avg_1m", "load_per_core"])
        + _cols("measurement", "string", ["timing_rank_by", "timing_wall_warning"])
        + _cols(
            "measurement",
            "float",
            ["peak_mem_alloc_bytes", "peak_mem_nvml_bytes", "peak_mem_cpu_bytes"],
        )
        + _cols("model", "float", ["mem_model_bytes"])
        + _cols("measurement", "string", ["mem_method"])
        + _cols("measurement", "float", fidelity)
        + _cols(
            "measurement",
            "float",
            [
                "neg_mass_mean",
                "neg_mass_max",
                "kl_smoothed_rows",
                "kl_uniform_rows",
                "kl_rows",
                "padded_rows_excluded",
                "kl_smoothing_a",
                "fidelity_rows",
            ],
        )
        + _cols(
            "measurement",
            "float",
            ["q_norm_mean", "q_norm_max", "k_norm_mean", "k_norm_max", "logit_scale"],
        )
        + _cols(
            "model",
            "float",
            [
                "flops",
                "bytes",
                "exps",
                "flops_prepare",
                "flops_attend",
                "bytes_prepare",
                "bytes_attend",
                "exps_prepare",
                "exps_attend",
            ],
        )
        + _cols("measurement", "float", ["flops_per_s", "bytes_per_s"])
        + _cols("model", "float", ["peak_flops", "peak_bytes_per_s", "peak_exp_per_s"])
        + _cols("model", "string", ["peak_source"])
        + _cols(
            "model", "float", ["peak_flops_table", "peak_bytes_per_s_table", "peak_exp_per_s_table"]
        )
        + _cols("measurement", "float", ["roofline_fraction", "arithmetic_intensity"])
        + [
            Column(
                f"roofline_{k}_{p}",
                "string" if k == "bound" else "float",
                "model" if k != "fraction" else "measurement",
            )
            for p in (*PHASES, "attend_graph")
            for k in ("floor_ms", "bound", "fraction")
        ]
        + _cols(
            "env",
            "string",
            ["device", "device_name", "driver", "cuda_version", "torch_version", "cpu_model"],
        )
        + _cols("env", "int", ["threads"])
        + _cols("env", "string", ["git_commit", "hostname", "timestamp", "malloc_tuning"])
        + [
            Column(f"nvml_{f}_{w}", "string" if f == "throttle" else "float", "env")
            for f in ("sm_clock_mhz", "temp_c", "power_w", "throttle")
            for w in ("before", "after")
        ]
    )


BENCH: tuple[Column, ...] = tuple(_bench_columns())
BY_NAME: dict[str, Column] = {c.name: c for c in BENCH}
COLUMNS: list[str] = [c.name for c in BENCH]
ENV_COLUMNS: list[str] = [c.name for c in BENCH if c.kind == "env"]
# Columns some rows carry besides the schema's (method-specific diagnostics); typed when present.
OPTIONAL: dict[str, str] = {
    "lrea_fit_reconstruction_err": "float",
    "lrea_absorption_err": "float",
    "lrea_uncompressed_err": "float",
    "fidelity_note": "string",
    "spectrum_profile": "string",
    "queries": "string",  # real family: the file's q, drawn, or the keys (self); and the padding
    "mem_estimate_bytes": "float",
}
# A table without these is not a bench results table.
REQUIRED = ("case_id", "method", "n", "status")

_PANDAS = {"string": "string", "float": "float64", "int": "Int64", "bool": "boolean"}


def type_of(name: str) -> str | None:
    col = BY_NAME.get(name)
    return col.type if col else OPTIONAL.get(name)


def _as_bool(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")
    low = s.astype("string").str.strip().str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[low.isin(["true", "1", "1.0", "yes"]).fillna(False)] = True
    out[low.isin(["false", "0", "0.0", "no"]).fillna(False)] = False
    return out


def _as_int(s: pd.Series) -> pd.Series:
    num = pd.to_numeric(s, errors="coerce")
    whole = num.isna() | (num == num.round())
    return num.astype("Int64") if bool(whole.all()) else num  # a fractional value stays a float


def apply_types(df: pd.DataFrame) -> pd.DataFrame:
    """The schema's types for every known column present (values that do not parse become
    missing; callers that must report them check before, see ``bench.preflight``)."""
    out = df.copy()
    for col in out.columns:
        t = type_of(str(col))
        if t == "string":
            out[col] = (
                out[col]
                .map(lambda v: v if v is None or isinstance(v, str) or v != v else str(v))
                .astype("string")
            )
        elif t == "float":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        elif t == "int":
            out[col] = _as_int(out[col])
        elif t == "bool":
            out[col] = _as_bool(out[col])
    return out


def check_bench_table(df: pd.DataFrame, source: str) -> None:
    """Raise ``ResultsFileError`` for a table that is not a bench results table, listing the
    missing required columns and the columns it has that the schema does not know."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        unknown = [str(c) for c in df.columns if type_of(str(c)) is None]
        raise ResultsFileError(
            f"{source}: not a bench results table: missing column(s) {', '.join(missing)}"
            + (
                f"; columns the schema does not know: {', '.join(unknown[:12])}"
                + (f" (+{len(unknown) - 12} more)" if len(unknown) > 12 else "")
                if unknown
                else ""
            )
            + " (the columns are listed in docs/contracts.md, section 2)"
        )


def pandas_dtype(name: str) -> str | None:
    t = type_of(name)
    return _PANDAS[t] if t else None
