"""The decision's drift sigma comes from the run itself when it drifts more than assumed:
the same prepare (it does not depend on M) timed in several rows of one run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.decide_timing import DRIFT_FLOOR_MS, TimeOpts, drift_sigma, view


def _rows(prepares: dict[tuple[str, int], list[float]], source: str = "run") -> pd.DataFrame:
    rows = []
    for (method, n), times in prepares.items():
        for m, t in zip((16, 256, 1024), times, strict=False):
            rows.append(
                {
                    "method": method,
                    "n": n,
                    "m": m,
                    "d": 64,
                    "status": "ok",
                    "source": source,
                    "prepare_ms_median": t,
                    "prepare_ms_iqr": 0.0,
                    "attend_ms_median": 1.0,
                    "attend_ms_iqr": 0.0,
                    "forward_ms_median": t + 1.0,
                    "forward_ms_iqr": 0.0,
                    "device": "cpu",
                }  # fmt: skip
            )
    return pd.DataFrame(rows)


def test_drift_sigma_is_the_pooled_sd_of_log_prepares_across_m() -> None:
    a, b = [2.0, 2.5, 3.0], [10.0, 8.0]
    t = _rows({("svd_exact", 4096): a, ("svd_exact", 1024): b})
    la, lb = np.log(a), np.log(b)
    ss = ((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum()
    assert drift_sigma(t) == pytest.approx(math.sqrt(ss / 3))


def test_drift_sigma_ignores_single_rows_and_tiny_prepares() -> None:
    tiny = DRIFT_FLOOR_MS / 10
    t = _rows({("svd_exact", 4096): [2.0], ("dense", 4096): [tiny, 2 * tiny, 3 * tiny]})
    assert drift_sigma(t) == 0.0
    assert drift_sigma(t.drop(columns=["prepare_ms_median"])) == 0.0


def test_view_uses_the_larger_of_the_option_and_the_runs_drift() -> None:
    steady = _rows({("svd_exact", 4096): [2.0, 2.02, 1.98]}, source="steady")
    drifting = _rows({("svd_exact", 1024): [2.0, 3.0, 4.0]}, source="drifting")
    v = view(pd.concat([steady, drifting], ignore_index=True), opts=TimeOpts(run_sigma=0.05))
    assert v.sigma["steady"] == 0.05
    assert v.sigma["drifting"] == pytest.approx(float(np.log([2.0, 3.0, 4.0]).std(ddof=1)))
    # the drifting run's rows get the wider factor: a wider interval for the same median
    rows = v.rows
    wide = v.draws(rows[rows["source"] == "drifting"].iloc[[1]], "attend")[1]
    narrow = v.draws(rows[rows["source"] == "steady"].iloc[[1]], "attend")[1]
    assert np.std(np.log(wide)) > 3 * np.std(np.log(narrow))
    assert view(drifting, opts=TimeOpts(run_sigma=0.0)).sigma["drifting"] == 0.0  # off = off
