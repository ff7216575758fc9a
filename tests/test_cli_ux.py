"""Command-line consistency: help on every option, per-subcommand usage on errors, one list
syntax, presets as TOML, the example configs, and the guard before a sweep too big to start."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from analysis import cli as analysis_cli
from bench import cli as bench_cli
from bench.cliargs import split_list
from bench.config import expand, load_config, parse_config, resolve_methods
from bench.estimate import ASK_ABOVE_S, estimate, refusal
from bench.presets import PRESETS
from bench.toml_out import dumps
from reports import cli as reports_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PARSERS = {
    "bench": bench_cli._parser,
    "analysis": analysis_cli.build_parser,
    "reports": reports_cli.build_parser,
}


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_has_help(prog: str) -> None:
    missing = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, sp in _subparsers(PARSERS[prog]()).items()
        for a in sp._actions
        if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert not missing, f"{prog}: options without help: {missing}"


@pytest.mark.parametrize(
    "prog,argv,usage",
    [
        ("bench", ["run", "--out", "x", "--nope"], "python -m bench run"),
        (
            "analysis",
            ["decide", "--spectra", "x", "--out", "y", "--nope"],
            "python -m analysis decide",
        ),
        ("reports", ["build", "--results", "x", "--out", "y", "--nope"], "python -m reports build"),
    ],
)
def test_unknown_option_shows_the_subcommand_usage(prog, argv, usage, capsys) -> None:
    main = {"bench": bench_cli.main, "analysis": analysis_cli.main, "reports": reports_cli.main}[
        prog
    ]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"usage: {usage}" in err and "--nope" in err


def test_analysis_help_names_every_subcommand() -> None:
    p = analysis_cli.build_parser()
    names = set(_subparsers(p))
    assert names >= {"spectrum", "kl", "decide", "findings", "all"}
    assert all(n in (p.description or "") for n in names)


def test_one_list_syntax() -> None:
    assert split_list(["dense,svd_exact", "linrec"]) == ["dense", "svd_exact", "linrec"]
    assert split_list("1e-2, 1e-3", float) == [1e-2, 1e-3]
    assert split_list(None) is None
    a = analysis_cli.build_parser().parse_args(
        ["decide", "--spectra", "s", "--out", "o", "--m", "64,256", "1024"]
    )
    assert split_list(a.m, int) == [64, 256, 1024]
    with pytest.raises(SystemExit):
        analysis_cli.build_parser().parse_args(
            ["spectrum", "--out", "o", "--embedding", "ppmi,bogus"]
        )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_show_round_trips(name: str, capsys) -> None:
    assert bench_cli.main(["presets", "show", name]) == 0
    text = capsys.readouterr().out
    assert tomllib.loads(text) == PRESETS[name]
    a, b = load_config(name), parse_config(tomllib.loads(text), source="shown")
    ma, _ = resolve_methods(a)
    assert [c.case_id for c in expand(a, ma, "cpu")] == [c.case_id for c in expand(b, ma, "cpu")]
    assert dumps({"x": [{"a": 1}], "y": {"z": 'q"uote'}}).count("[[x]]") == 1


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_load_and_expand(path: Path) -> None:
    cfg = load_config(path=path)
    methods, missing = resolve_methods(cfg)
    assert not missing and expand(cfg, methods, "cpu")


def test_sweep_guard() -> None:
    small = load_config("smoke")
    est = estimate(expand(small, resolve_methods(small)[0], "cpu"), small)
    assert est.seconds < ASK_ABOVE_S and refusal(est, "smoke", "cpu", yes=False) is None
    paper = load_config("paper")
    est = estimate(expand(paper, resolve_methods(paper)[0], "cpu"), paper)
    why = refusal(est, "paper", "cpu", yes=False)
    assert why and "--yes" in why and "GPU" in why and str(est.cases) in why
    assert refusal(est, "paper", "cpu", yes=True) is None
    assert (
        refusal(est, "paper", "cpu", yes=False, time_budget_min=5) is not None
    )  # still not on a CPU
    assert refusal(est, "mine", "cpu", yes=False) is not None
    assert refusal(est, "mine", "cpu", yes=False, time_budget_min=5) is None  # the budget bounds it


def test_paper_on_cpu_is_refused_without_yes(tmp_path: Path, capsys) -> None:
    rc = bench_cli.main(
        ["run", "--preset", "paper", "--device", "cpu", "--out", str(tmp_path / "p")]
    )
    assert rc == 2
    assert "--yes" in capsys.readouterr().err
    assert not (tmp_path / "p" / "rows.jsonl").exists()


def _main_job_calls(tmp_path: Path, **env_vars: str) -> list[str]:
    """Run main_job.sh with a stub python on PATH that records each call instead of running
    it; returns the recorded argument lines."""
    import os
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n')
    (stub / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "YES": "1", **env_vars}
    subprocess.run(
        ["bash", str(ROOT / "main_job.sh"), str(tmp_path / "out")],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return (tmp_path / "calls.txt").read_text().splitlines()


def test_main_job_passes_column_flags_through(tmp_path: Path) -> None:
    """main_job.sh hands FORMAT/USER_COL/ITEM_COL/TIME_COL to the analysis."""
    calls = _main_job_calls(
        tmp_path, DATA="my/log.csv", FORMAT="csv", USER_COL="uid", ITEM_COL="iid", TIME_COL="ts"
    )
    spectrum = next(c for c in calls if " spectrum " in c)
    assert "--format csv --user-col uid --item-col iid --time-col ts" in spectrum
    assert "--yes" in next(c for c in calls if c.startswith("-m bench run"))


def test_main_job_quality_trains_both_tasks_with_every_method(tmp_path: Path) -> None:
    """QUALITY=preset adds both quality tasks, all six methods and the two baselines, and
    hands their folder to the report."""
    import attention_impls as ai

    calls = _main_job_calls(tmp_path, QUALITY="smoke")
    out = tmp_path / "out"
    quality = [c for c in calls if c.startswith("-m analysis quality")]
    assert [c.split("--task ")[1].split()[0] for c in quality] == ["seqrec", "target"]
    for c in quality:
        methods = c.split("--methods ")[1].split()[0].split(",")
        assert sorted(set(methods) - {"mean_pool", "pop"}) == ai.available()
        assert {"mean_pool", "pop"} <= set(methods)
        assert "--preset smoke" in c and "--seeds 0,1,2" in c
    report = next(c for c in calls if c.startswith("-m reports build"))
    assert f"--results {out}/quality" in report
