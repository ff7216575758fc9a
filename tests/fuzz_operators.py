"""Fuzz every operator with generated calls (issue 12): the property of ``op_props.py`` on
many random cases, without stopping at the first failure.

    PYTHONPATH=. python tests/fuzz_operators.py --calls 10000 [--seed 0] [--out fuzz.json]

Prints the number of operator calls, the outcomes (ok / each kind of ValueError), every
failure (an AssertionError of the property, or any other exception: a traceback is a
failure) with its case, the time, and exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from op_props import METHODS, Case, Tally, cases, check_case  # noqa: E402


def fuzz(calls: int, rng_seed: int) -> dict:
    tally = Tally()
    failures: list[dict] = []
    per_method = -(-calls // len(METHODS))

    for method in METHODS:

        @seed(rng_seed)
        @settings(
            max_examples=per_method,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(cases(methods=(method,)))
        def run(case: Case) -> None:
            try:
                check_case(case, tally)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the run
                failures.append(
                    {
                        "case": repr(case),
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=3),
                    }
                )

        run()
    return {"calls": tally.calls, "outcomes": tally.outcomes, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--calls", type=int, default=10_000, help="operator calls in all (split over the methods)"
    )
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (the run is reproducible)")
    ap.add_argument("--out", type=Path, help="write the summary as JSON here")
    args = ap.parse_args(argv)
    if args.calls < 1:
        ap.error("--calls must be >= 1")
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fuzz(args.calls, args.seed)
    result.update(
        wall_s=round(time.perf_counter() - t0, 1),
        cpu_s=round(time.process_time() - c0, 1),
        seed=args.seed,
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
    )
    print(
        f"{result['calls']} operator calls in {result['wall_s']} s wall ({result['cpu_s']} s CPU), "
        f"seed {args.seed}, torch {torch.__version__}"
    )
    for outcome, count in sorted(result["outcomes"].items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {outcome}")
    print(f"{len(result['failures'])} failures")
    for f in result["failures"][:20]:
        print("-", f["error"][:300], "\n ", f["case"][:400])
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.out)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
