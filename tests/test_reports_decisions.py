"""The decision part of the report: the answer first, every row shown, the device's own
decisions, and claims held to the same interval rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports import html
from reports.claims import CONFIRMED, NOT_SHOWN, REFUTED, svd_faster
from reports.load import DatasetSpectra, ResultSet
from reports.noise import speedup_interval
from reports.sections import (
    SYNTHETIC_ROUTE,
    Section,
    Table,
    _decision_tables,
    _decision_view,
    _pick_decisions,
)


def _dec(device: str, rows: int = 30) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "route": "sasrec",
            "baseline_route": False,
            "n_bin": "[1000,inf)",
            "bench_n": 1024,
            "m": 1024,
            "kl_budget": 0.01,
            "scenario": "per-request",
            "method": "svd_exact",
            "rank": [16.0] * rows,
            "expected_kl": 0.005,
            "expected_ms": 1.0,
            "speedup": 1.5,
            "speedup_lo": 1.2,
            "speedup_hi": 1.8,
            "crossover_r": np.nan,
            "state_bytes_per_user_head": 73792.0,
            "device": device,
            "why": "x",
        }
    )


def test_decision_view_integer_ranks_and_interval() -> None:
    v = _decision_view(_dec("cpu (X)", 2))
    assert v["rank"].tolist() == ["16", "16"]
    assert v["speedup vs dense [95 % CI]"].iloc[0] == "1.50x [1.20, 1.80]"
    assert v["device"].iloc[0] == "cpu (X)"


def test_report_opens_with_answer_and_shows_every_decision_row() -> None:
    s = Section(
        8,
        "decisions",
        "Decisions and claims",
        answer=["ml-1m - device: cpu (X)", "  sasrec: dense"],
    )
    s.tables.append(
        Table("tbl-decisions-x", "Decision table", _decision_view(_dec("cpu (X)", 40)), full=True)
    )
    s.tables.append(Table("tbl-other", "Other", pd.DataFrame({"a": range(40)})))
    out = html.render([s], "t", "sub")
    assert out.index('id="answer"') < out.index('id="contents"')
    block = out[out.index('id="tbl-decisions-x"') : out.index('id="tbl-other"')]
    assert 'class="scroll"' not in block and block.count("<tr") == 41
    assert 'class="scroll"' in out[out.index('id="tbl-other"') :]


def test_report_uses_its_devices_decisions_or_warns() -> None:
    ds = DatasetSpectra("toy", Path("results/spectra/toy"))
    ds.decision_sets = {"": _dec("cpu (X)"), "h100": _dec("cuda (H100)")}
    picked, warn = _pick_decisions(ds, {"cuda"})
    assert [k for k, _ in picked] == ["h100"] and not warn
    ds.decision_sets = {"": _dec("cpu (X)")}
    picked, warn = _pick_decisions(ds, {"cuda"})
    assert [k for k, _ in picked] == [""] and "timings from cpu (X)" in warn


def test_synthetic_from_real_decisions_are_titled_so() -> None:
    ds = DatasetSpectra("toy", Path("results/spectra/toy"))
    s = Section(8, "decisions", "Decisions and claims")
    _decision_tables(s, ds, "", _dec("cpu (X)", 2))
    _decision_tables(s, ds, "seeds-regime", _dec("cpu (X)", 2).assign(route=SYNTHETIC_ROUTE))
    real, synth = (t.title for t in s.tables)
    assert "(real data;" in real and "synthetic-from-real" not in real
    assert "synthetic-from-real" in synth and "real data" not in synth


def _bench(ratio: float, iqr_rel: float, samples: int) -> pd.DataFrame:
    rows = []
    for n in (1024, 4096):
        for meth, label, t in (
            ("dense", "dense", 1.0),
            ("svd_exact", "svd_exact[rank=16]", 1.0 / ratio),
        ):
            t = t * n / 1024
            rows.append(
                {
                    "method": meth,
                    "label": label,
                    "rank": 16 if meth != "dense" else np.nan,
                    "n": n,
                    "m": 256,
                    "d": 64,
                    "device": "cpu",
                    "dtype": "fp32",
                    "setting": "target",
                    "causal": False,
                    "batch": 1,
                    "heads": 1,
                    "padding": 0.0,
                    "query_scale": 1.0,
                    "status": "ok",
                    "forward_ms_median": t,
                    "forward_ms_iqr": t * iqr_rel,
                    "timing_samples_forward": samples,
                    "attend_ms_median": t,
                    "attend_ms_iqr": t * iqr_rel,
                    "timing_samples_attend": samples,
                    "family": "powerlaw",
                    "features": np.nan,
                    "solver": "gram" if meth != "dense" else np.nan,
                    "params": "{}",
                    "dv": 64,
                    "seed": 0,
                    "family_params": "{}",
                }
            )
    return pd.DataFrame(rows)


def test_svd_faster_claim_needs_interval_above_one() -> None:
    def verdict(ratio, iqr, k):
        return svd_faster(ResultSet(_bench(ratio, iqr, k), pd.DataFrame(), {}, [])).verdict

    assert verdict(1.17, 0.30, 3) == NOT_SHOWN  # faster by the median, interval straddles 1
    assert verdict(1.5, 0.01, 20) == CONFIRMED
    assert verdict(0.8, 0.01, 20) == REFUTED


def test_speedup_interval_brackets_the_ratio() -> None:
    b = _bench(1.2, 0.02, 20)
    lo, hi = speedup_interval(
        b[(b["method"] == "dense") & (b["n"] == 1024)],
        b[(b["method"] == "svd_exact") & (b["n"] == 1024)],
        run_sigma=0.0,
    )
    assert lo < 1.2 < hi and lo > 1.1


def test_tables_carry_no_unused_cell_classes_and_keep_wrap() -> None:
    """pandas' per-cell classes (read by no style) are dropped; td.wrap, which the CSS reads,
    stays on the long cells; every cell and row is still there."""
    long = "a label long enough to wrap, with commas"
    df = pd.DataFrame({"n": [1, 2], "note": [long, "short"]})
    out = html.render([Section(1, "s", "S", tables=[Table("tbl-x", "X", df)])], "t", "sub")
    block = out[out.index('id="tbl-x"') :]
    block = block[: block.index("</table>")]
    assert "row0" not in block and "col_heading" not in block and "level0" not in block
    assert block.count('<td class="wrap"') == 2 and block.count("<td") == 4
    assert block.count("<tr") == 3 and "with commas" in block
