"""``python -m analysis seeds-regime``: KL by rank at the seeds' regime (N = 1k..64k) on
synthetic-from-real users of one dataset, and (with ``--bench``) the decision at M = 256, 1k,
4k from it; see analysis/seeds_regime.py for how the inputs are made."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.cliargs import int_list, positive_floats
from bench.validate import nonneg_int, positive_int

from .seeds_regime import (
    ROUTE,
    SEEDS_M,
    SEEDS_N,
    TEMPERATURES,
    calibrate_scale,
    read_profile,
    real_reference,
    synthetic_kl,
)


def add_seeds_regime_parser(sub: Any) -> None:
    p = sub.add_parser(
        "seeds-regime",
        help="KL by rank and the decision at N = 1k..64k, M = 256..4k on synthetic users "
        "with a dataset's fitted spectrum and score scale (synthetic-from-real)",
    )
    p.add_argument(
        "--spectra", required=True, help="a dataset's spectra folder (profile.json, kl_by_rank.csv)"
    )
    p.add_argument("--out", default=None, help="output folder (default SPECTRA/seeds-regime)")
    p.add_argument(
        "--n",
        type=int_list("--n", 2, "ints >= 2"),
        default=list(SEEDS_N),
        help="lengths N (comma list)",
    )
    p.add_argument(
        "--m",
        type=int_list("--m", 2, "ints >= 2"),
        default=list(SEEDS_M),
        help="candidates M for decide",
    )
    p.add_argument(
        "--users", type=positive_int, default=4, help="synthetic users per N (default 4)"
    )
    p.add_argument("--queries", type=positive_int, default=64, help="queries per user (default 64)")
    p.add_argument(
        "--temperatures",
        type=positive_floats,
        default=list(TEMPERATURES),
        help="multiples of the calibrated score scale for kl_by_temperature.csv",
    )
    p.add_argument("--bench", nargs="+", default=None, help="bench table(s): also decide")
    p.add_argument("--quality", default=None, help="`analysis quality` results for decide")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the synthetic users")
    p.set_defaults(func=cmd_seeds_regime)


def cmd_seeds_regime(args: argparse.Namespace) -> int:
    from bench.outdir import writable_dir
    from bench.store import _atomic_write

    from .closing_loop import by_temperature, rank_needed, rank_needed_summary

    spectra = Path(args.spectra)
    out = Path(args.out) if args.out else spectra / "seeds-regime"
    writable_dir(out)
    ns = tuple(args.n)
    m = ",".join(map(str, args.m))
    temps = sorted(set(args.temperatures) | {1.0})
    path, desc = read_profile(spectra)
    route = str(desc.get("route", "sasrec"))
    t0 = time.perf_counter()
    ref_kl, ref_n, ref_bin, ref_rank = real_reference(spectra, route)
    scale = calibrate_scale(spectra, ref_kl, ref_n, rank=ref_rank)
    print(
        f"score scale {scale:.3g}: the synthetic users' median KL at rank {ref_rank} equals the "
        f"real {route} users' {ref_kl:.3g} in N bin {ref_bin} (median N {ref_n})"
    )
    by_t = {}
    for t in temps:
        by_t[t] = synthetic_kl(
            spectra,
            ns,
            args.users,
            args.queries,
            methods=("svd_exact",),
            scale=scale * t,
            seed=args.seed,
        )
    kl = by_t[1.0]
    write = lambda df, name: _atomic_write(  # noqa: E731
        out / name, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g")
    )
    write(kl, "kl_by_rank.csv")
    summ = rank_needed_summary(rank_needed(kl))
    write(summ, "rank_needed_summary.csv")
    write(by_temperature(by_t), "kl_by_temperature.csv")
    meta = {
        "what": f"synthetic-from-real: {args.users} synthetic users per N with the fitted "
        f"spectrum of {path} (rank <= d) and the real score scale",
        "route": ROUTE,
        "profile": str(path),
        "score_scale": scale,
        "calibration": {
            "route": route,
            "rank": ref_rank,
            "kl_median": ref_kl,
            "n_bin": ref_bin,
            "n_median": ref_n,
        },
        "n": list(ns),
        "users": args.users,
        "queries": args.queries,
        "seed": args.seed,
        "temperatures": temps,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _atomic_write(
        out / "seeds_regime.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1))
    )
    print(summ.to_string(index=False))
    if not args.bench:
        print(
            f"wrote {out}; decide with: python -m analysis decide --spectra {out} --m {m} "
            f"--bench BENCH BENCH-seeds-regime --targeted-out BENCH-seeds-regime --out {out}"
        )
        return 0
    from .cli import main

    # its sweep is a folder beside the bench table, not inside it (decide reads every
    # results.csv under a --bench folder), so the real-data decisions keep their rows
    first = Path(args.bench[0])
    seeds_out = str(first.with_name(first.name + "-seeds-regime"))
    argv = ["decide", "--spectra", str(out), "--m", m, "--out", str(out)]
    benches = [*args.bench] + ([seeds_out] if Path(seeds_out).is_dir() else [])
    argv += ["--targeted-out", seeds_out, "--bench", *dict.fromkeys(benches)]
    if args.quality:
        argv += ["--quality", args.quality]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    text = buf.getvalue()
    _atomic_write(out / "verdict.txt", lambda tmp: Path(tmp).write_text(text))
    sys.stdout.write(text)
    return rc
