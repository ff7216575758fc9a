"""Checks a sweep passes before any case is measured, and readings that must not crash.

- every method named anywhere (``methods``, a block's ``methods``, ``--methods``) exists;
- the sweep has at least one case, and every (method, parameters) variant builds its
  operator (an unknown solver fails here, not as an error row per case after the sweep);
- the end-of-run summary when no case ran ok, and ``bench crossover`` on a folder or file
  that is missing or holds another kind of table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .config import Case, SweepConfig
from .errors import ConfigError, ResultsFileError

CROSSOVER_COLUMNS = ("method", "label", "n", "status", "forward_ms_median")


def check_methods(cfg: SweepConfig, only: list[str] | None, source: str) -> None:
    """Unknown method names anywhere in the sweep -> ConfigError listing what exists."""
    import attention_impls as ai

    known = ai.available()
    named = [("--methods", only or ()), (f"{source}: methods", cfg.methods or ())]
    named += [
        (f"{source} [[grid]] #{i + 1}.methods", g.methods or ()) for i, g in enumerate(cfg.grids)
    ]
    named += [(f"{source} method_params", [name for name, _ in cfg.method_params])]
    for where, names in named:
        bad = [m for m in names if m not in known]
        if bad:
            raise ConfigError(f"{where}: unknown method(s) {bad}; available: {', '.join(known)}")


def check_cases(cfg: SweepConfig, cases: list[Case], methods: list[str], source: str) -> None:
    """Zero cases, or a method variant whose operator cannot be built -> ConfigError."""
    import attention_impls as ai

    if not cases:
        raise ConfigError(
            f"{source}: the sweep has no case (methods {methods or 'none'}; a [[grid]] block's "
            "`methods` may exclude them all); nothing to run"
        )
    seen: set[tuple] = set()
    for c in cases:
        key = (c.method, c.params)
        if key in seen:
            continue
        seen.add(key)
        try:
            ai.get(c.method, **c.params_dict)
        except (ValueError, TypeError, MemoryError) as exc:
            raise ConfigError(
                f"{source}: {c.method} with parameters {c.params_dict}: {exc}"
            ) from None


def no_ok_lines(rows: pd.DataFrame, top: int = 3) -> list[str]:
    """What ``bench run`` prints when no case ran ok: the counts and the commonest reasons."""
    counts = rows["status"].fillna("?").value_counts().to_dict()
    lines = [
        f"no case ran ok ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
        "the rows are in results.csv with their reason:"
    ]
    if "reason" in rows:
        for reason, n in (
            rows["reason"].fillna("(no reason)").astype(str).value_counts().head(top).items()
        ):
            lines.append(f"  {n} x {reason[:200]}")
    return lines


def crossover_table(path: str | Path, read: Callable[[str | Path], pd.DataFrame]) -> pd.DataFrame:
    """A bench results table for ``bench crossover``, or ResultsFileError saying what is wrong."""
    p = Path(path)
    if not p.exists():
        raise ResultsFileError(
            f"{p}: no such file or folder; give a bench run folder or its results.csv"
        )
    if p.is_dir() and not (p / "results.csv").is_file():
        raise ResultsFileError(
            f"{p}: no results.csv in this folder; is it a `bench run --out` folder?"
        )
    try:
        df = read(p)
    except pd.errors.EmptyDataError:
        raise ResultsFileError(f"{p}: the table is empty") from None
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"{p}: not a readable results table ({exc})") from None
    missing = [c for c in CROSSOVER_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsFileError(
            f"{p}: not a bench results table (no column(s) {missing}; "
            f"it has {', '.join(map(str, df.columns[:8]))}...)"
        )
    for col in ("n", "forward_ms_median", "attend_ms_median"):
        if col in df:
            num = pd.to_numeric(df[col], errors="coerce")
            bad = int((num.isna() & df[col].notna()).sum())
            if bad:
                logging.getLogger(__name__).warning(
                    "%s: %d value(s) of %s are not numbers; those rows are left out", p, bad, col
                )
            df[col] = num
    return df
