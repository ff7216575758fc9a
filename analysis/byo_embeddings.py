"""Bring your own item embeddings (and a trained model's W_q / W_k / W_v) as a spectrum / KL
route, ``byo`` (``--item-embeddings FILE``, optional ``--wqkv FILE``).

Tables, by content (never by name, never unpickled):
- ``.npy`` [items, d]: row i is the log's item id i (the log's ids must be integers), or ids
  from ``--item-ids`` (a 1-D ``.npy`` or a text file, one id per line);
- ``.npz`` / ``.safetensors``: array ``item`` or ``embeddings`` [items, d], optional ``ids``;
- parquet: an id column (``--embeddings-id-col``, default the first of item, item_id, id) and
  either one list/array column or d numeric columns.

The ids are matched to the log's raw item ids (as text: 12 matches "12"). Every item of the log
must have a row; more than ``max_unknown`` of the file's ids unknown to the log, or a duplicate
id, means the id spaces differ: each is a ValueError with the counts. With ``--wqkv`` (arrays
``wq``, ``wk``, ``wv`` [d, d_head], or [heads, d, d_head]: one route ``byo-h<i>`` per head),
K = E W_k, V = E W_v and the KL step's queries are Q = E W_q of the user's own behaviours
(self-attention, as the model's block computes it) unless ``--byo-queries candidates``.
Biases are not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.arrays import describe, load_named, sniff

from .embeddings import RouteEmbeddings

FLAG = "--item-embeddings"
TABLE_KEYS = ("item", "embeddings")
ID_COLUMNS = ("item", "item_id", "id")
W_KEYS = {"wq": "wq", "wk": "wk", "wv": "wv", "w_q": "wq", "w_k": "wk", "w_v": "wv"}
MAX_UNKNOWN = 0.5
READS = (
    ".npy [items, d], .npz / .safetensors (item or embeddings, optional ids), or parquet (an id "
    "column and one list column or d numeric columns)"
)


@dataclass
class ItemTable:
    x: np.ndarray  # [rows, d] float32
    ids: np.ndarray | None  # one id per row, or None: row i = item id i
    read_as: str  # how it was read, in words


def _matrix(a: Any, name: str, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise ValueError(
            f"{where}: {name} is {a.dtype} of shape {a.shape}; expected a numeric [items, d] array"
        )
    if a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(f"{where}: {name} has shape {a.shape}; expected [items >= 1, d >= 2]")
    x = a.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: {name} holds NaN or inf")
    return x


def _read_ids(path: Path) -> np.ndarray:
    where = f"--item-ids {path}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    kind = sniff(path)
    if kind == "npy":
        try:
            ids = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(
                f"{where}: an object array ({exc}); save ids as numbers or text"
            ) from None
    elif kind == "text":
        ids = np.array([ln.strip() for ln in path.read_text().splitlines() if ln.strip()])
    else:
        raise ValueError(
            f"{where}: {describe(path, kind)}; --item-ids reads a 1-D .npy or a text file, one id per line"
        )
    if ids.ndim != 1:
        raise ValueError(f"{where}: ids have shape {ids.shape}; expected one id per row")
    return ids


def _parquet(path: Path, id_col: str | None) -> ItemTable:
    where = f"{FLAG} {path}"
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - arrow's errors vary by version
        raise ValueError(f"{where}: parquet that could not be read ({exc})") from None
    cols = [str(c) for c in df.columns]
    col = id_col or next((c for c in ID_COLUMNS if c in cols), None)
    if col is None or col not in cols:
        raise ValueError(
            f"{where}: no id column {id_col or ' / '.join(ID_COLUMNS)} (columns {cols[:8]}); "
            "name it with --embeddings-id-col"
        )
    rest = [c for c in cols if c != col]
    listy = [  # arrow list columns arrive as object columns of arrays
        c
        for c in rest
        if df[c].dtype == object and df[c].map(lambda v: isinstance(v, (list, np.ndarray))).all()
    ]
    if any(c in cols for c in ("user", "user_id", "uid")) and not listy:
        raise ValueError(
            f"{where}: looks like an interaction log (columns {cols[:8]}), not item embeddings; "
            "an interaction log goes to --data"
        )
    if len(rest) == 1 and listy:
        lens = df[rest[0]].map(len)
        if lens.nunique() != 1:
            raise ValueError(
                f"{where}: column {rest[0]} holds vectors of lengths {sorted(lens.unique())[:5]}; "
                "every item needs the same d"
            )
        x = _matrix(np.stack(df[rest[0]].to_numpy()), f"column {rest[0]}", where)
        how = f"parquet, id column {col}, vectors in column {rest[0]}"
    else:
        bad = [c for c in rest if not pd.api.types.is_numeric_dtype(df[c])]
        if bad or not rest:
            raise ValueError(
                f"{where}: besides the id column {col}, expected one list column or numeric "
                f"columns; {'non-numeric: ' + str(bad[:8]) if bad else 'no other column'}"
            )
        x = _matrix(df[rest].to_numpy(), f"columns {rest[0]}..{rest[-1]}", where)
        how = f"parquet, id column {col}, {len(rest)} numeric columns"
    return ItemTable(x, df[col].to_numpy(), how)


def read_item_table(
    path: str | Path, ids_path: str | Path | None = None, id_col: str | None = None
) -> ItemTable:
    """The user's item table, read by content; a wrong type says what it is and what reads it."""
    p = Path(path)
    where = f"{FLAG} {p}"
    if not p.is_file():
        raise ValueError(f"{where}: no such file")
    kind = sniff(p)
    if ids_path is not None and kind != "npy":
        raise ValueError(
            f"--item-ids is for a .npy table; {p} is {describe(p, kind)} (put ids in it)"
        )
    if id_col is not None and kind != "parquet":
        raise ValueError(f"--embeddings-id-col is for a parquet table; {p} is {describe(p, kind)}")
    if kind == "npy":
        try:
            x = _matrix(np.load(p, allow_pickle=False), "the array", where)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ValueError(f"{where}: an object array (needs pickle, never loaded)") from None
            raise
        ids = None if ids_path is None else _read_ids(Path(ids_path))
        how = ".npy, " + ("ids from --item-ids" if ids is not None else "row i = item id i")
        return ItemTable(x, ids, how)
    if kind in ("npz", "safetensors"):
        a = load_named(p, FLAG, READS)
        table = [k for k in TABLE_KEYS if k in a]
        if len(table) != 1:
            hint = ""
            if {"k", "v"} <= set(a):
                hint = "; per-user K/V go to `python -m analysis kv --kv FILE`"
            elif {"wq", "wk", "wv"} <= set(a) or {"w_q", "w_k", "w_v"} <= set(a):
                hint = "; W_q/W_k/W_v go to --wqkv FILE (with the item table in --item-embeddings)"
            raise ValueError(
                f"{where}: {describe(p, kind)}; needs exactly one of the arrays item, embeddings "
                f"[items, d] (optional ids){hint}"
            )
        unknown = sorted(set(a) - {table[0], "ids"})
        if unknown:
            raise ValueError(f"{where}: unknown arrays {unknown} (allowed: {table[0]}, ids)")
        ids = a.get("ids")
        if ids is not None and ids.ndim != 1:
            raise ValueError(f"{where}: ids have shape {ids.shape}; expected one id per row")
        how = f"{kind}, array {table[0]}" + (", ids" if ids is not None else ", row i = item id i")
        return ItemTable(_matrix(a[table[0]], table[0], where), ids, how)
    if kind == "parquet":
        return _parquet(p, id_col)
    log = "; an interaction log goes to --data" if kind in ("text", "gzip") else ""
    raise ValueError(
        f"{where}: {describe(p, kind)}, not item embeddings; {FLAG} reads {READS}{log}"
    )


