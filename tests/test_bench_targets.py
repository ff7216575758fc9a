"""The issue's targets on crafted tables (bench/targets.py) and `python -m bench targets`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench import store, targets
from bench.cli import main

H100 = "NVIDIA H100 80GB HBM3"
TARGET = {
    "n": 10000,
    "m": 2048,
    "d": 64,
    "dtype": "bf16",
    "batch": 4,
    "heads": 2,
    "family": "powerlaw",
    "setting": "target",
}


def row(
    method,
    attend,
    *,
    rank=None,
    features=None,
    solver=None,
    rel=0.01,
    roof=(0.6, 0.55),
    bound="memory",
    **case,
):
    params = {
        k: v
        for k, v in (("rank", rank), ("features", features), ("solver", solver))
        if v is not None
    }
    label = method + (f"[{','.join(f'{k}={v}' for k, v in params.items())}]" if params else "")
    r = {
        "case_id": f"{label}-{sorted(case.items())}",
        "method": method,
        "label": label,
        "params": json.dumps(params),
        "rank": rank,
        "features": features,
        "solver": solver,
        **{**TARGET, **case},
        "status": "ok",
        "device_name": H100,
        "git_commit": "abc123",
    }
    for p in ("prepare", "attend", "forward"):
        med = attend if p == "attend" else 2 * attend
        r.update({f"{p}_ms_median": med, f"{p}_ms_iqr": rel * med, f"{p}_ms_iqr_rel": rel})
    r.update(
        roofline_fraction_attend=roof[0],
        roofline_fraction_forward=roof[1],
        roofline_bound_attend=bound,
    )
    return r


def table(**over) -> pd.DataFrame:
    rows = [
        row("dense", 1.0),
        row("svd_exact", 0.6, rank=16, solver="gram"),
        row("svd_exact", 0.4, rank=16, solver="gram_lowrank"),
        row("svd_exact", 0.1, rank=4, solver="gram"),  # another rank: not the target case
        row("svd_tokens", 0.04, rank=16),
        row("linrec", 0.1),
        row("performer", 0.3, features=256),
        row("dense", 9.0, n=65536, m=4096, roof=(0.7, 0.65), bound="compute"),  # dense's largest
        row("dense", 9.0, n=65536, m=4096, dtype="fp32", roof=(0.2, 0.2)),  # tie: bf16 wins
        row("svd_exact", 5.0, rank=16, solver="gram_lowrank", n=65536, m=4096, roof=(0.3, 0.2)),
        row(
            "svd_exact",
            5.0,
            rank=16,
            solver="gram",
            n=65536,
            m=4096,
            roof=(0.52, 0.51),
            bound="exp",
        ),  # tie: default parameters win
        {**row("lrea", 0.01, rank=16), "status": "oom"},  # not ok: lrea not measured
    ]
    df = pd.DataFrame(rows)
    for k, v in over.items():
        df[k] = v
    return df


def by_target(t: pd.DataFrame) -> dict[str, pd.Series]:
    return {r["target"]: r for _, r in t.iterrows()}


def test_attend_ratios_pass_fail_and_not_measured():
    t = by_target(targets.evaluate(table()))
    ex = t["attend_ratio.svd_exact"]
    assert ex["value"] == pytest.approx(0.4) and ex["status"] == "pass" and ex["goal"] == "<= 0.5"
    assert "gram_lowrank" in ex["detail"] and "0.6" in ex["detail"]  # each solver's row shown
    assert ex["device_name"] == H100 and ex["commit"] == "abc123"
    assert t["attend_ratio.svd_tokens"]["status"] == "pass"
    assert (
        t["attend_ratio.linrec"]["value"] == pytest.approx(0.1)
        and t["attend_ratio.linrec"]["status"] == "fail"
    )
    assert t["attend_ratio.lrea"]["status"] == "not measured" and pd.isna(
        t["attend_ratio.lrea"]["value"]
    )
    perf = t["attend_ratio.performer"]
    assert perf["value"] == pytest.approx(0.3) and perf["status"] == "no target"


def test_svd_exact_over_its_goal_fails():
    df = table()
    df.loc[df["method"] == "svd_exact", "attend_ms_median"] = 0.7
    assert by_target(targets.evaluate(df))["attend_ratio.svd_exact"]["status"] == "fail"


def test_cpu_table_lacks_the_case():
    df = table(device_name="AMD EPYC", dtype="fp32")
    t = targets.evaluate(df)
    ratios = t[t["target"].str.startswith("attend_ratio")]
    assert (ratios["status"] == "not measured").all() and ratios["value"].isna().all()


def test_roofline_of_largest_cases_with_ties():
    t = by_target(targets.evaluate(table()))
    d = t["roofline.attend.dense"]
    assert d["value"] == pytest.approx(0.7) and d["status"] == "pass" and "compute" in d["detail"]
    assert "N65536" in d["case"] and "bf16" in d["case"]
    s = t["roofline.attend.svd_exact"]
    assert (
        s["value"] == pytest.approx(0.52) and "solver=gram]" in s["case"] and "exp" in s["detail"]
    )
    assert t["roofline.forward.svd_exact"]["status"] == "pass"
    assert t["roofline.forward.linrec"]["value"] == pytest.approx(0.55)
    df = table()
    df.loc[df["method"] == "linrec", "roofline_fraction_forward"] = 0.3
    assert by_target(targets.evaluate(df))["roofline.forward.linrec"]["status"] == "fail"
    assert "roofline.attend.lrea" not in t  # no ok row


def test_roofline_columns_missing_are_not_recorded():
    df = table().drop(
        columns=["roofline_fraction_attend", "roofline_fraction_forward", "roofline_bound_attend"]
    )
    t = targets.evaluate(df)
    roof = t[t["target"].str.startswith("roofline")]
    assert len(roof) and (roof["status"] == "not recorded").all()
    assert roof["detail"].str.contains("attend bound: not recorded").all()
    df = table()
    df["roofline_fraction_attend"] = None  # column there, value empty
    assert by_target(targets.evaluate(df))["roofline.attend.dense"]["status"] == "not recorded"


def test_noise_pass_fail_and_derived_from_iqr():
    t = by_target(targets.evaluate(table()))
    assert t["noise.all"]["status"] == "pass" and t["noise.all"]["value"] == pytest.approx(0.01)
    df = table()
    i = df.index[df["method"] == "linrec"][0]
    df.loc[i, "forward_ms_iqr_rel"] = 0.05
    t = by_target(targets.evaluate(df))
    assert t["noise.all"]["status"] == "fail" and t["noise.all"]["value"] == pytest.approx(0.05)
    assert t["noise.forward"]["status"] == "fail" and t["noise.attend"]["status"] == "pass"
    assert "1 of 11 cases" in t["noise.all"]["detail"] and "linrec" in t["noise.all"]["detail"]
    # no _iqr_rel columns (an older table): IQR / median
    old = table().drop(columns=[f"{p}_ms_iqr_rel" for p in targets.PHASES])
    old.loc[old["method"] == "dense", "attend_ms_iqr"] = (
        0.04  # dense attend medians are 1.0 and 9.0
    )
    t = by_target(targets.evaluate(old))
    assert (
        t["noise.attend"]["value"] == pytest.approx(0.04) and t["noise.attend"]["status"] == "fail"
    )
    none = table().drop(columns=[c for c in table().columns if "_ms_" in c])
    assert by_target(targets.evaluate(none))["noise.all"]["status"] == "not measured"


def test_noise_summary_lines():
    lines = targets.noise_summary_lines(table())
    assert lines[0].startswith("timing noise") and "0 of 11 ok cases at or over 3%" in lines[-1]
    assert targets.noise_summary_lines(table(status="error")) == ["timing noise: no ok timings"]


def test_cli_targets_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    store.write_table(store.to_frame(table().to_dict("records")), run)
    md = tmp_path / "out" / "targets.md"
    assert main(["targets", str(run), "--out", str(md)]) == 0
    out = capsys.readouterr().out
    assert "| attend svd_exact / dense at the target case | 0.4 | <= 0.5 | pass |" in out
    assert md.read_text().startswith("# Targets") and "not measured" in md.read_text()
    t = pd.read_csv(run / "targets.csv")
    assert {"target", "value", "goal", "status", "device_name", "commit"} <= set(t.columns)
    assert t.loc[t["target"] == "attend_ratio.linrec", "status"].item() == "fail"
    assert main(["targets", str(run), "--strict"]) == 1  # linrec fails
    # a run directory holding only the parquet twin
    (run / "results.csv").unlink()
    assert main(["targets", str(run)]) == 0
    assert "| attend svd_exact / dense at the target case | 0.4 |" in capsys.readouterr().out
    assert main(["targets", str(tmp_path / "nowhere")]) == 2
    assert "no such results table" in capsys.readouterr().err


def test_graph_replay_ratios_appear_with_the_column():
    df = table()
    assert not targets.evaluate(df)["target"].str.startswith("attend_graph_ratio").any()
    df["attend_graph_ms_median"] = df["attend_ms_median"] / 10
    df.loc[df["method"] == "linrec", "attend_graph_ms_median"] = 0.004  # 0.004 / 0.1 = 0.04
    df["attend_graph_ms_iqr_rel"] = 0.05
    t = by_target(targets.evaluate(df))
    assert t["attend_graph_ratio.linrec"]["value"] == pytest.approx(0.04)
    assert t["attend_graph_ratio.linrec"]["status"] == "pass"
    assert t["attend_ratio.linrec"]["status"] == "fail"  # the eager ratio is still its own row
    assert "CUDA graph" in t["attend_graph_ratio.svd_exact"]["what"]
    assert t["noise.attend_graph"]["status"] == "fail"  # 5 % is over the 3 % limit
