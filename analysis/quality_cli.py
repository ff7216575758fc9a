"""``python -m analysis quality``: the end-task quality table (see analysis/quality.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.cliargs import int_list, split_list
from bench.validate import nonneg_int, positive_int

DEFAULT_METHODS = "dense,linrec,performer,mean_pool,pop"


_seeds = int_list("--seeds", 0, "non-negative ints")


def _device(name: str) -> str:
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device: {name!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are supported")
    return str(dev)


def add_quality_parser(sub: Any) -> None:
    from .quality import PRESETS
    from .target_quality import PRESETS as TARGET_PRESETS

    p = sub.add_parser(
        "quality",
        help="train SASRec with each attention method as its core; "
        "HR@10 / NDCG@10 per method x seed (resumable table)",
    )
    p.add_argument(
        "--task",
        choices=["seqrec", "target"],
        default="seqrec",
        help="seqrec: causal self-attention, next item (SASRec); target: candidate attends "
        "over the whole history, DIN-style CTR (analysis/target_quality.py)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="file or folder of a log, or packaged:NAME (default packaged:ml-100k)",
    )
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma list, params as method:key=value (default {DEFAULT_METHODS})",
    )
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma list (default 0,1,2)")
    p.add_argument(
        "--preset",
        choices=sorted(set(PRESETS) | set(TARGET_PRESETS)),
        default="cpu",
        help="budget, per task (default cpu)",
    )
    p.add_argument("--out", required=True, help="output folder (rows.jsonl, results.csv)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--device", default="cpu", help="torch device to train on (default cpu; e.g. cuda)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="seqrec: train nothing; fill the anchor-protocol columns (anchor_*) of finished "
        "rows in --out from their saved best models (analysis/quality_anchor.py)",
    )
    p.set_defaults(func=_cmd)


def _cmd(args: Any) -> int:
    import torch

    from .loaders import load
    from .packaged import resolve
    from .quality import parse_methods, run_quality, summary, summary_markdown

    torch.set_num_threads(args.threads)
    methods = parse_methods(args.methods)
    if args.rescore:
        _check_rescore(args)  # before the log is loaded
    path, fmt, name = resolve(args.data)
    data = load(path, fmt, False, name, None, None, None, None)
    t0 = time.perf_counter()
    device = _device(args.device)
    if args.rescore:
        return _cmd_rescore(args, data, device)
    if args.task == "target":
        if device != "cpu":
            raise SystemExit("--task target trains on the CPU only (no --device yet)")
        return _cmd_target(args, data, methods, t0)
    df = run_quality(
        data, methods, args.seeds, args.preset, args.out, progress=not args.quiet, device=device
    )
    print(f"{len(df)} rows in {args.out}/results.csv ({time.perf_counter() - t0:.0f} s this run)")
    if (df["status"] == "ok").any():
        print(summary_markdown(summary(df)))
    for _, r in df[df["status"] != "ok"].drop_duplicates(["method", "params"]).iterrows():
        print(f"{r['method']} {r['params']}: {r['status']}: {r['reason']}")
    return 0


def _check_rescore(args: Any) -> None:
    from bench.store import LOG_NAME

    if args.task != "seqrec":
        raise SystemExit("--rescore applies to --task seqrec only")
    if not (Path(args.out) / LOG_NAME).exists():
        raise SystemExit(f"--rescore: no rows.jsonl in {args.out}")


def _cmd_rescore(args: Any, data: Any, device: str) -> int:
    from bench.store import write_table

    from .quality import summary, summary_markdown, write_quality_table
    from .quality_rescore import rescore_anchor

    counts = rescore_anchor(data, args.out, device)
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    df = write_quality_table(args.out)
    if (df["status"] == "ok").any():
        write_table(summary(df), args.out, name="summary.csv", parquet=False)
        print(summary_markdown(summary(df)))
    return 0


def _cmd_target(args: Any, data: Any, methods: list[tuple[str, Any]], t0: float) -> int:
    from .target_quality import run_target_quality, target_summary, target_summary_markdown

    df = run_target_quality(
        data, methods, args.seeds, args.preset, args.out, progress=not args.quiet
    )
    print(f"{len(df)} rows in {args.out}/results.csv ({time.perf_counter() - t0:.0f} s this run)")
    if (df["status"] == "ok").any():
        print(target_summary_markdown(target_summary(df)))
    for _, r in df[df["status"] != "ok"].drop_duplicates(["method", "params"]).iterrows():
        print(f"{r['method']} {r['params']}: {r['status']}: {r['reason']}")
    return 0


def add_swap_parser(sub: Any) -> None:
    p = sub.add_parser(
        "swap",
        help="swap svd_exact at rank r into the trained dense SASRec of a quality folder "
        "(no retraining): ΔNDCG@10 with an interval and KL by rank",
    )
    p.add_argument("--quality", required=True, help="folder written by `analysis quality`")
    p.add_argument("--data", default=None, help="the same data the models were trained on")
    p.add_argument(
        "--task",
        choices=["seqrec", "target"],
        default="seqrec",
        help="target: the DIN-style model (dense retrained per row, deterministically; "
        "ΔAUC / ΔGAUC by rank, analysis/target_swap.py)",
    )
    p.add_argument(
        "--ranks",
        type=int_list("--ranks", 1, "ranks >= 1"),
        default=None,
        help="comma list of ranks (default 1..128; target 2..32)",
    )
    p.add_argument("--seeds", type=_seeds, default=None, help="dense runs to use (default all)")
    p.add_argument(
        "--presets",
        default=None,
        help="target: comma list of the presets whose dense runs to use (default all)",
    )
    p.add_argument("--budget", type=float, default=0.005, help="ΔNDCG budget for the rank line")
    p.add_argument(
        "--kl-users",
        type=nonneg_int,
        default=300,
        help="target: test users (sampled across history lengths) whose KL by rank on the "
        "trained model's own Q, K, V goes to QUALITY/kl_by_rank.csv (default 300; 0 = none)",
    )
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=_swap_cmd)


def _swap_cmd(args: Any) -> int:
    import torch

    from .loaders import load
    from .packaged import resolve
    from .quality_swap import markdown, rank_for_budget, run_swap

    torch.set_num_threads(args.threads)
    default = (2, 4, 8, 16, 32) if args.task == "target" else (1, 2, 4, 8, 16, 32, 64, 128)
    ranks = tuple(args.ranks) if args.ranks else default
    path, fmt, name = resolve(args.data)
    data = load(path, fmt, False, name, None, None, None, None)
    if args.task == "target":
        return _target_swap(args, data, ranks)
    df = run_swap(args.quality, data, ranks, args.seeds)
    print(f"{len(df)} rows in {args.quality}/swap.csv")
    for seed, t in df.groupby("seed"):
        r = rank_for_budget(t, args.budget)
        print(
            f"\nseed {seed}: smallest rank with ΔNDCG@10 (filtered) interval above "
            f"-{args.budget:g}: {r if r is not None else 'none of those tried'}"
        )
        print(markdown(t))
    return 0


def _target_swap(args: Any, data: Any, ranks: tuple[int, ...]) -> int:
    from .closing_loop import rank_needed
    from .target_swap import run_target_closing_loop

    presets = split_list(args.presets)
    df, kl = run_target_closing_loop(
        args.quality, data, ranks, args.seeds, kl_users=args.kl_users, presets=presets
    )
    out = _merge_by_model(Path(args.quality) / "swap.csv", df)
    print(f"{len(out)} rows in {args.quality}/swap.csv")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if not kl.empty:
        kl_all = _merge_by_model(Path(args.quality) / "kl_by_rank.csv", kl)
        print(f"{len(kl_all)} rows in {args.quality}/kl_by_rank.csv")
        need = rank_needed(kl)
        need["preset"] = need["user"].str.split("/").str[0]
        cols = [c for c in need.columns if c.startswith("r_kl_")]
        print(
            "rank needed for a KL budget (median over users and seeds; NaN: above the ranks tried)"
        )
        print(need.groupby(["preset", "n_bin"])[cols].median().to_string())
    return 0


def _merge_by_model(out: Path, df: Any) -> Any:
    """Write ``df`` to ``out`` atomically, keeping the rows of the other (preset, seed) models
    already there (one call per seed resumes a cut run); returns the merged table."""
    import pandas as pd

    from bench.store import _atomic_write

    if out.is_file():
        old = pd.read_csv(out)
        keep = ~old.set_index(["preset", "seed"]).index.isin(df.set_index(["preset", "seed"]).index)
        df = pd.concat([old[keep], df], ignore_index=True).sort_values(["preset", "seed"])
    _atomic_write(out, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
    return df