def _id_strings(ids: np.ndarray, where: str) -> np.ndarray:
    """The file's ids as the log's raw ids are held: text (integers without a fraction)."""
    if ids.dtype == bool:
        raise ValueError(f"{where}: ids are booleans")
    if np.issubdtype(ids.dtype, np.floating):
        if not (np.isfinite(ids).all() and (ids == np.round(ids)).all()):
            raise ValueError(
                f"{where}: ids are floats with fractions or NaN; expected integers or text"
            )
        ids = ids.astype(np.int64)
    return np.asarray([str(i) for i in ids.tolist()], dtype=str)


def align(
    table: ItemTable, log_items: np.ndarray, where: str, max_unknown: float = MAX_UNKNOWN
) -> tuple[np.ndarray, dict[str, Any]]:
    """The table's rows in the log's item order [n_items, d], and the match counts."""
    rows, n = table.x.shape[0], len(log_items)
    if table.ids is None:
        bad = [str(s) for s in log_items if not s.isdigit()]
        if bad:
            raise ValueError(
                f"{where}: no ids in the file, so row i is item id i, but {len(bad):,} of the "
                f"log's {n:,} item ids are not non-negative integers (e.g. {bad[:3]}); give the "
                "ids (an ids array, --item-ids, or a parquet id column)"
            )
        want = np.fromiter((int(s) for s in log_items), np.int64, n)
        pos = np.where(want < rows, want, -1)
        ids_desc = f"{rows:,} rows (row i = item id i)"
    else:
        if len(table.ids) != rows:
            raise ValueError(f"{where}: {len(table.ids):,} ids for {rows:,} rows")
        ids = _id_strings(table.ids, where)
        dup = pd.Series(ids).duplicated(keep=False)
        if dup.any():
            first = pd.unique(ids[dup.to_numpy()])
            raise ValueError(
                f"{where}: {len(first):,} ids occur more than once ({int(dup.sum()):,} rows, e.g. "
                f"{[str(i) for i in first[:3]]}); each item needs one row"
            )
        pos = pd.Index(ids).get_indexer(pd.Index(log_items))
        ids_desc = f"{rows:,} ids"
    missing = pos < 0
    if missing.any():
        eg = [str(i) for i in log_items[missing][:3]]
        raise ValueError(
            f"{where}: {int(missing.sum()):,} of the log's {n:,} item ids are not in the file "
            f"(e.g. {eg}); the file has {ids_desc}, {len(np.unique(pos[~missing])):,} of them in "
            "the log. Every item of the log needs a row: is it the same catalog and the same id "
            "encoding (no 0/1-based offset)?"
        )
    unknown = rows - len(np.unique(pos))
    if unknown > max_unknown * rows:
        raise ValueError(
            f"{where}: {unknown:,} of the file's {ids_desc} ({unknown / rows:.0%}) are not item "
            f"ids of the log ({n:,} items), more than the {max_unknown:.0%} allowed "
            "(--max-unknown-ids): the id spaces look different"
        )
    stats = {
        "file_rows": rows,
        "log_items": n,
        "unknown_ids": unknown,
        "unknown_fraction": round(unknown / rows, 4),
        "max_unknown_fraction": max_unknown,
    }
    return table.x[pos], stats


