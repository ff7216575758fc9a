"""The seeds' regime, synthetic-from-real: KL of ``svd_exact`` / ``svd_tokens`` by rank at
N = 1k..64k (the papers' lifelong lengths, far beyond the real logs' own users) on keys and
values whose singular-value decay is the one fitted to a dataset's trained SASRec keys
(``results/spectra/<dataset>/profile.json``, written by ``analysis spectrum``).

Each synthetic user is [K | V] = U diag(s) W^T with random orthonormal U, W and s the fitted
decay (the bench's ``spectrum_matched`` family, bench/inputs.py) over its first d singular
values and zero beyond (K and V of a trained model project one d-dim hidden state, so [K|V]
has rank <= d), keys scaled to unit mean square. Queries are Gaussian with standard deviation s / sqrt(d), so the logits q.k have a
standard deviation of about s. The score scale s is the real one: calibrated so that the
synthetic users' median KL equals the median KL the trained model's own users show in the
dataset's longest N bin (``kl_by_rank.csv`` of the same spectra folder), at the measured rank
whose real KL is nearest the 1e-2 budget. The
decision reads that scale (temperature 1); ``kl_by_temperature.csv`` shows how the rank a
budget needs moves when the scale is multiplied by t. The rows are labelled route ``synthetic-from-real``
and the N bin is the single length ``[N,N+1)``, so ``decide`` times each at exactly that N.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROUTE = "synthetic-from-real"
SEEDS_N = (1024, 4096, 10000, 16384, 65536)
SEEDS_M = (256, 1024, 4096)
TEMPERATURES = (0.25, 0.5, 1.0, 2.0)


def read_profile(spectra: str | Path) -> tuple[Path, dict[str, Any]]:
    """The fitted decay profile of a spectra folder (or a profile.json itself)."""
    p = Path(spectra)
    p = p / "profile.json" if p.is_dir() else p
    if not p.is_file():
        raise ValueError(
            f"{p}: no fitted decay profile; run `python -m analysis spectrum` on the dataset "
            "first (it writes profile.json)"
        )
    try:
        desc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a JSON profile ({exc})") from None
    if not isinstance(desc, dict) or not {"model", "params", "noise_floor"} <= set(desc):
        raise ValueError(f"{p}: a profile needs keys model, params, noise_floor")
    return p, desc


def synthetic_kl(
    spectra: str | Path,
    ns: tuple[int, ...] = SEEDS_N,
    users: int = 4,
    n_queries: int = 64,
    ranks: tuple[int, ...] | None = None,
    methods: tuple[str, ...] = ("svd_exact",),
    scale: float = 1.0,
    d: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """kl_by_rank rows (route ``synthetic-from-real``) for ``users`` synthetic users per N,
    logits of standard deviation about ``scale``."""
    from bench.config import Case
    from bench.inputs import build_inputs

    from .closing_loop import RANKS, user_kl_rows

    ranks = RANKS if ranks is None else ranks
    path, desc = read_profile(spectra)
    dataset = str(desc.get("dataset") or path.parent.name)
    if not ns or min(ns) < 2 or users < 1 or n_queries < 1 or scale <= 0:
        raise ValueError(
            "seeds regime: N >= 2, users >= 1, queries >= 1 and a scale > 0 are needed"
        )
    rows: list[dict[str, Any]] = []
    ops: dict[int, object] = {}
    for n in ns:
        case = Case(
            method="dense",
            params=(),
            family="spectrum_matched",
            family_params=(("dataset", dataset), ("max_rank", d), ("profile", str(path))),
            batch=users,
            heads=1,
            n=int(n),
            m=n_queries,
            d=d,
            dv=d,
            dtype="fp32",
            setting="target",
            seed=seed,
            query_scale=scale / math.sqrt(d),
            padding=0.0,
            device="cpu",
        )
        inp = build_inputs(case)
        for u in range(users):
            ids = {"dataset": dataset, "route": ROUTE, "user": f"N{n}-s{u}"}
            rows += user_kl_rows(
                inp.q[u, 0], inp.k[u, 0], inp.v[u, 0], ids, ranks, methods, "gram", ops
            )
    df = pd.DataFrame(rows)
    df["n_bin"] = [f"[{n},{n + 1})" for n in df["n"]]
    df["profile"] = json.dumps(
        {k: desc[k] for k in ("route", "matrix", "model", "params", "noise_floor") if k in desc},
        sort_keys=True,
    )
    return df


def real_reference(
    spectra: str | Path, route: str, budget: float = 1e-2
) -> tuple[float, int, str, int]:
    """(median KL, median N, N bin, rank) of the real users in the longest N bin with at least
    10 users, from the spectra folder's kl_by_rank.csv (svd_exact rows of ``route``), at the
    measured rank whose median KL is nearest ``budget`` (in log scale; KL in [1e-6, 10]): the
    scale is matched where the decision is made, so at the real bin's N the synthetic users
    need about the rank the real ones need."""
    from .decide import _bin_bounds

    p = Path(spectra)
    path = (p if p.is_dir() else p.parent) / "kl_by_rank.csv"
    if not path.is_file():
        raise ValueError(
            f"{path}: no KL table to calibrate the score scale on; run "
            "`python -m analysis spectrum --kl` on the dataset first"
        )
    kl = pd.read_csv(path, dtype={"user": str})
    if "method" in kl.columns:
        kl = kl[kl["method"].fillna("svd_exact") == "svd_exact"]
    kl = kl[kl["route"] == route]
    counts = kl.groupby("n_bin")["user"].nunique()
    bins = sorted((b for b, c in counts.items() if c >= 10), key=lambda b: _bin_bounds(b)[0])
    if not bins:
        raise ValueError(f"{path}: no N bin of route {route!r} has 10 users")
    g = kl[kl["n_bin"] == bins[-1]]
    med = g.groupby("rank")["kl_mean"].median()
    med = med[(med >= 1e-6) & (med <= 10)]
    if med.empty:
        raise ValueError(f"{path}: route {route!r} has no rank with a median KL in [1e-6, 10]")
    rank = int((np.log(med) - math.log(budget)).abs().idxmin())
    users = g[g["rank"] == rank]
    return float(med[rank]), int(users["n"].median()), str(bins[-1]), rank


def calibrate_scale(
    spectra: str | Path, target_kl: float, n: int, rank: int = 16, users: int = 4, d: int = 64
) -> float:
    """The logit scale at which the synthetic users' median KL at ``rank`` equals
    ``target_kl`` at length ``n`` (bisection in log scale; KL grows with the scale)."""

    def kl_at(s: float) -> float:
        df = synthetic_kl(
            spectra, (n,), users=users, ranks=(rank,), methods=("svd_exact",), scale=s, d=d
        )
        return float(df["kl_mean"].median())

    lo, hi = math.log(1 / 64), math.log(256.0)
    if kl_at(math.exp(hi)) < target_kl or kl_at(math.exp(lo)) > target_kl:
        raise ValueError(
            f"seeds regime: KL {target_kl:.3g} at rank {rank} is out of reach of "
            f"scales {math.exp(lo):.3g}..{math.exp(hi):.3g} on this profile"
        )
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kl_at(math.exp(mid)) < target_kl else (lo, mid)
    return math.exp((lo + hi) / 2)
