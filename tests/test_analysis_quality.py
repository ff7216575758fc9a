"""``python -m analysis quality``: the smoke preset end to end, schema, resume, unsupported rows,
and the two cores it swaps into SASRec (dense through AttentionLayer, causal mean pooling)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.cli import main
from analysis.mean_pool import MeanPool
from analysis.quality import QUALITY_COLUMNS, parse_methods, splits
from analysis.sasrec import SASRec, SASRecConfig, _pad_left
from attention_impls import AttentionLayer

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(path: Path, users: int = 60, items: int = 25, length: int = 18) -> Path:
    """A generated (synthetic) cyclic log: user u walks item i -> i+1 from a random start."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{(s + t) % items}", t)
        for u in range(users)
        for s in [int(rng.integers(items))]
        for t in range(length)
    ]
    f = path / "log.csv"
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(f, index=False)
    return f


def test_smoke_end_to_end_schema_resume_and_unsupported(tmp_path: Path) -> None:
    log, out = _log(tmp_path), tmp_path / "q"
    argv = [
        "quality",
        "--data",
        str(log),
        "--methods",
        "dense,linrec,mean_pool,pop,lrea",
        "--seeds",
        "0,1",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns[: len(QUALITY_COLUMNS)]) == QUALITY_COLUMNS
    assert len(df) == 10 and df["case_id"].is_unique
    ok = df[df["status"] == "ok"]
    assert set(ok["method"]) == {"dense", "linrec", "mean_pool", "pop"}
    assert ok["ndcg@10"].between(0, 1).all() and ok["hr@10"].between(0, 1).all()
    trained = ok[ok["method"] != "pop"]
    assert (trained["steps"] > 0).all() and (trained["epochs"] == 2).all()
    assert (trained["s_per_step"] > 0).all() and trained["val_ndcg@10"].notna().all()
    lrea = df[df["method"] == "lrea"]
    assert len(lrea) == 2 and (lrea["status"] == "unsupported").all()
    assert lrea["reason"].str.contains("causal").all() and lrea["hr@10"].isna().all()
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert main(argv) == 0  # resume: nothing re-run, nothing duplicated
    assert (out / "rows.jsonl").read_text().splitlines() == lines
    argv[argv.index("--seeds") + 1] = "0,1,2"  # a new seed runs only its own cases
    assert main(argv) == 0
    df3 = pd.read_csv(out / "results.csv")
    assert len(df3) == 15 and df3["case_id"].is_unique and (df3["seed"] == 2).sum() == 5
    summ = pd.read_csv(out / "summary.csv")
    assert list(summ["method"]) == ["dense", "linrec", "mean_pool", "pop"]
    assert (summ["seeds"] == 3).all() and summ.loc[summ["method"] == "dense", "d_ndcg"].item() == 0


