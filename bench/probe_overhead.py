"""CPU probes of issue 11: validation cost and allocator churn (thread CPU time).

``python -m bench.probe_overhead checked [--n 4096 16384] [--rounds 11] [--bh 1]
[--malloc tuned|default]``
    checked (``prepare`` / ``attend`` / ``forward``) against unchecked
    (``prepare_unchecked`` / ``attend_unchecked``) calls of every operator, in interleaved
    rounds (the order alternates), one thread; prints the median ratio checked / unchecked
    with a bootstrap 95 % interval over rounds.
``python -m bench.probe_overhead allocator [--rounds 5]``
    minor page faults (``ru_minflt``) and thread CPU time per forward of performer (and its
    out-of-place reference path), svd_exact and dense, each round one fresh process with and
    one without
    ``tune_glibc_malloc`` (the order alternates).

Run from the repository root (the allocator probe starts ``python -m bench.probe_overhead
alloc-child`` processes). Inputs are synthetic: B = H = 1 (``--bh`` sets B), M = 1024,
d = dv = 64, fp32, [K|V] of rank 16 (unit mean square), Gaussian queries; seed 0. Operators at their defaults (rank 16, m = 256); LREA's
projection is fitted once first, as the harness does.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

import attention_impls as ai

METHODS = ("dense", "svd_exact", "svd_tokens", "linrec", "lrea", "performer")
ALLOC_METHODS = ("performer", "performer-reference", "svd_exact", "dense")


def make_inputs(
    n: int, m: int = 1024, d: int = 64, seed: int = 0, bh: int = 1
) -> tuple[torch.Tensor, ...]:
    """[bh, 1, ., d] inputs: rank-16 [K|V] at unit mean square, Gaussian queries (bh = 1 is
    the probe's default, the inputs it always used)."""
    g = torch.Generator().manual_seed(seed)
    kv = torch.randn(bh, 1, n, 16, generator=g) @ torch.randn(16, 2 * d, generator=g)
    kv = kv / kv.pow(2).mean().sqrt()
    q = torch.randn(bh, 1, m, d, generator=g)
    return q, kv[..., :d].contiguous(), kv[..., d:].contiguous()


def make_op(name: str, k: torch.Tensor):
    op = ai.get(name)
    if hasattr(op, "fit"):
        op.fit(k)
    return op


def per_call_s(fn: Callable[[], object], target_s: float = 0.02) -> tuple[float, int]:
    """Thread CPU seconds of one warm call, and the calls per sample to reach ``target_s``."""
    fn()
    start = time.thread_time()
    fn()
    once = max(time.thread_time() - start, 1e-6)
    return once, max(1, min(50, int(target_s / once)))


def thread_time_per_call(fn: Callable[[], object], inner: int) -> float:
    start = time.thread_time()
    for _ in range(inner):
        fn()
    return (time.thread_time() - start) / inner


def median_ci(x: np.ndarray, seed: int = 0, reps: int = 2000) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(x, size=(reps, len(x)), replace=True), axis=1)
    return float(np.median(x)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def phase_pairs(op, state, q, k, v) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """(checked, unchecked) call of each phase."""
    return {
        "prepare": (lambda: op.prepare(k, v), lambda: op.prepare_unchecked(k, v)),
        "attend": (lambda: op.attend(state, q), lambda: op.attend_unchecked(state, q)),
        "forward": (
            lambda: op.forward(q, k, v),
            lambda: op.attend_unchecked(op.prepare_unchecked(k, v), q),
        ),
    }


def checked(ns: list[int], rounds: int, methods: list[str], bh: int = 1) -> list[dict]:
    rows = []
    for n in ns:
        q, k, v = make_inputs(n, bh=bh)
        for name in methods:
            op = make_op(name, k)
            with torch.inference_mode():
                state = op.prepare(k, v)
                pairs = phase_pairs(op, state, q, k, v)
                for phase, (chk, unchk) in pairs.items():
                    _, inner = per_call_s(unchk)
                    chk()
                    ratios, t_chk, t_unchk = [], [], []
                    for r in range(rounds):
                        order = (chk, unchk) if r % 2 == 0 else (unchk, chk)
                        times = {id(f): thread_time_per_call(f, inner) for f in order}
                        t_chk.append(times[id(chk)])
                        t_unchk.append(times[id(unchk)])
                        ratios.append(times[id(chk)] / times[id(unchk)])
                    med, lo, hi = median_ci(np.array(ratios))
                    row = {
                        "n": n,
                        "bh": bh,
                        "method": name,
                        "phase": phase,
                        "ratio": med,
                        "lo": lo,
                        "hi": hi,
                        "checked_ms": 1e3 * float(np.median(t_chk)),
                        "unchecked_ms": 1e3 * float(np.median(t_unchk)),
                        "rounds": rounds,
                        "inner": inner,
                    }
                    rows.append(row)
                    print(
                        f"N={n:<6d} {'' if bh == 1 else f'B={bh} '}{name:10s} {phase:8s} "
                        f"checked/unchecked {med:.3f} [{lo:.3f}, {hi:.3f}]  "
                        f"({row['checked_ms']:.2f} ms vs {row['unchecked_ms']:.2f} ms, {inner} calls x {rounds} rounds)",
                        flush=True,
                    )
    return rows


def forward_fn(
    name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> Callable[[], object]:
    """An unchecked forward; ``performer-reference``: Performer's out-of-place reference
    feature maps (what ``prepare``/``attend`` ran before they worked in place)."""
    if name != "performer-reference":
        op = make_op(name, k)
        return lambda: op.attend_unchecked(op.prepare_unchecked(k, v), q)
    from attention_impls.performer import key_features, query_features

    op = make_op("performer", k)
    omega, n = op.features_for(k.shape[-1]), k.shape[2]

    def ref() -> torch.Tensor:
        phi, _ = key_features(k, omega, op.eps, None)
        kv, ks = phi.transpose(-1, -2) @ v / n, phi.sum(-2) / n
        pq = query_features(q, omega, op.eps)
        return (pq @ kv) / (pq @ ks[..., None])

    return ref


def alloc_child(tune: bool, n: int, calls: int) -> dict:
    """One process: per-forward minor faults and thread CPU time of ALLOC_METHODS."""
    torch.set_num_threads(1)
    note = "off"
    if tune:
        from attention_impls.allocator import tune_glibc_malloc

        note = tune_glibc_malloc().describe()
    q, k, v = make_inputs(n)
    out = {"tuned": tune, "note": note}
    with torch.inference_mode():
        for name in ALLOC_METHODS:
            fwd = forward_fn(name, q, k, v)

            for _ in range(3):
                fwd()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.thread_time()
            for _ in range(calls):
                fwd()
            out[name] = {
                "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / calls,
                "ms": 1e3 * (time.thread_time() - t0) / calls,
            }
    return out


def allocator(rounds: int, n: int, calls: int) -> list[dict]:
    results = []
    for r in range(rounds):
        for tune in (False, True) if r % 2 == 0 else (True, False):
            cmd = [
                sys.executable,
                "-m",
                "bench.probe_overhead",
                "alloc-child",
                "--n",
                str(n),
                "--calls",
                str(calls),
            ] + (["--tune"] if tune else [])
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for name in ALLOC_METHODS:
        off = [x[name] for x in results if not x["tuned"]]
        on = [x[name] for x in results if x["tuned"]]
        ratio = np.array([a["ms"] / b["ms"] for a, b in zip(on, off, strict=True)])
        med, lo, hi = median_ci(ratio)
        print(
            f"N={n} {name:10s} faults/forward off {np.median([x['faults'] for x in off]):.0f} "
            f"on {np.median([x['faults'] for x in on]):.0f}; ms/forward off "
            f"{np.median([x['ms'] for x in off]):.2f} on {np.median([x['ms'] for x in on]):.2f}; "
            f"on/off {med:.3f} [{lo:.3f}, {hi:.3f}] ({rounds} process pairs x {calls} calls)",
            flush=True,
        )
    print("tuning:", next(x["note"] for x in results if x["tuned"]))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("checked")
    c.add_argument("--n", type=int, nargs="+", default=[4096, 16384])
    c.add_argument("--rounds", type=int, default=11)
    c.add_argument("--methods", nargs="+", default=list(METHODS))
    c.add_argument(
        "--bh",
        type=int,
        default=1,
        help="users per call (B; H = 1): the checks' fixed cost is per call, the work per user",
    )
    c.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="tuned (default): glibc malloc tuned first, as the harness's CPU runs; default: not",
    )
    a = sub.add_parser("allocator")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--n", type=int, default=16384)
    a.add_argument("--calls", type=int, default=10)
    ch = sub.add_parser("alloc-child")
    ch.add_argument("--n", type=int, default=16384)
    ch.add_argument("--calls", type=int, default=10)
    ch.add_argument("--tune", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "checked":
        from .peers import malloc_state

        print(f"# malloc tuning {malloc_state(args.malloc)}", flush=True)
        checked(args.n, args.rounds, args.methods, args.bh)
    elif args.cmd == "allocator":
        allocator(args.rounds, args.n, args.calls)
    else:
        print(json.dumps(alloc_child(args.tune, args.n, args.calls)))


if __name__ == "__main__":
    main()
