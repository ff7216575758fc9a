"""Bring your own K/V: .npz / .safetensors per-user arrays -> KL by rank -> decide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.byo import per_user
from analysis.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _kv(users: int = 4, n: int = 40, d: int = 8, heads: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (users, n, d) if heads is None else (users, heads, n, d)
    return {
        "k": rng.standard_normal(shape).astype(np.float32),
        "v": rng.standard_normal(shape).astype(np.float32),
    }


def test_npz_with_mask_and_queries_to_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _kv()
    a["mask"] = np.ones((4, 40), bool)
    a["mask"][1, 30:] = False
    a["q"] = np.random.default_rng(1).standard_normal((4, 5, 8)).astype(np.float32)
    np.savez(tmp_path / "kv.npz", **a)
    out = tmp_path / "out"
    assert (
        main(
            [
                "kv",
                "--kv",
                str(tmp_path / "kv.npz"),
                "--out",
                str(out),
                "--kl-methods",
                "svd_exact,svd_tokens",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "the file's q (5 per user and head)" in printed
    kl = pd.read_csv(out / "kl_by_rank.csv", dtype={"user": str})
    assert set(kl["method"]) == {"svd_exact", "svd_tokens"} and kl["m"].eq(5).all()
    assert (
        kl.loc[kl["user"] == "1", "n"].eq(30).all() and kl.loc[kl["user"] == "0", "n"].eq(40).all()
    )
    full = kl[(kl["method"] == "svd_exact") & (kl["rank"] >= 16)]
    assert (full["kl_mean"] < 1e-5).all()  # rank >= d + dv: exact
    # and a bench table gives a decision over all six methods with the device
    rows = []
    for meth, t in (("dense", 1.0), ("svd_exact", 5.0), ("linrec", 0.1)):
        for r in (16,) if meth == "svd_exact" else (np.nan,):
            rows.append(
                {
                    "method": meth,
                    "n": 40,
                    "m": 64,
                    "d": 8,
                    "rank": r,
                    "status": "ok",
                    "device": "cpu",
                    "device_name": "VM",
                    "forward_ms_median": t,
                    "forward_ms_iqr": 0.01 * t,
                    "timing_samples_forward": 20,
                    "attend_ms_median": t,
                    "prepare_ms_median": 0.0,
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    assert (
        main(
            [
                "decide",
                "--spectra",
                str(out),
                "--bench",
                str(tmp_path / "results.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("Verdict") and "cpu (VM)" in printed
    cand = pd.read_csv(out / "candidates.csv")
    assert set(cand["method"]) == {
        "dense",
        "svd_exact",
        "svd_tokens",
        "linrec",
        "lrea",
        "performer",
    }
    assert json.loads((out / "decisions.json").read_text())["device"] == "cpu (VM)"


def test_safetensors_lengths_heads_and_drawn_queries(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    a = _kv(users=3, heads=2)
    a["lengths"] = np.array([40, 10, 1], dtype=np.int64)
    save_file(a, str(tmp_path / "kv.safetensors"))
    users, note = per_user(tmp_path / "kv.safetensors", n_queries=7)
    assert "seeded Gaussian" in note
    assert [u for u, *_ in users] == [
        "0/0",
        "0/1",
        "1/0",
        "1/1",
    ]  # user 2 has one behaviour: skipped
    assert users[2][2].shape == (10, 8) and users[0][1].shape == (7, 8)


@pytest.mark.parametrize(
    ("arrays", "expect"),
    [
        ({"k": np.zeros((2, 5, 4))}, r"lacks arrays \['v'\]"),
        ({"k": np.zeros((2, 5, 4)), "v": np.zeros((2, 6, 4))}, "differ in users, heads or N"),
        (
            {"k": np.zeros((2, 5, 4)), "v": np.zeros((2, 5, 4)), "mask": np.ones((2, 5))},
            "mask must be bool",
        ),
        (
            {"k": np.zeros((2, 5, 4)), "v": np.zeros((2, 5, 4)), "lengths": np.array([9, 1])},
            "lengths must be",
        ),
        (
            {"k": np.zeros((2, 5, 4)), "v": np.zeros((2, 5, 4)), "extra": np.zeros(2)},
            "unknown arrays",
        ),
        (
            {"k": np.zeros((2, 5, 4)), "v": np.zeros((2, 5, 4)), "q": np.zeros((2, 3, 5))},
            "does not match k",
        ),
    ],
)
def test_bad_kv_files(tmp_path: Path, arrays, expect, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "kv.npz", **arrays)
    assert main(["kv", "--kv", str(tmp_path / "kv.npz"), "--out", str(tmp_path / "o")]) == 2
    assert expect.replace("\\", "") in capsys.readouterr().err


def test_wrong_type_for_kv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log.npz").write_text("1 2\n1 3\n")  # a text log with a misleading name
    assert main(["kv", "--kv", str(tmp_path / "log.npz"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a text file" in err and "an interaction log goes to --data" in err
    np.save(tmp_path / "emb.npy", np.zeros((3, 4)))
    assert main(["kv", "--kv", str(tmp_path / "emb.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "single .npy array" in capsys.readouterr().err


def test_missing_mask_or_lengths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No mask and no lengths: every behaviour is real, and the output says so; zero rows
    (padding the file does not declare) are refused instead of attended to."""
    a = _kv(users=2, n=20)
    np.savez(tmp_path / "kv.npz", **a)
    users, note = per_user(tmp_path / "kv.npz")
    assert "padding: none in the file: every behaviour is real" in note
    assert all(k.shape[0] == 20 for _, _, k, _ in users)
    a["k"][1, 12:] = 0.0
    a["v"][1, 12:] = 0.0
    np.savez(tmp_path / "kv.npz", **a)
    assert main(["kv", "--kv", str(tmp_path / "kv.npz"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no mask or lengths, but 8 behaviour rows of 1 users have all-zero k and v" in err
    a["lengths"] = np.array([20, 12])
    np.savez(tmp_path / "kv.npz", **a)
    users, note = per_user(tmp_path / "kv.npz")
    assert "padding: the file's lengths" in note and users[1][2].shape == (12, 8)
