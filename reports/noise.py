"""Speedup intervals from the bench table's per-row median, IQR and sample count.

The same parametric bootstrap as ``bench.compare`` and ``analysis.decide_timing`` (reports
read files only, so it is restated here): each row's samples are redrawn from the log-normal
with the recorded median and IQR, the median of each redraw taken, times a per-row log-normal
factor with sigma ``run_sigma`` for drift between cases of one run; several rows of one case
are combined by their median. A speedup counts only when its whole interval is above 1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

Z75 = 0.6744897501960817
RUN_SIGMA = 0.05


def _draws(
    rows: pd.DataFrame, phase: str, rng: np.random.Generator, resamples: int, run_sigma: float
) -> np.ndarray | None:
    per = []
    for _, r in rows.iterrows():
        med = r.get(f"{phase}_ms_median")
        if med is None or not np.isfinite(med) or med <= 0:
            continue
        iqr = r.get(f"{phase}_ms_iqr")
        iqr = float(iqr) if iqr is not None and np.isfinite(iqr) and iqr > 0 else 0.0
        k = r.get(f"timing_samples_{phase}")
        k = int(k) if k is not None and np.isfinite(k) and k >= 1 else 1
        sigma = math.asinh(iqr / (2.0 * med)) / Z75
        d = (
            np.median(rng.lognormal(math.log(med), sigma, size=(resamples, k)), axis=1)
            if sigma > 0
            else np.full(resamples, float(med))
        )
        if run_sigma > 0:
            d = d * np.exp(rng.normal(0.0, run_sigma, resamples))
        per.append(d)
    return np.median(np.vstack(per), axis=0) if per else None


def speedup_interval(
    ref: pd.DataFrame,
    mine: pd.DataFrame,
    phase: str = "forward",
    resamples: int = 2000,
    confidence: float = 0.95,
    run_sigma: float = RUN_SIGMA,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % interval of median(ref) / median(mine) (above 1: ``mine`` is faster); NaNs when a
    side has no timed row."""
    rng = np.random.default_rng(seed)
    a, b = (
        _draws(ref, phase, rng, resamples, run_sigma),
        _draws(mine, phase, rng, resamples, run_sigma),
    )
    if a is None or b is None:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(a / b, [tail, 100.0 - tail])
    return float(lo), float(hi)
