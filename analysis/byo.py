"""Bring your own K/V: per-user keys, values and optionally queries from an ``.npz`` or
``.safetensors`` file, for the KL-by-rank step (``python -m analysis kv``) and so for ``decide``.

Arrays: ``k`` [users, N, d] and ``v`` [users, N, dv] (or [users, heads, N, d]: each head is
judged as its own row, user id ``u/h``), optional ``q`` [users, M, d] (or [users, heads, M, d]),
optional ``mask`` [users, N] (True = real behaviour) or ``lengths`` [users] (the first L
behaviours are real). Without ``q`` the queries are drawn (seeded Gaussian at the keys' RMS)
and the output says so. The file type is read from its first bytes; nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .filetype import sniff
from .spectra import log_bins_label

KEYS = ("k", "v", "q", "mask", "lengths")


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--kv {p}: no such file")
    kind = sniff(p)
    if kind == "npz":
        with np.load(p, allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
    elif kind == "safetensors":
        from safetensors.numpy import load_file

        arrs = load_file(str(p))
    elif kind == "npy":
        raise ValueError(
            f"--kv {p}: a single .npy array; --kv needs named arrays k, v (and q, mask or lengths) "
            "in an .npz (numpy.savez) or .safetensors file"
        )
    else:
        raise ValueError(
            f"--kv {p}: a {kind} file, not an .npz or .safetensors of arrays; --kv reads per-user "
            "K/V arrays (k, v, optional q, mask or lengths); an interaction log goes to --data"
        )
    unknown = set(arrs) - set(KEYS)
    missing = {"k", "v"} - set(arrs)
    if missing:
        raise ValueError(
            f"--kv {p}: lacks arrays {sorted(missing)} (has {sorted(arrs)}; needs k, v, optional "
            "q, mask or lengths)"
        )
    if unknown:
        raise ValueError(f"--kv {p}: unknown arrays {sorted(unknown)} (allowed: {', '.join(KEYS)})")
    return arrs


def _heads(a: np.ndarray, name: str, p: Path) -> np.ndarray:
    """[U, N, d] -> [U, 1, N, d]; [U, H, N, d] kept."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        return a
    raise ValueError(
        f"--kv {p}: {name} has shape {a.shape}; expected [users, N, d] or [users, heads, N, d]"
    )


def per_user(path: str | Path, n_queries: int = 64, seed: int = 0):
    """Yield (user id, q [M, d], k [n, d], v [n, dv]) with padding removed; and a note on queries."""
    p = Path(path)
    a = load_arrays(p)
    k, v = (
        _heads(np.asarray(a["k"], np.float32), "k", p),
        _heads(np.asarray(a["v"], np.float32), "v", p),
    )
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"--kv {p}: k {a['k'].shape} and v {a['v'].shape} differ in users, heads or N"
        )
    u_, h_, n_, d_ = k.shape
    if "mask" in a and "lengths" in a:
        raise ValueError(f"--kv {p}: give mask or lengths, not both")
    if "mask" in a:
        mask = np.asarray(a["mask"])
        if mask.dtype != bool or mask.shape != (u_, n_):
            raise ValueError(
                f"--kv {p}: mask must be bool [users, N] = {(u_, n_)}, got {mask.dtype} {mask.shape}"
            )
    elif "lengths" in a:
        ln = np.asarray(a["lengths"])
        if (
            ln.shape != (u_,)
            or not np.issubdtype(ln.dtype, np.integer)
            or (ln < 0).any()
            or (ln > n_).any()
        ):
            raise ValueError(
                f"--kv {p}: lengths must be integers in [0, {n_}], one per user ({u_})"
            )
        mask = np.arange(n_)[None, :] < ln[:, None]
    else:
        mask = np.ones((u_, n_), bool)
    if not np.isfinite(k).all() or not np.isfinite(v).all():
        raise ValueError(f"--kv {p}: k or v holds NaN or inf")
    q = None
    if "q" in a:
        q = _heads(np.asarray(a["q"], np.float32), "q", p)
        if q.shape[0] != u_ or q.shape[1] != h_ or q.shape[3] != d_:
            raise ValueError(
                f"--kv {p}: q {a['q'].shape} does not match k {a['k'].shape} (users, heads, d)"
            )
        note = f"queries: the file's q ({q.shape[2]} per user and head)"
    else:
        note = f"queries: none in the file, so {n_queries} seeded Gaussian queries per user and head at the keys' RMS"
    rng = np.random.default_rng(seed)
    users = []
    for u in range(u_):
        real = mask[u]
        if real.sum() < 2:
            continue
        for h in range(h_):
            kk, vv = k[u, h, real], v[u, h, real]
            if q is not None:
                qq = q[u, h]
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
