"""Property (issue 12): any TOML document built from the sweep keys, with random or mistyped
values and random extra keys, gives a valid configuration or a ValueError (ConfigError), never
another exception; and a configuration that parses holds only values of the right type and
range (nothing reinterpreted), and expands into cases without a traceback.

CI runs 200 documents; ``TOML_FUZZ_EXAMPLES=2000`` runs more (the recorded run is in
docs/bench.md, "What bad input gets").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.config import DTYPES, SETTINGS, expand, load_config
from bench.errors import ConfigError
from bench.preflight import check_cases, check_methods

EXAMPLES = int(os.environ.get("TOML_FUZZ_EXAMPLES", "200"))

# ---------------------------------------------------------------- values

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.sampled_from(
        ["dense", "svd_exact", "performer", "gram", "fp16", "self", "cpu", "cuda", "nope"]
    ),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
random_key = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


def valid_or_random(valid: st.SearchStrategy, one_in: int = 20) -> st.SearchStrategy:
    """Mostly a valid value (so that many documents parse and reach the deeper checks), one
    time in ``one_in`` anything at all."""
    return st.tuples(st.integers(0, one_in - 1), valid, anything).map(
        lambda t: t[2] if t[0] == 0 else t[1]
    )


def small_list(elem: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(elem, min_size=1, max_size=2)


FAMILIES = st.one_of(
    st.sampled_from(["powerlaw", "exponential", "exact_rank"]),
    st.fixed_dictionaries(
        {"kind": st.just("powerlaw")},
        optional={
            "alpha": valid_or_random(st.floats(0, 3)),
            "noise_floor": valid_or_random(st.floats(0, 0.1)),
        },
    ),
    st.fixed_dictionaries(
        {"kind": st.just("exact_rank"), "rank": valid_or_random(st.integers(1, 8))}
    ),
)
GRID = {
    "n": small_list(st.integers(1, 512)),
    "m": small_list(st.integers(1, 64)),
    "d": small_list(st.integers(1, 32)),
    "dv": small_list(st.integers(1, 32)),
    "rank": small_list(st.integers(1, 8)),
    "features": small_list(st.integers(1, 32)),
    "batch": small_list(st.integers(1, 3)),
    "heads": small_list(st.integers(1, 3)),
    "dtype": small_list(st.sampled_from(DTYPES)),
    "setting": small_list(st.sampled_from(SETTINGS)),
    "seed": small_list(st.integers(0, 2**63 - 1)),
    "query_scale": small_list(st.floats(0, 10)),
    "padding": small_list(st.floats(0, 1)),
    "family": small_list(FAMILIES),
    "methods": small_list(st.sampled_from(["dense", "svd_exact", "linrec", "performer"])),
}
TIMING = {
    "min_calls": st.integers(1, 5),
    "max_calls": st.integers(1, 50),
    "min_time_s": st.floats(0, 1),
    "warmup_max": st.integers(0, 5),
    "flush_l2": st.booleans(),
    "rotate": st.booleans(),
    "rotate_mem_fraction": st.floats(0, 1),
    "inner_max": st.integers(1, 9),
}
FIDELITY = {
    "enabled": st.booleans(),
    "max_rows": st.integers(1, 512),
    "topk": st.integers(1, 20),
    "smoothing_a": st.floats(0, 0.5),
}
CASCADE = {
    "n": small_list(st.integers(1, 512)),
    "stages": small_list(st.integers(1, 64)),
    "d": st.integers(1, 32),
    "rank": st.integers(1, 8),
    "dtype": st.sampled_from(DTYPES),
    "seed": st.integers(0, 99),
    "family": FAMILIES,
}
TOP = {
    "name": st.text(max_size=6),
    "description": st.text(max_size=6),
    "methods": small_list(st.sampled_from(["dense", "svd_exact", "lrea", "svd_tokens"])),
    "device": st.sampled_from(["cpu", "cuda", "cuda:1"]),
    "threads": st.integers(1, 4),
}


def section(rules: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A table with some of the known keys (valid or random values) and maybe a random key."""
    known = st.fixed_dictionaries({}, optional={k: valid_or_random(v) for k, v in rules.items()})
    extra = st.dictionaries(random_key, anything, max_size=1)
    return st.tuples(known, extra, st.integers(0, 9)).map(
        lambda t: {**t[0], **t[1]} if t[2] == 0 else t[0]
    )


