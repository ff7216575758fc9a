"""Report fixes: runs kept apart, self-attention M, readable profiles, fractions above 1,
the single-N crossover note, build progress."""

from __future__ import annotations

import pandas as pd

from reports import sections
from reports.derive import m_text
from reports.fixtures import bench_table
from reports.load import ResultSet, normalise_bench
from reports.runs import separate_runs


def _run(commit: str, threads: int, src: str = "runs/a") -> pd.DataFrame:
    df = bench_table("cpu", small=True)
    return df.assign(git_commit=commit, threads=threads, source_dir=src)


def test_two_runs_of_one_device_are_two_series() -> None:
    both = pd.concat([_run("aaaaaaa111", 2), _run("bbbbbbb222", 1, "runs/b")], ignore_index=True)
    bench, _ = separate_runs(both, pd.DataFrame())
    assert set(bench["device"]) == {"cpu @aaaaaaa, 2\u00a0threads", "cpu @bbbbbbb, 1\u00a0thread"}
    assert set(bench["device_kind"]) == {"cpu"}
    # the same commit and threads from two folders (--results A --results B): named by folder
    same = pd.concat(
        [_run("aaaaaaa111", 2, "x/run1"), _run("aaaaaaa111", 2, "x/run2")], ignore_index=True
    )
    assert set(separate_runs(same, pd.DataFrame())[0]["device"]) == {"cpu run1", "cpu run2"}
    # one run keeps its plain name; the cascade rows follow their run's label
    one, cas = separate_runs(
        _run("aaaaaaa111", 2),
        pd.DataFrame(
            {
                "device": ["cpu"],
                "git_commit": ["aaaaaaa111"],
                "threads": [2],
                "source_dir": ["runs/a"],
            }
        ),
    )
    assert set(one["device"]) == {"cpu"} and list(cas["device"]) == ["cpu"]
    # a cascade table without a threads column follows its folder's run
    two, cas = separate_runs(
        both,
        pd.DataFrame({"device": ["cpu"], "git_commit": ["bbbbbbb222"], "source_dir": ["runs/b"]}),
    )
    assert list(cas["device"]) == ["cpu @bbbbbbb, 1\u00a0thread"]


def test_self_attention_m_and_fraction_flags() -> None:
    assert m_text(-1.0) == "self (M = N)" and m_text(1024) == "M = 1024"
    t = pd.DataFrame({"attend fraction": [0.84, 1.3, None], "forward fraction": [1.01, 0.5, 0.2]})
    assert sections._over_one_note(t, ["attend fraction", "forward fraction"]) == [
        "forward fraction > 1: suspect",
        "attend fraction > 1: suspect",
        "",
    ]


def test_profile_is_readable_text() -> None:
    prof = {
        "route": "sasrec",
        "matrix": "k",
        "centred": False,
        "model": "exponential",
        "params": {"beta": 0.0786},
        "noise_floor": 0.0627,
        "s1_per_sqrt_n": 2.98,
        "fit_users": 40,
        "fit_min_n": 1000,
        "fit_rmse_log": 0.227,
        "alternatives": [
            {"model": "exponential", "params": {"beta": 0.0786}, "fit_rmse_log": 0.227},
            {"model": "powerlaw", "params": {"alpha": 0.55}, "fit_rmse_log": 0.29},
        ],
    }
    row = sections._profile_row("ml-1m", prof)
    text = " ".join(map(str, row.values()))
    assert (
        "{" not in text
        and "exponential: beta = 0.0786" in text
        and "powerlaw: alpha = 0.55" in text
    )
    assert row["fit users"] == "40 (N >= 1000)"


def test_single_n_crossover_says_why(tmp_path) -> None:
    df = normalise_bench(bench_table("cpu", small=True), "cpu")
    one_n = df[df["n"] == 4096]
    assert (one_n["method"] == "dense").any() and (one_n["status"] == "ok").any()
    rs = ResultSet(bench=one_n, cascade=pd.DataFrame(), spectra={}, sources=[])
    s = sections.timing_section(rs)
    assert not any("No dense rows" in m for m in s.missing)
    assert any("single N" in t for t in s.intro)


def test_build_sections_reports_progress() -> None:
    rs = ResultSet(
        bench=normalise_bench(bench_table("cpu", small=True), "cpu"),
        cascade=pd.DataFrame(),
        spectra={},
        sources=[],
    )
    lines: list[str] = []
    secs = sections.build_sections(rs, progress=lines.append)
    assert len(lines) == len(secs) == len(sections.SECTION_BUILDERS)
    assert lines[0].startswith("  section 1/8 ") and lines[0].endswith(" s)")


def test_two_runs_are_overlaid_in_one_figure() -> None:
    import matplotlib.pyplot as plt

    from reports.figures.runs import overlay_groups, runs_overlay

    a = normalise_bench(_run("aaaaaaa111", 2), "cpu")
    b = normalise_bench(_run("bbbbbbb222", 1, "runs/b"), "cpu")
    bench, _ = separate_runs(pd.concat([a, b], ignore_index=True), pd.DataFrame())
    ok = bench[bench["status"] == "ok"]
    groups = overlay_groups(ok)
    assert groups and groups[0][0] == "cpu"
    f = runs_overlay(ok, *groups[0], key="fig-runs-x")
    assert f is not None and "line style = run" in f.caption
    labels = [ln.get_label() for ax in f.fig.axes for ln in ax.get_lines()]
    assert any("@aaaaaaa" in x for x in labels) and any("@bbbbbbb" in x for x in labels)
    styles = {
        ln.get_linestyle()
        for ax in f.fig.axes
        for ln in ax.get_lines()
        if ln.get_label() == "dense"
    }
    assert len(styles) == 2  # dense drawn once per run, in two line styles
    plt.close(f.fig)
    assert (
        overlay_groups(normalise_bench(_run("aaaaaaa111", 2), "cpu").assign(device_kind="cpu"))
        == []
    )
