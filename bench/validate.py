"""Strict types and ranges for every value of a sweep configuration (TOML file, preset, flag).

TOML (and Python) let ``true`` pass for an int and ``64.5`` be cut to 64 by ``int()``; this
module checks each value against a :class:`Rule` before anything is built, and raises
:class:`ConfigError` naming the source, the key and what would be accepted. ``bool`` is never
an int here, a float is never an int, and numbers must be finite.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

INT64_MAX = 2**63 - 1
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Rule:
    """What one key accepts: ``kind`` is int | float | bool | str; bounds are inclusive unless
    ``hi_open``; ``choices`` restricts strings."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    hi_open: bool = False
    lo_open: bool = False
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {"int": "an integer", "float": "a finite number", "str": "a string"}[self.kind]
        if self.lo is not None and self.lo_open and self.hi is None:
            return f"{what} > {_fmt(self.lo)}"
        if self.lo is not None and self.hi == INT64_MAX:
            return f"{what} >= {_fmt(self.lo)} (and below 2**63)"
        if self.lo is not None and self.hi is not None:
            close = ")" if self.hi_open else "]"
            return f"{what} in [{_fmt(self.lo)}, {_fmt(self.hi)}{close}"
        if self.lo is not None:
            return f"{what} >= {_fmt(self.lo)}"
        if self.hi is not None:
            return f"{what} <= {_fmt(self.hi)}"
        return what


def _fmt(x: float) -> str:
    return "2**63-1" if x == INT64_MAX else f"{x:g}"


POS_INT = Rule("int", 1, INT64_MAX)
NONNEG_INT = Rule("int", 0, INT64_MAX)
SEED = Rule("int", 0, INT64_MAX)
NONNEG_FLOAT = Rule("float", 0)
POS_FLOAT = Rule("float", 0, lo_open=True)
FRACTION = Rule("float", 0, 1)
BOOL = Rule("bool")
STR = Rule("str")


