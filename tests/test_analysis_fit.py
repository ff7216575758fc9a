"""Spectrum fit recovers known decays; profiles round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis import fit


def _spectra(curve: np.ndarray, lengths: np.ndarray, c: float) -> np.ndarray:
    return c * np.sqrt(lengths)[:, None] * curve[None, :]


@pytest.mark.parametrize("model,param", [("powerlaw", 0.8), ("exponential", 0.15)])
def test_fit_recovers_parameters(model: str, param: float, tmp_path: Path) -> None:
    i = np.arange(1, 65, dtype=float)
    curve = (
        fit.powerlaw_curve(i, param, 0.02)
        if model == "powerlaw"
        else fit.exponential_curve(i, param, 0.02)
    )
    lengths = np.array([100, 300, 1200, 2000, 1500, 1100, 1300])
    prof = fit.fit_profile(_spectra(curve, lengths, 2.5), lengths, "toy", "ppmi")
    assert prof["model"] == model
    key = "alpha" if model == "powerlaw" else "beta"
    assert prof["params"][key] == pytest.approx(param, rel=1e-3)
    assert prof["noise_floor"] == pytest.approx(0.02, rel=1e-2)
    assert prof["s1_per_sqrt_n"] == pytest.approx(2.5)
    assert prof["s1_exponent"] == pytest.approx(0.5, abs=1e-6)
    assert prof["fit_users"] == 5 and prof["fit_min_n"] == 1000
    assert {a["model"] for a in prof["alternatives"]} == {"powerlaw", "exponential"}
    fit.write_profile(prof, tmp_path / "p.json")
    back = json.loads((tmp_path / "p.json").read_text())
    assert set(back) >= {
        "dataset",
        "route",
        "model",
        "params",
        "noise_floor",
        "noise_floor_additive",
        "s1_per_sqrt_n",
        "dim",
        "fit_rmse_log",
        "alternatives",
    }
    f = back["noise_floor"]
    assert back["noise_floor_additive"] == pytest.approx(f / (1 - f))
    s = fit.profile_spectrum(back, 10_000)
    assert s.shape == (64,) and s[0] == pytest.approx(2.5 * 100)


def test_fit_needs_long_users() -> None:
    with pytest.raises(ValueError, match="no user"):
        fit.fit_profile(np.ones((3, 16)), np.array([2, 3, 4]), "toy", "ppmi")
