"""Files that are not interaction logs are recognised by content and named, never parsed."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.filetype import sniff
from analysis.loaders import load


def _safetensors(path: Path) -> None:
    header = json.dumps({"k": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 24)


def test_sniff_by_content_not_name(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 8), np.float32))
    np.savez(
        tmp_path / "kv.txt", k=np.zeros((2, 5, 4)), v=np.zeros((2, 5, 4))
    )  # wrong suffix on purpose
    _safetensors(tmp_path / "w.bin")
    pd.DataFrame({"user": [1], "item": [2]}).to_parquet(tmp_path / "log.dat")
    (tmp_path / "p.csv").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "log.txt").write_text("1 2\n1 3\n")
    got = {
        f: sniff(tmp_path / f)
        for f in ("a.npy", "kv.txt.npz", "w.bin", "log.dat", "p.csv", "log.txt")
    }
    assert got == {
        "a.npy": "npy",
        "kv.txt.npz": "npz",
        "w.bin": "safetensors",
        "log.dat": "parquet",
        "p.csv": "pickle",
        "log.txt": "text",
    }


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (
            lambda p: np.savez(
                p, k=np.zeros((2, 5, 4)), v=np.zeros((2, 5, 4)), mask=np.ones((2, 5), bool)
            ),
            r"NumPy \.npz archive \(arrays k, v, mask\).*`real` input family",
        ),
        (
            lambda p: np.save(p, np.zeros((7, 16), np.float32)),
            r"\.npy array \(shape \(7, 16\).*--item-table",
        ),
        (_safetensors, r"safetensors file \(tensors k \[2, 3\]\)"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2])), r"Python pickle.*never loaded"),
    ],
)
def test_wrong_type_for_data_names_it(
    tmp_path: Path, make, expect, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "kv.npz"
    make(f)
    f = next(tmp_path.iterdir())  # numpy may add a suffix
    with pytest.raises(ValueError, match=expect):
        load(f)
    with pytest.raises(ValueError, match=expect):
        load(f, fmt="pairs")  # an explicit --format does not bypass the check
    assert main(["spectrum", "--data", str(f), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not an interaction log" in err and "--skip-malformed" not in err


def test_parquet_log_with_any_name_is_read(tmp_path: Path) -> None:
    f = tmp_path / "events.bin"
    pd.DataFrame({"user": [1, 1, 2, 2], "item": [3, 4, 3, 5]}).to_parquet(f)
    data = load(f)
    assert len(data.sequences) == 2 and data.n_items >= 3
