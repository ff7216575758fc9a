"""Issue 12, items 6 and 12: TOML values and flags with wrong types or ranges get a clear
error naming the file and key (exit 2 at the command line), never a reinterpretation."""

from __future__ import annotations

import pytest
import torch

from bench.cli import main
from bench.config import load_config, parse_config, tomllib
from bench.errors import ConfigError
from conftest import tiny_sweep

# (grid line or section, the key the message must name, a word of what is accepted)
BAD_GRID = [
    ("n = [true]", "n[0]", "integer"),  # was N = 1
    ("n = [64.5]", "n[0]", "integer"),  # was N = 64
    ('n = ["abc"]', "n[0]", "integer"),
    ("n = [-5]", "n[0]", ">= 1"),
    ("m = [-1]", "m[0]", ">= 1"),
    ("d = [0]", "d[0]", ">= 1"),  # was ZeroDivisionError
    ("batch = [0]", "batch[0]", ">= 1"),
    ("rank = [0]", "rank[0]", ">= 1"),
    ("padding = [1.5]", "padding[0]", "[0, 1]"),  # was recorded as given
    ("padding = [-0.5]", "padding[0]", "[0, 1]"),
    ("query_scale = [nan]", "query_scale[0]", "finite"),
    ('seed = ["abc"]', "seed[0]", "integer"),
    (f"seed = [{2**70}]", "seed[0]", "2**63"),  # was a torch overflow error
    ("n = []", "n", "empty"),
    ('family = [{kind = "powerlaw", alpha = "x"}]', "alpha", "number"),
]


@pytest.mark.parametrize(("line", "key", "accepted"), BAD_GRID)
def test_bad_grid_values_name_file_key_and_what_is_accepted(tmp_path, line, key, accepted):
    f = tmp_path / "bad.toml"
    f.write_text(f'name = "x"\n[[grid]]\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path=f)
    msg = str(err.value)
    assert str(f) in msg and key in msg and accepted in msg


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ("[timing]\nmax_calls = 0", "max_calls"),
        ("[timing]\nmin_calls = -1", "min_calls"),
        ("[timing]\nmin_calls = 5\nmax_calls = 2", "larger than max_calls"),
        ('[fidelity]\nenabled = "no"', "enabled"),  # was: fidelity still computed
        ("[fidelity]\nenabled = 1", "enabled"),
        ("[memory]\nenabled = 0", "enabled"),
        ("[cascade]\nstages = []", "stages"),  # was: failed after the whole sweep
        ("[cascade]\nn = [0]", "n[0]"),
        ('[cascade]\ndtype = "fp8"', "dtype"),
    ],
)
def test_bad_sections(tmp_path, doc, key):
    f = tmp_path / "bad.toml"
    f.write_text(f'name = "x"\n{doc}\n[[grid]]\nn = [64]\n')
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(path=f)


@pytest.mark.parametrize(
    ("top", "key"),
    [
        ('threads = "abc"', "threads"),
        ("threads = -1", "threads"),
        ("threads = 1.5", "threads"),
        ('device = "tpu"', "device"),
        ("name = 3", "name"),
        ("grid = [1]", "grid"),
    ],
)
def test_bad_top_level_values(top, key):
    raw = tomllib.loads(top + ("" if "grid" in top else "\n[[grid]]\nn = [64]\n"))
    with pytest.raises(ConfigError, match=key):
        parse_config(raw, source="t.toml")


def test_valid_values_still_parse():
    cfg = parse_config(
        {
            "threads": 2,
            "device": "cuda:1",
            "grid": [
                {"n": [64], "padding": [0.0, 1.0], "seed": [0, 2**63 - 1], "query_scale": [0, 2]}
            ],
        }
    )
    assert cfg.grids[0].padding == (0.0, 1.0) and cfg.threads == 2
    assert isinstance(cfg.grids[0].query_scale[0], float)


