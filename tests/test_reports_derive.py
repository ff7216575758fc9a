"""Numbers the report computes itself: crossover N, Pareto front, claim verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from reports import claims
from reports.derive import crossover_table, pareto_front, representative_labels
from reports.load import ResultSet, normalise_bench


def _rows(method, label, times, ns=(64, 128, 256, 512), m=8, **extra):
    return [
        {
            "method": method,
            "label": label,
            "n": n,
            "m": m,
            "d": 32,
            "status": "ok",
            "forward_ms_median": t,
            "attend_ms_median": t / 2,
            **extra,
        }
        for n, t in zip(ns, times, strict=False)
    ]


def _bench(rows) -> pd.DataFrame:
    return normalise_bench(pd.DataFrame(rows), "cpu")


def test_crossover_rules():
    df = _bench(
        _rows("dense", "dense", [1, 2, 4, 8])
        + _rows("svd_exact", "svd_exact[r=4]", [5, 5, 3, 3])  # faster from 256
        + _rows("linrec", "linrec", [5, 6, 7, 9])  # never faster
        + _rows("lrea", "lrea[r=4]", [0.5, 1, 2, 4])  # always faster
        + _rows("performer", "performer", [0.5, 3, 5, 9])
    )  # faster only at the smallest N
    x = crossover_table(df).set_index("label")
    assert x.loc["svd_exact[r=4]", "crossover_n_forward"] == "256"
    assert x.loc["linrec", "crossover_n_forward"] == "none in range"
    assert x.loc["lrea[r=4]", "crossover_n_forward"] == "<= 64"
    assert x.loc["performer", "crossover_n_forward"] == "64 (not at largest N)"
    assert np.isclose(x.loc["svd_exact[r=4]", "speedup_at_max_n_forward"], 8 / 3)


def test_crossover_compares_only_same_case():
    df = _bench(
        _rows("dense", "dense", [1, 2, 4, 8], m=8) + _rows("svd_exact", "s", [0.1] * 4, m=64)
    )
    assert crossover_table(df).empty  # no dense at M=64: nothing to compare


def test_representative_label_prefers_rank_16():
    df = _bench(
        _rows("svd_exact", "a[r=4]", [1] * 4, rank=4)
        + _rows("svd_exact", "b[r=16]", [1] * 4, rank=16)
    )
    assert representative_labels(df) == {"svd_exact": "b[r=16]"}


def test_pareto_front():
    p = pd.DataFrame({"t": [1, 2, 3, 4, 0.5], "e": [0.5, 0.1, 0.2, 0.01, 0.9]})
    f = pareto_front(p, "t", "e")
    assert f["t"].tolist() == [0.5, 1, 2, 4]


def _rs(rows) -> ResultSet:
    return ResultSet(bench=_bench(rows), cascade=pd.DataFrame(), spectra={}, sources=[])


def test_claim_svd_lossless():
    fp = json.dumps({"rank": 8})
    base = dict(family="exact_rank", family_params=fp, dtype="float32", solver="gram")
    good = [
        dict(
            base,
            method="svd_exact",
            label="s",
            n=256,
            m=8,
            d=32,
            status="ok",
            rank=r,
            kl_mean=1e-9,
            out_err_mean=1e-7,
        )
        for r in (8, 16)
    ]
    low = [
        dict(
            base,
            method="svd_exact",
            label="s",
            n=256,
            m=8,
            d=32,
            status="ok",
            rank=4,
            kl_mean=0.1,
            out_err_mean=0.3,
        )
    ]
    assert (
        claims.svd_lossless(_rs(good + low)).verdict == claims.CONFIRMED
    )  # r < r* is not part of the claim
    bad = [dict(good[0], kl_mean=1e-2)]
    assert claims.svd_lossless(_rs(bad)).verdict == claims.REFUTED
    assert claims.svd_lossless(_rs(_rows("dense", "dense", [1] * 4))).verdict == claims.NOT_TESTABLE


def test_claim_linrec_and_absorption():
    rows = _rows("linrec", "linrec", [1] * 4, kl_mean=0.9, tv_mean=0.6)
    assert claims.linrec_shift(_rs(rows)).verdict == claims.CONFIRMED
    rows = _rows("linrec", "linrec", [1] * 4, kl_mean=0.001, tv_mean=0.01)
    assert claims.linrec_shift(_rs(rows)).verdict == claims.REFUTED
    assert claims.lrea_absorption(_rs(_rows("lrea", "l", [1] * 4))).verdict == claims.NOT_TESTABLE
    rows = _rows("lrea", "l", [1] * 4, absorption_err_mean=1e-4)
    assert claims.lrea_absorption(_rs(rows)).verdict == claims.CONFIRMED
    rows = _rows("lrea", "l", [1] * 4, absorption_err_mean=0.3)
    assert claims.lrea_absorption(_rs(rows)).verdict == claims.REFUTED


def test_status_rows_are_not_numbers():
    rows = _rows("dense", "dense", [1, 2, 4, 8]) + [
        {
            "method": "dense",
            "label": "dense",
            "n": 1 << 20,
            "m": 8,
            "d": 32,
            "status": "oom",
            "reason": "OOM",
        }
    ]
    rs = _rs(rows)
    assert len(rs.ok) == 4 and (rs.bench["status"] == "oom").sum() == 1


def test_cpu_timing_note_says_what_ranks_cpu_rows():
    """The time section says when CPU rows were timed on a loaded machine (issue 11), stays
    quiet for tables without CPU time (CUDA, older files)."""
    import pandas as pd

    from reports.sections import cpu_timing_note

    assert cpu_timing_note(pd.DataFrame({"forward_ms_median": [1.0]})) is None
    rows = pd.DataFrame(
        {
            "forward_ms_median": [1.0, 2.0],
            "forward_process_cpu_ms_median": [0.5, 0.6],
            "timing_rank_by": ["process_cpu", "wall"],
            "timing_wall_warning": ["load average 2.00 per core (> 1)", None],
        }
    )
    note = cpu_timing_note(rows)
    assert (
        note.startswith("Warning: 1 of 2 CPU rows")
        and "process CPU time" in note
        and "load average" in note
    )
    assert "idle machine" in cpu_timing_note(rows.assign(timing_rank_by="wall"))