def read_wqkv(path: str | Path, d: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per head (W_q, W_k, W_v), each [d, d_head], applied as E @ W."""
    p = Path(path)
    where = f"--wqkv {p}"
    a = load_named(p, "--wqkv", "arrays wq, wk, wv ([d, d_head] or [heads, d, d_head])")
    got = {W_KEYS[k]: v for k, v in a.items() if k in W_KEYS}
    if sorted(got) != ["wk", "wq", "wv"] or len(got) != len(a):
        raise ValueError(
            f"{where}: has arrays {sorted(a)}; needs exactly wq, wk, wv (or w_q, w_k, w_v), "
            "[d, d_head] or per head [heads, d, d_head] (biases are not applied)"
        )
    shapes = {k: tuple(v.shape) for k, v in got.items()}
    nd = {len(s) for s in shapes.values()}
    if nd not in ({2}, {3}):
        raise ValueError(f"{where}: shapes {shapes}; all [d, d_head] or all [heads, d, d_head]")
    w = {
        k: np.asarray(v, np.float32)[None] if v.ndim == 2 else np.asarray(v, np.float32)
        for k, v in got.items()
    }
    for k, v in w.items():
        if v.shape[1] != d:
            flip = (
                " (it looks transposed: a torch Linear weight is [d_head, d]; save W.T)"
                if v.shape[2] == d
                else ""
            )
            raise ValueError(
                f"{where}: {k} is {shapes[k]}, but the item embeddings have d = {d}; expected "
                f"[{d}, d_head]{flip}"
            )
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: {k} holds NaN or inf")
    if len({v.shape[0] for v in w.values()}) != 1:
        raise ValueError(f"{where}: shapes {shapes}; wq, wk, wv need the same number of heads")
    if w["wq"].shape[2] != w["wk"].shape[2]:
        raise ValueError(
            f"{where}: wq {shapes['wq']} and wk {shapes['wk']} differ in d_head (scores q . k need one)"
        )
    return [(w["wq"][h], w["wk"][h], w["wv"][h]) for h in range(w["wq"].shape[0])]


def byo_routes(
    log_items: np.ndarray,
    path: str | Path,
    ids_path: str | Path | None = None,
    id_col: str | None = None,
    max_unknown: float = MAX_UNKNOWN,
    wqkv: str | Path | None = None,
    queries: str | None = None,
) -> dict[str, RouteEmbeddings]:
    """``byo`` (or ``byo-h<i>`` per head of a multi-head W) aligned to the log's items."""
    if queries not in (None, "candidates", "behaviours"):
        raise ValueError(f"--byo-queries {queries!r}: candidates or behaviours")
    table = read_item_table(path, ids_path, id_col)
    x, stats = align(table, log_items, f"{FLAG} {path}", max_unknown)
    q_from = queries or ("behaviours" if wqkv else "candidates")
    meta: dict[str, Any] = {
        "file": str(path),
        "read_as": table.read_as,
        "ids": stats,
        "queries": q_from,
        "params": {"file": str(path), "wqkv": None if wqkv is None else str(wqkv)},
    }
    if wqkv is None:
        return {"byo": RouteEmbeddings("byo", x, meta=meta)}
    heads = read_wqkv(wqkv, x.shape[1])
    out = {}
    for h, (wq, wk, wv) in enumerate(heads):
        name = "byo" if len(heads) == 1 else f"byo-h{h}"
        m = {**meta, "wqkv": str(wqkv), "head": h, "heads": len(heads), "d_head": int(wk.shape[1])}
        out[name] = RouteEmbeddings(name, x, wq, wk, wv, meta=m)
    return out
