"""Command line: ``python -m analysis spectrum|kl|kv|decide|findings|all|synthlog|quality|swap|seeds-regime``.

Lists take either syntax: ``--embedding ppmi sasrec`` or ``--embedding ppmi,sasrec``.

Examples::

    python -m analysis spectrum --data ../shared/data/ml-1m --out results/spectra/ml-1m
    python -m analysis spectrum --embedding ppmi,sasrec,random --kl --out out/ml100k   # packaged data
    python -m analysis decide --spectra results/spectra/ml-1m --bench results/cpu --out results/spectra/ml-1m
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.cliargs import parse, positive_floats, split_list
from bench.logs import setup_cli_logging
from bench.validate import Rule, arg_type, nonneg_int, positive_float, positive_int

from . import embeddings as E
from .cluster import add_spectrum_args
from .fit import fit_profile, write_profile
from .loaders import FORMATS, Interactions, check_encoding, check_name, load
from .packaged import DEFAULT_DATA, resolve
from .quality_cli import add_quality_parser, add_swap_parser
from .seeds_regime_cli import add_seeds_regime_parser
from .spectra import user_table
from .summaries import headline, scree, summarise
from .synthlog import add_synthlog_parser

CSV_LIMIT_MB = 5.0


BYO = "byo"  # the route of --item-embeddings (byo-h<i> per head of a multi-head --wqkv)


def _routes(value: str) -> list[str]:
    routes = [r.strip() for r in value.split(",") if r.strip()]
    bad = [r for r in routes if r not in (*E.ROUTES, BYO)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown route(s) {bad}; choose from {(*E.ROUTES, BYO)} (byo: --item-embeddings)"
        )
    return routes


def _result_routes(value: str) -> list[str]:
    """Routes as they appear in kl_by_rank.csv: the built-in ones, byo and byo-h<i>."""
    routes = [r.strip() for r in value.split(",") if r.strip()]
    bad = [
        r for r in routes if r not in (*E.ROUTES, BYO, "kv") and not re.fullmatch(r"byo-h\d+", r)
    ]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown route(s) {bad}; choose from {(*E.ROUTES, BYO, 'kv')} or byo-h<i>"
        )
    return routes


def _checked(fn: Any) -> Any:
    """An argparse type from a checker that raises ValueError (its message shown as is)."""

    def parse(value: str) -> Any:
        try:
            return fn(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help=f"file or folder of a log, or packaged:NAME (default {DEFAULT_DATA})",
    )
    p.add_argument("--format", choices=FORMATS, default=None, help="override format autodetection")
    p.add_argument(
        "--name",
        default=None,
        type=_checked(check_name),
        help="dataset name in the outputs (default: from the path; no '/' or '..')",
    )
    p.add_argument(
        "--encoding",
        default=None,
        type=_checked(check_encoding),
        help="text encoding of the log (default utf-8; MovieLens .dat: latin-1)",
    )
    p.add_argument(
        "--skip-malformed",
        action="store_true",
        help="skip and count malformed rows instead of failing",
    )
    p.add_argument("--user-col", default=None, help="user column of a CSV/TSV/parquet log")
    p.add_argument("--item-col", default=None, help="item column of a CSV/TSV/parquet log")
    p.add_argument("--time-col", default=None, help="timestamp column (orders each history)")
    p.add_argument(
        "--embedding",
        type=_routes,
        nargs="+",
        default=["ppmi", "random"],
        help="embedding routes: ppmi sasrec random byo (space- or comma-separated; byo = "
        "--item-embeddings, added when that is given)",
    )
    _add_byo_args(p)
    p.add_argument(
        "--dim", type=positive_int, default=64, help="embedding dimension d (default 64)"
    )
    p.add_argument(
        "--seed", type=nonneg_int, default=0, help="seed of embeddings and user sampling"
    )
    p.add_argument("--window", type=positive_int, default=5, help="PPMI co-occurrence window")
    p.add_argument(
        "--cache", default=str(E.DEFAULT_CACHE), help="embedding cache folder ('none' disables)"
    )
    p.add_argument(
        "--sasrec-epochs", type=positive_int, default=None, help="SASRec training epochs bound"
    )
    p.add_argument(
        "--sasrec-seconds", type=positive_float, default=None, help="training time bound"
    )
    p.add_argument(
        "--sasrec-model",
        default=None,
        help="a dense SASRec trained by `analysis quality` (its models/*.pt): the sasrec "
        "route reads it instead of training a short one",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch/BLAS CPU threads (default: the idle cores, see bench/threads.py)",
    )


def _add_byo_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own item embeddings (route byo; docs/analysis.md)")
    g.add_argument(
        "--item-embeddings",
        default=None,
        metavar="FILE",
        help=".npy [items, d] (row i = item id i, or --item-ids), .npz/.safetensors (item or "
        "embeddings, optional ids) or parquet (id column + one list or d numeric columns); "
        "adds the route byo",
    )
    g.add_argument(
        "--item-ids", default=None, metavar="FILE", help="ids of a .npy table's rows (.npy or text)"
    )
    g.add_argument(
        "--embeddings-id-col",
        default=None,
        help="id column of a parquet table (default: item, item_id or id)",
    )
    g.add_argument(
        "--max-unknown-ids",
        type=arg_type(Rule("float", 0, 1)),
        default=0.5,
        help="largest share of the file's ids that may be unknown to the log (default 0.5)",
    )
    g.add_argument(
        "--wqkv",
        default=None,
        metavar="FILE",
        help=".npz/.safetensors with wq, wk, wv [d, d_head] or [heads, d, d_head]: K = E W_k, "
        "V = E W_v, Q = E W_q (one route byo-h<i> per head)",
    )
    g.add_argument(
        "--byo-queries",
        choices=("behaviours", "candidates"),
        default=None,
        help="KL queries of route byo: the user's own behaviours (default with --wqkv) or random "
        "candidate items (default without)",
    )


def _check_byo_args(args: argparse.Namespace) -> None:
    """byo in the routes exactly when --item-embeddings is given; its options need it."""
    given = getattr(args, "item_embeddings", None)
    if given and BYO not in args.embedding:
        args.embedding = [*args.embedding, BYO]
    if BYO in args.embedding and not given:
        raise ValueError("route byo needs --item-embeddings FILE (your item table)")
    for opt in ("item_ids", "embeddings_id_col", "wqkv", "byo_queries"):
        if getattr(args, opt, None) is not None and not given:
            raise ValueError(f"--{opt.replace('_', '-')} needs --item-embeddings FILE")


def load_data(args: argparse.Namespace) -> Interactions:
    path, fmt, name = resolve(args.data)
    data = load(
        path,
        args.format or fmt,
        args.skip_malformed,
        args.name or name,
        args.user_col,
        args.item_col,
        args.time_col,
        args.encoding,
    )
    return data


def print_data(data: Interactions) -> None:
    d = data.describe()
    print(f"data: {d['dataset']} ({d['format']}) from {d['source']}")
    print(
        f"  users {d['users']:,}  items {d['items']:,}  interactions {d['interactions']:,}  "
        f"median N {d['len_p50']:g}  max N {d['len_max']:,}  users with N>=1000: {d['users_ge_1000']}"
    )
    print(f"  order: {d['order_note']}")
    if d["skipped_rows"]:
        print(f"  skipped rows: {d['skipped_rows']:,}")
        for reason, n in d["skipped_reasons"].items():
            print(f"    {n:,} x {reason}")
    else:
        print("  skipped rows: 0")
    if d["held_out"]:
        print(f"  {d['held_out_note']}")


def _check_cache(args: argparse.Namespace) -> None:
    from bench.outdir import writable_dir

    if str(args.cache).lower() != "none":
        writable_dir(args.cache, "--cache")


def _embeddings(data: Interactions, args: argparse.Namespace) -> dict[str, E.RouteEmbeddings]:
    cache = None if str(args.cache).lower() == "none" else Path(args.cache)
    out: dict[str, E.RouteEmbeddings] = {}
    for route in args.embedding:
        t0 = time.perf_counter()
        if route == BYO:
            out.update(_byo(data, args, t0))
            continue
        emb = E.build(
            data,
            route,
            args.dim,
            args.seed,
            cache,
            args.window,
            args.sasrec_epochs,
            args.sasrec_seconds,
            progress=not args.quiet,
            sasrec_model=getattr(args, "sasrec_model", None),
        )
        msg = f"embeddings {route}: {emb.item.shape} in {time.perf_counter() - t0:.1f} s ({emb.meta.get('cache', 'no cache')})"
        print(msg)
        if route == "sasrec":
            m = emb.meta["metrics"]
            pop = (
                f" (popularity: HR@10 {m['pop_hr@10']:.4f}, NDCG@10 {m['pop_ndcg@10']:.4f})"
                if "pop_hr@10" in m
                else ""
            )
            filt = (
                f", seen filtered: HR@10 {m['hr@10_filtered']:.4f} NDCG@10 "
                f"{m['ndcg@10_filtered']:.4f}"
                if "ndcg@10_filtered" in m
                else ""
            )
            print(
                f"  sasrec HR@10 {m['hr@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f} over "
                f"{m['eval_users']:,} users{filt}{pop}; {emb.meta['epochs_run']} epochs, "
                f"{emb.meta['train_seconds']} s; {emb.meta['eval_protocol']}"
                + (f"; trained by {emb.meta['trained_by']}" if "trained_by" in emb.meta else "")
            )
        out[route] = emb
    return out


def _byo(data: Interactions, args: argparse.Namespace, t0: float) -> dict[str, E.RouteEmbeddings]:
    from .byo_embeddings import byo_routes

    routes = byo_routes(
        data.items,
        args.item_embeddings,
        args.item_ids,
        args.embeddings_id_col,
        args.max_unknown_ids,
        args.wqkv,
        args.byo_queries,
    )
    first = next(iter(routes.values()))
    ids = first.meta["ids"]
    print(
        f"embeddings byo: {first.item.shape} from {args.item_embeddings} ({first.meta['read_as']}) "
        f"in {time.perf_counter() - t0:.1f} s; every one of the log's {ids['log_items']:,} items "
        f"has a row; {ids['unknown_ids']:,} of the file's {ids['file_rows']:,} ids are not in "
        f"the log ({ids['unknown_fraction']:.1%}, at most {ids['max_unknown_fraction']:.0%} allowed)"
    )
    if first.w_k is not None:
        print(
            f"  W_q/W_k/W_v from {args.wqkv}: {first.meta['heads']} head(s), d_head "
            f"{first.meta['d_head']} -> route(s) {', '.join(routes)}; K = E W_k, V = E W_v"
        )
    print(
        "  KL queries: "
        + (
            "the user's own behaviours (Q = E_u W_q: self-attention over the sequence)"
            if first.meta["queries"] == "behaviours"
            else "random candidate items (and the held-out item when known)"
        )
    )
    return routes


def _matrices(emb: E.RouteEmbeddings) -> list[tuple[str, np.ndarray | None]]:
    if emb.w_k is None:
        return [("x", None)]
    return [("x", None), ("k", emb.w_k), ("kv", np.concatenate([emb.w_k, emb.w_v], axis=1))]


USERS_MIN_N_WHEN_LARGE = 16


def _write_users(users: pd.DataFrame, out: Path) -> str:
    """users.csv; when that would exceed CSV_LIMIT_MB (logs of many short users), only users
    with N >= USERS_MIN_N_WHEN_LARGE are written (the summaries always cover every user)."""
    users = users.copy()
    for c in ("effective_rank", "stable_rank", "s1"):
        users[c] = users[c].astype(float).round(4)
    text = users.to_csv(index=False)
    note = "users.csv (all users)"
    if len(text) / 2**20 > CSV_LIMIT_MB:
        full_mb = len(text) / 2**20
        users = users[users["n"] >= USERS_MIN_N_WHEN_LARGE]
        text = users.to_csv(index=False)
        note = (
            f"users.csv (users with N >= {USERS_MIN_N_WHEN_LARGE} only: all users would be "
            f"{full_mb:.1f} MB; summary.csv covers every user)"
        )
    (out / "users.parquet").unlink(missing_ok=True)
    if len(text) / 2**20 > CSV_LIMIT_MB:
        users.to_parquet(out / "users.parquet", index=False)
        (out / "users.csv").unlink(missing_ok=True)
        return note.replace("users.csv", "users.parquet")
    (out / "users.csv").write_text(text)
    return note


def cmd_spectrum(args: argparse.Namespace) -> int:
    from bench.outdir import writable_dir

    if args.cluster:  # bucketed by user, one task per bucket (analysis/cluster.py)
        from .cluster import cmd_spectrum_cluster

        if args.item_embeddings:
            raise ValueError(
                "--item-embeddings is not read with --cluster; a cluster run takes its item "
                "table from --item-table FILE.npy"
            )

        return cmd_spectrum_cluster(args)
    t_all = time.perf_counter()
    out = writable_dir(args.out)  # before any work: a file or read-only --out fails here
    _check_cache(args)
    _check_byo_args(args)
    data = load_data(args)
    print_data(data)
    embs = _embeddings(data, args)
    lengths = data.lengths()
    tables, screes, timings, profiles = [], [], {}, {}
    for route, emb in embs.items():
        for matrix, proj in _matrices(emb):
            t0 = time.perf_counter()
            table, spectra = user_table(
                data.sequences, emb.item, data.name, route, matrix, data.users, proj
            )
            dt = time.perf_counter() - t0
            timings[f"{route}/{matrix}"] = round(dt, 3)
            print(
                f"spectra {route}/{matrix}: {data.n_users:,} users x (uncentred + centred), "
                f"dim {table['dim'].iloc[0]}, in {dt:.2f} s"
            )
            tables.append(table)
            for centred, s in spectra.items():
                screes.append(scree(s, lengths, route, matrix, centred))
            if route != "random" or len(embs) == 1:
                try:
                    profiles[f"{route}-{matrix}"] = fit_profile(
                        spectra[False], lengths, data.name, route, matrix
                    )
                except ValueError as exc:
                    print(f"  no profile for {route}/{matrix}: {exc}")
    users = pd.concat(tables, ignore_index=True)
    summary = summarise(users)
    users_file = _write_users(users, out)
    summary.to_csv(out / "summary.csv", index=False)
    pd.concat(screes, ignore_index=True).to_csv(out / "scree.csv", index=False, float_format="%.6g")
    if profiles:
        (out / "profiles").mkdir(exist_ok=True)
        for key, prof in profiles.items():
            write_profile(prof, out / "profiles" / f"{key}.json")
        prefer = ("byo-k", "byo-h0-k", "sasrec-k", "byo-x", "byo-h0-x", "ppmi-x")  # own model first
        primary = next((k for k in prefer if k in profiles), next(iter(profiles)))
        write_profile(profiles[primary], out / "profile.json")
        print(
            f"profile.json <- {primary}: {profiles[primary]['model']} {profiles[primary]['params']}, "
            f"floor {profiles[primary]['noise_floor']:.3g}, s1/sqrt(N) {profiles[primary]['s1_per_sqrt_n']:.3g}"
        )
    kl_note = None
    if args.kl:
        kl_note = _run_kl(data, embs, args, out)
    meta: dict[str, Any] = {
        "data": data.describe(),
        "routes": {r: {k: v for k, v in e.meta.items() if k != "cache"} for r, e in embs.items()},
        "spectra_seconds": timings,
        "users_file": users_file,
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    if kl_note:
        meta["kl"] = kl_note
    (out / "dataset.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print("\nmedian rank measures at N >= 1000 (uncentred / centred):")
    top = headline(summary)
    print(top.to_string(index=False) if not top.empty else "  (no user with N >= 1000)")
    print(f"per-user table: {users_file}")
    print(
        f"\nwrote {out}/{{{users_file.split()[0]},summary.csv,scree.csv,profile.json,dataset.json}} "
        f"in {meta['total_seconds']} s"
    )
    return 0


def _run_kl(
    data: Interactions, embs: dict[str, E.RouteEmbeddings], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    from .closing_loop import (
        bound_vs_measured,
        by_temperature,
        kl_by_rank,
        rank_needed,
        rank_needed_summary,
    )

    temps = sorted(set(getattr(args, "temperatures", None) or [1.0]) | {1.0})
    by_t: dict[float, list[pd.DataFrame]] = {t: [] for t in temps}
    t0 = time.perf_counter()
    for emb in embs.values():
        for t in temps:
            by_t[t].append(
                kl_by_rank(
                    data,
                    emb,
                    max_users=args.kl_users,
                    seed=args.seed,
                    progress=not args.quiet,
                    methods=(
                        tuple(split_list(getattr(args, "kl_methods", None) or "svd_exact"))
                        if t == 1.0
                        else ("svd_exact",)
                    ),
                    temperature=t,
                )
            )
    kl = pd.concat(by_t[1.0], ignore_index=True)
    bound = bound_vs_measured(kl)
    bound.to_csv(out / "kl_bound.csv", index=False, float_format="%.6g")
    if len(temps) > 1:
        tt = by_temperature({t: pd.concat(f, ignore_index=True) for t, f in by_t.items()})
        tt.to_csv(out / "kl_by_temperature.csv", index=False, float_format="%.6g")
        print("\nrank svd_exact needs for a KL budget, by query temperature (q -> t q):")
        print(tt.to_string(index=False))
    kl.to_csv(out / "kl_by_rank.csv", index=False, float_format="%.6g")
    need = rank_needed(kl)
    need.to_csv(out / "rank_needed.csv", index=False)
    summ = rank_needed_summary(need)
    summ.to_csv(out / "rank_needed_summary.csv", index=False)
    dt = time.perf_counter() - t0
    print(
        f"\nclosing the loop: KL of svd_exact by rank on {need['user'].nunique()} users per route in {dt:.1f} s"
    )
    print(summ.to_string(index=False))
    return {"users": int(need["user"].nunique()), "seconds": round(dt, 1)}


def _add_temperatures(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--temperatures",
        type=positive_floats,
        default=[0.25, 0.5, 1.0, 2.0],
        help="query temperatures t (q -> t q) for kl_by_temperature.csv; the decision uses t = 1 "
        "(default 0.25,0.5,1,2; '1' skips the table)",
    )


def cmd_kl(args: argparse.Namespace) -> int:
    from bench.outdir import writable_dir

    args.kl = True
    out = writable_dir(args.out)
    _check_cache(args)
    _check_byo_args(args)
    data = load_data(args)
    print_data(data)
    _run_kl(data, _embeddings(data, args), args, out)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from bench.outdir import writable_dir

    from .decide import DecideOpts, decide, missing_toml, read_bench, read_quality, write_decisions
    from .decide_timing import TimeOpts, view
    from .verdict import decision_lines, verdict_lines

    writable_dir(args.out)
    src = Path(args.spectra)
    kl_path = src / "kl_by_rank.csv" if src.is_dir() else src
    if not kl_path.exists():
        print(
            f"error: {kl_path} not found; run `python -m analysis spectrum --kl ...` first",
            file=sys.stderr,
        )
        return 2
    kl = pd.read_csv(kl_path, dtype={"user": str})
    if args.route:
        kl = kl[kl["route"].isin(args.route)]
    benches = [b for v in (args.bench or []) for b in (v if isinstance(v, list) else [v])]
    bench = read_bench(*benches) if benches else None
    try:
        quality = read_quality(args.quality) if args.quality else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    first = Path(benches[0]) if benches else None
    bench_out = args.targeted_out or str(
        first / "targeted" if first and first.is_dir() else "out/bench-targeted"
    )
    opts = DecideOpts(
        budgets=tuple(split_list(args.budgets, float)),
        quantile=args.quantile,
        m_values=tuple(split_list(args.m, int)) if args.m else None,
        requests=args.requests,
        cascade=tuple(split_list(args.cascade, int)) if args.cascade else None,
        quality_budget=args.quality_budget,
        quality_budget_auc=args.quality_budget_auc,
        device=args.device,
        time=TimeOpts(run_sigma=args.run_sigma),
        missing_toml=str(out / "missing_cases.toml"),
        bench_out=bench_out,
        spectra=str(src if src.is_dir() else src.parent),
    )
    dec, cand, missing = decide(kl, bench, opts, quality)
    v = view(bench, opts.device, opts.time) if bench is not None else None
    meta = {
        "kl_source": str(kl_path),
        "quality_source": str(args.quality) if args.quality else None,
        "quality_budget": opts.quality_budget,
        "quality_budget_auc": opts.quality_budget_auc,
        "bench_source": [str(b) for b in benches] or None,
        "device": v.device_label if v else None,
        "bench_config": v.fixed if v else None,
        "timing": v.timing if v else None,  # per bench run: wall, or process_cpu when it was loaded
        "note": None if bench is not None else "no bench table given: no method is timed",
        "datasets": sorted(kl["dataset"].unique().tolist()),
        "budgets": list(opts.budgets),
        "quantile": args.quantile,
        "requests": opts.requests,
        "run_sigma": opts.time.run_sigma,
        # per bench run: the drift sigma used, max(--run-sigma, the drift its rows show)
        "drift_sigma": v.sigma if v else None,
        "missing_cases": len(missing),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    name = ", ".join(meta["datasets"])
    meta["verdict"] = verdict_lines(dec, name)
    toml = missing_toml(missing, v.fixed, v.device) if v is not None and missing else None
    paths = write_decisions(dec, cand, out, meta, toml)
    print("Verdict")
    print("\n".join(meta["verdict"]))
    print("\nDecision rows")
    print("\n".join(decision_lines(dec)))
    if bench is None:
        print("note: no --bench table given, so no method is timed")
    if missing:
        print(
            f"\n{len(missing)} case(s) not benched; measure them with: "
            f"python -m bench run --config {opts.missing_toml} --out {bench_out} --no-cascade "
            f"(resumable), then run decide again with --bench "
            f"{' '.join(dict.fromkeys([*map(str, benches), bench_out]))}"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_kv(args: argparse.Namespace) -> int:
    """KL by rank on the user's own per-user K/V (and Q) file: input for decide."""
    from bench.outdir import writable_dir

    from .byo import kl_from_kv
    from .closing_loop import RANKS, rank_needed, rank_needed_summary

    out = writable_dir(args.out)
    name = args.name or Path(args.kv).stem
    kl, note = kl_from_kv(
        args.kv,
        name,
        RANKS,
        tuple(split_list(args.kl_methods)),
        args.queries,
        args.seed,
        args.kl_users,
    )
    print(f"{args.kv}: {kl['user'].nunique()} users (x heads); {note}")
    kl.to_csv(out / "kl_by_rank.csv", index=False, float_format="%.6g")
    need = rank_needed(kl)
    need.to_csv(out / "rank_needed.csv", index=False)
    summ = rank_needed_summary(need)
    summ.to_csv(out / "rank_needed_summary.csv", index=False)
    (out / "kv_source.json").write_text(
        json.dumps({"kv": str(args.kv), "queries": note}, indent=2) + "\n"
    )
    print(summ.to_string(index=False))
    print(
        f"wrote {out}/kl_by_rank.csv; next: python -m analysis decide --spectra {out} --bench BENCH --out {out}"
    )
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    from .findings import collect, to_markdown

    df = collect(args.spectra)
    if df.empty:
        print(f"error: no summary.csv under {args.spectra}", file=sys.stderr)
        return 2
    print(to_markdown(df))
    return 0


