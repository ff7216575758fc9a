"""Per-user spectra of logs too big for one machine: bucket by user, one task per bucket.

``python -m analysis spectrum --data PARQUET_DIR --cluster ray --buckets B --out DIR``

Phase one (:func:`bucket_log`) streams the log's parquet files (record batches, bounded
memory) and writes each row to bucket ``hash(user) mod B`` as
``DIR/buckets/bucket=XXXXX/part-SSSSS-KKKK.parquet`` (one Ray task per source file with
``--cluster ray``). Buckets made elsewhere can be used instead (``--buckets-dir``): every child
of that folder (a parquet file or a folder of them; names starting with ``_`` or ``.`` are
ignored) is one bucket, and all rows of a user must be in one child, which is what Spark's
``df.repartition(B, "user").write.parquet(dir)`` or ``.write.partitionBy("bucket")`` on a
``pmod(hash(user), B)`` column, and Hive's ``CLUSTERED BY (user) INTO B BUCKETS``, produce.

Phase two (:func:`run_spectra`) runs one task per bucket: read the bucket, group rows by user
(stable sort: file order within a user is kept), gather only the bucket's items from the
embedding table (``np.load(mmap_mode="r")``: the table travels as a path on shared storage, not
through Ray's object store), compute the spectra with :func:`analysis.spectra.user_table`,
write ``DIR/users/bucket-XXXXX.parquet`` and return histograms. The driver merges histograms:
integer measures (r90, r95, r99, rank_cap, n, n_distinct) as exact (value, count) tables, so
medians and p10/p90 are the exact ``numpy.quantile`` values over all users; the real-valued
effective and stable ranks as sums (exact means) plus 1/``FLOAT_BINS_PER_UNIT``-wide bins
(quantiles to within that width). Per-bucket results are kept (``DIR/hist/``), so a re-run
skips finished buckets.

Sizing B: a bucket task's peak memory is about 0.8 GB fixed (the process with torch, and the
Gram batches, capped at 2^24 elements) plus ``BYTES_PER_ROW`` (~200) bytes per bucket row
(measured at d = 64 on the development VM: peak RSS 0.49 GB at 76k rows, 0.80 GB at 0.72M, 1.23
GB at 2.8M). So choose B >= total rows x 200 / (memory per task - 0.8 GB), and B >= 4 x the
cluster's task slots so that uneven buckets even out; e.g. 11.2 billion rows with 4 GB per task
-> B >= 700, and 320 slots -> B = 1280. Pass ``--memory-per-task-gb`` so that Ray never places
more tasks on a node than its memory holds. The phase-one buffer (``buffer_rows``, 4M rows by
default, ~100 MB) bounds the bucketing tasks' memory independently of B.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .spectra import N_BIN_LABELS, log_bins_label, user_table

INT_MEASURES = ("r90", "r95", "r99", "rank_cap", "n", "n_distinct")
FLOAT_MEASURES = ("effective_rank", "stable_rank")
FLOAT_BINS_PER_UNIT = 1000  # effective/stable rank quantiles to within 1e-3
BYTES_PER_ROW = 200  # peak task memory per bucket row, rounded up from the scale benchmark
INSTALL_HINT = (
    "--cluster ray needs Ray, an optional extra: pip install -e '.[cluster]' "
    "(or pip install 'ray[default]>=2.9')"
)
KEYS = ("centred", "n_bin")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None) -> Any:
    """Connect to ``address`` (else ``RAY_ADDRESS``, else a new local Ray); reuse an open one."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            log_to_driver=False,
        )
    return ray


# ----------------------------------------------------------------------------- phase one


def source_files(src: str | Path) -> list[Path]:
    """The parquet files of a log: one file, or every ``*.parquet`` under a folder (sorted)."""
    p = Path(src)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ValueError(f"--data {p}: no such file or folder")
    files = sorted(f for f in p.rglob("*.parquet") if not f.name.startswith((".", "_")))
    if not files:
        raise ValueError(f"--data {p}: no .parquet files")
    return files


