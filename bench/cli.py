"""Command line: ``python -m bench run|merge|import-json|presets|crossover|targets|compare|peers``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from .cluster import add_run_args
from .config import expand, load_config, resolve_methods
from .errors import ConfigError, OutputError, ResultsFileError
from .logs import setup_cli_logging
from .validate import nonneg_float, positive_float, positive_int


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a sweep (resumes when DIR already holds rows)")
    r.add_argument("--preset", default=None, help="smoke | quick | paper | full (default smoke)")
    r.add_argument("--config", default=None, help="a TOML sweep file (see docs/bench.md)")
    r.add_argument("--out", required=True, help="run directory (results.csv, rows.jsonl, ...)")
    r.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="only these methods (space- or comma-separated)",
    )
    r.add_argument(
        "--device",
        default=None,
        help="cpu | cuda | cuda:1 (default: the preset's, else cuda when present)",
    )
    r.add_argument(
        "--time-budget",
        type=nonneg_float,
        default=None,
        metavar="MINUTES",
        help="stop cleanly after this many minutes (the rest resumes on a re-run)",
    )
    r.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads per process, >= 1 (default: the preset's, else the idle "
        "cores; see bench/threads.py)",
    )
    r.add_argument("--no-cascade", action="store_true", help="skip the cascade view")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument(
        "--dry-run", action="store_true", help="list the cases (and the estimate) and exit"
    )
    r.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="start a sweep estimated at more than a few minutes on this machine (or "
        "--preset paper on a CPU) without asking",
    )
    add_run_args(r)
    g = sub.add_parser("merge", help="join shard run directories into one (one row per case id)")
    g.add_argument("dirs", nargs="+", metavar="DIR", help="the shard run directories")
    g.add_argument("--out", required=True, help="the merged run directory")
    j = sub.add_parser("import-json", help="pytest-benchmark JSON -> tidy table")
    j.add_argument("file", help="the JSON file written by pytest --benchmark-json")
    j.add_argument(
        "--out", required=True, help="run directory to write results.csv (+ parquet) into"
    )
    pr = sub.add_parser(
        "presets", help="list the presets, or show one as TOML (a --config to edit)"
    )
    pr.add_argument(
        "action", nargs="?", choices=["list", "show"], default="list", help="list (default) or show"
    )
    pr.add_argument(
        "name", nargs="?", default=None, help="the preset to show (smoke, quick, paper, full)"
    )
    c = sub.add_parser("crossover", help="crossover N per method and M from a results table")
    c.add_argument("table", help="results.csv or its run directory")
    t = sub.add_parser(
        "targets",
        help="evaluate the GPU issue's targets on a results table (writes DIR/targets.csv)",
    )
    t.add_argument(
        "table",
        metavar="DIR",
        help="run directory (results.csv or results.parquet), or the table file",
    )
    t.add_argument(
        "--out", default=None, metavar="FILE.md", help="also write the markdown table here"
    )
    t.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    k = sub.add_parser(
        "compare",
        help="per-case ratios of two runs' medians with bootstrap "
        "intervals; exit 1 past --fail-above (a CI regression gate)",
    )
    k.add_argument("a", metavar="A", help="baseline run directory (or its results.csv)")
    k.add_argument("b", metavar="B", help="run to compare against A")
    k.add_argument(
        "--phase",
        nargs="+",
        default=["forward"],
        metavar="PHASE",
        help="timed phases: prepare attend forward attend_graph (default forward)",
    )
    k.add_argument(
        "--min-effect",
        type=nonneg_float,
        default=0.05,
        metavar="FRAC",
        help="ratios within 1 +- FRAC are 'same' even when the interval excludes 1 (default 0.05)",
    )
    k.add_argument(
        "--fail-above",
        type=positive_float,
        default=None,
        metavar="RATIO",
        help="exit 1 when a case is 'slower' with median B / median A above RATIO",
    )
    k.add_argument(
        "--timing",
        choices=("auto", "wall", "process_cpu"),
        default="auto",
        help="clock to compare by; auto (default): process CPU time when a run was measured on "
        "a loaded machine and both have CPU-time columns, else wall time",
    )
    k.add_argument("--csv", default=None, metavar="FILE", help="write the full table as CSV")
    k.add_argument("--md", default=None, metavar="FILE", help="also write the markdown here")
    k.add_argument(
        "--resamples", type=positive_int, default=2000, help="bootstrap resamples (default 2000)"
    )
    pe = sub.add_parser(
        "peers",
        help="each operator side by side with the public implementation of the "
        "same job (performer-pytorch, fla, the LinRec core, a plain fp32 Gram): thread CPU "
        "time ratios with 95%% intervals and output differences (docs/bench.md)",
    )
    pe.add_argument(
        "--n",
        nargs="+",
        type=positive_int,
        default=[4096],
        metavar="N",
        help="behaviours per user (one table block per N; default 4096)",
    )
    pe.add_argument("--m", type=positive_int, default=256, help="candidates (default 256)")
    pe.add_argument("--d", type=positive_int, default=64, help="head dimension d = dv (default 64)")
    pe.add_argument("--bh", type=positive_int, default=1, help="users x heads (default 1)")
    pe.add_argument(
        "--rank",
        type=positive_int,
        default=16,
        help="svd_exact rank = the inputs' rank (default 16)",
    )
    pe.add_argument(
        "--features", type=positive_int, default=256, help="Performer features m (default 256)"
    )
    pe.add_argument(
        "--rounds", type=positive_int, default=11, help="interleaved timing rounds (default 11)"
    )
    pe.add_argument("--seed", type=int, default=0, help="input and feature seed (default 0)")
    pe.add_argument(
        "--warm",
        action="store_true",
        help="time each call right after an untimed call of the same callable (its own inputs "
        "in cache), instead of after whatever ran before it in the round",
    )
    pe.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="tuned (default): raise glibc's mmap/trim thresholds first, as the harness's CPU "
        "runs do (both sides alike); default: leave malloc as the process started",
    )
    pe.add_argument(
        "--note",
        default="",
        metavar="TEXT",
        help="added to the machine description (e.g. what else loads the machine)",
    )
    pe.add_argument(
        "--out",
        default="results/cpu",
        metavar="DIR",
        help="write DIR/peers.md and DIR/peers.csv (default results/cpu)",
    )
    return p


def cmd_peers(a: argparse.Namespace) -> int:
    from .peers import run_peers, to_markdown, write_table

    rows = []
    for n in a.n:
        rows += run_peers(
            n=n,
            m=a.m,
            d=a.d,
            bh=a.bh,
            rank=a.rank,
            features=a.features,
            rounds=a.rounds,
            seed=a.seed,
            warm_each=a.warm,
            note=a.note,
            malloc=a.malloc,
        )
    print(to_markdown(rows), end="")
    md, csv = write_table(rows, a.out)
    print(f"wrote {md} and {csv}")
    return 0


def _device(cfg_device: str | None, arg: str | None) -> str:
    from .validate import check_device

    if arg:
        return check_device("--device", arg)
    if cfg_device is not None and cfg_device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "note: the preset targets CUDA but none is available; running on CPU", file=sys.stderr
        )
        return "cpu"
    if cfg_device:
        return check_device("device", cfg_device)  # e.g. cuda:3 on a one-GPU machine
    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_run(a: argparse.Namespace) -> int:
    from .cascade import run_cascade
    from .preflight import check_cases, check_methods, no_ok_lines
    from .runner import run_sweep
    from .summary import crossover, rank_by, summary_table

    cfg = load_config(a.preset, a.config)
    from .cliargs import split_list
    from .estimate import confirm, estimate, refusal
    from .threads import choose

    plan = choose(requested=a.threads or cfg.threads)
    print(plan.describe())
    a.methods = split_list(a.methods)
    source = a.config or f"preset {a.preset or cfg.name}"
    check_methods(cfg, a.methods, source)
    methods, _ = resolve_methods(cfg, a.methods)
    if a.cluster:
        from .cluster import cluster_device

        device = cluster_device(cfg.device, a.device, a.address)
    else:
        device = _device(cfg.device, a.device)
    cases = expand(cfg, methods, device)
    check_cases(cfg, cases, methods, source)
    if a.shard:
        from .shard import parse_shard, shard_cases

        cases = shard_cases(cases, parse_shard(a.shard))
    todo = _not_done(cases, a.out)
    est = estimate(todo, cfg, plan.threads)
    print(
        f"sweep: {est.describe()}"
        + (f" ({len(cases) - len(todo)} already done in {a.out})" if len(todo) < len(cases) else "")
    )
    if a.dry_run:
        for c in cases:
            print(c.case_id, c.test_id)
        print(f"{len(cases)} cases")
        return 0
    why = refusal(est, a.preset or cfg.name, device, a.yes, a.time_budget)
    if why and not confirm(why):
        print(f"error: {why}", file=sys.stderr)
        return 2
    from .lock import RunLock
    from .outdir import writable_dir

    t0 = time.monotonic()
    kw = {
        "preset": a.preset or cfg.name,
        "time_budget_min": a.time_budget,
        "progress": not a.no_progress,
    }
    # the cascade view runs in this process: skipped on a cluster run, once (shard 0) when sharded
    if a.cluster or (a.shard and not a.shard.startswith("0/")):
        a.no_cascade = True
    with RunLock(writable_dir(a.out)):
        if a.cluster:
            from .cluster import run_sweep_ray

            rows, info = run_sweep_ray(
                cfg,
                cases,
                a.out,
                address=a.address,
                workers=a.workers,
                cpus_per_worker=a.cpus_per_worker,
                threads=a.threads,
                **kw,
            )
        else:
            rows, info = run_sweep(cfg, cases, a.out, **kw)
        if not a.no_cascade and cfg.cascade is not None and info["stopped"] is None:
            run_cascade(cfg, methods, device, a.out, progress=not a.no_progress)
    elapsed = time.monotonic() - t0
    df = pd.DataFrame(rows)
    ids = {c.case_id for c in cases}
    mine = df[df["case_id"].isin(ids)] if len(df) else df
    with pd.option_context(
        "display.max_rows", 400, "display.width", 160, "display.float_format", "{:.4g}".format
    ):
        if len(mine) and (mine["status"] == "ok").any():
            print(summary_table(mine).to_string(index=False))
            timing, why = rank_by(mine)
            if timing != "wall":
                print(f"warning: {why}", file=sys.stderr)
            cx = crossover(mine, timing=timing)
            if len(cx):
                print(
                    f"\ncrossover N (method faster than dense from this N on; forward, and attend "
                    f"with the prepared state reused; {why}):"
                )
                print(
                    cx[
                        [
                            "label",
                            "setting",
                            "family",
                            "m",
                            "d",
                            "dtype",
                            "crossover_n",
                            "crossover_n_attend",
                            "speedup_at_max_n",
                            "kl_mean_median",
                        ]
                    ].to_string(index=False)
                )
    ok_rows = mine[mine["status"] == "ok"] if len(mine) else mine
    if len(ok_rows):
        from .targets import noise_summary_lines

        print("\n" + "\n".join(noise_summary_lines(mine)))
    elif len(mine):
        print("\n" + "\n".join(no_ok_lines(mine)))
    counts = mine["status"].value_counts().to_dict() if len(mine) else {}
    print(
        f"\n{info['measured']} measured, {info['already_done']} resumed, {info['not_run']} not run; "
        f"status {counts}; {elapsed:.1f} s; table: {Path(a.out) / 'results.csv'}"
    )
    if info.get("worker_deaths"):
        print(
            f"{info['worker_deaths']} worker(s) died; {len(info['lost'])} case(s) without a row "
            "(re-run with the same --out to measure them)"
        )
    if info["stopped"]:
        print(f"stopped: {info['stopped']}")
        return 130 if "interrupted" in info["stopped"] else 0
    return 0


def cmd_merge(a: argparse.Namespace) -> int:
    from .lock import RunLock
    from .outdir import writable_dir
    from .shard import merge_runs

    with RunLock(writable_dir(a.out)):
        n = merge_runs(a.dirs, a.out)
    print(
        f"merged {n['sources']} logs: {n['rows_read']} rows read, {n['rows_written']} written "
        f"(one per case id) to {Path(a.out) / 'rows.jsonl'} and results.csv"
    )
    return 0


def _not_done(cases: list, out: str) -> list:
    """Cases without a row in OUT's log yet (the estimate counts only what a resume runs)."""
    from .store import LOG_NAME, read_rows

    log = Path(out) / LOG_NAME
    if not log.is_file():
        return cases
    try:
        done = {r.get("case_id") for r in read_rows(log, repair=False)}
    except ResultsFileError:
        return cases  # the run itself reports the broken log
    return [c for c in cases if c.case_id not in done]