def test_svd_exact_below_full_rank_is_an_unsupported_row(tmp_path: Path) -> None:
    out = tmp_path / "q"
    argv = [
        "quality",
        "--data",
        str(_log(tmp_path)),
        "--methods",
        "svd_exact:rank=4",
        "--seeds",
        "0",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["status"] == "unsupported" and "leak the future" in row["reason"]
    assert json.loads(row["params"])["rank"] == 4


def test_parse_methods_and_bad_input() -> None:
    assert parse_methods("dense, performer:features=64:eps=auto") == [
        ("dense", {}),
        ("performer", {"features": 64, "eps": "auto"}),
    ]
    with pytest.raises(ValueError, match="key=value"):
        parse_methods("performer:64")
    with pytest.raises(ValueError, match="empty"):
        parse_methods(" , ")


def test_splits_leave_one_out() -> None:
    fit, val, test_in, test = splits([np.arange(5), np.arange(2)], None)
    assert list(fit[0]) == [0, 1, 2] and val[0] == 3 and list(test_in[0]) == [0, 1, 2, 3]
    assert test[0] == 4 and val[1] == -1 and test[1] == -1


def test_causal_mean_pool_matches_written_out_prefix_mean() -> None:
    v = torch.randn(2, 1, 6, 3, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False
    out = MeanPool()(v, v, v, key_mask=mask, causal=True)
    for b in range(2):
        for i in range(6):
            real = [j for j in range(i + 1) if mask[b, j]]
            ref = v[b, 0, real].mean(0) if real else torch.zeros(3, dtype=torch.float64)
            assert torch.allclose(out[b, 0, i], ref)
    v2 = v.clone()
    v2[:, :, 4:] = torch.randn(2, 1, 2, 3, dtype=torch.float64)  # change the future only
    assert torch.equal(MeanPool()(v2, v2, v2, key_mask=mask, causal=True)[:, :, :4], out[:, :, :4])


def test_dense_attention_layer_core_equals_the_sdpa_core() -> None:
    """SASRec with AttentionLayer('dense') as its core gives the original model's hidden
    states on every real position (eval mode, the same weights)."""
    cfg = SASRecConfig(dim=16, max_len=12, blocks=2, seed=0)
    torch.manual_seed(0)
    base = SASRec(30, cfg).eval()
    swapped = SASRec(30, cfg, make_attn=lambda: AttentionLayer("dense")).eval()
    swapped.load_state_dict(base.state_dict())
    seq = _pad_left([np.arange(12), np.arange(5), np.arange(1)], 12)
    with torch.no_grad():
        a, b = base(seq), swapped(seq)
    real = seq > 0
    assert torch.allclose(a[real], b[real], atol=1e-5)


def test_summary_compares_each_preset_with_its_own_dense() -> None:
    """Two budgets in one folder (e.g. cpu-ml1m and cpu-ml1m-long): one summary row per preset
    x method x params, and Δ against dense of the same preset, never a mix (made-up values)."""
    from analysis.quality import summary, summary_markdown

    rows = []
    for preset, base in (("short", 0.10), ("long", 0.12)):
        for seed in range(3):
            for method, off in (("dense", 0.0), ("linrec", -0.01)):
                v = base + off + 0.001 * seed
                rows.append({"method": method, "params": "{}", "preset": preset, "seed": seed,
                             "status": "ok", "hr@10": 2 * v, "ndcg@10": v, "best_epoch": 3,
                             "epochs": 4, "s_per_step": 0.1, "train_cpu_s": 1.0,
                             "val_ndcg@10": v})  # fmt: skip
    s = summary(pd.DataFrame(rows)).set_index(["preset", "method"])
    assert s.loc[("long", "dense"), "ndcg"] == pytest.approx(0.121)  # not the 0.111 mix
    assert s.loc[("short", "linrec"), "d_ndcg"] == pytest.approx(-0.01)
    assert s.loc[("long", "linrec"), "d_ndcg"] == pytest.approx(-0.01)
    assert "| long | dense | 3 |" in summary_markdown(s.reset_index())


def test_summary_table_names_the_setting_of_a_method_run_twice() -> None:
    """Performer at 64 and at 256 features in one preset: two rows the table tells apart
    (made-up values); a method run once keeps its plain name."""
    from analysis.quality import summary, summary_markdown

    rows = []
    for seed in range(2):
        for method, params, v in (
            ("dense", '{"backend": "torch"}', 0.11),
            ("performer", '{"features": 64}', 0.09),
            ("performer", '{"features": 256}', 0.10),
        ):
            rows.append({"method": method, "params": params, "preset": "p", "seed": seed,
                         "status": "ok", "hr@10": 2 * v, "ndcg@10": v, "best_epoch": 3,
                         "epochs": 4, "s_per_step": 0.1, "train_cpu_s": 1.0,
                         "val_ndcg@10": v})  # fmt: skip
    md = summary_markdown(summary(pd.DataFrame(rows)))
    assert "| performer (features=64) | 2 |" in md and "| performer (features=256) | 2 |" in md
    assert "| dense | 2 |" in md
