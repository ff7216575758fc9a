"""decide --quality with `analysis quality` output: reading, the interval rule, unsupported rows,
configurations named in the rows, and wrong files. All tables here are synthetic (made up)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as analysis_main
from analysis.decide import DecideOpts, decide, read_quality
from analysis.decide_timing import TimeOpts
from analysis.quality_decide import loss_interval, quality_rows

pytestmark = pytest.mark.usefixtures("one_thread")

# per-seed NDCG@10 of a made-up next-item run (dense 0.100 / 0.102 / 0.098)
DENSE = [0.100, 0.102, 0.098]
SYNTH = {
    # method, params: per-seed values (None = unsupported)
    ("dense", '{"backend": "torch"}'): DENSE,
    ("linrec", '{"eps": 1e-12}'): [0.0999, 0.1019, 0.0979],  # loss 1e-4, tight: inside 0.005
    ("performer", '{"features": 64}'): [0.080, 0.082, 0.078],  # loss 0.02: over
    # mean loss 0.002 (inside 0.005) but the seeds disagree: the interval reaches past 0.005
    ("performer", '{"features": 256}'): [0.108, 0.090, 0.096],
    ("lrea", '{"rank": 16}'): None,
    ("pop", "{}"): [0.05, 0.05, 0.05],
}


def _rows(table: dict, dataset: str = "toy", task: str = "seqrec", **extra_cols) -> pd.DataFrame:
    rows = []
    for (meth, params), vals in table.items():
        for seed in range(3):
            r = {
                "case_id": f"{task}|{dataset}|{meth}|{params}|seed={seed}",
                "task": task,
                "dataset": dataset,
                "method": meth,
                "params": params,
                "seed": seed,
                "status": "ok" if vals is not None else "unsupported",
                "reason": "" if vals is not None else f"{meth} has no causal (self-attention) mask",
                "hr@10": np.nan if vals is None else 2 * vals[seed],
                "ndcg@10": np.nan if vals is None else vals[seed],
                "s_per_step": np.nan if vals is None or meth == "pop" else 0.1,
            }
            for col, f in extra_cols.items():
                r[col] = np.nan if vals is None else f(vals[seed])
            rows.append(r)
    return pd.DataFrame(rows)


def _write(folder: Path, df: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "results.csv", index=False)
    return folder


def _kl() -> pd.DataFrame:
    """KL rows of three long users (svd_exact meets KL <= 1e-2 at r = 8)."""
    rows = []
    for user in "abc":
        for r, kl in zip((4, 8, 16), (0.1, 5e-3, 1e-4), strict=True):
            rows.append(
                {
                    "dataset": "toy",
                    "route": "sasrec",
                    "user": user,
                    "n": 500,
                    "m": 65,
                    "d": 64,
                    "rank": r,
                    "kl_mean": kl,
                    "n_bin": "[256,1000)",
                }
            )
    return pd.DataFrame(rows)


def _bench_row(method: str, att: float, **kw) -> dict:
    row = {
        "method": method,
        "n": 500,
        "m": 64,
        "d": 64,
        "status": "ok",
        "device": "cpu",
        "device_name": "TestCPU",
        "dtype": "fp32",
        "batch": 1,
        "heads": 1,
        "setting": "target",
        "rank": np.nan,
        "features": np.nan,
    }
    for ph, t in (("prepare", 1e-4), ("attend", att), ("forward", att + 1e-4)):
        row[f"{ph}_ms_median"] = t
        row[f"{ph}_ms_iqr"] = 0.0
        row[f"timing_samples_{ph}"] = 20
    row.update(kw)
    return row


def _bench() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _bench_row("dense", 1.0),
            _bench_row("linrec", 0.5),
            _bench_row("performer", 0.2, features=64),
            _bench_row("performer", 0.4, features=256),
            _bench_row("lrea", 0.1, rank=16),
            _bench_row("svd_exact", 2.0, rank=8, solver="gram"),
        ]
    )


OPTS = DecideOpts(budgets=(1e-2,), m_values=(64,), time=TimeOpts(run_sigma=0.0))


def _cand(cand: pd.DataFrame, method: str) -> pd.Series:
    c = cand[(cand["method"] == method) & (cand["scenario"] == "per-request")]
    assert len(c) == 1, c
    return c.iloc[0]


def test_read_quality_folder_and_file(tmp_path: Path) -> None:
    root = tmp_path / "quality"
    _write(root / "toy", _rows(SYNTH))
    q = read_quality(root)  # the folder of dataset folders, as `analysis quality --out` leaves it
    assert q.equals(read_quality(root / "toy")) and q.equals(read_quality(root / "toy/results.csv"))
    perf = q[q["method"] == "performer"].set_index("config")
    assert set(perf.index) == {"features=64", "features=256"} and (perf["seeds"] == 3).all()
    assert perf.loc["features=64", "loss"] == pytest.approx(0.02)
    assert perf.loc["features=64", "interval"].startswith("95 % paired t interval over seeds 0,1,2")
    lrea = q[q["method"] == "lrea"].iloc[0]
    assert lrea["status"] == "unsupported" and "no causal" in lrea["reason"]
    assert q.loc[q["method"] == "lrea", "config"].iloc[0] == "rank=16"


def test_interval_rule_and_cheapest_eligible_config(tmp_path: Path) -> None:
    q = read_quality(_write(tmp_path / "toy", _rows(SYNTH)))
    wide = q[(q["method"] == "performer") & (q["config"] == "features=256")].iloc[0]
    # the mean loss is inside the budget, the interval is not: not eligible
    assert 0 < wide["loss"] < 0.005 < wide["loss_hi"]
    dec, cand, _ = decide(_kl(), _bench(), OPTS, q)
    lin = _cand(cand, "linrec")
    assert lin["eligible"] and lin["quality_loss_hi"] <= 0.005 and lin["quality_seeds"] == 3
    perf = _cand(cand, "performer")
    assert not perf["eligible"] and perf["quality"].startswith("over the quality budget")
    # the configuration shown is the one with the smallest loss, and it is timed at it
    assert perf["params"] == "features=256" and perf["features"] == 256
    assert perf["expected_ms"] == pytest.approx(0.4 + 1e-4)
    lrea = _cand(cand, "lrea")
    assert not lrea["eligible"] and "unsupported (seqrec, toy)" in lrea["quality"]
    assert "no causal" in lrea["quality"]
    row = dec[dec["scenario"] == "per-request"].iloc[0]
    # linrec (2x faster, inside the budget) wins; performer (faster still) and lrea (fastest) do not
    assert row["method"] == "linrec" and row["speedup_lo"] > 1 and row["params"] == "default"
    assert "performer m=256: over the quality budget" in row["why"]
    assert "lrea r=16: trained quality unsupported" in row["why"]
    # svd_exact stays judged by KL; its trained loss (none here) would only be shown beside
    assert _cand(cand, "svd_exact")["quality"].startswith("KL ")


def test_interval_inside_budget_makes_a_config_eligible(tmp_path: Path) -> None:
    """The same performer m=256 with seeds that agree: now the whole interval is inside."""
    table = dict(SYNTH)
    table[("performer", '{"features": 256}')] = [0.0985, 0.1005, 0.0965]
    q = read_quality(_write(tmp_path / "toy", _rows(table)))
    _, cand, _ = decide(_kl(), _bench(), OPTS, q)
    perf = _cand(cand, "performer")
    assert perf["eligible"] and perf["params"] == "features=256" and perf["features"] == 256


def test_one_seed_has_no_interval_and_is_not_eligible(tmp_path: Path) -> None:
    df = _rows(SYNTH)
    df = df[df["seed"] == 0]
    q = read_quality(_write(tmp_path / "toy", df))
    assert (q.loc[q["status"] == "ok", "interval"] == "one seed, no interval").all()
    _, cand, _ = decide(_kl(), _bench(), OPTS, q)
    lin = _cand(cand, "linrec")
    assert not lin["eligible"] and "one seed, no interval" in lin["quality"]
    assert "run more seeds" in lin["quality"]


def test_filtered_metric_preferred_and_target_task_by_auc(tmp_path: Path) -> None:
    seq = _rows(SYNTH, **{"ndcg@10_filtered": lambda v: v + 0.01})
    q = quality_rows(seq)
    assert (q.loc[q["status"] == "ok", "metric"] == "ndcg@10_filtered").all()
    seq.loc[seq["method"] == "linrec", "ndcg@10_filtered"] = np.nan  # not filled for every row
    assert (quality_rows(seq).loc[lambda t: t["status"] == "ok", "metric"] == "ndcg@10").all()
    tgt = _rows(SYNTH, task="target", auc=lambda v: 0.7 + v)
    both = quality_rows(pd.concat([_rows(SYNTH), tgt], ignore_index=True))
    assert set(both.loc[both["task"] == "target", "metric"].dropna()) == {"auc"}
    _, cand, _ = decide(_kl(), _bench(), OPTS, both)
    lin = _cand(cand, "linrec")  # target attention is preferred for a target-attention decision
    assert lin["quality_task"] == "target" and lin["quality_metric"] == "auc"
    assert "AUC loss" in lin["quality"] and "inside budget 0.002" in lin["quality"]


def test_absent_method_names_the_quality_command(tmp_path: Path) -> None:
    table = {k: v for k, v in SYNTH.items() if k[0] != "linrec"}
    q = read_quality(_write(tmp_path / "toy", _rows(table)))
    _, cand, _ = decide(_kl(), _bench(), OPTS, q)
    lin = _cand(cand, "linrec")
    assert not lin["eligible"] and lin["quality"].startswith("quality unknown")
    assert (
        "python -m analysis quality --task seqrec --data DATA --methods linrec --seeds 0,1,2"
        in lin["quality"]
    )


def test_other_dataset_is_shown_not_taken(tmp_path: Path) -> None:
    q = read_quality(_write(tmp_path / "other", _rows(SYNTH, dataset="other")))
    _, cand, _ = decide(_kl(), _bench(), OPTS, q)
    lin = _cand(cand, "linrec")  # inside the budget on "other", but that is not this dataset
    assert not lin["eligible"] and lin["quality"].startswith("quality unknown on this dataset")
    assert "trained on other, not on this dataset" in lin["quality"]
    assert "python -m analysis quality --task seqrec" in lin["quality"]


def test_wrong_files_are_named(tmp_path: Path) -> None:
    _bench().to_csv(tmp_path / "bench.csv", index=False)
    with pytest.raises(ValueError, match="bench results table .*--quality expects results.csv"):
        read_quality(tmp_path / "bench.csv")
    _kl().to_csv(tmp_path / "kl_by_rank.csv", index=False)
    with pytest.raises(ValueError, match="kl_by_rank.csv"):
        read_quality(tmp_path / "kl_by_rank.csv")
    pd.DataFrame({"method": ["dense"], "seeds": [3], "d_ndcg": [0.0]}).to_csv(
        tmp_path / "summary.csv", index=False
    )
    with pytest.raises(ValueError, match="summary.csv of `analysis quality`"):
        read_quality(tmp_path / "summary.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.csv under this folder"):
        read_quality(tmp_path / "empty")
    # the legacy hand-made table still reads
    pd.DataFrame({"method": ["linrec"], "delta_ndcg": [0.001]}).to_csv(
        tmp_path / "legacy.csv", index=False
    )
    assert list(read_quality(tmp_path / "legacy.csv")["method"]) == ["linrec"]


def test_loss_interval_welch_when_seeds_differ() -> None:
    m = pd.Series([0.1, 0.12, 0.11], index=[0, 1, 2])
    d = pd.Series([0.1, 0.1, 0.1, 0.1], index=[0, 1, 2, 3])
    loss, lo, hi, how = loss_interval(m, d)
    assert loss == pytest.approx(-0.01) and lo < loss < hi and how.startswith("95 % Welch")


def test_cli_quality_folder_and_wrong_file(tmp_path: Path, capsys) -> None:
    spectra = tmp_path / "spectra"
    spectra.mkdir()
    _kl().to_csv(spectra / "kl_by_rank.csv", index=False)
    _bench().to_csv(tmp_path / "bench.csv", index=False)
    qdir = _write(tmp_path / "quality" / "toy", _rows(SYNTH)).parent
    out = tmp_path / "out"
    argv = ["decide", "--spectra", str(spectra), "--bench", str(tmp_path / "bench.csv")]
    assert analysis_main([*argv, "--quality", str(qdir), "--out", str(out), "--m", "64"]) == 0
    meta = json.loads((out / "decisions.json").read_text())
    assert meta["quality_source"] == str(qdir) and meta["quality_budget_auc"] == 0.002
    assert "linrec" in " ".join(meta["verdict"])
    code = analysis_main([*argv, "--quality", str(tmp_path / "bench.csv"), "--out", str(out)])
    assert code == 2 and "bench results table" in capsys.readouterr().err


COMMITTED = Path(__file__).resolve().parents[1] / "results" / "quality"


@pytest.mark.skipif(
    not (COMMITTED / "ml-100k" / "results.csv").is_file(), reason="no committed quality run"
)
def test_committed_ml100k_matches_readme() -> None:
    """The README quotes these intervals (decide --quality results/quality on ML-100k)."""
    q = read_quality(COMMITTED)
    q = q[q["dataset"] == "ml-100k"].set_index("method")
    readme = " ".join((COMMITTED.parent.parent / "README.md").read_text().split())
    for meth, quoted in (
        ("linrec", "-0.0014 [-0.019, +0.016]"),
        ("performer", "+0.0015 [-0.012, +0.015]"),
    ):
        r = q.loc[meth]
        got = f"{r['loss']:+.4f} [{r['loss_lo']:+.3f}, {r['loss_hi']:+.3f}]"
        assert got == quoted, got
        assert quoted in readme and r["loss_hi"] > 0.005 and r["seeds"] == 3
    assert q.loc["lrea", "status"] == "unsupported"


def test_verdict_and_report_show_the_trained_loss(tmp_path: Path) -> None:
    from analysis.decide import write_decisions
    from analysis.verdict import decision_lines, verdict_lines
    from reports.sections import _decision_view

    q = read_quality(_write(tmp_path / "toy", _rows(SYNTH)))
    dec, cand, _ = decide(_kl(), _bench(), OPTS, q)
    lines = verdict_lines(dec, "toy")
    assert any("linrec in" in x and "trained NDCG loss +0.0001 [" in x for x in lines), lines
    assert any("(3 seeds; seqrec, toy)" in x for x in decision_lines(dec))
    write_decisions(dec, cand, tmp_path / "out", {})
    view = _decision_view(pd.read_csv(tmp_path / "out" / "decisions.csv"))
    col = "trained quality loss [95 % CI], seeds"
    assert col in view.columns and view[col].str.match(r"NDCG \+0\.0001 \[.*\], 3").any()
    assert "trained config" in view.columns


def test_missing_cases_at_the_trained_features(tmp_path: Path) -> None:
    """Performer trained with 256 features but benched only with 64: not timed with the 64-feature
    row, and the missing sweep asks for 256 (also when the whole N bin is unbenched)."""
    table = {k: v for k, v in SYNTH.items() if k != ("performer", '{"features": 64}')}
    q = read_quality(_write(tmp_path / "toy", _rows(table)))
    bench = _bench()
    bench = bench[~((bench["method"] == "performer") & (bench["features"] == 256))]
    _, cand, missing = decide(_kl(), bench, OPTS, q)
    perf = _cand(cand, "performer")
    assert perf["features"] == 256 and pd.isna(perf["expected_ms"])
    assert ("performer", 500, 64, 64, 256) in missing
    far = bench.assign(n=20)  # nothing benched inside the [256,1000) bin
    _, _, missing = decide(_kl(), far, OPTS, q)
    assert ("performer", 500, 64, 64, 256) in missing and ("dense", 500, 64, 64, None) in missing


def test_rows_without_the_headline_metric_are_not_comparable(tmp_path: Path) -> None:
    tgt = _rows(SYNTH, task="target", auc=lambda v: 0.7 + v)
    tgt.loc[tgt["method"] == "dense", "auc"] = np.nan  # AUC missing for some ok rows
    q = read_quality(_write(tmp_path / "toy", tgt))
    assert q.loc[q["status"] == "ok", "metric"].isna().all()
    _, cand, _ = decide(_kl(), _bench(), OPTS, q)
    lin = _cand(cand, "linrec")
    assert not lin["eligible"] and "not comparable (target, toy): auc not filled" in lin["quality"]


def test_each_preset_is_compared_with_its_own_dense() -> None:
    """Two budgets of one task and dataset (e.g. the target task's uniform and popularity
    negatives): a method's loss is against dense of its own preset, never an average."""
    a = _rows(SYNTH).assign(preset="cpu")
    b = _rows({k: [x - 0.05 for x in v] if v else v for k, v in SYNTH.items()})
    q = quality_rows(pd.concat([a, b.assign(preset="cpu-pop")], ignore_index=True))
    lin = q[(q["method"] == "linrec") & q["status"].eq("ok")]
    assert sorted(lin["preset"]) == ["cpu", "cpu-pop"]
    assert np.allclose(lin["loss"], 1e-4)  # against its own dense, not the mixed 0.075 mean


