"""Argument-parsing helpers shared by the bench and analysis command lines.

- :func:`parse`: an unknown option after a subcommand is reported with *that subcommand's*
  usage (argparse's subparsers hand unknown options up to the top-level parser, whose usage
  says nothing about the subcommand).
- :func:`split_list`: one list syntax everywhere: ``--methods dense svd_exact``,
  ``--methods dense,svd_exact`` and mixtures all mean the same.
- :func:`int_list` / :func:`positive_floats`: argparse types for one comma list of numbers
  (seeds, lengths, temperatures) with the flag and the bound named in the error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse has no public accessor for the subparsers
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, dest: str = "cmd"
) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if extra:
        _subparser(parser, getattr(args, dest, None)).error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    return args


def split_list(
    values: Iterable[str] | str | None, cast: Callable[[str], Any] = str
) -> list[Any] | None:
    """Flatten space- and comma-separated values; None stays None."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return [cast(x.strip()) for v in values for x in str(v).split(",") if x.strip()]


def int_list(flag: str, minimum: int, need: str) -> Callable[[str], list[int]]:
    """``"0,1,2"`` -> [0, 1, 2]; every value >= ``minimum`` (``need`` says so in the error)."""

    def parse_ints(value: str) -> list[int]:
        try:
            vals = [int(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag}: {value!r} is not a comma list of ints"
            ) from None
        if not vals or min(vals) < minimum:
            raise argparse.ArgumentTypeError(f"{flag}: {value!r} needs {need}")
        return vals

    return parse_ints


def positive_floats(value: str) -> list[float]:
    """``"0.5,1,2"`` -> [0.5, 1.0, 2.0]; every value finite and > 0 (query temperatures)."""
    try:
        ts = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma list of numbers") from None
    if not ts or any(not (t > 0 and math.isfinite(t)) for t in ts):
        raise argparse.ArgumentTypeError(f"{value!r}: temperatures must be finite and > 0")
    return ts
