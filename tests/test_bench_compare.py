"""bench compare: ratios of medians with bootstrap intervals, flags, outputs, the CI gate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.compare import CompareOptions, compare, lognormal_sigma, regressions


def _table(
    scale: dict[str, float] | None = None,
    iqr_rel: float = 0.02,
    device: str = "cpu",
    samples: int = 20,
) -> pd.DataFrame:
    rows = []
    for method in ("dense", "svd_exact", "linrec"):
        for n in (256, 1024):
            med = (1.0 if method == "dense" else 0.5) * n / 256 * (scale or {}).get(method, 1.0)
            rows.append(
                {
                    "case_id": f"{device}-{method}-{n}",
                    "method": method,
                    "label": method,
                    "setting": "target",
                    "family": "powerlaw",
                    "batch": 1,
                    "heads": 1,
                    "n": n,
                    "m": 16,
                    "d": 64,
                    "dv": 64,
                    "dtype": "fp32",
                    "seed": 0,
                    "status": "ok",
                    "device": device,
                    "forward_ms_median": med,
                    "forward_ms_iqr": med * iqr_rel,
                    "timing_samples_forward": samples,
                }
            )
    return pd.DataFrame(rows)


def _write(df: pd.DataFrame, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    df.to_csv(d / "results.csv", index=False)
    return d


def test_lognormal_sigma_reproduces_median_and_iqr() -> None:
    med, iqr = 2.0, 0.3
    s = lognormal_sigma(med, iqr)
    q1, q3 = med * math.exp(-0.6744897501960817 * s), med * math.exp(0.6744897501960817 * s)
    assert q3 - q1 == pytest.approx(iqr, rel=1e-12)
    x = np.random.default_rng(0).lognormal(math.log(med), s, 200_000)
    assert np.subtract(*np.percentile(x, [75, 25])) == pytest.approx(iqr, rel=0.02)


def test_same_table_is_same_everywhere() -> None:
    t = compare(_table(), _table())
    assert len(t) == 6 and (t["flag"] == "same").all()
    assert ((t["ci_low"] <= 1) & (t["ci_high"] >= 1)).all()


def test_slower_faster_and_noisy_cases_are_flagged() -> None:
    a = _table()
    b = _table({"svd_exact": 2.0, "linrec": 0.5})
    t = compare(a, b).set_index(["method", "n"])
    assert (t.loc["svd_exact", "flag"] == "slower").all()
    assert (t.loc["linrec", "flag"] == "faster").all()
    assert (t.loc["dense", "flag"] == "same").all()
    assert t.loc[("svd_exact", 256), "ratio"] == pytest.approx(2.0)
    # 1.3x with a 60 % IQR over 5 samples: the interval includes 1, so not a regression
    noisy = compare(_table(iqr_rel=0.6, samples=5), _table({"dense": 1.3}, iqr_rel=0.6, samples=5))
    assert (noisy[noisy["method"] == "dense"]["flag"] == "same").all()
    # a real but tiny change stays 'same' under min_effect
    tiny = compare(
        _table(iqr_rel=0.001),
        _table({"dense": 1.02}, iqr_rel=0.001),
        CompareOptions(min_effect=0.05),
    )
    assert (tiny["flag"] == "same").all()


def test_cases_pair_across_devices_but_not_across_configurations() -> None:
    t = compare(_table(device="cpu"), _table(device="cuda"))
    assert len(t) == 6  # case_id differs (it includes the device); the configuration matches
    other = _table()
    other["batch"] = 4
    assert len(compare(_table(), other)) == 0


def test_cli_gate_outputs_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _write(_table(), tmp_path / "a")
    b = _write(_table({"svd_exact": 2.0}), tmp_path / "b")
    csv, md = tmp_path / "cmp.csv", tmp_path / "cmp.md"
    assert main(["compare", str(a), str(b), "--csv", str(csv), "--md", str(md)]) == 0
    out = capsys.readouterr().out
    assert "| svd_exact |" in out and "2 slower" in out
    assert pd.read_csv(csv)["flag"].value_counts()["slower"] == 2
    assert md.read_text().startswith("A: ")
    assert main(["compare", str(a), str(b), "--fail-above", "1.5"]) == 1
    assert "FAIL: 2 case(s)" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--fail-above", "3"]) == 0
    assert main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert main(["compare", str(a), str(b), "--phase", "bogus"]) == 2
    assert len(regressions(compare(_table(), _table()), 1.1)) == 0


def _with_cpu(df: pd.DataFrame, wall_factor: float, loaded: bool) -> pd.DataFrame:
    """The same table with CPU-time columns equal to the medians, and wall times inflated by
    ``wall_factor`` (a loaded machine runs the process part of the time)."""
    out = df.copy()
    out["forward_process_cpu_ms_median"] = out["forward_ms_median"]
    out["forward_process_cpu_ms_iqr"] = out["forward_ms_iqr"]
    out["forward_ms_median"] = out["forward_ms_median"] * wall_factor
    out["timing_rank_by"] = "process_cpu" if loaded else "wall"
    return out


def test_a_loaded_run_is_compared_by_cpu_time() -> None:
    """Same code, same CPU time; run B's wall clock doubled by load. By wall time every case
    would read 2x slower (a false regression); auto compares by process CPU time."""
    a, b = _with_cpu(_table(), 1.0, False), _with_cpu(_table(), 2.0, True)
    t = compare(a, b)
    assert t.attrs["timing"] == "process_cpu" and "run B" in t.attrs["timing_note"]
    assert set(t["flag"]) == {"same"}
    wall = compare(a, b, CompareOptions(timing="wall"))
    assert set(wall["flag"]) == {"slower"} and wall.attrs["timing"] == "wall"
    idle = compare(_with_cpu(_table(), 1.0, False), _with_cpu(_table(), 1.0, False))
    assert idle.attrs["timing"] == "wall"
    with pytest.raises(ValueError, match="no CPU-time columns"):
        compare(_table(), b, CompareOptions(timing="process_cpu"))