def cmd_import(a: argparse.Namespace) -> int:
    from .outdir import writable_dir
    from .pbjson import import_json

    path = import_json(a.file, writable_dir(a.out))
    print(f"wrote {path}")
    return 0


def cmd_presets(a: argparse.Namespace) -> int:
    from .presets import PRESETS

    if a.action == "show":
        from .toml_out import dumps

        if a.name not in PRESETS:
            raise ConfigError(
                f"presets show NAME: unknown preset {a.name!r}; allowed: {', '.join(PRESETS)}"
            )
        print(
            dumps(
                PRESETS[a.name],
                f"preset {a.name!r} as TOML: save, edit, and run with\n"
                f"python -m bench run --config FILE.toml --out DIR",
            ),
            end="",
        )
        return 0
    for name, raw in PRESETS.items():
        print(f"{name:6s} {raw.get('description', '')}")
    return 0


def cmd_crossover(a: argparse.Namespace) -> int:
    from .preflight import crossover_table
    from .store import read_table
    from .summary import crossover, rank_by

    table = crossover_table(a.table, read_table)
    timing, why = rank_by(table)
    print(why)
    with pd.option_context("display.width", 160, "display.max_rows", 400):
        cx = crossover(table, timing=timing)
        print(
            cx.to_string(index=False)
            if len(cx)
            else "no crossover: the table has no pair of ok rows (a method and dense at the same case)"
        )
    return 0