documents = st.fixed_dictionaries(
    {"grid": valid_or_random(st.lists(section(GRID), min_size=1, max_size=2), one_in=8)},
    optional={
        **{k: valid_or_random(v) for k, v in TOP.items()},
        "timing": valid_or_random(section(TIMING)),
        "fidelity": valid_or_random(section(FIDELITY)),
        "memory": valid_or_random(section({"enabled": st.booleans()})),
        "cascade": valid_or_random(section(CASCADE)),
        "method_params": valid_or_random(
            st.fixed_dictionaries(
                {},
                optional={
                    "svd_exact": section(
                        {"solver": small_list(st.sampled_from(["gram", "svd", "nope"]))}
                    ),
                    "performer": section({"eps": small_list(st.floats(0, 1))}),
                },
            )
        ),
    },
).flatmap(
    lambda doc: st.tuples(
        st.just(doc), st.dictionaries(random_key, anything, max_size=1), st.integers(0, 9)
    ).map(lambda t: {**t[1], **t[0]} if t[2] == 0 else t[0])
)

# ---------------------------------------------------------------- TOML text


def toml_str(s: str) -> str:
    """A TOML basic string (json.dumps would write non-BMP characters as surrogate pairs)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    """Scalars first, then [tables] and [[grid]] blocks (anything else inline)."""
    head, tail = [], []
    for k, v in doc.items():
        key = toml_str(k)
        if k == "grid" and isinstance(v, list) and v and all(isinstance(g, dict) for g in v):
            for g in v:
                tail.append("[[grid]]")
                tail += [f"{toml_str(gk)} = {toml_value(gv)}" for gk, gv in g.items()]
        elif isinstance(v, dict) and v:
            tail.append(f"[{key}]")
            tail += [f"{toml_str(sk)} = {toml_value(sv)}" for sk, sv in v.items()]
        else:
            head.append(f"{key} = {toml_value(v)}")
    return "\n".join(head + tail) + "\n"


def check_valid(cfg: Any) -> None:
    """A configuration that parsed holds only values of the right type and range."""
    for g in cfg.grids:
        for key in ("n", "m", "d", "rank", "features", "batch", "heads"):
            assert all(type(x) is int and x >= 1 for x in getattr(g, key)), (key, getattr(g, key))
        assert all(type(x) is int and 0 <= x < 2**63 for x in g.seed)
        assert all(type(x) is float and 0 <= x <= 1 for x in g.padding)
        assert all(type(x) is float and math.isfinite(x) for x in g.query_scale)
    t = cfg.timing
    assert type(t.min_calls) is int and 1 <= t.min_calls <= t.max_calls
    assert type(cfg.fidelity.enabled) is bool and type(cfg.memory.enabled) is bool
    assert cfg.threads is None or (type(cfg.threads) is int and cfg.threads >= 1)
    if cfg.cascade is not None:
        assert cfg.cascade.stages and all(type(x) is int and x >= 1 for x in cfg.cascade.stages)


def _size(cfg: Any) -> int:
    total = 0
    for g in cfg.grids:
        n = 1
        for key in (
            "n",
            "m",
            "d",
            "dv",
            "rank",
            "features",
            "batch",
            "heads",
            "dtype",
            "setting",
            "family",
            "seed",
            "query_scale",
            "padding",
        ):
            n *= len(getattr(g, key))
        total += n
    return total


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 200,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(doc=documents)
def test_any_toml_document_is_a_config_or_a_value_error(tmp_path_factory, doc):
    f: Path = tmp_path_factory.mktemp("toml") / "fuzz.toml"
    f.write_text(to_toml(doc), encoding="utf-8")
    try:
        cfg = load_config(path=f)
    except ValueError as exc:  # ConfigError, and nothing else
        assert isinstance(exc, ConfigError) and str(exc), exc
        event("ConfigError while parsing")
        return
    check_valid(cfg)
    if _size(cfg) > 200:
        event("valid config (too large to expand here)")
        return
    try:
        check_methods(cfg, None, str(f))
        from bench.config import resolve_methods

        methods, _ = resolve_methods(cfg)
        check_cases(cfg, expand(cfg, methods, "cpu"), methods, str(f))
        event("valid config, expanded and checked")
    except ConfigError:
        event("valid config, ConfigError in the pre-run checks")
