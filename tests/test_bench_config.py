"""Configuration: presets, TOML parsing, clear errors, case expansion."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.config import Case, expand, load_config, parse_config, resolve_methods
from bench.errors import ConfigError
from bench.presets import PRESETS


def test_unknown_preset_lists_allowed():
    with pytest.raises(ConfigError) as err:
        load_config("nope")
    for name in ("smoke", "quick", "paper", "full"):
        assert name in str(err.value)


def test_bad_toml_key_lists_allowed(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('name = "x"\n[[grid]]\nn = [64]\nnn = [3]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path=f)
    msg = str(err.value)
    assert "nn" in msg and "allowed" in msg and "features" in msg
    f.write_text("speed = 3\n[[grid]]\nn = [64]\n")
    with pytest.raises(ConfigError, match="allowed: .*grid"):
        load_config(path=f)
    f.write_text("[timing]\nmin_calls = 2\nfoo = 1\n[[grid]]\nn = [64]\n")
    with pytest.raises(ConfigError, match="warmup_max"):
        load_config(path=f)


def test_bad_family_and_setting_and_method_param():
    with pytest.raises(ConfigError, match="powerlaw"):
        parse_config({"grid": [{"family": [{"kind": "zipf"}]}]})
    with pytest.raises(ConfigError, match="noise_floor"):
        parse_config({"grid": [{"family": [{"kind": "powerlaw", "gamma": 2}]}]})
    with pytest.raises(ConfigError, match="target"):
        parse_config({"grid": [{"setting": ["both"]}]})
    cfg = parse_config({"grid": [{"n": [64]}], "method_params": {"dense": {"speed": [1]}}})
    with pytest.raises(ConfigError, match="speed"):
        expand(cfg, ["dense"], "cpu")


def test_cli_reports_config_errors_cleanly(tmp_path, capsys):
    assert main(["run", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert "allowed: smoke, quick, paper, full" in capsys.readouterr().err
    assert main(["run", "--preset", "smoke", "--methods", "flash9", "--out", str(tmp_path)]) == 2
    assert "available" in capsys.readouterr().err


def test_toml_file_expands_and_case_ids_are_stable(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(
        'methods = ["dense", "svd_exact"]\n'
        '[method_params.svd_exact]\nsolver = ["gram", "svd"]\n'
        "[[grid]]\nn = [64, 128]\nm = [8]\nd = [16]\nrank = [4, 8]\n"
        'family = [{kind = "exponential", beta = 0.3, noise_floor = 0.01}]\n'
    )
    cfg = load_config(path=f)
    assert cfg.name == "mine"
    methods, missing = resolve_methods(cfg)
    cases = expand(cfg, methods, "cpu")
    assert len(cases) == 2 * (1 + 2 * 2)
    ids = [c.case_id for c in cases]
    assert len(set(ids)) == len(ids)
    assert ids == [c.case_id for c in expand(load_config(path=f), methods, "cpu")]
    c = cases[1]
    assert Case.from_json(c.to_json()) == c


def test_presets_parse_and_smoke_covers_all_methods():
    import attention_impls as ai

    for name in PRESETS:
        load_config(name)
    cfg = load_config("smoke")
    methods, _ = resolve_methods(cfg)
    cases = expand(cfg, methods, "cpu")
    assert {c.method for c in cases} == set(ai.available())
    assert len(cases) <= 60
    paper = expand(load_config("paper"), methods, "cuda")
    assert {c.dtype for c in paper} >= {"bf16"} and max(c.n for c in paper) >= 65536
    assert {c.d for c in paper} == {64, 128} and max(c.m for c in paper) == 4096
