"""The SASRec route learns on a tiny synthetic log; embeddings cache round-trips without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis import embeddings as E
from analysis.loaders import load
from analysis.sasrec import SASRecConfig, evaluate, split_for_training, train_sasrec

pytestmark = pytest.mark.usefixtures("one_thread")


def _cyclic_log(
    n_users: int = 60, n_items: int = 20, length: int = 30, seed: int = 0
) -> list[np.ndarray]:
    """Each user walks item i -> i+1 (mod n_items) from a random start: perfectly learnable."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, n_items) + np.arange(length)) % n_items for _ in range(n_users)]


def test_loss_falls_and_model_learns() -> None:
    seqs = _cyclic_log()
    train, target = split_for_training(seqs, None)
    cfg = SASRecConfig(
        dim=16, max_len=32, blocks=1, dropout=0.0, lr=1e-2, batch_size=6, epochs=6, seed=0
    )
    model, losses = train_sasrec(train, 20, cfg, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    metrics = evaluate(model, train, target)
    assert metrics["hr@10"] > 0.8 and metrics["eval_users"] == 60
    w = model.weights()
    assert w["item"].shape == (20, 16) and w["w_k"].shape == (16, 16)


def test_training_is_seeded() -> None:
    seqs = _cyclic_log(n_users=20)
    cfg = SASRecConfig(dim=8, max_len=16, blocks=1, epochs=2, batch_size=8, seed=3)
    _, a = train_sasrec(seqs, 20, cfg, progress=False)
    _, b = train_sasrec(seqs, 20, cfg, progress=False)
    assert a == b


def test_sampled_softmax_path() -> None:
    seqs = _cyclic_log(n_items=40)
    cfg = SASRecConfig(
        dim=16,
        max_len=32,
        blocks=1,
        dropout=0.0,
        lr=5e-3,
        batch_size=16,
        epochs=4,
        negatives=8,
        full_softmax_max_items=10,
    )
    _, losses = train_sasrec(seqs, 40, cfg, progress=False)
    assert losses[-1] < losses[0]


def test_embedding_cache_roundtrip(tmp_path: Path) -> None:
    f = tmp_path / "input.txt"
    f.write_text("\n".join(" ".join(map(str, s)) for s in _cyclic_log(n_users=30)) + "\n")
    data = load(f)
    a = E.build(data, "ppmi", dim=8, cache_dir=tmp_path / "c", progress=False)
    assert a.meta["cache"].startswith("written")
    b = E.build(data, "ppmi", dim=8, cache_dir=tmp_path / "c", progress=False)
    assert b.meta["cache"].startswith("hit")
    np.testing.assert_array_equal(a.item, b.item)
    s = E.build(data, "sasrec", dim=8, cache_dir=tmp_path / "c", sasrec_epochs=1, progress=False)
    s2 = E.load_npz(next((tmp_path / "c").glob("*sasrec*.npz")))
    np.testing.assert_array_equal(s.w_k, s2.w_k)
    assert "hr@10" in s2.meta["metrics"]
    r = E.build(data, "random", dim=8, cache_dir=None)
    assert r.item.shape == (data.n_items, 8)