SHARED_DATASETS = (
    "ml-1m",
    "ml-1m-ratings",
    "ml-latest-small",
    "amazon-book",
    "lastfm-sample",
    "wikipedia",
    "ml-100k",
)


def cmd_all(args: argparse.Namespace) -> int:
    """spectrum --kl and decide for every dataset folder under --data-root."""
    root = Path(args.data_root)
    names = (
        split_list(args.datasets)
        if args.datasets
        else [d for d in SHARED_DATASETS if (root / d).exists()]
    )
    if not names:
        print(f"error: no dataset folder under {root}", file=sys.stderr)
        return 2
    if args.item_embeddings and len(names) > 1 and "{dataset}" not in args.item_embeddings:
        raise ValueError(
            f"--item-embeddings {args.item_embeddings}: one file for {len(names)} datasets; "
            "put {dataset} in the path (e.g. emb/{dataset}.npy) or pick one with --datasets"
        )
    for name in names:
        print(f"\n===== {name} =====")
        out = Path(args.out) / name
        argv = [
            "spectrum",
            "--data",
            str(root / name),
            "--out",
            str(out),
            "--embedding",
            ",".join(args.embedding),
            "--dim",
            str(args.dim),
            "--cache",
            args.cache,
            "--kl",
            "--kl-users",
            str(args.kl_users),
        ]
        if args.sasrec_seconds is not None:
            argv += ["--sasrec-seconds", str(args.sasrec_seconds)]
        for opt in ("item_embeddings", "item_ids", "embeddings_id_col", "wqkv", "byo_queries"):
            val = getattr(args, opt)
            if val is not None:  # {dataset} in a path names each dataset's own file
                argv += [f"--{opt.replace('_', '-')}", str(val).replace("{dataset}", name)]
        if args.item_embeddings:
            argv += ["--max-unknown-ids", str(args.max_unknown_ids)]
        if args.quiet:
            argv.append("--quiet")
        if args.threads:
            argv += ["--threads", str(args.threads)]
        rc = main(argv)
        if rc:
            return rc
        dargv = ["decide", "--spectra", str(out), "--out", str(out)]
        if args.bench:
            dargv += ["--bench", args.bench]
        if args.quality:
            dargv += ["--quality", args.quality]
        rc = main(dargv)
        if rc:
            return rc
    return 0


