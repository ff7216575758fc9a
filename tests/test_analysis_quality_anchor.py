"""The anchor's protocol on a gSASRec split without ``test/input.txt``: the validation users'
test inputs are rebuilt item for item, the rows carry ``anchor_*`` columns, and ``--rescore``
fills them for rows written before they existed (analysis/quality_anchor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.loaders import load, match_validation_users
from analysis.quality import make_split
from analysis.quality_anchor import anchor_set

pytestmark = pytest.mark.usefixtures("one_thread")

VAL_USERS = (2, 5, 6, 11, 17, 30)


def _split_like_gsasrec(root: Path, users: int = 40, items: int = 30) -> list[list[int]]:
    """A generated (synthetic) log split as gSASRec's preprocess_ml1m.py does, minus
    test/input.txt: train = all but the last 2 items (3 for a validation user), val input =
    all but the last 2 and val output the 2nd-last, test output the last. Returns the logs."""
    rng = np.random.default_rng(7)
    logs = []
    for _ in range(users):
        start = int(rng.integers(items))
        logs.append([(start + 3 * t) % items + 1 for t in range(int(rng.integers(7, 15)))])
    train = [s[:-3] if u in VAL_USERS else s[:-2] for u, s in enumerate(logs)]
    files = {
        ("train", "input.txt"): [" ".join(map(str, s)) for s in train],
        ("test", "output.txt"): [str(s[-1]) for s in logs],
        ("val", "input.txt"): [" ".join(map(str, logs[u][:-2])) for u in VAL_USERS],
        ("val", "output.txt"): [str(logs[u][-2]) for u in VAL_USERS],
    }
    for (sub, name), lines in files.items():
        (root / sub).mkdir(exist_ok=True)
        (root / sub / name).write_text("\n".join(lines) + "\n")
    return logs


def test_validation_lines_match_their_training_lines_in_order() -> None:
    train = [np.array(s) for s in ([1, 2], [1, 2], [3], [4, 5, 6], [7])]
    val = [np.array(s) for s in ([1, 2, 9], [4, 5, 6, 1], [8, 8], [7, 2])]
    # the first [1, 2] is taken by the first line; [8, 8] extends nothing -> -1
    assert match_validation_users(train, val).tolist() == [0, 3, -1, 4]
    assert match_validation_users(train, [np.array([1, 2, 3])] * 3).tolist() == [0, 1, -1]


def test_anchor_set_is_gsasrecs_test_input_item_for_item(tmp_path: Path) -> None:
    logs = _split_like_gsasrec(tmp_path)
    data = load(tmp_path)
    assert data.val_users.tolist() == list(VAL_USERS)
    inputs, targets = anchor_set(data, None)
    raw = data.items  # index -> raw id string
    for j, u in enumerate(VAL_USERS):
        assert [int(raw[i]) for i in inputs[j]] == logs[u][:-1]  # test/input.txt's line
        assert int(raw[targets[j]]) == logs[u][-1]
    inputs, targets = anchor_set(data, 12)  # only users among the first 12
    assert len(inputs) == 4
    assert "6 validation users" in make_split(data, None).protocol


def test_rows_carry_anchor_columns_and_rescore_refills_them(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _split_like_gsasrec(tmp_path / "d")
    out = tmp_path / "q"
    argv = ["quality", "--data", str(tmp_path / "d"), "--methods", "dense,pop", "--seeds", "0"]
    argv += ["--preset", "smoke", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    df = pd.read_csv(out / "results.csv").set_index("method")
    assert (df["anchor_users"] == len(VAL_USERS)).all()
    for col in ("anchor_ndcg@10_filtered", "anchor_hr@10", "anchor_ndcg@10_filtered_se"):
        assert df[col].notna().all(), col
    assert 0.0 <= df.loc["dense", "anchor_ndcg@10_filtered"] <= 1.0

    # a row from before the columns existed: strip them, then --rescore puts them back
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    for r in rows:
        for k in [k for k in r if k.startswith("anchor_")]:
            del r[k]
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(argv[:-2] + ["--out", str(out), "--rescore"]) == 0
    again = pd.read_csv(out / "results.csv").set_index("method")
    assert len(again) == 2
    for col in ("anchor_ndcg@10_filtered", "anchor_hr@10", "anchor_ndcg@10_filtered_se"):
        assert again[col].tolist() == pytest.approx(df[col].tolist(), abs=1e-12), col
    assert main(argv[:-2] + ["--out", str(out), "--rescore"]) == 0  # nothing left to do
    assert len(pd.read_csv(out / "results.csv")) == 2


def test_rescore_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    _split_like_gsasrec(tmp_path / "d")
    with pytest.raises(SystemExit, match="no rows.jsonl"):
        main(["quality", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "x"), "--rescore"])
