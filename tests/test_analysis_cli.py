"""CLI end to end on small generated logs, the packaged default, and (when present) ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.packaged import packaged_path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_log(path: Path, n_users: int = 40, n_items: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        n = int(rng.integers(2, 300))
        lines += [f"{u} {int(i)}" for i in rng.integers(0, n_items, n)]
    path.write_text("\n".join(lines) + "\n")


def test_spectrum_and_decide_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.txt"
    _write_log(log)
    out = tmp_path / "out"
    rc = main(
        [
            "spectrum",
            "--data",
            str(log),
            "--embedding",
            "ppmi,random",
            "--dim",
            "16",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--kl",
            "--kl-users",
            "10",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "users 40" in text and "skipped rows: 0" in text and "time-ordered" in text
    users = pd.read_csv(out / "users.csv")
    assert len(users) == 40 * 2 * 2  # users x routes x centred
    assert {
        "dataset",
        "user",
        "route",
        "matrix",
        "centred",
        "n",
        "dim",
        "r90",
        "r95",
        "r99",
        "effective_rank",
        "stable_rank",
        "s1",
    } <= set(users.columns)
    assert (users["r99"] <= users["rank_cap"]).all()
    assert {"route", "matrix", "n_bin", "index", "sv_mean", "energy_cum"} <= set(
        pd.read_csv(out / "scree.csv").columns
    )
    prof = json.loads((out / "profile.json").read_text())
    assert (
        prof["route"] == "ppmi"
        and prof["model"] in ("powerlaw", "exponential")
        and prof["dim"] == 16
    )
    assert (out / "kl_by_rank.csv").exists()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["data"]["users"] == 40
    rc = main(["decide", "--spectra", str(out), "--out", str(out)])
    assert rc == 0
    dec = json.loads((out / "decisions.json").read_text())
    assert dec["note"].startswith("no bench") and dec["decisions"]
    capsys.readouterr()
    assert main(["findings", "--spectra", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| dataset |") and "| out |" in table


def test_cli_reports_malformed_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log.txt"
    log.write_text("1 2\n1 3\n2 x y\n")
    rc = main(
        [
            "spectrum",
            "--data",
            str(log),
            "--format",
            "pairs",
            "--out",
            str(tmp_path / "o"),
            "--cache",
            "none",
        ]
    )
    assert rc == 2
    assert "log.txt:3" in capsys.readouterr().err


def test_packaged_default_data(tmp_path: Path) -> None:
    try:
        packaged_path("ml-100k")
    except ValueError as exc:
        pytest.skip(f"packaged dataset not installed: {exc}")
    rc = main(
        [
            "spectrum",
            "--embedding",
            "random",
            "--out",
            str(tmp_path / "o"),
            "--cache",
            "none",
            "--quiet",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "o" / "dataset.json").read_text())["data"]["users"] == 943


@pytest.mark.skipif(not (SHARED / "ml-1m").exists(), reason=f"shared data not found at {SHARED}")
def test_shared_ml1m_loads_as_documented() -> None:
    from analysis.loaders import load

    d = load(SHARED / "ml-1m")
    assert (d.n_users, d.n_items, d.n_interactions + len(d.held_out)) == (6040, 3416, 993059)
    assert d.time_ordered and (d.held_out >= 0).all()


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared data not found at {SHARED}")
@pytest.mark.parametrize(
    "folder,users,ordered",
    [
        ("ml-1m-ratings", 2999, True),
        ("ml-latest-small", 610, True),
        ("wikipedia", 8227, True),
        ("ml-100k", 943, True),
        ("lastfm-sample", 23566, False),
    ],
)
def test_shared_datasets_autodetect(folder: str, users: int, ordered: bool) -> None:
    from analysis.loaders import load

    if not (SHARED / folder).exists():
        pytest.skip(f"{SHARED / folder} missing")
    d = load(SHARED / folder)
    assert d.n_users == users and d.time_ordered is ordered
