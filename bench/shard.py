"""Sharded sweeps without a cluster engine: ``bench run --shard I/N`` and ``bench merge``.

For Slurm arrays and plain ``CUDA_VISIBLE_DEVICES`` loops: shard I of N runs every N-th
*input group* (cases sharing ``Case.input_key``, so each shard builds an input once), in its own
run directory; ``python -m bench merge DIR... --out DIR`` then joins the logs, one row per
case id. Case ids never contain the GPU index (a shard on ``CUDA_VISIBLE_DEVICES=3`` still runs
``device="cuda"``), so any shard's rows resume and merge with any other's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import store
from .config import Case
from .errors import ConfigError, ResultsFileError
from .runner import finished


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), 0 <= I < N (0-based, as ``SLURM_ARRAY_TASK_ID`` with ``--array=0-N-1``)."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: need N >= 1 and 0 <= I < N (shards are 0-based)")
    return i, n


def input_groups(cases: list[Case]) -> list[list[Case]]:
    """Cases grouped by input key, groups in order of first appearance (expand's order)."""
    groups: dict[tuple, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.input_key(), []).append(c)
    return list(groups.values())


def shard_cases(cases: list[Case], shard: tuple[int, int]) -> list[Case]:
    """The cases of shard (I, N): input groups I, I + N, I + 2N, ... (deterministic)."""
    i, n = shard
    return [c for k, grp in enumerate(input_groups(cases)) if k % n == i for c in grp]


def _pick(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case id: a finished row beats an "input unavailable" one; among equals the
    later one (in the order given) wins, as :func:`store.dedupe` does."""
    best: dict[Any, dict[str, Any]] = {}
    for r in rows:
        cid = r.get("case_id")
        old = best.get(cid)
        if old is None or finished(r) or not finished(old):
            best[cid] = r
    return list(best.values())


def merge_runs(dirs: list[str | Path], out_dir: str | Path) -> dict[str, int]:
    """Merge the row logs of ``dirs`` into ``out_dir`` (rows.jsonl + results.csv/parquet),
    de-duplicated by case id; the log is written to a temporary file and renamed into place.
    ``out_dir`` may be one of ``dirs`` (or already hold rows: they take part in the merge)."""
    out = Path(out_dir)
    sources = [Path(d) for d in dirs]
    for d in sources:
        if not (d / store.LOG_NAME).is_file():
            raise ResultsFileError(f"{d}: no {store.LOG_NAME} (not a run directory)")
    rows: list[dict[str, Any]] = []
    seen_paths = set()
    for d in sources + ([out] if (out / store.LOG_NAME).is_file() else []):
        p = (d / store.LOG_NAME).resolve()
        if p in seen_paths:
            continue
        seen_paths.add(p)
        rows.extend(store.read_rows(p, repair=False))
    merged = _pick(rows)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{store.LOG_NAME}.{os.getpid()}.tmp"
    try:
        for i in range(0, len(merged), 1000):
            store.append_row(tmp, merged[i : i + 1000])
        if not merged:
            tmp.touch()
        os.replace(tmp, out / store.LOG_NAME)
    finally:
        tmp.unlink(missing_ok=True)
    store.write_table(store.to_frame(merged), out)
    return {"rows_read": len(rows), "rows_written": len(merged), "sources": len(seen_paths)}
