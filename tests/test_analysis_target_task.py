"""``python -m analysis quality --task target``: metrics against hand-computed values, the
split and negatives on generated (synthetic) logs, the model's cores, and the smoke preset on
a real ML-1M slice (skipped without ../shared/data): it beats popularity, refusals are
``unsupported`` rows, and a re-run (also after a cut-off write) skips finished rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.cli import main
from analysis.mean_pool import MeanPool
from analysis.target_data import history, make_split, sample_negatives, training_samples
from analysis.target_metrics import auc, gauc, ranked_hit_ndcg
from analysis.target_quality import PRESETS, TARGET_COLUMNS, layer_for
from analysis.target_task import TargetModel, TrainConfig
from attention_impls import AttentionLayer

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_ml1m = pytest.mark.skipif(
    not (SHARED / "ml-1m").exists(), reason=f"ML-1M not found at {SHARED / 'ml-1m'}"
)


def test_auc_counts_ties_as_half() -> None:
    # positives 0.9, 0.3; negatives 0.5, 0.9: pairs 1 + 1/2 + 0 + 0 of 4
    assert auc(np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.9, 0.3])) == 0.375
    assert auc(np.array([1, 0]), np.array([0.2, 0.2])) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_gauc_weights_by_impressions_and_skips_one_class_users() -> None:
    # user 7: AUC 1/2 over 3 impressions; user 3: AUC 1 over 2; user 5: positives only
    labels = np.array([1, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.8, 0.2, 0.9, 0.1, 0.7, 0.3, 0.4])
    users = np.array([7, 7, 7, 3, 3, 5, 5])
    assert gauc(labels, scores, users) == pytest.approx((3 * 0.5 + 2 * 1.0) / 5)
    with pytest.raises(ValueError, match="no user"):
        gauc(np.array([1, 0]), np.array([0.1, 0.2]), np.array([1, 2]))


def test_hr_ndcg_take_the_expectation_over_tied_orders() -> None:
    # row 0: one negative above, one tied -> rank 1 or 2, each with probability 1/2
    pos = np.array([0.5, 1.0])
    neg = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.1]])
    hr, ndcg = ranked_hit_ndcg(pos, neg, k=2)
    assert hr == pytest.approx((0.5 + 1.0) / 2)
    assert ndcg == pytest.approx((0.5 / math.log2(3) + 1.0) / 2)
    assert ranked_hit_ndcg(pos, neg, k=1) == (0.5, 0.5)
    with pytest.raises(ValueError, match="neg_scores"):
        ranked_hit_ndcg(pos, neg[:1], k=2)


def test_split_ordered_and_unordered_and_negatives_never_seen() -> None:
    seqs = [np.arange(6), np.array([3, 4]), np.array([9, 8, 7, 6])]
    o = make_split(seqs, None, 10, ordered=True)  # ids shift by one: 0 = padding
    assert o.test_item[0] == 6 and o.val_item[0] == 5 and list(o.fit[0]) == [1, 2, 3, 4]
    assert o.test_item[1] == 0 and o.val_item[1] == 5 and list(o.fit[1]) == [4]
    assert list(history(o, 0, 2, None)) == [1, 2] and list(history(o, 0, 3, 2)) == [2, 3]
    u = make_split(seqs, None, 10, ordered=False)
    for s, f, v, t in zip(seqs, u.fit, u.val_item, u.test_item, strict=False):
        if len(s) >= 3:  # held-out items drawn from the set, the rest is the fit set
            assert sorted([*f, v, t]) == sorted(s + 1)
    assert sorted(history(u, 2, 0, None)) == sorted(np.delete(u.fit[2], 0))
    assert make_split(seqs, None, 10, False).test_item.tolist() == u.test_item.tolist()
    users, pos = training_samples(o, 5, np.random.default_rng(0))
    assert (pos >= 1).all() and set(users.tolist()) == {0, 2}
    for kind in ("uniform", "pop"):
        negs = sample_negatives(np.array([0, 2, 2]), 4, o, np.random.default_rng(1), kind, True)
        assert negs.min() >= 1 and negs.max() <= 10
        for row, user in zip(negs, [0, 2, 2], strict=False):
            assert not set(row.tolist()) & set((seqs[user] + 1).tolist())
            assert len(set(row.tolist())) == 4


def test_mean_pool_core_and_full_rank_svd_exact_equals_dense_in_the_model() -> None:
    v = torch.randn(2, 1, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[False, False, True, True, True], [True] * 5])
    out = MeanPool()(v[:, :, :2], v, v, key_mask=mask)
    assert out.shape == (2, 1, 2, 3)
    assert torch.allclose(out[0, 0, 1], v[0, 0, 2:].mean(0)) and torch.allclose(
        out[1, 0, 0], v[1, 0].mean(0)
    )
    cfg = TrainConfig(8, 16, 1, 4, 100, 1e-3, 0.0, 1, 1, "uniform", None, True, 0)
    torch.manual_seed(0)
    dense = TargetModel(30, cfg, AttentionLayer("dense")).eval()
    svd = TargetModel(
        30, cfg, AttentionLayer("svd_exact", rank=16, solver="gram_fp64"), pad_to=16
    ).eval()
    lrea = TargetModel(30, cfg, AttentionLayer("lrea", n=12, rank=4), pad_to=4).eval()
    svd.load_state_dict(dense.state_dict())
    hist = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 6]])
    cand = torch.tensor([[7, 8], [9, 1]])
    with torch.no_grad():
        assert torch.allclose(dense(hist, cand), svd(hist, cand), atol=1e-5)
    lrea(hist, cand).sum().backward()  # the last 5 of n = 12 positions get gradients
    g = lrea.attn.w_comp.grad
    assert g is not None and g[-5:].abs().sum() > 0 and g[:-5].abs().sum() == 0
    with pytest.raises(ValueError, match="N = 13 behaviours, more than this layer's n = 12"):
        lrea(torch.ones(2, 13, dtype=torch.long), cand)


def _argv(out: Path, methods: str, seeds: str = "0") -> list[str]:
    return ["quality", "--task", "target", "--data", str(SHARED / "ml-1m"), "--methods",
            methods, "--seeds", seeds, "--preset", "smoke", "--out", str(out), "--quiet"]  # fmt: skip


@needs_ml1m
def test_smoke_trains_beats_popularity_and_refusals_are_rows(tmp_path: Path) -> None:
    out = tmp_path / "t"
    assert main(_argv(out, "dense,pop,svd_exact:rank=100,lrea:rank=99999")) == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns[: len(TARGET_COLUMNS)]) == TARGET_COLUMNS
    assert len(df) == 4 and df["case_id"].is_unique and (df["task"] == "target").all()
    r = df.set_index("method")
    assert r.loc["dense", "status"] == "ok" and r.loc["pop", "status"] == "ok"
    assert r.loc["dense", "auc"] > r.loc["pop", "auc"]  # the trained model ranks better
    assert r.loc["dense", "steps"] > 0 and r.loc["dense", "epochs"] == PRESETS["smoke"].epochs
    assert 0 < r.loc["dense", "gauc"] < 1 and 0 <= r.loc["dense", "ndcg@10"] <= 1
    assert r.loc["dense", "hist_cap"] == PRESETS["smoke"].hist_cap
    assert r.loc["dense", "max_hist"] <= PRESETS["smoke"].hist_cap
    for m, words in (("svd_exact", "larger than the data allows"), ("lrea", "rank 99999")):
        assert r.loc[m, "status"] == "unsupported" and words in r.loc[m, "reason"]
        assert pd.isna(r.loc[m, "auc"])
    assert json.loads(r.loc["svd_exact", "params"])["solver"] == "gram_fp64"
    lrea = json.loads(r.loc["lrea", "params"])
    assert lrea["n"] == r.loc["lrea", "max_hist"] and lrea["init"] == "segments"
    summ = pd.read_csv(out / "summary.csv")
    assert set(summ["method"]) == {"dense", "pop"}
    assert summ.loc[summ["method"] == "dense", "d_auc"].item() == 0


@needs_ml1m
def test_resume_skips_finished_rows_and_survives_a_cut_write(tmp_path: Path) -> None:
    out = tmp_path / "t"
    argv = _argv(out, "pop,svd_exact:rank=100", seeds="0,1")
    assert main(argv) == 0
    log = out / "rows.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    assert main(argv) == 0  # nothing re-run, nothing duplicated
    assert log.read_text().splitlines() == lines
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # kill -9 mid-write
    with pytest.warns(UserWarning, match="truncated"):
        assert main(argv) == 0
    again = log.read_text().splitlines()
    assert again[:3] == lines[:3] and len(again) == 4
    assert json.loads(again[3])["case_id"] == json.loads(lines[3])["case_id"]
    assert len(pd.read_csv(out / "results.csv")) == 4


@needs_ml1m
def test_target_swap_reproduces_dense_and_full_rank_equals_it(tmp_path: Path) -> None:
    from analysis.target_metrics import gauc
    from analysis.target_swap import user_aucs

    out = tmp_path / "t"
    assert main(_argv(out, "dense")) == 0
    # rank 32 = 2 d (d = 16 in smoke): the factorisation is exact, so the swap equals dense
    argv = ["swap", "--task", "target", "--quality", str(out), "--data", str(SHARED / "ml-1m"),
            "--ranks", "1,32", "--kl-users", "40"]  # fmt: skip
    assert main(argv) == 0
    # KL by rank on the retrained model's own Q, K, V: sampled users, 0 at the exact rank 2 d
    kl = pd.read_csv(out / "kl_by_rank.csv")
    assert set(kl["route"]) == {"din-target"} and kl["user"].nunique() == 40
    assert kl["user"].str.startswith("smoke/0/").all()
    exact = kl[kl["rank_used"] >= np.minimum(kl["n"], 2 * kl["d"])]
    assert len(exact) and (exact["kl_mean"] < 1e-5).all()
    one = kl[kl["rank"] == 1]
    assert (one["kl_mean"] > exact["kl_mean"].max()).mean() > 0.5
    assert kl.groupby("user")["m"].first().eq(21).all()  # 1 positive + 20 negatives (smoke)
    sw = pd.read_csv(out / "swap.csv")
    row = pd.read_csv(out / "results.csv").iloc[0]
    dense = sw[sw["rank"].isna()].iloc[0]
    # the retrained model is the row's (checked to 1e-9 inside; the CSVs keep 6-7 digits)
    assert dense["auc"] == pytest.approx(row["auc"], abs=1e-6)
    full = sw[sw["rank"] == 32].iloc[0]
    assert abs(full["d_auc"]) < 1e-6 and abs(full["d_gauc"]) < 1e-6
    low = sw[sw["rank"] == 1].iloc[0]
    assert low["d_gauc_lo"] <= low["d_gauc"] <= low["d_gauc_hi"] and low["d_auc"] != 0
    # GAUC with equal candidates per user is the mean per-user AUC
    s = np.array([[0.9, 0.1, 0.95, 0.9], [0.2, 0.1, 0.3, 0.0]])
    labels = np.zeros(s.shape, dtype=bool)
    labels[:, 0] = True
    users = np.repeat(np.arange(2), 4)
    assert user_aucs(s).mean() == pytest.approx(gauc(labels.ravel(), s.ravel(), users))
    bad = tmp_path / "none"
    bad.mkdir()
    assert main([*argv[:4], str(bad), *argv[5:]]) == 2
    # --presets picks the dense runs of those presets: another preset has none, an unknown
    # one is named
    assert main([*argv, "--presets", "cpu-pop"]) == 2
    assert main([*argv, "--presets", "no-such-preset"]) == 2


def test_user_qkv_is_what_the_models_attention_receives() -> None:
    """Q = W_q E[candidates]; V = W_v E[history]; K = W_k E[history] + the recency embedding
    (bucket 0 for the latest item); padded slots dropped."""
    import torch

    from analysis.target_kl import user_qkv
    from analysis.target_task import TargetModel, TrainConfig
    from attention_impls import AttentionLayer

    cfg = TrainConfig(
        dim=8, hidden=16, epochs=1, batch_size=8, batch_tokens=100, lr=1e-3, dropout=0.0,
        targets_per_user=1, train_neg=1, neg="uniform", hist_cap=None, recency=True, seed=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = TargetModel(30, cfg, AttentionLayer("dense"))
    with torch.no_grad():
        model.rec.weight.normal_()
    hist, cands = np.array([3, 7, 9, 2]), np.array([5, 11, 1])
    q, k, v = user_qkv(model, hist, cands)
    with torch.no_grad():
        e, h = model.emb(torch.from_numpy(cands)), model.emb(torch.from_numpy(hist))
        torch.testing.assert_close(q, model.w_q(e))
        torch.testing.assert_close(v, model.w_v(h))
        assert k.shape == (4, 8)
        torch.testing.assert_close(k[-1], model.w_k(h)[-1] + model.rec.weight[0])
    assert isinstance(model.attn, AttentionLayer)  # the capture is removed again


def test_min_len_keeps_the_users_with_enough_items_and_refuses_an_empty_run() -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from analysis.target_quality import prepare_run

    seqs = [np.arange(1, 3 + i) for i in range(12)]  # users with 2 .. 13 items
    data = SimpleNamespace(sequences=seqs, held_out=None, n_items=40, time_ordered=False)
    p = replace(PRESETS["smoke"], min_len=10, neg_eval=5)
    kept, split, *_ = prepare_run(data, p)
    assert [len(s) for s in kept] == [10, 11, 12, 13] and len(split.fit) == 4
    held = np.full(12, 39)  # a held-out item counts towards the user's length
    data_h = SimpleNamespace(sequences=seqs, held_out=held, n_items=40, time_ordered=True)
    assert [len(s) for s in prepare_run(data_h, p)[0]] == [9, 10, 11, 12, 13]
    with pytest.raises(ValueError, match="no user has 99 or more items"):
        prepare_run(data, replace(p, min_len=99))


def test_lrea_init_is_a_recorded_parameter_and_bad_init_is_an_error() -> None:
    factory, full, reason = layer_for("lrea", {"rank": 4, "init": "random"}, 12, 5, 8)
    assert reason == "" and full["init"] == "random" and full["n"] == 12
    assert factory().init == "random"
    with pytest.raises(ValueError, match="unknown init 'pca'"):
        layer_for("lrea", {"init": "pca"}, 12, 5, 8)