def test_the_decided_words_name_the_preset() -> None:
    """A method trained under several budgets is decided at one of them; the words say which
    (e.g. capped histories), since the loss means nothing without it."""
    from analysis.quality_decide import judge

    a = _rows(SYNTH).assign(preset="cpu")
    b = _rows({k: [x - 0.05 for x in v] if v else v for k, v in SYNTH.items()})
    q = quality_rows(pd.concat([a, b.assign(preset="cpu-cap")], ignore_index=True))
    _, _, words, _ = judge(q[q["method"] == "performer"], ndcg_budget=0.005, auc_budget=0.002)
    assert "toy, preset cpu" in words  # either preset, named
    _, _, _, short = judge(q[q["method"] == "performer"], ndcg_budget=0.001, auc_budget=0.001)
    assert short.startswith("over the quality budget") and ", preset cpu" in short
    _, _, words, _ = judge(quality_rows(_rows(SYNTH)).query("method == 'linrec'"), 0.005, 0.002)
    assert "preset" not in words  # rows without a preset: nothing to name


def test_verdict_names_the_quality_preset() -> None:
    from analysis.verdict import _trained

    row = {"quality_loss": 0.016, "quality_loss_lo": 0.008, "quality_loss_hi": 0.024,
           "quality_metric": "auc", "quality_seeds": 3, "quality_task": "target",
           "quality_dataset": "ml-1m", "quality_preset": "cpu-pop-cap200"}  # fmt: skip
    assert _trained(row).endswith("(3 seeds; target, ml-1m, cpu-pop-cap200)")
    assert _trained({**row, "quality_preset": float("nan")}).endswith("(3 seeds; target, ml-1m)")
