"""The ML-1M protocol pieces of ``analysis quality``: seen-item filtering against hand-computed
ranks, gSASRec's validation split, and resume from a per-epoch checkpoint to exactly the run
that was never interrupted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.cli import main
from analysis.loaders import load
from analysis.quality import PRESETS, config_for, make_split
from analysis.sasrec import Trainer, hr_ndcg, popularity_baseline, target_ranks

pytestmark = pytest.mark.usefixtures("one_thread")


def test_target_ranks_as_is_and_filtered_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.5, 0.1], [0.2, 0.8, 0.3, 0.9, 0.4]])
    target = torch.tensor([1, 2])
    # row 0: item 1 (0.5) is beaten by 0.9 and 0.7; the tie with item 3 favours the target
    # row 1: item 2 (0.3) is beaten by 0.8, 0.9, 0.4
    rank, filt = target_ranks(scores, target, [np.array([0]), np.array([3, 2])])
    assert rank.tolist() == [2.0, 3.0]
    assert filt[0] == 1.0  # item 0 (0.9) was seen: removed
    assert filt[1] == np.inf  # the target itself was seen: removed, a miss
    m = hr_ndcg(np.array([0.0, 2.0, np.inf, 12.0]), k=10)
    assert m["hr@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / np.log2(4.0)) / 4)


def test_popularity_filtered_by_hand() -> None:
    seqs = [np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2]), np.array([3])]
    # counts: item0 3, item1 3, item2 2, item3 1, item4 0
    target = np.array([3, 4, 2])
    m = popularity_baseline(seqs, target, n_items=5, k=2)
    # as is: ranks 3 (0,1,2 more popular), 4, 2 (items 0 and 1) -> no hit in the top 2
    assert m["pop_hr@2"] == 0.0
    # filtered: user 0 saw 0, 1, 2 -> rank 0; user 1 saw 1, 2 -> 0 and 3 above -> rank 2;
    # user 2 saw 3 only -> items 0, 1 above -> rank 2
    assert m["pop_hr@2_filtered"] == pytest.approx(1 / 3)
    assert m["pop_ndcg@2_filtered"] == pytest.approx(1 / 3)


def _gsasrec_folder(root: Path, users: int = 40, items: int = 30) -> Path:
    """A generated (synthetic) log laid out as gSASRec's split: train, test, val."""
    rng = np.random.default_rng(1)
    lines, tests = [], []
    for _ in range(users):
        start = int(rng.integers(items))
        seq = [(start + t) % items for t in range(int(rng.integers(6, 14)))]
        lines.append(" ".join(str(i + 1) for i in seq[:-1]))
        tests.append(str(seq[-1] + 1))
    for sub, name, text in (
        ("train", "input.txt", lines),
        ("test", "output.txt", tests),
        ("val", "input.txt", lines[:8]),
        ("val", "output.txt", tests[:8]),
    ):
        (root / sub).mkdir(exist_ok=True)
        (root / sub / name).write_text("\n".join(text) + "\n")
    return root


def test_validation_split_is_read_and_drives_the_protocol(tmp_path: Path) -> None:
    data = load(_gsasrec_folder(tmp_path))
    assert data.val_inputs is not None and len(data.val_inputs) == 8
    assert data.describe()["validation_users"] == 8
    split = make_split(data, None)
    assert split.protocol.startswith("gsasrec") and split.select == "ndcg@10_filtered"
    assert len(split.fit) == 40 and split.fit[0].tolist() == data.sequences[0].tolist()
    (tmp_path / "val" / "output.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="8 validation inputs but 2 outputs"):
        load(tmp_path)
    (tmp_path / "val" / "output.txt").unlink()
    with pytest.raises(ValueError, match="needs both input.txt and output.txt"):
        load(tmp_path)


def test_trainer_state_round_trips_to_the_uninterrupted_run() -> None:
    seqs = [np.arange(i % 7, i % 7 + 9) % 20 for i in range(30)]
    cfg = config_for(PRESETS["smoke"], 3)
    a = Trainer(seqs, 20, cfg)
    for _ in range(3):
        a.epoch()
    b = Trainer(seqs, 20, cfg)
    b.epoch()
    state = b.state_dict()
    torch.manual_seed(123)  # anything between save and load must not matter
    c = Trainer(seqs, 20, cfg)
    c.load_state_dict(state)
    c.epoch()
    c.epoch()
    assert c.losses == a.losses
    for x, y in zip(a.model.state_dict().values(), c.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "d").mkdir()
    data = _gsasrec_folder(tmp_path / "d")
    argv = ["quality", "--data", str(data), "--methods", "dense", "--seeds", "0"]
    argv += ["--preset", "smoke", "--quiet", "--out"]
    assert main(argv + [str(tmp_path / "whole")]) == 0
    whole = pd.read_csv(tmp_path / "whole" / "results.csv").iloc[0]

    calls = {"n": 0}
    real_epoch = Trainer.epoch

    def dies_in_epoch_2(self: Trainer, progress: bool = False) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")  # what a kill between epochs leaves behind
        return real_epoch(self, progress)

    monkeypatch.setattr(Trainer, "epoch", dies_in_epoch_2)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        main(argv + [str(out)])
    assert list((out / "checkpoints").glob("*.pt")) and not (out / "rows.jsonl").exists()
    monkeypatch.setattr(Trainer, "epoch", real_epoch)
    assert main(argv + [str(out)]) == 0
    resumed = pd.read_csv(out / "results.csv")
    assert len(resumed) == 1 and not list((out / "checkpoints").glob("*.pt"))
    r = resumed.iloc[0]
    assert r["epochs"] == whole["epochs"] == 2
    for col in ("final_loss", "ndcg@10", "ndcg@10_filtered", "val_ndcg@10_filtered"):
        assert r[col] == pytest.approx(whole[col], abs=0), col
    assert (out / "models" / r["model_file"]).exists()
