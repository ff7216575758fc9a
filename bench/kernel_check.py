"""The GPU issue's kernel check: the fused svd_exact kernel against SDPA at the target case.

    python -m bench.kernel_check --out results/<gpu>/kernels [--n 10000 --m 2048 ...]

At one case (default N = 10,000, M = 2,048, d = 64, bf16, B = 4 users x H = 2 heads,
synthetic power-law [K|V] spectrum as in the paper preset) it
  1. measures the device ceilings (matmul, copy, exp; ``bench.ceilings``),
  2. checks every variant against the torch path (SDPA) on the same inputs, and
  3. times with ``triton.testing.do_bench`` (CUDA events, L2 cleared before each call,
     median) and, where capturable, ``do_bench_cudagraph`` (replays of a CUDA graph: device
     time without the host's launch cost): SDPA dense attend and the suite's dense kernel,
     svd_tokens / linrec / lrea / performer attend on both backends, svd_exact attend on
     both backends for each rank, and every launch plan of a grid (tiles, warps, pipeline
     depth, key splits) for the fused kernel at rank 16,
then writes ``kernel_check.csv`` (one row per timed variant: time, the exp floor, the
fraction of it reached, the ratio to SDPA dense, the error against the torch path) and
prints the table. Needs CUDA and Triton; elsewhere it stops with a message saying so.
The plan grid and the row arithmetic are pure functions, so CPU tests cover them.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import attention_impls as ai

from .config import Case
from .inputs import build_inputs
from .presets import POWERLAW
from .store import write_table


@dataclass(frozen=True)
class CheckCase:
    n: int = 10_000
    m: int = 2_048
    d: int = 64
    batch: int = 4
    heads: int = 2
    dtype: str = "bf16"
    seed: int = 0

    @property
    def bh(self) -> int:
        return self.batch * self.heads

    def bench_case(self, device: str) -> Case:
        fam = tuple(sorted(POWERLAW.items()))
        return Case(
            "dense",
            (),
            "powerlaw",
            tuple((k, v) for k, v in fam if k != "kind"),
            self.batch,
            self.heads,
            self.n,
            self.m,
            self.d,
            self.d,
            self.dtype,
            "cross",
            self.seed,
            1.0,
            0.0,
            device,
        )


def plan_grid(case: CheckCase, head_dim: int) -> list[dict[str, int]]:
    """Launch plans to time: tiles x warps x stages x key splits, leaving out splits shorter
    than one key tile and the [128 x 128]-score tiles at 4 warps for wide heads (spills)."""
    out = []
    for bm, bn, warps, stages, splits in itertools.product(
        (64, 128), (32, 64, 128), (4, 8), (2, 3, 4), (1, 2, 3, 4, 6, 8)
    ):
        if splits > 1 and case.n // splits < bn:
            continue
        if head_dim > 32 and bm == 128 and bn == 128 and warps == 4:
            continue
        out.append(dict(block_m=bm, block_n=bn, num_warps=warps, num_stages=stages, splits=splits))
    return out


def row(
    variant: str,
    ms: float,
    case: CheckCase,
    exp_per_s: float | None,
    dense_ms: float | None,
    err: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """One result row: the exp floor of M x N exponentials (the floor of the exact-softmax
    variants; the cheap attends have no such floor) and the fractions."""
    floor_ms = case.m * case.n * case.bh / exp_per_s * 1e3 if exp_per_s else None
    return {
        "variant": variant,
        "attend_ms_median": ms,
        "exp_floor_ms": floor_ms,
        "fraction_of_exp_floor": floor_ms / ms if (floor_ms and ms) else None,
        "ratio_to_sdpa_dense": ms / dense_ms if (dense_ms and ms) else None,
        "rel_err_vs_torch": err,
        **extra,
    }


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))


def run_check(
    case: CheckCase,
    out_dir: Path,
    ranks: tuple[int, ...] = (4, 8, 16, 32, 64),
    tune_rank: int = 16,
    max_plans: int | None = None,
) -> pd.DataFrame:
    if not torch.cuda.is_available():
        raise SystemExit(
            "bench.kernel_check needs a CUDA device and none is visible; the kernel's "
            "correctness tests run on CPU under Triton's interpreter instead "
            "(pytest tests/test_kernels_flash.py)"
        )
    import triton.testing

    from attention_impls.kernels.flash_small_head import flash_small_head, plan_launch, sm_count

    from .ceilings import ceilings
    from .env import environment

    env = environment("cuda")
    ceil = ceilings("cuda", env.get("device_name") or "", case.dtype)
    inp = build_inputs(case.bench_case("cuda"))
    q, k, v = inp.q, inp.k, inp.v

    def bench(fn) -> float:
        return float(triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median"))

    def bench_graph(fn) -> float | None:
        """Median of CUDA-graph replays (device time without the host's launch cost)."""
        try:
            return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))
        except Exception:  # noqa: BLE001 - not capturable: no graph time
            torch.cuda.synchronize()
            return None

    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        dense = ai.get("dense")
        dstate = dense.prepare(k, v)
        dense_ms = bench(lambda: dense.attend_unchecked(dstate, q))

        def timed(
            variant: str, op: Any, st: Any, err: float | None, **extra: Any
        ) -> dict[str, Any]:
            """One row for ``op``'s attend on state ``st``: eager and graph-replayed times."""

            def fn() -> torch.Tensor:
                return op.attend_unchecked(st, q)

            return row(
                variant,
                bench(fn),
                case,
                ceil.exp_per_s,
                dense_ms,
                err,
                attend_graph_ms=bench_graph(fn),
                **extra,
            )

        rows.append(
            row(
                "dense sdpa",
                dense_ms,
                case,
                ceil.exp_per_s,
                dense_ms,
                0.0,
                rank=None,
                attend_graph_ms=bench_graph(lambda: dense.attend_unchecked(dstate, q)),
            )
        )
        dtri = ai.get("dense", backend="triton")
        rows.append(
            timed(
                "dense triton",
                dtri,
                dstate,
                _rel(dtri.attend(dstate, q), dense.attend(dstate, q)),
                rank=None,
            )
        )
        # the cheap attends, both backends (their targets: <= 0.05 x SDPA dense)
        for name, params in (
            ("svd_tokens", {"rank": 16}),
            ("linrec", {}),
            ("lrea", {"rank": 16}),
            ("performer", {"features": 256}),
        ):
            ref_op = ai.get(name, backend="torch", **params)
            if hasattr(ref_op, "fit"):
                ref_op.fit(k)
            st = ref_op.prepare(k, v)
            ref = ref_op.attend(st, q)
            for backend in ("torch", "triton"):
                op = ai.get(name, backend=backend, **params)
                rows.append(
                    timed(
                        f"{name} {backend}",
                        op,
                        st,
                        _rel(op.attend(st, q), ref),
                        rank=params.get("rank"),
                    )
                )
        for r in ranks:
            tp = ai.get("svd_exact", rank=r, backend="torch")
            tr = ai.get("svd_exact", rank=r, backend="triton")
            state = tp.prepare(k, v)
            ref = tp.attend(state, q)
            rows.append(timed(f"svd_exact r{r} torch", tp, state, 0.0, rank=r))
            rows.append(
                timed(
                    f"svd_exact r{r} triton",
                    tr,
                    state,
                    _rel(tr.attend(state, q), ref),
                    rank=r,
                    **vars(plan_launch(case.m, case.n, case.bh, r, sms=sm_count(q.device))),
                )
            )
            if r != tune_rank:
                continue
            plans = plan_grid(case, r)[:max_plans] if max_plans else plan_grid(case, r)
            for p in plans:
                plan = plan_launch(case.m, case.n, case.bh, r, **p)

                def fn(s=state, plan=plan):
                    return flash_small_head(
                        q, s.u, None, scale=case.d**-0.5, q_proj=s.a, out_proj=s.b, plan=plan
                    )

                try:
                    err = _rel(fn(), ref)
                    ms = bench(fn)
                except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory: a row
                    rows.append(
                        row(
                            f"svd_exact r{r} plan",
                            float("nan"),
                            case,
                            ceil.exp_per_s,
                            dense_ms,
                            None,
                            rank=r,
                            error=str(exc)[:200],
                            **p,
                        )
                    )
                    continue
                rows.append(
                    row(
                        f"svd_exact r{r} plan", ms, case, ceil.exp_per_s, dense_ms, err, rank=r, **p
                    )
                )
    df = pd.DataFrame(rows)
    for key, val in {
        **vars(case),
        "device_name": env.get("device_name"),
        "git_commit": env.get("git_commit"),
        "torch": torch.__version__,
        "peak_exp_per_s": ceil.exp_per_s,
        "peak_source": ceil.source,
        "synthetic": True,
    }.items():
        df[key] = val
    write_table(df, out_dir, name="kernel_check.csv")
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.kernel_check", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--out", required=True, help="directory for kernel_check.csv")
    for name, default in vars(CheckCase()).items():
        ap.add_argument(f"--{name}", type=type(default), default=default)
    ap.add_argument("--max-plans", type=int, default=None, help="time only the first K plans")
    a = ap.parse_args(argv)
    case = CheckCase(**{k: getattr(a, k) for k in vars(CheckCase())})
    df = run_check(case, Path(a.out), max_plans=a.max_plans)
    best = df[df["variant"].str.endswith("plan")].nsmallest(5, "attend_ms_median")
    cols = [
        "variant",
        "attend_ms_median",
        "attend_graph_ms",
        "ratio_to_sdpa_dense",
        "fraction_of_exp_floor",
        "rel_err_vs_torch",
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[~df["variant"].str.endswith("plan")][cols].to_string(index=False))
        print("\nfastest launch plans:")
        print(
            best[
                [c for c in cols if c != "attend_graph_ms"]
                + ["block_m", "block_n", "num_warps", "num_stages", "splits"]
            ].to_string(index=False)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
