"""Scale benchmark of bucketed spectra: one process vs Ray local, and a projection.

``python -m analysis.scale_bench --users 100000 --out results/cluster``

Generates (or reuses) a synthetic log (:mod:`analysis.synthlog`), then runs phase one
(bucketing) and phase two (spectra) in one process (torch 1 thread) and on a fresh local Ray
(``--ray-cpus`` workers of 1 thread), checks that both give the same per-user table and summary,
and appends one row per engine to ``OUT/scale.csv`` (wall and CPU seconds, users/s, peak RSS
of a task, the machine's load average). ``--project-users/--project-cores`` add a *projection*
(labelled so in the CSV) from the measured per-user CPU cost of both phases; it assumes linear
scaling with cores and ignores storage bandwidth and stragglers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .cluster import bucket_log, run_spectra
from .synthlog import write_synthetic_log


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu() -> str:
    from bench.env import cpu_model

    return cpu_model()


def run_engine(engine: str, log: Path, work: Path, buckets: int, ray_cpus: int) -> dict[str, Any]:
    """Phase one + two with one engine; returns the measured row."""
    for d in (work / f"b-{engine}", work / f"s-{engine}"):
        shutil.rmtree(d, ignore_errors=True)
    load_before = os.getloadavg()[0]
    ray_start = 0.0
    if engine == "ray":
        import ray

        t = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=ray_cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
        )
        ray_start = time.perf_counter() - t
    t0, c0 = time.perf_counter(), time.process_time()
    bl = bucket_log(
        log, work / f"b-{engine}", buckets, engine="local" if engine == "one" else "ray"
    )
    t1 = time.perf_counter()
    p1_cpu = time.process_time() - c0 if engine == "one" else None
    run = run_spectra(
        bl,
        log / "item_embeddings.npy",
        work / f"s-{engine}",
        engine="local" if engine == "one" else "ray",
        dataset="synthetic",
    )
    t2 = time.perf_counter()
    if engine == "ray":
        import ray

        ray.shutdown()
    return {
        "engine": "one process" if engine == "one" else f"ray local ({ray_cpus} CPUs)",
        "users": run.users,
        "rows": run.rows,
        "buckets": buckets,
        "ray_start_s": round(ray_start, 2),
        "phase1_s": round(t1 - t0, 2),
        "phase2_s": round(t2 - t1, 2),
        "total_s": round(t2 - t0 + ray_start, 2),
        "users_per_s": round(run.users / (t2 - t0 + ray_start), 1),
        "users_per_s_running": round(run.users / (t2 - t0), 1),
        "phase1_cpu_s": None if p1_cpu is None else round(p1_cpu, 2),
        "phase2_cpu_s": round(run.cpu_seconds, 2),
        "phase2_cpu_us_per_user": round(1e6 * run.cpu_seconds / run.users, 1),
        "task_peak_rss_mb": run.peak_rss_mb,
        "bucket_rows_max": run.max_bucket_rows,
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "projection": False,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.scale_bench", description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--mean-len", type=float, default=112.0)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--engines", default="one,ray")
    ap.add_argument("--work", default="/tmp/scale_bench", help="scratch folder (log, buckets)")
    ap.add_argument("--out", default="results/cluster")
    ap.add_argument("--project-users", type=float, default=1e8)
    ap.add_argument(
        "--project-rows-per-user",
        type=float,
        default=None,
        help="default: the measured mean length",
    )
    ap.add_argument(
        "--project-cores",
        type=int,
        default=320,
        help="task slots of the hypothetical cluster (e.g. 10 nodes x 32 cores)",
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(a.work)
    log = work / f"log-{a.users}"
    if not (log / "synthlog.json").is_file():
        t = time.perf_counter()
        write_synthetic_log(log, a.users, a.mean_len, a.items, a.dim, a.files, seed=0)
        print(f"generated {log} in {time.perf_counter() - t:.1f} s")
    meta = json.loads((log / "synthlog.json").read_text())
    rows = []
    for eng in a.engines.split(","):
        r = run_engine(eng, log, work, a.buckets, a.ray_cpus)
        print(json.dumps(r))
        rows.append(r)
    if len(rows) == 2:  # the same spectra from both engines
        u = [
            pd.read_parquet(work / f"s-{e}" / "users")
            .sort_values(["user", "centred"])
            .reset_index(drop=True)
            for e in ("one", "ray")
        ]
        pd.testing.assert_frame_equal(u[0], u[1])
        s = [pd.read_csv(work / f"s-{e}" / "summary.csv") for e in ("one", "ray")]
        pd.testing.assert_frame_equal(s[0], s[1])
        print("per-user tables and summaries identical across engines")
    one = next((r for r in rows if r["engine"] == "one process"), None)
    if one is not None and one["phase1_cpu_s"] is not None:
        per_row_p1 = one["phase1_cpu_s"] / one["rows"]
        per_user_p2 = one["phase2_cpu_s"] / one["users"]
        rpu = a.project_rows_per_user or one["rows"] / one["users"]
        cpu_s = a.project_users * (per_user_p2 + rpu * per_row_p1)
        rows.append(
            {
                "engine": f"PROJECTION: {a.project_cores} cores (hypothetical cluster)",
                "users": int(a.project_users),
                "rows": int(a.project_users * rpu),
                "buckets": int(max(4 * a.project_cores, a.project_users * rpu * 200 / 2**31)),
                "phase1_s": round(a.project_users * rpu * per_row_p1 / a.project_cores, 1),
                "phase2_s": round(a.project_users * per_user_p2 / a.project_cores, 1),
                "total_s": round(cpu_s / a.project_cores, 1),
                "users_per_s": round(a.project_users / (cpu_s / a.project_cores), 1),
                "phase2_cpu_us_per_user": round(1e6 * per_user_p2, 1),
                "projection": True,
            }
        )
    stamp = {
        "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
        "commit": _commit(),
        "machine": f"{_cpu()}, {os.cpu_count()} vCPU (shared development VM)",
        "synthetic": True,
        "mean_len": round(meta["mean_len"], 2),
        "items": meta["items"],
        "dim": meta["dim"],
        "torch_threads_per_process": 1,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([{**r, **stamp} for r in rows])
    path = out / "scale.csv"
    if path.is_file():
        df = pd.concat([pd.read_csv(path), df], ignore_index=True)
    tmp = path.with_name(".scale.csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    print(f"appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