def _machine() -> str:
    import os

    import torch

    from bench.env import cpu_model

    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("spectrum", help="per-user rank spectra, summaries, scree, decay profile")
    _add_data_args(sp)
    sp.add_argument("--out", required=True, help="output folder (summary.csv, scree.csv, ...)")
    sp.add_argument(
        "--kl", action="store_true", help="also measure KL of svd_exact by rank (closing the loop)"
    )
    sp.add_argument(
        "--kl-users", type=positive_int, default=300, help="users sampled for the KL step"
    )
    _add_temperatures(sp)
    add_spectrum_args(sp)
    sp.set_defaults(func=cmd_spectrum)
    add_synthlog_parser(sub)
    add_quality_parser(sub)
    add_swap_parser(sub)
    add_seeds_regime_parser(sub)
    kp = sub.add_parser("kl", help="closing the loop only: kl_by_rank.csv")
    _add_data_args(kp)
    kp.add_argument("--out", required=True, help="output folder (kl_by_rank.csv, rank_needed*.csv)")
    kp.add_argument(
        "--kl-users", type=positive_int, default=300, help="users sampled for the KL step"
    )
    kp.add_argument(
        "--kl-methods",
        default="svd_exact",
        help="methods whose KL by rank is measured: svd_exact (default), svd_tokens (comma list)",
    )
    _add_temperatures(kp)
    kp.set_defaults(func=cmd_kl)
    kv = sub.add_parser(
        "kv", help="KL by rank on your own per-user K/V (.npz / .safetensors): input for decide"
    )
    kv.add_argument(
        "--kv",
        required=True,
        help="arrays k, v [users, (heads,) N, d], optional q, mask or lengths",
    )
    kv.add_argument("--out", required=True, help="output folder (kl_by_rank.csv, rank_needed*.csv)")
    kv.add_argument(
        "--name", default=None, type=_checked(check_name), help="dataset name (default: file stem)"
    )
    kv.add_argument(
        "--queries",
        type=positive_int,
        default=64,
        help="queries drawn per user when the file has no q",
    )
    kv.add_argument(
        "--kl-users", type=positive_int, default=300, help="at most this many users (seeded sample)"
    )
    kv.add_argument(
        "--kl-methods", default="svd_exact", help="svd_exact (default), svd_tokens (comma list)"
    )
    kv.add_argument(
        "--seed", type=nonneg_int, default=0, help="seed of the query draw and user sample"
    )
    kv.set_defaults(func=cmd_kv)
    dp = sub.add_parser("decide", help="decision table from kl_by_rank.csv (+ a bench table)")
    dp.add_argument(
        "--spectra", required=True, help="folder with kl_by_rank.csv, or the CSV itself"
    )
    dp.add_argument(
        "--bench",
        nargs="+",
        default=None,
        help="bench results.csv files or folders of them (e.g. results/cpu results/cpu/targeted)",
    )
    dp.add_argument("--out", required=True, help="output folder (decisions.csv, decisions.json)")
    dp.add_argument(
        "--budgets",
        nargs="+",
        default=["1e-2", "1e-3"],
        help="KL budgets (default 1e-2 1e-3; space- or comma-separated)",
    )
    dp.add_argument(
        "--quantile",
        type=arg_type(Rule("float", 0, 1)),
        default=0.9,
        help="share of users whose KL must meet the budget (default 0.9)",
    )
    dp.add_argument(
        "--m",
        nargs="+",
        default=None,
        help="candidate counts M (default: every M in the bench table; space- or comma-separated)",
    )
    dp.add_argument(
        "--route",
        type=_result_routes,
        nargs="+",
        default=None,
        help="restrict to these routes (space- or comma-separated)",
    )
    dp.add_argument(
        "--device",
        default=None,
        help="the bench table's device to decide for (needed when it holds several)",
    )
    dp.add_argument(
        "--requests",
        type=positive_int,
        default=100,
        help="R: requests served from one pre-stored per-user state (default 100)",
    )
    dp.add_argument(
        "--cascade",
        nargs="+",
        default=None,
        help="cascade stage sizes M (default: every benched M, largest first)",
    )
    dp.add_argument(
        "--quality",
        default=None,
        help="trained end-task quality: a folder or results.csv written by `analysis quality` "
        "(or a CSV with columns method, delta_ndcg); a method is eligible only when the whole "
        "95 %% interval over seeds of its loss against dense is inside the budget",
    )
    dp.add_argument(
        "--quality-budget",
        type=positive_float,
        default=0.005,
        help="largest acceptable loss of NDCG@10 against dense (next-item task; default 0.005)",
    )
    dp.add_argument(
        "--quality-budget-auc",
        type=positive_float,
        default=0.002,
        help="largest acceptable loss of AUC against dense (target-attention task; default 0.002)",
    )
    dp.add_argument(
        "--run-sigma",
        type=arg_type(Rule("float", 0, 1)),
        default=0.05,
        help="log-normal sigma of run-to-run timing drift per bench row (default 0.05; a run "
        "whose repeated prepares drift more gets its own, larger sigma; 0 = off)",
    )
    dp.add_argument(
        "--targeted-out",
        default=None,
        help="where the printed command measures missing cases (default BENCH/targeted)",
    )
    dp.set_defaults(func=cmd_decide)
    fp = sub.add_parser("findings", help="markdown table of headline numbers over result folders")
    fp.add_argument("--spectra", default="results/spectra", help="folder of dataset result folders")
    fp.set_defaults(func=cmd_findings)
    al = sub.add_parser("all", help="spectrum --kl + decide for every dataset under --data-root")
    al.add_argument(
        "--data-root", default="../shared/data", help="folder holding the dataset folders"
    )
    al.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="folder names (default: all seven present; space- or comma-separated)",
    )
    al.add_argument("--out", default="results/spectra", help="output root (one folder per dataset)")
    al.add_argument(
        "--embedding",
        type=_routes,
        nargs="+",
        default=["ppmi", "sasrec", "random"],
        help="embedding routes (space- or comma-separated)",
    )
    al.add_argument(
        "--dim", type=positive_int, default=64, help="embedding dimension d (default 64)"
    )
    _add_byo_args(al)  # paths may hold {dataset}
    al.add_argument(
        "--cache", default=str(E.DEFAULT_CACHE), help="embedding cache folder ('none' disables)"
    )
    al.add_argument(
        "--kl-users", type=positive_int, default=300, help="users sampled for the KL step"
    )
    al.add_argument(
        "--sasrec-seconds", type=positive_float, default=None, help="SASRec training time bound"
    )
    al.add_argument("--bench", default=None, help="bench results for the decision tables")
    al.add_argument(
        "--quality",
        default=None,
        help="`analysis quality` results (e.g. results/quality) for the decision tables",
    )
    al.add_argument("--quiet", action="store_true", help="no progress bars")
    al.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch/BLAS CPU threads (default: the idle cores, see bench/threads.py)",
    )
    al.set_defaults(func=cmd_all)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    setup_cli_logging()
    for name in ("embedding", "route"):  # --x a,b c: each value was validated as a comma list
        if isinstance(getattr(args, name, None), list):
            setattr(
                args,
                name,
                [r for v in getattr(args, name) for r in (v if isinstance(v, list) else [v])],
            )
    if hasattr(args, "threads"):  # the subcommands that compute (spectrum, kl, all)
        from bench.threads import choose

        print(choose(requested=args.threads).describe())
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:  # OSError: unreadable input (permissions, a folder)
        print(f"error: {exc}", file=sys.stderr)
        return 2
