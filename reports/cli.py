"""Command line: `python -m reports build --results DIR [--results DIR2 ...] --out OUTDIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .load import ReportInputError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build OUT/index.html and OUT/report.pdf from result tables")
    b.add_argument("--results", action="append", required=True, type=Path, metavar="DIR",
                   help="bench run dir (results.csv [+cascade.csv]), results/spectra, or one dataset dir; repeatable")
    b.add_argument("--out", required=True, type=Path, metavar="OUTDIR")
    b.add_argument("--title", default="Efficient attention for lifelong behaviour sequences")
    b.add_argument("--no-pdf", action="store_true", help="skip report.pdf")
    f = sub.add_parser("fixtures", help="write small made-up result tables (for trying the report)")
    f.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "fixtures":
        from .fixtures import write_all

        for k, p in write_all(args.out).items():
            print(f"{k}: {p}")
        return 0
    from .build import build

    try:
        written = build(args.results, args.out, title=args.title, make_pdf=not args.no_pdf)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k, v in written.items():
        for p in v if isinstance(v, list) else [v]:
            print(f"{k}: {p}")
    return 0