def bucket_of(users: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket index of each user: a fixed-key hash (``pandas.util.hash_array``, the same in
    every process and run) mod B; works for integer and string ids."""
    h = pd.util.hash_array(np.asarray(users), categorize=False)
    return (h % np.uint64(buckets)).astype(np.int64)


def _check_columns(path: Path, schema: pa.Schema, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in schema.names]
    if missing:
        raise ValueError(
            f"{path}: no column(s) {missing}; columns: {schema.names} "
            "(name them with --user-col/--item-col/--time-col)"
        )


def bucket_file(
    path: str | Path,
    index: int,
    out: str | Path,
    buckets: int,
    cols: tuple[str, str, str | None] = ("user", "item", None),
    batch_rows: int = 1 << 20,
    buffer_rows: int = 1 << 22,
) -> int:
    """Stream one source file into ``out/bucket=XXXXX/part-{index}-KKKK.parquet``; returns rows.
    Memory: one record batch plus at most ``buffer_rows`` buffered rows (then all buffers are
    flushed, one file per non-empty bucket)."""
    path, out = Path(path), Path(out)
    ucol, icol, tcol = cols
    want = [c for c in (ucol, icol, tcol) if c]
    f = pq.ParquetFile(path)
    _check_columns(path, f.schema_arrow, want)
    bufs: dict[int, list[pa.Table]] = {}
    held = 0
    flushes = 0
    rows = 0

    def flush() -> None:
        nonlocal held, flushes
        for b, parts in bufs.items():
            d = out / f"bucket={b:05d}"
            d.mkdir(parents=True, exist_ok=True)
            final = d / f"part-{index:05d}-{flushes:04d}.parquet"
            tmp = d / f".{final.name}.tmp"
            pq.write_table(pa.concat_tables(parts), tmp)
            os.replace(tmp, final)
        bufs.clear()
        held = 0
        flushes += 1

    for batch in f.iter_batches(batch_size=batch_rows, columns=want):
        tbl = pa.Table.from_batches([batch]).rename_columns(
            ["user", "item"] + (["ts"] if tcol else [])
        )
        b = bucket_of(tbl.column("user").to_numpy(zero_copy_only=False), buckets)
        order = np.argsort(b, kind="stable")
        bs = b[order]
        cuts = np.flatnonzero(np.diff(bs)) + 1
        sorted_tbl = tbl.take(pa.array(order))
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(bs)], strict=True):
            bufs.setdefault(int(bs[lo]), []).append(sorted_tbl.slice(int(lo), int(hi - lo)))
        held += len(tbl)
        rows += len(tbl)
        if held >= buffer_rows:
            flush()
    if bufs:
        flush()
    return rows


def bucket_log(
    src: str | Path,
    out: str | Path,
    buckets: int,
    *,
    engine: str = "local",
    cols: tuple[str, str, str | None] = ("user", "item", None),
    address: str | None = None,
    batch_rows: int = 1 << 20,
    buffer_rows: int = 1 << 22,
) -> list[Path]:
    """Phase one: every source file bucketed by user (one Ray task per file with engine="ray");
    returns the B bucket folders (empty buckets are skipped)."""
    if buckets < 1:
        raise ValueError("--buckets must be >= 1")
    files = source_files(src)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: remove it, or pass it as --buckets-dir to reuse it")
    out.mkdir(parents=True, exist_ok=True)
    args = [(f, i, out, buckets, cols, batch_rows, buffer_rows) for i, f in enumerate(files)]
    if engine == "ray":
        ray = connect(address)
        task = ray.remote(num_cpus=1)(bucket_file)
        ray.get([task.remote(*a) for a in args])
    else:
        for a in args:
            bucket_file(*a)
    return existing_buckets(out)


def existing_buckets(path: str | Path) -> list[Path]:
    """The buckets of a folder: each child file or folder (not starting with ``_`` or ``.``)."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"--buckets-dir {p}: not a folder")
    kids = sorted(k for k in p.iterdir() if not k.name.startswith(("_", ".")))
    if not kids:
        raise ValueError(f"--buckets-dir {p}: no bucket files or folders")
    return kids


# ----------------------------------------------------------------------------- phase two


def _int_hist(v: np.ndarray) -> list[list[int]]:
    vals, counts = np.unique(np.asarray(v, dtype=np.int64), return_counts=True)
    return [vals.tolist(), counts.tolist()]


def histograms(users: pd.DataFrame, dim: int) -> dict[str, Any]:
    """Mergeable summaries per (centred, N bin incl. 'all'): integer value counts, float sums
    and fine bins. JSON-able (small: at most dim + 1 values per rank measure)."""
    df = users.assign(n_bin=log_bins_label(users["n"].to_numpy()))
    nbins = dim * FLOAT_BINS_PER_UNIT + 1
    out: dict[str, Any] = {}
    for part in (df, df.assign(n_bin="all")):
        for (centred, nb), g in part.groupby(["centred", "n_bin"], sort=True):
            h: dict[str, Any] = {"users": len(g), "n_max": int(g["n"].max())}
            for m in INT_MEASURES:
                h[m] = _int_hist(g[m].to_numpy())
            for m in FLOAT_MEASURES:
                v = g[m].to_numpy(dtype=np.float64)
                idx = np.clip(np.floor(v * FLOAT_BINS_PER_UNIT), 0, nbins - 1).astype(np.int64)
                h[m] = {"sum": float(v.sum()), "bins": _int_hist(idx)}
            out[f"{bool(centred)}|{nb}"] = h
    return out


def _merge_int(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    vals = np.concatenate([np.asarray(a[0], dtype=np.int64), np.asarray(b[0], dtype=np.int64)])
    cnts = np.concatenate([np.asarray(a[1], dtype=np.int64), np.asarray(b[1], dtype=np.int64)])
    u, inv = np.unique(vals, return_inverse=True)
    return [u.tolist(), np.bincount(inv, weights=cnts, minlength=len(u)).astype(np.int64).tolist()]


def merge_histograms(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of :func:`histograms` outputs (order of ``parts`` only affects float sums' last bits)."""
    out: dict[str, Any] = {}
    for p in parts:
        for key, h in p.items():
            if key not in out:
                out[key] = json.loads(json.dumps(h))
                continue
            o = out[key]
            o["users"] += h["users"]
            o["n_max"] = max(o["n_max"], h["n_max"])
            for m in INT_MEASURES:
                o[m] = _merge_int(o[m], h[m])
            for m in FLOAT_MEASURES:
                o[m]["sum"] += h[m]["sum"]
                o[m]["bins"] = _merge_int(o[m]["bins"], h[m]["bins"])
    return out


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation (``numpy.lib._function_base_impl._lerp``), for identical results."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def hist_quantile(hist: list[list[int]], q: float) -> float:
    """``numpy.quantile(values, q)`` (linear method) from a (value, count) table."""
    vals = np.asarray(hist[0], dtype=np.float64)
    cum = np.cumsum(np.asarray(hist[1], dtype=np.int64))
    n = int(cum[-1])
    pos = (n - 1) * q
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    k = np.searchsorted(cum, [lo, hi], side="right")
    return float(_lerp(vals[k[0]], vals[k[1]], pos - lo))


def summary_from_histograms(
    h: dict[str, Any], dataset: str, route: str, matrix: str, dim: int
) -> pd.DataFrame:
    """The columns of :func:`analysis.summaries.summarise`, from merged histograms."""
    rows = []
    order = {b: i for i, b in enumerate(list(N_BIN_LABELS) + ["all"])}
    for key in sorted(h, key=lambda k: (k.split("|")[0] == "True", order.get(k.split("|")[1], 99))):
        centred, nb = key.split("|")
        g = h[key]
        row: dict[str, Any] = {
            "dataset": dataset,
            "route": route,
            "matrix": matrix,
            "centred": centred == "True",
            "n_bin": nb,
            "users": g["users"],
            "n_median": hist_quantile(g["n"], 0.5),
            "n_max": g["n_max"],
            "n_distinct_median": hist_quantile(g["n_distinct"], 0.5),
            "dim": dim,
        }
        cap = g["rank_cap"]
        row["frac_rank_capped_by_n"] = float(
            sum(c for v, c in zip(cap[0], cap[1], strict=True) if v < dim) / g["users"]
        )
        for m in ("r90", "r95", "r99"):
            vals, cnts = (
                np.asarray(g[m][0], dtype=np.float64),
                np.asarray(g[m][1], dtype=np.float64),
            )
            row[f"{m}_median"] = hist_quantile(g[m], 0.5)
            row[f"{m}_mean"] = float((vals * cnts).sum() / cnts.sum())
            row[f"{m}_p10"] = hist_quantile(g[m], 0.1)
            row[f"{m}_p90"] = hist_quantile(g[m], 0.9)
        for m in FLOAT_MEASURES:  # bin lower edges + half a bin: quantiles to within 1/BINS
            b = g[m]["bins"]
            mid = [[(v + 0.5) / FLOAT_BINS_PER_UNIT for v in b[0]], b[1]]
            row[f"{m}_median"] = hist_quantile(mid, 0.5)
            row[f"{m}_mean"] = g[m]["sum"] / g["users"]
            row[f"{m}_p10"] = hist_quantile(mid, 0.1)
            row[f"{m}_p90"] = hist_quantile(mid, 0.9)
        rows.append(row)
    return pd.DataFrame(rows)


def read_bucket(
    path: str | Path, cols: tuple[str, str, str | None] = ("user", "item", None)
) -> pd.DataFrame:
    """A bucket's rows as (user, item[, ts]), files in name order."""
    p = Path(path)
    files = (
        [p]
        if p.is_file()
        else sorted(f for f in p.rglob("*.parquet") if not f.name.startswith((".", "_")))
    )
    if not files:
        return pd.DataFrame({"user": [], "item": []})
    frames = []
    for f in files:
        t = pq.read_table(f)
        ucol, icol = cols[:2] if cols[0] in t.schema.names else ("user", "item")
        _check_columns(f, t.schema, (ucol, icol))
        frames.append(
            pd.DataFrame({"user": t.column(ucol).to_numpy(), "item": t.column(icol).to_numpy()})
        )
    return pd.concat(frames, ignore_index=True)


def sequences_of(df: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(user ids, item sequences, all items) grouped by user; within a user the row order of
    the input is kept (stable sort)."""
    users = df["user"].to_numpy()
    items = df["item"].to_numpy()
    if items.dtype.kind not in "iu":
        raise ValueError(
            f"item ids must be integers (rows of the embedding table), got {items.dtype}"
        )
    order = np.argsort(users, kind="stable")
    us, it = users[order], items[order].astype(np.int64)
    if len(us) == 0:
        return us, [], it
    cuts = np.flatnonzero(us[1:] != us[:-1]) + 1
    return us[np.r_[0, cuts]], np.split(it, cuts), it


def spectra_bucket(
    bucket: str | Path,
    index: int,
    table_path: str | Path,
    out: str | Path,
    dataset: str,
    route: str = "table",
    cols: tuple[str, str, str | None] = ("user", "item", None),
) -> dict[str, Any]:
    """Phase two for one bucket: writes ``out/users/bucket-XXXXX.parquet`` (+ ``out/hist/bucket-XXXXX.json``)
    and returns {"index", "rows", "users", "seconds", "hist"}; reuses finished output."""
    users_dir = Path(out) / "users"
    final = users_dir / f"bucket-{index:05d}.parquet"
    side = Path(out) / "hist" / f"bucket-{index:05d}.json"
    if final.is_file() and side.is_file():
        return json.loads(side.read_text())
    t0, c0 = time.perf_counter(), time.process_time()
    table = np.load(table_path, mmap_mode="r", allow_pickle=False)
    if table.ndim != 2:
        raise ValueError(
            f"{table_path}: expected a 2-D [items, dim] array, got shape {table.shape}"
        )
    df = read_bucket(bucket, cols)
    uid, seqs, all_items = sequences_of(df)
    if len(all_items) and (all_items.min() < 0 or all_items.max() >= table.shape[0]):
        raise ValueError(
            f"bucket {bucket}: item ids span [{all_items.min()}, {all_items.max()}] "
            f"but {table_path} has {table.shape[0]} rows"
        )
    dim = int(table.shape[1])
    # only this bucket's items leave the (memory-mapped) table: bounded by the bucket
    keep, local = np.unique(all_items, return_inverse=True)
    sub = np.asarray(table[keep], dtype=np.float32)
    bounds = np.cumsum([0] + [len(s) for s in seqs])
    local_seqs = [local[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if local_seqs:
        users, _ = user_table(local_seqs, sub, dataset, route, "x", users=uid)
    else:
        users = pd.DataFrame(columns=["dataset", "user", "route", "matrix", "centred", "n"])
    users_dir.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    users.to_parquet(tmp, index=False)
    os.replace(tmp, final)
    res = {
        "index": index,
        "rows": int(len(df)),
        "users": int(len(uid)),
        "dim": dim,
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.process_time() - c0, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hist": histograms(users, dim) if len(users) else {},
    }
    side.parent.mkdir(parents=True, exist_ok=True)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, side)
    return res


@dataclass
class SpectraRun:
    summary: pd.DataFrame
    hist: dict[str, Any]
    buckets: int
    users: int
    rows: int
    task_seconds: float  # sum over buckets of each task's wall time
    cpu_seconds: float  # sum over buckets of each task's process CPU time
    seconds: float  # wall time of phase two
    peak_rss_mb: float  # the largest peak RSS a task's process reported
    max_bucket_rows: int


def run_spectra(
    buckets: list[Path],
    table_path: str | Path,
    out: str | Path,
    *,
    engine: str = "local",
    dataset: str = "log",
    route: str = "table",
    address: str | None = None,
    cpus_per_task: float = 1.0,
    memory_per_task_gb: float | None = None,
    cols: tuple[str, str, str | None] = ("user", "item", None),
    progress: Any = None,
) -> SpectraRun:
    """Phase two over every bucket (one Ray task each with engine="ray", else in this
    process); writes ``out/summary.csv`` and ``out/spectra_run.json``."""
    table_path = Path(table_path).resolve()
    if not table_path.is_file():
        raise ValueError(f"embedding table {table_path} not found (a .npy [items, dim] array)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    args = [
        (str(b), i, str(table_path), str(out), dataset, route, cols) for i, b in enumerate(buckets)
    ]
    results: list[dict[str, Any]] = []
    if engine == "ray":
        ray = connect(address)
        opts: dict[str, Any] = {"num_cpus": cpus_per_task, "max_retries": 2}
        if memory_per_task_gb:
            opts["memory"] = int(memory_per_task_gb * 2**30)
        task = ray.remote(**opts)(spectra_bucket)
        pending = [task.remote(*a) for a in args]
        while pending:  # results stream in as buckets finish; only histograms travel back
            ready, pending = ray.wait(pending, num_returns=1)
            results.extend(ray.get(ready))
            if progress:
                progress(len(results), len(args))
    elif engine == "local":
        for a in args:
            results.append(spectra_bucket(*a))
            if progress:
                progress(len(results), len(args))
    else:
        raise ValueError(f"engine {engine!r}: expected ray or local")
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: r["index"])  # a deterministic merge order
    dims = {r["dim"] for r in results}
    if len(dims) != 1:
        raise ValueError(f"buckets disagree on dim: {dims}")
    dim = dims.pop()
    hist = merge_histograms([r["hist"] for r in results])
    summary = summary_from_histograms(hist, dataset, route, "x", dim)
    summary.to_csv(out / "summary.csv", index=False)
    run = SpectraRun(
        summary,
        hist,
        len(buckets),
        sum(r["users"] for r in results),
        sum(r["rows"] for r in results),
        sum(r["seconds"] for r in results),
        sum(r.get("cpu_seconds", 0.0) for r in results),
        wall,
        max(r.get("peak_rss_mb", 0.0) for r in results),
        max(r["rows"] for r in results),
    )
    meta = {
        "engine": engine,
        "buckets": run.buckets,
        "users": run.users,
        "rows": run.rows,
        "dim": dim,
        "table": str(table_path),
        "phase_two_seconds": round(wall, 3),
        "task_seconds_sum": round(run.task_seconds, 3),
        "task_cpu_seconds_sum": round(run.cpu_seconds, 3),
        "task_peak_rss_mb_max": run.peak_rss_mb,
        "bucket_rows_max": run.max_bucket_rows,
        "float_quantile_resolution": 1 / FLOAT_BINS_PER_UNIT,
    }
    (out / "spectra_run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return run


def reference_users(
    src: str | Path, table_path: str | Path, dataset: str = "log", route: str = "table"
) -> pd.DataFrame:
    """The plain route: the whole log in memory, one :func:`user_table` call (tests and small
    logs; what the bucketed run must reproduce)."""
    df = pd.concat([read_bucket(f) for f in source_files(src)], ignore_index=True)
    uid, seqs, _ = sequences_of(df)
    table = np.load(table_path, allow_pickle=False)
    users, _ = user_table(seqs, table, dataset, route, "x", users=uid)
    return users


# ----------------------------------------------------------------------------- command line


def add_spectrum_args(sp: Any) -> None:
    """Options of ``analysis spectrum`` for bucketed runs (kept here: a small CLI edit)."""
    g = sp.add_argument_group("large logs (bucketed by user; see analysis/cluster.py)")
    g.add_argument(
        "--cluster",
        choices=["ray", "local"],
        default=None,
        help="bucket the parquet log by user and run one task per bucket on Ray "
        "(or 'local': the same pipeline in this process)",
    )
    g.add_argument(
        "--buckets",
        type=int,
        default=None,
        metavar="B",
        help="phase one writes B bucket folders under OUT/buckets",
    )
    g.add_argument(
        "--buckets-dir",
        default=None,
        help="use existing buckets (each child file/folder one bucket, e.g. Spark's "
        "repartition(B, user) output) instead of --buckets",
    )
    g.add_argument(
        "--item-table",
        default=None,
        help=".npy [items, dim] embedding table, rows indexed by item id, on storage "
        "every node sees (default DATA/item_embeddings.npy)",
    )
    g.add_argument("--address", default=None, help="Ray address (default RAY_ADDRESS, else local)")
    g.add_argument(
        "--cpus-per-task",
        type=float,
        default=1.0,
        help="CPUs Ray reserves per bucket task (default 1)",
    )
    g.add_argument(
        "--memory-per-task-gb",
        type=float,
        default=None,
        help="Ray memory reservation per bucket task (limits concurrency per node)",
    )


def cmd_spectrum_cluster(args: Any) -> int:
    """``analysis spectrum --cluster ray|local``: phase one (unless --buckets-dir), phase two."""
    if args.cluster == "ray":
        import_ray()
    if not args.data or str(args.data).startswith("packaged:"):
        raise ValueError("--cluster needs --data PARQUET_FILE_OR_DIR (a (user, item[, ts]) log)")
    out = Path(args.out)
    cols = (args.user_col or "user", args.item_col or "item", args.time_col)
    table = Path(args.item_table) if args.item_table else Path(args.data) / "item_embeddings.npy"
    if not table.is_file():
        raise ValueError(
            f"embedding table {table} not found: pass --item-table FILE.npy "
            "([items, dim] float array, row i = item id i)"
        )
    if args.cluster == "ray":
        t = time.perf_counter()
        connect(args.address)
        print(f"ray: connected in {time.perf_counter() - t:.1f} s")
    t0 = time.perf_counter()
    if args.buckets_dir:
        buckets = existing_buckets(args.buckets_dir)
    else:
        if not args.buckets:
            raise ValueError("--cluster needs --buckets B (or --buckets-dir with existing buckets)")
        bdir = out / "buckets"
        if (bdir / "_SUCCESS").is_file():
            buckets = existing_buckets(bdir)
            print(f"phase one: reusing {len(buckets)} buckets in {bdir}")
        else:
            buckets = bucket_log(
                args.data, bdir, args.buckets, engine=args.cluster, cols=cols, address=args.address
            )
            (bdir / "_SUCCESS").touch()
    t1 = time.perf_counter()
    print(f"phase one: {len(buckets)} buckets in {t1 - t0:.1f} s")
    name = args.name or Path(args.data).name

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % max(1, total // 10) == 0):
            print(f"  phase two: {done}/{total} buckets, {time.perf_counter() - t1:.1f} s")

    run = run_spectra(
        buckets,
        table,
        out,
        engine=args.cluster,
        dataset=name,
        address=args.address,
        cpus_per_task=args.cpus_per_task,
        memory_per_task_gb=args.memory_per_task_gb,
        cols=cols,
        progress=progress,
    )
    total = time.perf_counter() - t0
    print(
        f"phase two: {run.users:,} users, {run.rows:,} rows in {run.seconds:.1f} s "
        f"({run.users / max(run.seconds, 1e-9):,.0f} users/s; whole run {total:.1f} s)"
    )
    top = run.summary[run.summary["n_bin"] == "all"]
    print(
        top[
            [
                "centred",
                "users",
                "n_median",
                "r90_median",
                "r95_median",
                "r99_median",
                "effective_rank_median",
            ]
        ].to_string(index=False)
    )
    print(f"wrote {out}/users/*.parquet (per user), {out}/summary.csv, {out}/spectra_run.json")
    return 0