def cmd_targets(a: argparse.Namespace) -> int:
    from .targets import FAIL, run_targets

    t, md, csv_path = run_targets(a.table, a.out)
    print(md, end="")
    print(f"\nwrote {csv_path}" + (f" and {a.out}" if a.out else ""))
    return 1 if a.strict and (t["status"] == FAIL).any() else 0


def cmd_compare(a: argparse.Namespace) -> int:
    from .cliargs import split_list
    from .compare import CompareOptions, regressions, run_compare, to_markdown

    phases = tuple(split_list(a.phase))
    opts = CompareOptions(
        phases=phases, min_effect=a.min_effect, resamples=a.resamples, timing=a.timing
    )
    t, la, lb = run_compare(a.a, a.b, opts)
    md = to_markdown(t, la, lb, a.fail_above)
    print(md, end="")
    if a.md:
        Path(a.md).write_text(md)
    if a.csv:
        t.to_csv(a.csv, index=False)
        print(f"wrote {a.csv}")
    if a.fail_above is not None:
        bad = regressions(t, a.fail_above)
        if len(bad):
            print(
                f"FAIL: {len(bad)} case(s) slower than {a.fail_above:g}x the baseline",
                file=sys.stderr,
            )
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cliargs import parse

    a = parse(_parser(), argv)
    setup_cli_logging()
    handlers = {
        "run": cmd_run,
        "merge": cmd_merge,
        "import-json": cmd_import,
        "presets": cmd_presets,
        "crossover": cmd_crossover,
        "targets": cmd_targets,
        "compare": cmd_compare,
        "peers": cmd_peers,
    }
    try:
        return handlers[a.cmd](a)
    except (ConfigError, ResultsFileError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
