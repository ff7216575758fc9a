"""Bring your own K/V: per-user keys, values and optionally queries from an ``.npz`` or
``.safetensors`` file, for the KL-by-rank step (``python -m analysis kv``) and so for ``decide``.

Arrays: ``k`` [users, N, d] and ``v`` [users, N, dv] (or [users, heads, N, d]: each head is
judged as its own row, user id ``u/h``), optional ``q`` [users, M, d] (or [users, heads, M, d]),
optional ``mask`` [users, N] (True = real behaviour) or ``lengths`` [users] (the first L
behaviours are real). Without ``q`` the queries are drawn (seeded Gaussian at the keys' RMS)
and the output says so. The file type is read from its first bytes; nothing is unpickled.
The loader and its checks are ``bench.arrays.load_kv``, shared with the bench's ``real`` family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.arrays import load_kv

from .spectra import log_bins_label


def per_user(path: str | Path, n_queries: int = 64, seed: int = 0):
    """Yield (user id, q [M, d], k [n, d], v [n, dv]) with padding removed; and a note on queries."""
    a = load_kv(path, "--kv")
    u_, h_, n_, d_ = a.shape
    if a.q is not None:
        note = f"queries: the file's q ({a.q.shape[2]} per user and head)"
    else:
        note = f"queries: none in the file, so {n_queries} seeded Gaussian queries per user and head at the keys' RMS"
    note += f"; padding: {a.padding}"
    rng = np.random.default_rng(seed)
    users = []
    for u in range(u_):
        real = a.mask[u]
        if real.sum() < 2:
            continue
        for h in range(h_):
            kk, vv = a.k[u, h, real], a.v[u, h, real]
            if a.q is not None:
                qq = a.q[u, h]
            else:
                rms = float(np.sqrt((kk**2).mean())) or 1.0
                qq = (rng.standard_normal((n_queries, d_)) * rms).astype(np.float32)
            uid = str(u) if h_ == 1 else f"{u}/{h}"
            users.append((uid, torch.from_numpy(qq), torch.from_numpy(kk), torch.from_numpy(vv)))
    return users, note


def kl_from_kv(
    path: str | Path,
    name: str,
    ranks: tuple[int, ...],
    methods: tuple[str, ...],
    n_queries: int = 64,
    seed: int = 0,
    max_users: int | None = None,
) -> tuple[pd.DataFrame, str]:
    """kl_by_rank.csv rows (route ``kv``) for the users of a K/V file."""
    from .closing_loop import user_kl_rows

    users, note = per_user(path, n_queries, seed)
    if max_users is not None and len(users) > max_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
        users = [users[i] for i in pick]
    ops: dict[int, Any] = {}
    rows = []
    for uid, q, k, v in users:
        rows += user_kl_rows(
            q, k, v, {"dataset": name, "route": "kv", "user": uid}, ranks, methods, "gram", ops
        )
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"--kv {path}: no user with at least 2 real behaviours")
    df["n_bin"] = log_bins_label(df["n"].to_numpy())
    return df, note
