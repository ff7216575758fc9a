"""The three-bound roofline: Cost.exps, the operators' exp counts, bound selection, the
ceilings probes (CPU, and the Triton exp probe under the interpreter), a smoke sweep's new
columns, and the report's roofline section with and without those columns."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

import attention_impls as ai
from attention_impls import Cost, Shape
from bench import ceilings, roofline, runner, store
from bench.config import expand, load_config, resolve_methods
from conftest import tiny_sweep
from reports.derive import EXP_NOT_RECORDED, roofline_case_table, roofline_phases
from reports.fixtures import bench_table, with_three_bounds, write_all
from reports.load import load, normalise_bench
from reports.sections import roofline_section

BOUNDS = {"matmul", "memory", "exp"}

# ----------------------------------------------------------------------------- Cost


def test_cost_two_args_still_work_and_add_sums_exps():
    c = Cost(10.0, 20.0)
    assert c.exps == 0.0 and c.flops == 10.0 and c.bytes == 20.0
    s = Cost(1.0, 2.0, 3.0) + Cost(4.0, 5.0, 6.0)
    assert s == Cost(5.0, 7.0, 9.0) and isinstance(s, Cost)
    assert (Cost(1.0, 2.0) + Cost(0.0, 0.0, 7.0)).exps == 7.0
    with pytest.raises(TypeError):
        Cost(1.0, 2.0) + (1.0, 2.0)  # not tuple concatenation
    flops, nbytes, exps = Cost(1.0, 2.0, 3.0)
    assert (flops, nbytes, exps) == (1.0, 2.0, 3.0)


# ----------------------------------------------------------------------------- exps per method

B, H, N, M, D = 2, 3, 100, 10, 8
BH = B * H


@pytest.mark.parametrize(
    "name,params,prepare,attend",
    [
        ("dense", {}, 0, BH * M * N),
        ("svd_exact", {"rank": 4}, 0, BH * M * N),
        ("svd_tokens", {"rank": 4}, 0, BH * M * 4),
        ("performer", {"features": 16}, BH * N * 16, BH * M * 16),
        ("linrec", {}, BH * N * D, BH * M * D),
        ("lrea", {"rank": 4}, 0, 0),
    ],
)
def test_exps_counted_per_method(name, params, prepare, attend):
    op = ai.get(name, **params)
    shape = Shape(B, H, N, M, D, D)
    assert op.cost_prepare(shape).exps == prepare
    assert op.cost_attend(shape).exps == attend
    assert op.cost(shape, "bf16").exps == prepare + attend
    assert op.cost_attend(shape).flops > 0 and op.cost_attend(shape).bytes > 0


@pytest.mark.parametrize("name", ["dense", "svd_exact"])
def test_causal_halves_the_exps(name):
    op = ai.get(name, **({"rank": 4} if name == "svd_exact" else {}))
    full, causal = Shape(B, H, 64, 64, D, D), Shape(B, H, 64, 64, D, D, causal=True)
    assert op.cost_attend(causal).exps == 0.5 * op.cost_attend(full).exps == 0.5 * BH * 64 * 64


# ----------------------------------------------------------------------------- bounds


def test_each_bound_wins_somewhere():
    peaks = dict(peak_flops=1e12, peak_bw=1e9, peak_exp=1e9)

    def floor(flops, nbytes, exps):
        return roofline.roofline_floor(
            flops, nbytes, exps, peaks["peak_flops"], peaks["peak_bw"], peaks["peak_exp"]
        )

    assert floor(2e12, 1e6, 1e6) == (pytest.approx(2.0), "matmul")
    assert floor(1e9, 3e9, 1e6) == (pytest.approx(3.0), "memory")
    assert floor(1e9, 1e6, 4e9) == (pytest.approx(4.0), "exp")
    assert floor(1e12, 1e9, 0.0) == (pytest.approx(1.0), "matmul")  # tie: first in order
    assert floor(0.0, 0.0, 0.0) == (0.0, None)  # no modelled work (dense prepare)
    assert floor(None, None, None) == (None, None)
    # a missing peak drops its term
    assert roofline.roofline_floor(1e9, 1e6, 4e9, 1e12, 1e9, None) == (
        pytest.approx(1e-3),
        "matmul",
    )


def test_phase_columns_and_fraction_not_clipped():
    cols = roofline.phase_roofline("attend", 1e9, 1e6, 4e9, 2000.0, 1e12, 1e9, 1e9)
    assert cols == {
        "roofline_floor_ms_attend": pytest.approx(4000.0),
        "roofline_bound_attend": "exp",
        "roofline_fraction_attend": pytest.approx(2.0),
    }  # > 1: the model overcounts the time
    empty = roofline.phase_roofline("prepare", 0.0, 0.0, 0.0, 0.01, 1e12, 1e9, 1e9)
    assert empty["roofline_bound_prepare"] is None and empty["roofline_fraction_prepare"] is None
    assert (
        roofline.phase_roofline("forward", 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0)[
            "roofline_fraction_forward"
        ]
        is None
    )


def test_two_bound_fraction_equals_the_floor_without_exps():
    old = roofline.roofline_fraction(3e12, 1e9, 2.0, 1e12, 1e9)["roofline_fraction"]
    floor, _ = roofline.roofline_floor(3e12, 1e9, 0.0, 1e12, 1e9, 1e9)
    assert old == pytest.approx(floor / 2.0)


def test_exp_table_rates():
    assert roofline.gpu_exp_rate("NVIDIA H100 80GB HBM3") == pytest.approx(
        132 * 16 * 1.83e9
    )  # ~3.9e12
    assert roofline.gpu_exp_rate("NVIDIA H200") == roofline.gpu_exp_rate("NVIDIA H100 80GB HBM3")
    assert roofline.gpu_exp_rate("NVIDIA H100 PCIe") == pytest.approx(114 * 16 * 1.755e9)
    assert roofline.gpu_exp_rate("NVIDIA H100 NVL") == pytest.approx(132 * 16 * 1.785e9)
    assert roofline.gpu_exp_rate("NVIDIA A100-SXM4-80GB") == pytest.approx(108 * 16 * 1.41e9)
    assert roofline.gpu_exp_rate("NVIDIA GeForce RTX 4090") is None
    assert set(roofline.GPU_EXP_PER_S) == set(roofline.GPU_PEAKS)


# ----------------------------------------------------------------------------- ceilings


def _finite_positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def test_cpu_ceilings_are_measured_positive_and_finite(monkeypatch):
    def no_triton(*a, **k):
        raise AssertionError("the CPU runtime path must not use the Triton interpreter")

    monkeypatch.setattr(ceilings, "triton_exp_rate", no_triton)
    assert _finite_positive(ceilings.cpu_exp_rate("fp32", numel=4096, calls=4, repeats=1))
    c = ceilings.measure_ceilings("cpu", "", "fp32")
    assert all(_finite_positive(v) for v in (c.matmul_flops_per_s, c.bytes_per_s, c.exp_per_s))
    assert c.source == "measured"
    cols = c.columns()
    assert cols["peak_exp_per_s"] == c.exp_per_s and cols["peak_flops_table"] is None


def test_cuda_table_fallback(monkeypatch):
    monkeypatch.setenv("BENCH_CEILINGS", "table")
    c = ceilings.measure_ceilings("cuda", "NVIDIA H100 80GB HBM3", "bf16")
    assert c.source == "table" and c.matmul_flops_per_s == 989e12 and c.bytes_per_s == 3.35e12
    assert c.exp_per_s == pytest.approx(3.865e12, rel=1e-3) and c.table_exp_per_s == c.exp_per_s
    unknown = ceilings.measure_ceilings("cuda", "Some GPU", "bf16")
    assert unknown.source == "none" and unknown.exp_per_s is None
    mixed = ceilings.Ceilings("cuda", "bf16", 1.0, 1.0, 1.0, "measured", "measured", "table")
    assert mixed.source == "measured (exp: table)"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_exp_probe_runs_tiny():
    if torch.cuda.is_available():
        device = "cuda"
    elif os.environ.get("TRITON_INTERPRET", "0") == "1":
        device = "cpu"  # the interpreter: checks the kernel computes, not the hardware rate
    else:
        pytest.skip("no CUDA and TRITON_INTERPRET is not set")
    rate = ceilings.triton_exp_rate(device, n=200, iters=8, block=64, repeats=1)
    assert _finite_positive(rate)


# ----------------------------------------------------------------------------- smoke sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("roof")
    cfg = load_config(
        path=tiny_sweep(
            root,
            name="tiny-roofline",
            m=8,
            fidelity=False,
            grid_extra="features = [8]\nbatch = [1]\nheads = [2]",
        )
    )
    cases = expand(cfg, resolve_methods(cfg)[0], "cpu")
    runner.run_sweep(cfg, cases, root / "cpu", progress=False)
    return root / "cpu"


def test_sweep_writes_the_three_bound_columns(sweep_dir):
    df = store.read_table(sweep_dir)
    assert (df["status"] == "ok").all() and set(df["method"]) == set(ai.available())
    for col in (
        "exps",
        "exps_attend",
        "exps_prepare",
        "peak_exp_per_s",
        "peak_source",
        "peak_flops_table",
        "bytes_attend",
        "roofline_fraction",
    ):
        assert col in df.columns, col
    for phase in ("prepare", "attend", "forward"):
        for kind in ("floor_ms", "bound", "fraction"):
            assert f"roofline_{kind}_{phase}" in df.columns
    assert (df["peak_exp_per_s"] > 0).all() and (df["peak_source"] == "measured").all()
    assert (
        df["roofline_bound_attend"].isin(BOUNDS).all()
        and df["roofline_bound_forward"].isin(BOUNDS).all()
    )
    assert (df["roofline_floor_ms_attend"] > 0).all() and (df["roofline_fraction_attend"] > 0).all()
    assert (df["roofline_fraction"] == df["roofline_fraction_forward"]).all()
    dense = df[df["method"] == "dense"]
    assert dense["roofline_bound_prepare"].isna().all()  # no modelled work
    assert (dense["exps_attend"] == dense["batch"] * dense["heads"] * dense["m"] * dense["n"]).all()
    assert (df.loc[df["method"] == "lrea", "exps"] == 0).all()
    ratio = df["roofline_floor_ms_forward"] / df["forward_ms_median"]
    assert (ratio - df["roofline_fraction_forward"]).abs().max() < 1e-9
    # the floor is the max of the three terms
    r = df[df["method"] == "svd_exact"].iloc[0]
    terms = [
        r["flops"] / r["peak_flops"],
        r["bytes"] / r["peak_bytes_per_s"],
        r["exps"] / r["peak_exp_per_s"],
    ]
    assert r["roofline_floor_ms_forward"] == pytest.approx(max(terms) * 1e3)


# ----------------------------------------------------------------------------- reports


def _section(paths):
    rs = load(paths)
    s = roofline_section(rs)
    for f in s.figures:
        plt.close(f.fig)
    return rs, s


def test_report_roofline_from_a_sweep_with_the_new_columns(sweep_dir):
    rs, s = _section([sweep_dir])
    keys = [t.key for t in s.tables]
    assert "tbl-roofline-cpu" in keys and s.figures and not s.missing
    t = next(t.df for t in s.tables if t.key == "tbl-roofline-cpu")
    assert set(t["method"]) == set(ai.available()) and (t["n"] == 128).all()
    assert t["attend bound"].isin(BOUNDS).all() and t["forward bound"].isin(BOUNDS).all()
    assert (t["attend fraction"] > 0).all() and t["attend measured ms"].notna().all()
    assert not any(EXP_NOT_RECORDED in p for p in s.intro)


def test_report_roofline_from_a_table_without_the_new_columns(tmp_path):
    paths = write_all(tmp_path, devices=("cpu",), datasets=(), small=True)
    rs, s = _section([paths["cpu"]])
    assert any(EXP_NOT_RECORDED in p for p in s.intro) and s.figures
    t = next(t.df for t in s.tables if t.key == "tbl-roofline-cpu")
    assert (t["attend bound"] == "not recorded").all() and t["attend fraction"].isna().all()
    # the fixture's self-attention rows (the largest for dense, svd_exact) carry no work columns
    work = t[t["n"] != t["m"]]
    assert len(work) == 4 and (t.loc[t["n"] == t["m"], "forward bound"] == "not recorded").all()
    assert (
        work["forward bound"].str.endswith("(no exp term)").all()
        and (work["forward fraction"] > 0).all()
    )
    assert EXP_NOT_RECORDED in s.figures[0].caption
    # derived forward fraction = the two-bound fraction the old table recorded (peaks and work as given)
    ph = roofline_phases(rs.ok)
    has = rs.ok["flops"].notna()
    two = (rs.ok["flops"] / rs.ok["peak_flops"]).combine(
        rs.ok["bytes"] / rs.ok["peak_bytes_per_s"], max
    ) * 1e3
    assert (ph.loc[has, "roofline_floor_ms_forward"] - two[has]).abs().max() < 1e-12


def test_recorded_columns_are_kept_and_exp_bounds_show():
    df = normalise_bench(with_three_bounds(bench_table("cpu", small=True), "cpu"), "cpu")
    ok = df[df["status"] == "ok"]
    ph = roofline_phases(ok)
    rec = ok["roofline_floor_ms_attend"].notna()
    assert (
        ph.loc[rec, "roofline_floor_ms_attend"] == ok.loc[rec, "roofline_floor_ms_attend"]
    ).all()
    assert (ph.loc[rec, "roofline_exp_attend"] == "recorded").all()
    t = roofline_case_table(ph[ph["setting"] == "target"])
    assert "exp" in set(t["attend bound"]) and len(t) == len(set(ok["method"]))
    assert t["attend fraction"].notna().all() and t["forward fraction"].notna().all()


def test_derived_bound_uses_exps_when_the_table_has_them():
    rows = [
        {
            "method": "dense",
            "label": "dense",
            "n": 1024,
            "m": 64,
            "d": 64,
            "status": "ok",
            "device": "cuda",
            "forward_ms_median": 4.0,
            "attend_ms_median": 4.0,
            "prepare_ms_median": 0.0,
            "flops": 1e9,
            "bytes": 1e6,
            "exps": 4e9,
            "flops_attend": 1e9,
            "bytes_attend": 1e6,
            "exps_attend": 4e9,
            "peak_flops": 1e12,
            "peak_bytes_per_s": 1e9,
            "peak_exp_per_s": 2e12,
        }
    ]
    ph = roofline_phases(normalise_bench(pd.DataFrame(rows), "cuda"))
    r = ph.iloc[0]
    assert r["roofline_bound_attend"] == "exp" and r["roofline_floor_ms_attend"] == pytest.approx(
        2.0
    )
    assert (
        r["roofline_fraction_forward"] == pytest.approx(0.5)
        and r["roofline_exp_forward"] == "derived"
    )
    assert r["roofline_fraction"] == pytest.approx(0.5)


def test_report_shows_targets_csv_when_present(tmp_path):
    """`bench targets DIR` writes DIR/targets.csv; a report built from DIR shows it (the
    reports read the file, they never import the harness)."""
    from bench import targets as bt
    from reports.build import build

    paths = write_all(tmp_path, devices=("cpu",), small=True, three_bounds=True)
    df = store.read_table(paths["cpu"])
    bt.evaluate(df).to_csv(paths["cpu"] / bt.TARGETS_CSV, index=False)
    out = tmp_path / "report"
    build([paths["cpu"], paths["spectra"]], out)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="tbl-targets"' in html
    assert "attend_ratio.svd_exact" in html and "noise.all" in html
    out2 = tmp_path / "report2"
    (paths["cpu"] / bt.TARGETS_CSV).unlink()
    build([paths["cpu"], paths["spectra"]], out2)
    assert "attend_ratio.svd_exact" not in (out2 / "index.html").read_text(encoding="utf-8")
