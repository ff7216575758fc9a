"""Write a sweep (a preset's dict) as TOML that ``--config`` reads back to the same sweep.

A small writer for the shapes a sweep has (scalars, lists of scalars or inline tables,
tables, arrays of tables); ``tests/test_bench_cli_ux.py`` round-trips every preset through
``tomllib``. None values are left out (TOML has no null; a missing key means the default).
"""

from __future__ import annotations

import json
import math
from typing import Any


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, dict):
        return (
            "{"
            + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items() if x is not None)
            + "}"
        )
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, dict) for x in v)


def _body(d: dict[str, Any], path: str, out: list[str], top: bool) -> None:
    simple = [
        (k, v)
        for k, v in d.items()
        if v is not None and not _is_table(v) and not (_is_table_array(v) and top)
    ]
    for k, v in simple:
        out.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in d.items():
        name = f"{path}.{_key(k)}" if path else _key(k)
        if _is_table(v):
            out.append("")
            out.append(f"[{name}]")
            _body(v, name, out, top=False)
        elif top and _is_table_array(v):
            for item in v:
                out.append("")
                out.append(f"[[{name}]]")
                _body(item, name, out, top=False)


def dumps(sweep: dict[str, Any], header: str = "") -> str:
    """TOML text for ``sweep`` (top-level arrays of tables as ``[[name]]``, deeper ones inline)."""
    out = [f"# {line}" if line else "#" for line in header.splitlines()]
    _body(sweep, "", out, top=True)
    return "\n".join(out).lstrip("\n") + "\n"
