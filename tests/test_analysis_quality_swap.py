"""``analysis swap``: svd_exact swapped into a trained dense SASRec at rank r. The dense path
reproduces the model's own evaluation, full rank reproduces dense, the rank rule reads the
interval, and bad folders are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.quality import PRESETS, attention_factory, config_for
from analysis.quality_swap import rank_for_budget, run_swap, swap_ranks, swap_table
from analysis.sasrec import Trainer, evaluate, hr_ndcg

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained() -> tuple[Trainer, list[np.ndarray], np.ndarray]:
    """A tiny dense SASRec trained a few epochs on a generated (synthetic) cyclic log."""
    rng = np.random.default_rng(0)
    seqs = [(int(rng.integers(25)) + np.arange(int(rng.integers(8, 19)))) % 25 for _ in range(80)]
    cfg = config_for(PRESETS["smoke"], 0)
    make, _, _ = attention_factory("dense", {}, cfg)
    tr = Trainer([s[:-1] for s in seqs], 25, cfg, make)
    for _ in range(6):
        tr.epoch()
    tr.model.eval()
    return tr, [s[:-1] for s in seqs], np.array([s[-1] for s in seqs])


def test_dense_path_reproduces_evaluate_and_full_rank_reproduces_dense() -> None:
    tr, seqs, target = _trained()
    ref = evaluate(tr.model, seqs, target)
    assert ref["ndcg@10"] > 0.2  # the model learned the cycle: the test is not vacuous
    full = 2 * tr.cfg.dim  # d_k + d_v: svd_exact is exact here
    by, kl = swap_ranks(tr.model, seqs, target, ranks=(1, full))
    for suf, pre in (("", ""), ("_filtered", "f:")):
        got = hr_ndcg(by[f"{pre}dense"], 10, suf)
        assert got[f"ndcg@10{suf}"] == pytest.approx(ref[f"ndcg@10{suf}"], abs=1e-12)
        assert np.array_equal(by[f"{pre}r{full}"], by[f"{pre}dense"])
    assert kl[full].max() < 1e-6 and kl[1].mean() > kl[full].mean()
    t = swap_table(by, kl, boot=200)
    row = t[t["rank"] == full].iloc[0]
    assert row["d_ndcg@10_filtered"] == 0 and row["d_ndcg@10_filtered_lo"] == 0


def test_rank_for_budget_needs_the_whole_interval_inside() -> None:
    t = pd.DataFrame(
        {
            "rank": [4, 8, 16],
            "d_ndcg@10_filtered_lo": [-0.02, -0.006, -0.004],
        }
    )
    assert rank_for_budget(t, 0.005) == 16
    assert rank_for_budget(t, 0.01) == 8
    assert rank_for_budget(t, 0.001) is None


def test_run_swap_refuses_what_is_not_a_quality_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no results.csv"):
        run_swap(tmp_path, object())
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ValueError, match="not an `analysis quality` table"):
        run_swap(tmp_path, object())


def test_spectra_read_the_trained_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``analysis spectrum --sasrec-model``: the sasrec route uses the quality run's trained
    dense model (its weights, its metrics) instead of training a short one."""
    import json

    import torch

    from analysis.cli import main

    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{(s + t) % 25}", t)
        for u in range(60)
        for s in [int(rng.integers(25))]
        for t in range(18)
    ]
    log = tmp_path / "log.csv"
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(log, index=False)
    q = tmp_path / "q"
    argv = ["quality", "--data", str(log), "--methods", "dense,linrec", "--seeds", "0"]
    assert main(argv + ["--preset", "smoke", "--out", str(q), "--quiet"]) == 0
    res = pd.read_csv(q / "results.csv").set_index("method")
    model = q / "models" / res.loc["dense", "model_file"]
    out = tmp_path / "sp"
    argv = ["spectrum", "--data", str(log), "--embedding", "sasrec", "--threads", "1"]
    argv += ["--sasrec-model", str(model), "--cache", "none", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    meta = json.loads((out / "dataset.json").read_text())["routes"]["sasrec"]
    assert meta["metrics"]["ndcg@10"] == pytest.approx(res.loc["dense", "ndcg@10"])
    assert "analysis quality (smoke preset, seed 0" in meta["trained_by"]
    state = torch.load(model, weights_only=True)["model"]
    assert "blocks.0.w_k.weight" in state
    linrec = q / "models" / res.loc["linrec", "model_file"]
    argv[argv.index("--sasrec-model") + 1] = str(linrec)
    capsys.readouterr()
    assert main(argv) != 0 and "needs a dense model" in capsys.readouterr().err
    argv[argv.index("--sasrec-model") + 1] = str(tmp_path / "nope.pt")
    assert main(argv) != 0 and "no such file" in capsys.readouterr().err
