"""The seeds' regime (synthetic-from-real): inputs with a fitted profile, rank <= d, the score
scale calibrated on the real users' KL, and the CLI's files and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.seeds_regime import ROUTE, calibrate_scale, real_reference, synthetic_kl

PROFILE = {
    "dataset": "toy",
    "route": "sasrec",
    "matrix": "k",
    "model": "exponential",
    "params": {"beta": 0.15},
    "noise_floor": 0.05,
}


@pytest.fixture()
def spectra(tmp_path):
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    return tmp_path


def test_rows_labelled_and_exact_at_rank_d(spectra):
    df = synthetic_kl(spectra, ns=(64, 128), users=2, ranks=(1, 4, 8, 16), d=8, scale=4.0)
    assert set(df["route"]) == {ROUTE} and set(df["dataset"]) == {"toy"}
    assert set(df["n_bin"]) == {"[64,65)", "[128,129)"}
    # one user id per (N, user): rank_needed groups by user, so ids must not repeat across N
    assert df.groupby("user")["n"].nunique().max() == 1
    kl = df.groupby(["n", "rank"])["kl_mean"].median().unstack(0)
    assert (kl.loc[8] < 1e-6).all() and (kl.loc[16] < 1e-6).all()  # [K|V] has rank <= d = 8
    assert (kl.loc[1] > kl.loc[4]).all() and (kl.loc[1] > 1e-3).all()


def test_kl_grows_with_the_score_scale(spectra):
    def median(s):
        df = synthetic_kl(spectra, ns=(64,), users=2, ranks=(2,), d=8, scale=s)
        return float(df["kl_mean"].median())

    assert median(0.5) < median(2.0) < median(8.0)


def test_calibration_recovers_the_scale_of_a_known_table(spectra):
    # a "real" table made at scale 3: the calibration must find about 3 back
    ref = synthetic_kl(spectra, ns=(96,), users=12, ranks=(1, 4, 16, 24), d=32, scale=3.0)
    ref = ref.assign(route="sasrec", n_bin="[64,256)")
    ref.to_csv(spectra / "kl_by_rank.csv", index=False)
    kl, n, nb, rank = real_reference(spectra, "sasrec")
    assert nb == "[64,256)" and n == 96
    by_rank = ref.groupby("rank")["kl_mean"].median()
    # the calibration rank is the one whose KL is nearest the 1e-2 budget
    assert rank == (np.log(by_rank) - np.log(1e-2)).abs().idxmin()
    s = calibrate_scale(spectra, kl, n, rank=rank, users=12, d=32)
    assert s == pytest.approx(3.0, rel=0.1)


def test_errors_name_the_problem(tmp_path, spectra):
    with pytest.raises(ValueError, match="profile"):
        synthetic_kl(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "profile.json").write_text("not json")
    with pytest.raises(ValueError, match="not a JSON profile"):
        synthetic_kl(tmp_path / "bad")
    with pytest.raises(ValueError, match="no KL table"):
        real_reference(spectra, "sasrec")
    pd.DataFrame(
        {
            "route": ["ppmi"],
            "rank": [16],
            "user": ["1"],
            "n_bin": ["[64,256)"],
            "n": [70],
            "kl_mean": [0.1],
            "method": ["svd_exact"],
        }
    ).to_csv(spectra / "kl_by_rank.csv", index=False)
    with pytest.raises(ValueError, match="has no N bin|10 users"):
        real_reference(spectra, "sasrec")


def test_cli_writes_tables_and_refuses_bad_lists(spectra, capsys):
    ref = synthetic_kl(spectra, ns=(96,), users=10, ranks=(16, 64), scale=6.0)
    ref.assign(route="sasrec", n_bin="[64,256)").to_csv(spectra / "kl_by_rank.csv", index=False)
    out = spectra / "seeds"
    rc = main(
        [
            "seeds-regime",
            "--spectra",
            str(spectra),
            "--n",
            "64,128",
            "--users",
            "2",
            "--temperatures",
            "0.5,2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    kl = pd.read_csv(out / "kl_by_rank.csv")
    assert set(kl["n"]) == {64, 128} and set(kl["route"]) == {ROUTE}
    temps = pd.read_csv(out / "kl_by_temperature.csv")
    assert set(temps["temperature"]) == {0.5, 1.0, 2.0}
    meta = json.loads((out / "seeds_regime.json").read_text())
    assert meta["calibration"]["route"] == "sasrec" and meta["score_scale"] > 0
    assert np.isfinite(meta["score_scale"])
    assert main(["decide", "--spectra", str(out), "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "decisions.csv")["route"]) == {ROUTE}
    with pytest.raises(SystemExit):
        main(["seeds-regime", "--spectra", str(spectra), "--n", "64,x"])
    assert "comma list of ints" in capsys.readouterr().err


def test_missing_rank_is_benched_once_resumed_then_decided(spectra, tmp_path):
    """decide lists the case it lacks (svd_exact at the rank the users need), the targeted
    bench measures it once, a second run resumes without measuring, and decide then times it."""
    from bench.cli import main as bench_main
    from conftest import tiny_sweep

    kl = synthetic_kl(spectra, ns=(64,), users=2, ranks=(1, 2, 4, 8, 16), d=8, scale=4.0)
    kl.to_csv(spectra / "kl_by_rank.csv", index=False)
    bench = tmp_path / "bench"
    sweep = tiny_sweep(tmp_path, methods=["dense"], n=(64,), m=4, fidelity=False)
    assert bench_main(["run", "--config", str(sweep), "--out", str(bench), "--no-cascade",
                       "--yes", "--no-progress"]) == 0  # fmt: skip
    out, targeted = tmp_path / "dec", tmp_path / "targeted"
    dec = ["decide", "--spectra", str(spectra), "--m", "4", "--budgets", "1e-2",
           "--bench", str(bench), "--targeted-out", str(targeted), "--out", str(out)]  # fmt: skip
    assert main(dec) == 0
    toml = out / "missing_cases.toml"
    cand = pd.read_csv(out / "candidates.csv")
    need = cand[cand["method"] == "svd_exact"]
    assert need["speedup"].isna().all()  # not timed: no svd_exact row in the bench table
    rank = int(need["rank"].iloc[0])
    assert f"rank = [{rank}]" in toml.read_text()
    with toml.open("a") as f:  # fast timing for the test; the cases are decide's
        f.write("[timing]\nmin_calls = 2\nmax_calls = 3\nmin_time_s = 0.0\nwarmup_max = 1\n")
    run = ["run", "--config", str(toml), "--out", str(targeted), "--no-cascade", "--yes",
           "--no-progress"]  # fmt: skip
    assert bench_main(run) == 0
    rows = pd.read_csv(targeted / "results.csv")
    assert ((rows["method"] == "svd_exact") & (rows["status"] == "ok")).any()
    assert bench_main(run) == 0  # resumes: nothing measured twice
    assert len(pd.read_csv(targeted / "results.csv")) == len(rows)
    assert (
        main([*dec[:-2], "--bench", str(bench), str(targeted), "--out", str(tmp_path / "d2")]) == 0
    )
    again = pd.read_csv(tmp_path / "d2" / "candidates.csv")
    again = again[again["method"] == "svd_exact"]
    assert (again["rank"] == rank).all() and again["speedup"].notna().all()
