"""Command line: `python -m reports build --results DIR [--results DIR2 ...] --out OUTDIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.logs import setup_cli_logging

from .load import ReportInputError


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build OUT/index.html and OUT/report.pdf from result tables")
    b.add_argument(
        "--results",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="bench run dir (results.csv [+cascade.csv]), results/spectra, or one dataset dir; "
        "repeatable: runs of one device at different commits, thread counts or folders are "
        "drawn as separate series labelled by run",
    )
    b.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="OUTDIR",
        help="folder for index.html, report.pdf and the README figures",
    )
    b.add_argument(
        "--title",
        default="Efficient attention for lifelong behaviour sequences",
        help="the report's title",
    )
    b.add_argument("--no-pdf", action="store_true", help="skip report.pdf")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    f = sub.add_parser("fixtures", help="write small made-up result tables (for trying the report)")
    f.add_argument("out", type=Path, help="folder to write the made-up tables into")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    setup_cli_logging()
    if extra:  # report it with the subcommand's usage, not the top-level one
        sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.cmd == "fixtures":
        from .fixtures import write_all

        for k, p in write_all(args.out).items():
            print(f"{k}: {p}")
        return 0
    from .build import build

    try:
        written = build(
            args.results,
            args.out,
            title=args.title,
            make_pdf=not args.no_pdf,
            progress=None if args.quiet else lambda m: print(m, file=sys.stderr, flush=True),
        )
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k, v in written.items():
        for p in v if isinstance(v, list) else [v]:
            print(f"{k}: {p}")
    return 0
