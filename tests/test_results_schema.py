"""One results schema (issue 13): bench/schema.py is the list the writer uses, the types the
parquet twin keeps and the reports read with, and what docs/contracts.md section 2 documents;
a foreign table gets an error naming the missing and unknown columns."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pandas as pd
import pytest

from bench import schema, store
from bench.errors import ResultsFileError
from reports.load import BENCH_NUM_COLS, BENCH_STR_COLS

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = {"<phase>": ("prepare", "attend", "forward", "attend_graph")}


def _expand(token: str) -> list[str]:
    """`{a,b}_x`, `kl_*`, `roofline_bound_<phase>` -> the names (or regexes) they stand for."""
    for ph, vals in PLACEHOLDERS.items():
        token = token.replace(ph, "{" + ",".join(vals) + "}")
    parts = re.split(r"(\{[^}]*\})", token)
    choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(c).strip() for c in itertools.product(*choices)]


def _top_level_commas(span: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in span:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def _documented() -> list[re.Pattern]:
    text = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    sec = text[text.index("## 2.") : text.index("## 3.")]
    names: list[re.Pattern] = []
    for span in re.findall(r"`([^`]+)`", sec):
        for tok in _top_level_commas(re.sub(r"\s+", "", span)):
            for name in _expand(tok.strip()):
                names.append(re.compile(re.escape(name).replace(r"\*", r"[a-z0-9_]+") + r"$"))
    return names


def test_the_writer_and_the_reports_use_the_schema():
    assert store.COLUMNS is schema.COLUMNS
    assert set(BENCH_STR_COLS) | set(BENCH_NUM_COLS) <= set(schema.COLUMNS)
    assert {c.type for c in schema.BENCH} <= set(schema.TYPES)
    assert {c.kind for c in schema.BENCH} == {"config", "status", "measurement", "model", "env"}
    assert len(set(schema.COLUMNS)) == len(schema.COLUMNS)


def test_every_schema_column_is_documented_in_the_contract():
    docs = _documented()
    missing = [c for c in schema.COLUMNS if not any(p.match(c) for p in docs)]
    assert not missing, f"docs/contracts.md section 2 does not document: {missing}"


def test_parquet_keeps_the_schema_types(tmp_path):
    rows = [
        {
            "case_id": "a",
            "method": "dense",
            "n": 64,
            "m": 8,
            "status": "ok",
            "causal": False,
            "synthetic": True,
            "params": "{}",
            "kl_mean": 0.0,
            "forward_ms_median": 1.5,
            "rank": None,
            "nvml_throttle_before": "0x4",
            "cuda_version": "13.0",
            "extra": {"x": 1},
        },
        {
            "case_id": "b",
            "method": "svd_exact",
            "n": 128,
            "m": 8,
            "status": "oom",
            "causal": True,
            "synthetic": True,
            "params": '{"rank": 16}',
            "rank": 16,
            "reason": "out of memory",
        },
    ]
    store.write_table(store.to_frame(rows), tmp_path)
    pq = pd.read_parquet(tmp_path / "results.parquet")
    assert str(pq["n"].dtype) == "Int64" and str(pq["rank"].dtype) == "Int64"
    assert pq["rank"].tolist()[1] == 16 and pd.isna(pq["rank"].tolist()[0])
    assert str(pq["causal"].dtype) == "boolean" and pq["causal"].tolist() == [False, True]
    assert pq["kl_mean"].dtype == "float64" and str(pq["params"].dtype) == "string"
    assert (
        pq["nvml_throttle_before"].tolist()[0] == "0x4" and pq["cuda_version"].tolist()[0] == "13.0"
    )
    assert pq["extra"].tolist()[0] == "{'x': 1}"  # a column the schema does not know: a string


def test_a_foreign_table_names_missing_and_unknown_columns(tmp_path):
    p = tmp_path / "results.csv"
    pd.DataFrame({"user": [1], "item": [2], "rating": [5.0]}).to_csv(p, index=False)
    with pytest.raises(ResultsFileError) as e:
        store.read_table(tmp_path)
    msg = str(e.value)
    assert "missing column(s) case_id, method, n, status" in msg and "user, item, rating" in msg
    p.write_text("")
    with pytest.raises(ResultsFileError, match="not a readable results table"):
        store.read_table(p)


@pytest.mark.parametrize(
    "table", sorted((ROOT / "results").glob("*/results.csv")), ids=lambda p: p.parent.name
)
def test_committed_tables_type_without_losing_values(table):
    raw = store.read_table(table)
    typed = schema.apply_types(raw)
    for col in raw.columns:
        lost = raw[col].notna() & typed[col].isna()
        assert not lost.any(), (
            f"{table}: {col} loses {int(lost.sum())} value(s) under type {schema.type_of(col)}"
        )