def check(where: str, value: Any, rule: Rule) -> Any:
    """``value`` if it satisfies ``rule`` (ints stay ints, floats become float), else raise."""
    ok = True
    if rule.kind == "bool":
        ok = isinstance(value, bool)
    elif rule.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif rule.kind == "float":
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
        if ok:
            value = float(value)
    elif rule.kind == "str":
        ok = isinstance(value, str) and (rule.choices is None or value in rule.choices)
    if ok and rule.kind in ("int", "float"):
        if rule.lo is not None and (value <= rule.lo if rule.lo_open else value < rule.lo):
            ok = False
        if rule.hi is not None and (value >= rule.hi if rule.hi_open else value > rule.hi):
            ok = False
    if not ok:
        raise ConfigError(f"{where} = {_show(value)} is not allowed; expected {rule.describe()}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    return text if len(text) <= 60 else text[:57] + "..."


def check_list(where: str, value: Any, rule: Rule) -> tuple:
    """A non-empty list of values (a scalar counts as a one-element list), each checked."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where} must not be empty; expected a list of {rule.describe()}")
        return tuple(check(f"{where}[{i}]", v, rule) for i, v in enumerate(value))
    return (check(where, value, rule),)


def check_table(where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where} must be a table ([section] or {{key = value}}), got {_show(value)}"
        )
    return value


# ----------------------------------------------------------------------------- schema

GRID_RULES: dict[str, Rule] = {
    "n": POS_INT,
    "m": POS_INT,
    "d": POS_INT,
    "dv": POS_INT,
    "rank": POS_INT,
    "features": POS_INT,
    "batch": POS_INT,
    "heads": POS_INT,
    "seed": SEED,
    "query_scale": NONNEG_FLOAT,
    # 1.0 is meaningful: the last user fully padded (bench/inputs.py, the smoke preset)
    "padding": FRACTION,
    "methods": STR,
}
CASCADE_RULES: dict[str, Rule] = {
    "d": POS_INT,
    "rank": POS_INT,
    "features": POS_INT,
    "batch": POS_INT,
    "heads": POS_INT,
    "seed": SEED,
}
CASCADE_LIST_RULES: dict[str, Rule] = {"n": POS_INT, "stages": POS_INT}
TIMING_RULES: dict[str, Rule] = {
    "min_calls": POS_INT,
    "max_calls": POS_INT,
    "min_time_s": NONNEG_FLOAT,
    "warmup_min": NONNEG_INT,
    "warmup_max": NONNEG_INT,
    "warmup_time_s": NONNEG_FLOAT,
    "stable_window": POS_INT,
    "stable_rtol": POS_FLOAT,
    "flush_l2": BOOL,
    "sample_min_ms": POS_FLOAT,
    "inner_max": POS_INT,
    "rotate": BOOL,
    "rotate_max": POS_INT,
    "rotate_mem_fraction": FRACTION,
    "cache_bytes": NONNEG_INT,
    "graph_attend": BOOL,
    "graph_calls_max": POS_INT,
}
FIDELITY_RULES: dict[str, Rule] = {
    "enabled": BOOL,
    "max_rows": POS_INT,
    "max_causal_n": POS_INT,
    "smoothing_a": Rule("float", 0, 1, hi_open=True),
    "topk": POS_INT,
}
MEMORY_RULES: dict[str, Rule] = {"enabled": BOOL}
FAMILY_RULES: dict[str, Rule] = {
    "alpha": NONNEG_FLOAT,
    "beta": NONNEG_FLOAT,
    "noise_floor": NONNEG_FLOAT,
    "rank": POS_INT,
    "max_rank": POS_INT,
    "profile": STR,
    "path": STR,
    "dataset": STR,
}
TOP_RULES: dict[str, Rule] = {
    "name": STR,
    "description": STR,
    "threads": POS_INT,
    "malloc_tune": BOOL,
}


def check_section(where: str, raw: Any, rules: dict[str, Rule], sep: str = ".") -> dict:
    """Check the scalar keys of a section that have a rule (unknown keys are checked by the
    caller, which knows the full list); None means "use the default" (presets only)."""
    raw = check_table(where, raw if raw is not None else {})
    for k, v in raw.items():
        if k in rules and v is not None:
            check(f"{where}{sep}{k}", v, rules[k])
    return raw


def check_timing(where: str, raw: Any, defaults: dict[str, Any] | None = None) -> None:
    """Types and ranges of [timing], and its pairs in order; a key the table leaves out takes
    its default (``defaults``), so ``max_calls = 1`` alone is caught against min_calls' 3."""
    raw = check_section(where, raw, TIMING_RULES)
    full = {**(defaults or {}), **{k: v for k, v in raw.items() if v is not None}}

    def given(k: str) -> str:
        return f"{k} = {full[k]}" + ("" if k in raw else " (the default)")

    for lo, hi in (("min_calls", "max_calls"), ("warmup_min", "warmup_max")):
        if lo in full and hi in full and full[lo] > full[hi]:
            raise ConfigError(f"{where}: {given(lo)} is larger than {given(hi)}")


def check_method_params(where: str, raw: Any) -> dict:
    """``{method: {param: value or [values]}}``; values are scalars (the operator checks them)."""
    raw = check_table(where, raw)
    for name, items in raw.items():
        check_table(f"{where}.{name}", items)
        for pk, pv in items.items():
            vals = pv if isinstance(pv, (list, tuple)) else [pv]
            if not vals:
                raise ConfigError(f"{where}.{name}.{pk} must not be empty")
            for v in vals:
                ok = isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))
                if not ok:
                    raise ConfigError(
                        f"{where}.{name}.{pk} = {_show(v)} is not allowed; expected "
                        "a number, a string, true/false, or a list of them"
                    )
    return raw


def check_device(where: str, value: Any) -> str:
    """``cpu``, ``cuda`` or ``cuda:i``, and available on this machine."""
    if not isinstance(value, str) or not DEVICE_RE.match(value):
        raise ConfigError(
            f"{where} = {_show(value)} is not allowed; expected 'cpu', 'cuda' or 'cuda:<index>'"
        )
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            why = (
                "this torch is built without CUDA"
                if torch.version.cuda is None
                else "no CUDA device is visible"
            )
            raise ConfigError(f"{where} = {value!r}: {why}; use 'cpu'")
        idx = int(value.split(":")[1]) if ":" in value else 0
        if idx >= torch.cuda.device_count():
            raise ConfigError(
                f"{where} = {value!r}: only {torch.cuda.device_count()} CUDA device(s) "
                f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    return value


def arg_type(rule: Rule) -> Any:
    """An argparse ``type=`` that parses a flag's text and checks it against ``rule`` (so
    ``--threads -3`` or ``--time-budget nan`` is a usage error, exit status 2)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = int(text) if rule.kind == "int" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not allowed (expected {rule.describe()})"
            ) from None
        try:
            return check("value", value, rule)
        except ConfigError:
            raise argparse.ArgumentTypeError(
                f"{text} is not allowed (expected {rule.describe()})"
            ) from None

    return parse


positive_int = arg_type(Rule("int", 1, INT64_MAX))
nonneg_int = arg_type(SEED)
nonneg_float = arg_type(NONNEG_FLOAT)
positive_float = arg_type(POS_FLOAT)