def _run(tmp_path, *extra, config=None):
    cfg = config or tiny_sweep(tmp_path, methods=["dense"], n=(32,))
    return main(
        ["run", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress", *extra]
    )


def test_cli_exit_2_one_line_before_any_work(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('name = "x"\n[[grid]]\nn = [true]\n')
    assert _run(tmp_path, config=f) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing measured, nothing written


def test_cascade_without_stages_fails_before_the_sweep(tmp_path, capsys):
    cfg = tiny_sweep(tmp_path, methods=["dense"], n=(32,))
    cfg.write_text(cfg.read_text() + "[cascade]\nstages = []\n")
    assert _run(tmp_path, config=cfg) == 2
    assert "stages" in capsys.readouterr().err
    assert not (tmp_path / "run" / "rows.jsonl").exists()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--device", "tpu"], "'cpu', 'cuda'"),
        (["--device", "meta"], "'cpu', 'cuda'"),
        (["--methods", "nope"], "available: dense"),
    ],
)
def test_bad_flags_exit_2(tmp_path, capsys, flags, words):
    assert _run(tmp_path, *flags) == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a visible CUDA device")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert _run(tmp_path, "--device", "cuda") == 2  # was an AssertionError deep in torch
    assert "use 'cpu'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-3", "0", "abc"])
def test_threads_flag_is_a_positive_integer(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as ex:
        _run(tmp_path, "--threads", value)
    assert ex.value.code == 2 and ">= 1" in capsys.readouterr().err


def test_unknown_methods_and_zero_cases_are_errors(tmp_path, capsys):
    cfg = tiny_sweep(tmp_path, methods=["nope"], n=(32,))
    assert _run(tmp_path, config=cfg) == 2  # was: exit 0 with 0 cases
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    cfg = tiny_sweep(
        tmp_path, name="zero", methods=["dense"], n=(32,), grid_extra='methods = ["svd_exact"]'
    )
    assert _run(tmp_path, config=cfg) == 2
    assert "no case" in capsys.readouterr().err


def test_unknown_solver_fails_before_the_sweep(tmp_path, capsys):
    cfg = tiny_sweep(tmp_path, methods=["svd_exact"], n=(32,))
    cfg.write_text(cfg.read_text() + '[method_params.svd_exact]\nsolver = ["nope"]\n')
    assert _run(tmp_path, config=cfg) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "run" / "rows.jsonl").exists()


@pytest.mark.parametrize("value", ["nan", "-1", "x"])
def test_time_budget_is_a_finite_non_negative_number(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as ex:
        _run(tmp_path, "--time-budget", value)
    assert ex.value.code == 2 and "--time-budget" in capsys.readouterr().err


def test_cascade_family_given_by_kind_is_a_table():
    cfg = parse_config({"grid": [{"n": [64]}], "cascade": {"family": "powerlaw"}})
    assert cfg.cascade.family == {"kind": "powerlaw"}  # was a bare string, failing after the sweep


@pytest.mark.parametrize(
    "flags",
    [
        ["--threads", "-3"],
        ["--dim", "0"],
        ["--window", "0"],
        ["--kl-users", "0"],
        ["--seed", "-1"],
        ["--seed", str(2**70)],
        ["--sasrec-seconds", "nan"],
    ],
)
def test_analysis_numeric_flags_are_checked(tmp_path, capsys, flags):
    from analysis.cli import main as analysis_main

    with pytest.raises(SystemExit) as ex:
        analysis_main(
            ["spectrum", "--data", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o"), *flags]
        )
    assert ex.value.code == 2 and flags[0] in capsys.readouterr().err


def test_timing_pair_checked_against_the_default_it_leaves_out():
    """Found by the TOML fuzzer: `max_calls = 1` alone passed although min_calls defaults
    to 3 (a sample count range that cannot be met)."""
    with pytest.raises(
        ConfigError, match=r"min_calls = 3 \(the default\) is larger than max_calls = 1"
    ):
        parse_config({"grid": [{}], "timing": {"max_calls": 1}})
    with pytest.raises(ConfigError, match=r"warmup_min = 20 is larger than warmup_max = 10 \(the"):
        parse_config({"grid": [{}], "timing": {"warmup_min": 20}})
    ok = parse_config({"grid": [{}], "timing": {"max_calls": 3}})
    assert ok.timing.min_calls == 3 == ok.timing.max_calls
