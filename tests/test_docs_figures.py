"""Figures the docs quote from committed result files still match those files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _decision(ds: str, col: str) -> float:
    t = pd.read_csv(ROOT / "results" / "spectra" / ds / "decisions.csv")
    t = t[(t["m"] == 1024) & (t["n_bin"] == "[1000,inf)")]
    vals = t[col].round(6).unique()
    assert len(vals) == 1, f"{ds} {col}: {vals}"
    return float(vals[0])


@pytest.mark.parametrize("ds,col,quoted", [
    ("ml-1m", "dense_expected_ms", "dense forward is {:.2f} ms"),
    ("ml-1m", "svd_expected_ms", "svd_exact\nforward {:.2f} ms"),
    ("ml-1m", "svd_attend_ms", "attends in {:.2f} ms"),
    ("wikipedia", "svd_attend_ms", "attend {:.2f} ms"),
    ("wikipedia", "dense_expected_ms", "{:.2f} ms forward at M = 1024"),
])
def test_analysis_md_decision_figures(ds: str, col: str, quoted: str) -> None:
    if not (ROOT / "results" / "spectra" / ds / "decisions.csv").is_file():
        pytest.skip(f"results/spectra/{ds}/decisions.csv not committed")
    text = " ".join((ROOT / "docs" / "analysis.md").read_text().split())
    assert " ".join(quoted.format(_decision(ds, col)).split()) in text


def test_bench_md_quick_time_is_the_committed_one() -> None:
    readme = (ROOT / "results" / "cpu" / "README.md").read_text()
    assert "Wall time: 44.4 s" in readme and "Threads: **2**" in readme
    assert "44.4 s for the committed `results/cpu` (run with `--threads 2`" in (ROOT / "docs" / "bench.md").read_text()
