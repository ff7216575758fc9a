"""Atomic append log: truncated last line dropped, corruption reported clearly."""

from __future__ import annotations

import json

import pytest

from bench import store
from bench.cli import main
from bench.errors import ResultsFileError


def test_append_and_read_back(tmp_path):
    log = tmp_path / "rows.jsonl"
    store.append_row(log, {"case_id": "a", "x": 1.5, "nan": float("nan")})
    store.append_row(log, [{"case_id": "b"}, {"case_id": "a", "x": 9}])
    rows = store.read_rows(log)
    assert [r["case_id"] for r in rows] == ["a", "b", "a"]
    assert rows[0]["nan"] is None
    assert [(r["case_id"], r.get("x")) for r in store.dedupe(rows)] == [("a", 9), ("b", None)]


def test_truncated_last_line_is_dropped_and_cut(tmp_path):
    log = tmp_path / "rows.jsonl"
    store.append_row(log, {"case_id": "a"})
    with open(log, "ab") as fh:
        fh.write(b'{"case_id": "b", "stat')  # a crash in the middle of a write
    with pytest.warns(UserWarning, match="truncated"):
        rows = store.read_rows(log)
    assert [r["case_id"] for r in rows] == ["a"]
    store.append_row(log, {"case_id": "c"})  # later appends start on a clean line
    assert [r["case_id"] for r in store.read_rows(log)] == ["a", "c"]


def test_corrupt_middle_line_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    log = out / "rows.jsonl"
    log.write_text(
        json.dumps({"case_id": "a"}) + "\n#garbage!\n" + json.dumps({"case_id": "b"}) + "\n"
    )
    with pytest.raises(ResultsFileError, match=r"rows.jsonl, line 2"):
        store.read_rows(log)
    assert main(["run", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "corrupt" in err


def test_tidy_table_has_contract_columns(tmp_path):
    df = store.to_frame([{"case_id": "a", "method": "dense", "extra": 1}])
    assert list(df.columns[: len(store.COLUMNS)]) == store.COLUMNS and "extra" in df.columns
    path = store.write_table(df, tmp_path)
    assert path.exists() and (tmp_path / "results.parquet").exists()
    assert store.read_table(tmp_path)["case_id"].tolist() == ["a"]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["import-json", str(bad), "--out", str(tmp_path)]) == 2
