"""A synthetic (user, item, ts) parquet log of a chosen size, with spectrum-matched item
embeddings: the input of the scale benchmark (``python -m analysis synthlog``).

- lengths: log-normal (sigma 1.0, a heavy right tail) scaled to the requested mean, clipped to
  [1, ``max_len``] (default 50 x the mean);
- items: Zipf-like popularity (p_i ~ (i + 10)^-0.9, shuffled ids), drawn independently per
  behaviour;
- embeddings: ``item_embeddings.npy`` [items, dim] float32 = U diag(s) W^T with U, W random
  orthonormal and s the decay of a fitted profile (``analysis/fit.py``'s curve: model, rate and
  noise floor of e.g. ``results/spectra/ml-1m/profile.json``), so per-user spectra decay like
  the real data's.

Users are written in ``files`` parquet files (user ids contiguous per file; rows of one user
contiguous, ts increasing), each file generated from its own seed so any file can be rebuilt
alone and memory stays at one file's rows. Everything is labelled synthetic in ``synthlog.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .fit import exponential_curve, powerlaw_curve

DEFAULT_PROFILE = (
    Path(__file__).resolve().parents[1] / "results" / "spectra" / "ml-1m" / "profile.json"
)
FALLBACK_DECAY = {"model": "powerlaw", "params": {"alpha": 1.0}, "noise_floor": 1e-3}


def decay(profile: dict[str, Any], dim: int) -> np.ndarray:
    """s_i / s_1 (i = 1..dim) of a fitted profile (the curve of analysis.fit)."""
    i = np.arange(1, dim + 1, dtype=np.float64)
    floor = float(profile.get("noise_floor", 0.0))
    if profile["model"] == "powerlaw":
        return powerlaw_curve(i, float(profile["params"]["alpha"]), floor)
    if profile["model"] == "exponential":
        return exponential_curve(i, float(profile["params"]["beta"]), floor)
    raise ValueError(f"profile model {profile['model']!r}: expected powerlaw or exponential")


def load_decay(path: str | Path | None) -> dict[str, Any]:
    """The decay description of a profile JSON (default: ml-1m's, else a power law)."""
    p = Path(path) if path else DEFAULT_PROFILE
    if not p.is_file():
        if path:
            raise ValueError(f"profile {p} not found")
        return {**FALLBACK_DECAY, "source": "fallback powerlaw (no ml-1m profile)"}
    raw = json.loads(p.read_text())
    if "model" not in raw or "params" not in raw:
        raise ValueError(f"{p}: not a profile written by analysis/fit.py (needs model, params)")
    return {
        "model": raw["model"],
        "params": raw["params"],
        "noise_floor": float(raw.get("noise_floor", 0.0)),
        "source": str(p),
    }


def item_embeddings(items: int, dim: int, profile: dict[str, Any], seed: int) -> np.ndarray:
    """[items, dim] float32 with singular values proportional to ``decay(profile, dim)``,
    scaled to unit mean square entries."""
    if items < dim:
        raise ValueError(f"items ({items}) must be >= dim ({dim})")
    rng = np.random.default_rng([seed, 1])
    u, _ = np.linalg.qr(rng.standard_normal((items, dim)))
    w, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    s = decay(profile, dim)
    s = s * math.sqrt(items * dim / float(np.sum(s**2)))
    return ((u * s) @ w.T).astype(np.float32)


def lengths(users: int, mean_len: float, max_len: int, rng: np.random.Generator) -> np.ndarray:
    sigma = 1.0
    raw = rng.lognormal(math.log(mean_len) - sigma**2 / 2, sigma, size=users)
    return np.clip(np.rint(raw), 1, max_len).astype(np.int64)


def write_synthetic_log(
    out: str | Path,
    users: int,
    mean_len: float = 100.0,
    items: int = 100_000,
    dim: int = 64,
    files: int | None = None,
    seed: int = 0,
    profile: str | Path | None = None,
    max_len: int | None = None,
) -> dict[str, Any]:
    """Write ``out/part-XXXXX.parquet`` (user, item, ts) + ``item_embeddings.npy`` + ``synthlog.json``."""
    if users < 1 or mean_len < 1 or items < 1:
        raise ValueError("users, mean_len and items must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = files or max(1, math.ceil(users / 50_000))
    max_len = max_len or int(50 * mean_len)
    prof = load_decay(profile)
    np.save(out / "item_embeddings.npy", item_embeddings(items, dim, prof, seed))
    ranks = np.arange(items, dtype=np.float64)
    cdf = np.cumsum((ranks + 10.0) ** -0.9)
    cdf /= cdf[-1]
    ids = np.random.default_rng([seed, 2]).permutation(items)  # popularity rank -> item id
    edges = np.linspace(0, users, files + 1).round().astype(np.int64)
    rows = 0
    for f in range(files):
        rng = np.random.default_rng([seed, 3, f])
        u0, u1 = int(edges[f]), int(edges[f + 1])
        ln = lengths(u1 - u0, mean_len, max_len, rng)
        user = np.repeat(np.arange(u0, u1, dtype=np.int64), ln)
        item = ids[np.minimum(np.searchsorted(cdf, rng.random(len(user))), items - 1)]
        starts = np.repeat(np.cumsum(ln) - ln, ln)
        ts = 1_600_000_000 + (np.arange(len(user)) - starts) * 60
        tbl = pa.table({"user": user, "item": item.astype(np.int64), "ts": ts.astype(np.int64)})
        pq.write_table(tbl, out / f"part-{f:05d}.parquet")
        rows += len(user)
    meta = {
        "synthetic": True,
        "users": users,
        "rows": rows,
        "mean_len_requested": mean_len,
        "mean_len": rows / users,
        "max_len": max_len,
        "items": items,
        "dim": dim,
        "files": files,
        "seed": seed,
        "lengths": "lognormal(sigma=1), clipped",
        "popularity": "p_i ~ (i + 10)^-0.9",
        "embedding_decay": prof,
    }
    (out / "synthlog.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def add_synthlog_parser(sub: Any) -> None:
    p = sub.add_parser(
        "synthlog",
        help="write a synthetic (user, item, ts) parquet log with "
        "spectrum-matched item embeddings (the scale benchmark's input)",
    )
    from bench.validate import nonneg_int, positive_float, positive_int

    p.add_argument("--out", required=True, help="output folder (parquet files + items.npy)")
    p.add_argument("--users", type=positive_int, required=True, help="number of users")
    p.add_argument(
        "--mean-len",
        type=positive_float,
        default=100.0,
        help="mean behaviours per user (log-normal, heavy tail; default 100)",
    )
    p.add_argument(
        "--items", type=positive_int, default=100_000, help="catalogue size (default 100k)"
    )
    p.add_argument("--dim", type=positive_int, default=64, help="embedding dimension (default 64)")
    p.add_argument(
        "--files", type=positive_int, default=None, help="parquet files (default: 1 per 50k users)"
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--profile", default=None, help="a profile.json (default results/spectra/ml-1m)")
    p.set_defaults(func=_cmd)


def _cmd(args: Any) -> int:
    import time

    t0 = time.perf_counter()
    meta = write_synthetic_log(
        args.out,
        args.users,
        args.mean_len,
        args.items,
        args.dim,
        args.files,
        args.seed,
        args.profile,
    )
    print(
        f"wrote {meta['rows']:,} synthetic rows ({meta['users']:,} users, mean length "
        f"{meta['mean_len']:.1f}, {meta['items']:,} items, d = {meta['dim']}) in {meta['files']} "
        f"files + item_embeddings.npy to {args.out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0
