"""The report's quality vs speed section: a synthetic (made-up) quality folder beside the
fixture bench table, and the committed results/quality/ml-100k when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.build import build
from reports.fixtures import write_all
from reports.load import load
from reports.quality import TARGET_M, TARGET_N, attend_times, summarise
from reports.quality_section import quality_section

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "quality" / "ml-100k" / "results.csv"

# synthetic per-seed NDCG@10 values (None = unsupported)
SYNTH = {
    ("dense", '{"backend": "torch"}'): [0.100, 0.102, 0.098],
    ("linrec", '{"eps": 1e-12}'): [0.101, 0.099, 0.100],  # within the seed spread
    ("performer", '{"features": 64}'): [0.070, 0.071, 0.069],  # beyond it (worse)
    ("performer", '{"features": 1024}'): [0.100, 0.101, 0.099],  # not in the bench table
    ("lrea", '{"rank": 16}'): None,
    ("mean_pool", "{}"): [0.090, 0.091, 0.089],
    ("pop", "{}"): [0.05, 0.05, 0.05],
}


def _synthetic_quality(folder: Path, dataset: str = "synthetic-toy") -> Path:
    rows = []
    for (meth, params), vals in SYNTH.items():
        for seed in range(3):
            rows.append(
                {
                    "task": "seqrec",
                    "dataset": dataset,
                    "method": meth,
                    "params": params,
                    "seed": seed,
                    "status": "ok" if vals else "unsupported",
                    "reason": "" if vals else "lrea has no causal (self-attention) mask",
                    "hr@10": np.nan if not vals else 2 * vals[seed],
                    "ndcg@10": np.nan if not vals else vals[seed],
                    "s_per_step": np.nan if not vals or meth == "pop" else 0.2,
                    "dim": 64,
                }
            )
    d = folder / dataset
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    return folder


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("q")
    paths = write_all(root / "fx", devices=("cpu",), small=True)
    return {"cpu": paths["cpu"], "quality": _synthetic_quality(root / "quality")}


def test_quality_folder_detected_not_read_as_bench(inputs) -> None:
    rs = load([inputs["cpu"], inputs["quality"]])  # the root of dataset folders
    assert [s.kind for s in rs.sources] == ["bench", "quality"]
    assert rs.quality is not None and set(rs.quality["dataset"]) == {"synthetic-toy"}
    assert "quality" not in set(rs.bench.get("task", pd.Series(dtype=str)).dropna())


def test_summary_and_beyond_spread(inputs) -> None:
    (g,) = summarise(load([inputs["quality"]]).quality)
    t = g.table.set_index(["method", "params"])
    assert g.metric == "ndcg@10" and g.model_d == 64
    assert t.loc[("linrec", "default"), "beyond"] is False
    assert t.loc[("performer", "features=64"), "beyond"] is True
    assert t.loc[("performer", "features=64"), "delta"] == pytest.approx(-0.03)
    assert t.loc[("lrea", "rank=16"), "status"] == "unsupported"


def test_attend_times_matched_at_nearest_case(inputs) -> None:
    rs = load([inputs["cpu"], inputs["quality"]])
    (g,) = summarise(rs.quality)
    (mt,) = attend_times(rs.ok, g.table, g.model_d)
    # the fixture benches N <= 4096 and M <= 64: the nearest case, not N = 10k, M = 2k
    assert (mt.n, mt.m, mt.d) == (4096, 64, 64) and not mt.exact
    assert (TARGET_N, TARGET_M) == (10_000, 2_000)
    assert {k[0] for k in mt.times} == {"dense", "linrec", "performer"}
    assert ("performer", "features=64") in mt.times
    assert any("performer features=1024 not benched" in n for n in mt.notes)
    assert not any(k[0] in ("pop", "mean_pool", "lrea") for k in mt.times)


def test_section_table_figure_and_words(inputs) -> None:
    s = quality_section(load([inputs["cpu"], inputs["quality"]]))
    assert s is not None and s.num == 9 and not s.missing
    (tbl,) = s.tables
    df = tbl.df
    assert list(df["method"])[:1] == ["dense"] and {"pop", "mean_pool"} <= set(df["method"])
    assert df.loc[df["method"] == "pop", "note"].iloc[0] == "baseline: no attention"
    assert "no causal" in df.loc[df["method"] == "lrea", "note"].iloc[0]
    lin = df[df["method"] == "linrec"].iloc[0]
    assert lin["beyond seed spread"] == "no" and lin["ndcg@10 mean ± std"].startswith("0.1000 ±")
    text = " ".join(s.intro)
    assert "no difference beyond seed spread: linrec (default)" in text
    assert "beyond the seed spread: performer (features=64) -0.0300" in text
    (fig,) = s.figures
    assert "error bars = std(method) + std(dense)" in fig.caption
    assert "nearest case" in fig.caption and "performer features=1024 not benched" in fig.caption
    # no bench: the table stays, the figure cannot be drawn and the section says why
    alone = quality_section(load([inputs["quality"]]))
    assert alone.tables and not alone.figures and "no bench table" in alone.missing[0]
    # no quality folder: no section at all
    assert quality_section(load([inputs["cpu"]])) is None


def test_html_has_the_section(inputs, tmp_path: Path) -> None:
    build([inputs["cpu"], inputs["quality"]], tmp_path / "rep", make_pdf=False)
    html = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert 'id="sec-quality"' in html and 'id="tbl-quality-seqrec-synthetic-toy"' in html
    assert 'id="fig-quality-seqrec-synthetic-toy"' in html
    assert "no difference beyond seed spread" in html


@pytest.mark.skipif(not COMMITTED.is_file(), reason="results/quality/ml-100k not committed here")
def test_committed_ml100k(inputs) -> None:
    s = quality_section(load([inputs["cpu"], COMMITTED.parent.parent]))
    (tbl,) = [t for t in s.tables if t.key == "tbl-quality-seqrec-ml-100k"]
    assert set(tbl.df["method"]) >= {"dense", "linrec", "performer", "mean_pool", "pop"}
    text = " ".join(s.intro)
    assert "seqrec, ml-100k (ndcg@10" in text and "no difference beyond seed spread" in text
    assert "cannot rank the attention methods" in text  # mean pooling within the spread


def test_two_presets_are_two_comparisons() -> None:
    """Synthetic rows: the same task and data under two budgets are compared separately."""
    from reports.quality import summarise

    rows = [
        {
            "task": "target",
            "dataset": "toy",
            "preset": p,
            "method": m,
            "params": "{}",
            "seed": s,
            "status": "ok",
            "reason": "",
            "auc": base + (0.0 if m == "dense" else -0.01),
        }
        for p, base in (("cpu", 0.85), ("cpu-pop", 0.70))
        for m in ("dense", "mean_pool")
        for s in range(3)
    ]
    groups = summarise(pd.DataFrame(rows))
    assert sorted(g.dataset for g in groups) == ["toy, preset cpu", "toy, preset cpu-pop"]
    for g in groups:
        t = g.table.set_index("method")
        assert t.loc["mean_pool", "delta"] == pytest.approx(-0.01)


def test_anchor_protocol_column_and_sentence_only_when_rows_have_it(tmp_path: Path) -> None:
    folder = _synthetic_quality(tmp_path / "quality")
    csv = folder / "synthetic-toy" / "results.csv"
    plain = summarise(pd.read_csv(csv))[0]
    assert (plain.table["anchor"] == "").all()
    df = pd.read_csv(csv)
    dense = df["method"] == "dense"
    df.loc[dense, "anchor_ndcg@10_filtered"] = [0.13, 0.12, 0.14]
    df.loc[dense, "anchor_users"] = 512
    df.to_csv(csv, index=False)
    g = summarise(pd.read_csv(csv))[0]
    got = dict(zip(g.table["method"], g.table["anchor"], strict=False))
    assert got["dense"] == "0.1300 ± 0.0100 (512 users)"
    assert got["linrec"] == ""
    rs = load([folder])
    sec = quality_section(rs)
    view = sec.tables[0].df
    assert "NDCG@10, gSASRec's own test input" in view.columns
    assert any("gSASRec's own test input" in w and "0.1300" in w for w in sec.intro)
