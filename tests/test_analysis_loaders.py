"""Loaders on small generated files in every format, malformed lines and empty files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import loaders
from analysis.loaders import MalformedInputError, detect_format, load


def seqs(data: loaders.Interactions) -> dict[str, list[str]]:
    return {
        u: [str(data.items[i]) for i in s] for u, s in zip(data.users, data.sequences, strict=True)
    }


def test_seq_folder_with_held_out(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "input.txt").write_text("1 2 3\n4 5\n")
    (tmp_path / "test" / "output.txt").write_text("9\n1\n")
    assert detect_format(tmp_path) == "seq"
    d = load(tmp_path)
    assert seqs(d) == {"1": ["1", "2", "3"], "2": ["4", "5"]}
    assert d.time_ordered and d.held_out is not None
    assert [str(d.items[i]) for i in d.held_out] == ["9", "1"]
    assert d.n_interactions == 5 and d.n_users == 2


def test_seq_malformed_raises_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "input.txt"
    f.write_text("1 2 3\n4 x5\n")
    with pytest.raises(MalformedInputError, match=r"input.txt:2: non-integer item id 'x5'"):
        load(f)
    d = load(f, skip_malformed=True)
    assert d.n_users == 1
    assert sum(d.skipped.values()) == 1 and "non-integer" in next(iter(d.skipped))


def test_empty_files_raise(tmp_path: Path) -> None:
    for name in ("input.txt", "wikipedia.txt", "ratings.csv", "x.inter", "ratings.dat", "t.csv"):
        f = tmp_path / name
        f.write_text("")
        with pytest.raises(ValueError, match="empty"):
            load(f, fmt={"input.txt": "seq", "wikipedia.txt": "pairs"}.get(name))


def test_kgat_merges_train_test_unordered(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 10 11 12\n1 13\n2\n")
    (tmp_path / "test.txt").write_text("0 14\n1 10\n")
    assert detect_format(tmp_path) == "kgat"
    d = load(tmp_path)
    assert seqs(d) == {"0": ["10", "11", "12", "14"], "1": ["13", "10"]}
    assert not d.time_ordered and "NOT time-ordered" in d.order_note
    assert d.skipped == {"train.txt: user line without items": 1}


def test_pairs_file_order_and_malformed(tmp_path: Path) -> None:
    f = tmp_path / "wikipedia.txt"
    f.write_text("1 1\n2 2\n1 3\n2 2\n")
    assert detect_format(f) == "pairs"
    d = load(f)
    assert seqs(d) == {"1": ["1", "3"], "2": ["2", "2"]}  # repeats kept
    f.write_text("1 1\n2 2 7\n")
    with pytest.raises(MalformedInputError, match="wikipedia.txt:2: expected 2 fields"):
        load(f, fmt="pairs")
    assert load(f, fmt="pairs", skip_malformed=True).n_interactions == 1


def test_ml_dat_gz_sorted_by_time(tmp_path: Path) -> None:
    f = tmp_path / "ratings.dat.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("1::10::5::300\n1::11::3::100\n2::10::4::50\n1::12::4::200\n")
    assert detect_format(f) == "ml-dat"
    d = load(f)
    assert seqs(d) == {"1": ["11", "12", "10"], "2": ["10"]}
    assert d.time_ordered


def test_ml_dat_bad_timestamp(tmp_path: Path) -> None:
    f = tmp_path / "ratings.dat"
    f.write_text("1::10::5::300\n1::11::3::soon\n1::12\n")
    with pytest.raises(MalformedInputError, match="ratings.dat:2: timestamp"):
        load(f)
    d = load(f, skip_malformed=True)
    assert d.n_interactions == 1 and sum(d.skipped.values()) == 2


def test_ml_csv(tmp_path: Path) -> None:
    f = tmp_path / "ratings.csv"
    f.write_text("userId,movieId,rating,timestamp\n1,5,4.0,20\n1,6,4.0,10\n2,5,3.0,1\n")
    d = load(f)
    assert d.format == "ml-csv"
    assert seqs(d) == {"1": ["6", "5"], "2": ["5"]}
    f.write_text("userId,movieId,rating,timestamp\n1,5,4.0\n")
    with pytest.raises(MalformedInputError, match="ratings.csv:2: expected 4 fields"):
        load(f)


def test_recbole_inter(tmp_path: Path) -> None:
    f = tmp_path / "toy.inter"
    f.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t1\t3\t9\n7\t2\t3\t8\n8\t1\t1\t1\n"
    )
    d = load(f)
    assert d.format == "recbole" and d.time_ordered
    assert seqs(d) == {"7": ["2", "1"], "8": ["1"]}
    f.write_text("user_id:token\titem_id:token\n7\t1\n")
    d = load(f)
    assert not d.time_ordered and "NOT time-ordered" in d.order_note
    f.write_text("uid\tiid\n7\t1\n")
    with pytest.raises(MalformedInputError, match="toy.inter:1: header"):
        load(f)


def test_generic_csv_and_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"user": ["a", "a", "b", "a"], "item": ["x", "y", "x", None], "timestamp": [3, 1, 2, 5]}
    )
    f = tmp_path / "log.csv"
    df.to_csv(f, index=False)
    with pytest.raises(MalformedInputError, match=r"log.csv:5: missing user or item"):
        load(f)
    d = load(f, skip_malformed=True)
    assert seqs(d) == {"a": ["y", "x"], "b": ["x"]} and d.time_ordered
    assert sum(d.skipped.values()) == 1
    pq = tmp_path / "log.parquet"
    df.dropna().drop(columns="timestamp").rename(columns={"user": "uid", "item": "iid"}).to_parquet(
        pq
    )
    d = load(pq)
    assert seqs(d) == {"a": ["x", "y"], "b": ["x"]} and not d.time_ordered
    custom = tmp_path / "custom.csv"
    custom.write_text("who,what,when\nu,i1,2021-01-02\nu,i2,2021-01-01\n")
    d = load(custom, user_col="who", item_col="what", time_col="when")
    assert seqs(d) == {"u": ["i2", "i1"]}


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        load(tmp_path, fmt="nope")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.txt", fmt="pairs")


def test_lengths_and_describe(tmp_path: Path) -> None:
    f = tmp_path / "input.txt"
    f.write_text("1 2 3\n\n4\n")
    d = load(f)
    assert list(d.lengths()) == [3, 1]
    info = d.describe()
    assert info["skipped_rows"] == 1 and info["users"] == 2
    assert np.issubdtype(d.sequences[0].dtype, np.integer)


def test_held_out_lines_without_user_are_counted(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "input.txt").write_text("1 2\n\n3\n")
    (tmp_path / "test" / "output.txt").write_text("4\n5\n6\n")
    d = load(tmp_path)
    assert [str(d.items[i]) for i in d.held_out] == ["4", "6"]
    assert (
        d.skipped["output.txt: held-out line without a matching user (an empty training line)"] == 1
    )
    assert d.skipped["input.txt: empty line (user without items)"] == 1
