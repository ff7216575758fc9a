"""Argument-parsing helpers shared by the bench and analysis command lines.

- :func:`parse`: an unknown option after a subcommand is reported with *that subcommand's*
  usage (argparse's subparsers hand unknown options up to the top-level parser, whose usage
  says nothing about the subcommand).
- :func:`split_list`: one list syntax everywhere: ``--methods dense svd_exact``,
  ``--methods dense,svd_exact`` and mixtures all mean the same.
"""

from __future__ import annotations

import argparse
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
