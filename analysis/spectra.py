"""Per-user singular values of X_u (N_u x d) and rank measures, batched.

Route: bucket users by length, pad rows with zeros (zero rows leave X^T X unchanged),
form the d x d Gram matrices with one batched matmul per bucket, and take
``torch.linalg.eigvalsh`` in float64 on ``[B, d, d]``; s = sqrt(clamp(eig, 0)).
Centred spectra use G_c = G - N mu mu^T (mu = the user's row mean), so one pass gives both.
Buckets of users shorter than d use the L x L inner Gram X X^T instead (same non-zero
eigenvalues, far cheaper for logs of many short users such as amazon-book).
Eigenvalues below ``rel_floor * lambda_max`` are set to 0: the Gram route squares the
condition number, so singular values below ~1e-7 s_1 are numerical noise, not signal.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

ENERGY_LEVELS = (0.90, 0.95, 0.99)
GRAM_REL_FLOOR = 1e-13  # on eigenvalues (= s^2), i.e. ~3e-7 on singular values


def energy_rank(s: np.ndarray, p: float) -> np.ndarray:
    """Smallest r with sum_{i<=r} s_i^2 / sum s_i^2 >= p, per row of s ([U, k], sorted desc). 0 for all-zero rows."""
    s = np.atleast_2d(np.asarray(s, dtype=np.float64))
    e = s**2
    tot = e.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cum = np.cumsum(e, axis=1) / np.where(tot > 0, tot, 1.0)
    r = (cum < p - 1e-12).sum(axis=1) + 1
    return np.where(tot[:, 0] > 0, np.minimum(r, s.shape[1]), 0)


def effective_rank(s: np.ndarray) -> np.ndarray:
    """Roy & Vetterli (2007): exp(H(p)), p = s / ||s||_1 (0 for all-zero rows)."""
    s = np.atleast_2d(np.asarray(s, dtype=np.float64))
    tot = s.sum(axis=1, keepdims=True)
    p = s / np.where(tot > 0, tot, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.where(tot[:, 0] > 0, np.exp(h), 0.0)


def stable_rank(s: np.ndarray) -> np.ndarray:
    """||X||_F^2 / s_1^2 (0 for all-zero rows)."""
    s = np.atleast_2d(np.asarray(s, dtype=np.float64))
    s1 = s.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s1 > 0, (s**2).sum(axis=1) / np.where(s1 > 0, s1, 1.0) ** 2, 0.0)


def rank_measures(s: np.ndarray) -> dict[str, np.ndarray]:
    """All measures from singular values [U, k] (sorted descending)."""
    s = np.atleast_2d(np.asarray(s, dtype=np.float64))
    out: dict[str, np.ndarray] = {
        f"r{int(round(p * 100))}": energy_rank(s, p) for p in ENERGY_LEVELS
    }
    out["effective_rank"] = effective_rank(s)
    out["stable_rank"] = stable_rank(s)
    out["s1"] = s[:, 0] if s.shape[1] else np.zeros(len(s))
    return out


def _buckets(
    lengths: np.ndarray, dim: int, max_elems: int = 2**24, max_waste: float = 1.25
) -> list[np.ndarray]:
    """Groups of user indices of similar length; padded size <= max_elems, padding <= max_waste x."""
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    while start < len(order):
        stop = start + 1
        first = max(int(lengths[order[start]]), 1)
        while stop < len(order):
            lmax = int(lengths[order[stop]])
            if lmax > max_waste * first + 8 or (stop - start + 1) * lmax * dim > max_elems:
                break
            stop += 1
        groups.append(order[start:stop])
        start = stop
    return groups


def gram_spectra(
    sequences: list[np.ndarray],
    table: np.ndarray | torch.Tensor,
    project: np.ndarray | torch.Tensor | None = None,
    modes: tuple[bool, ...] = (False, True),
) -> dict[bool, np.ndarray]:
    """Singular values {centred: [U, d]} (descending) of X_u = table[seq_u] (@ project).

    One Gram per user serves both modes (centred subtracts the user's row mean).
    Users with N_u < d get trailing zeros.
    """
    emb = (
        torch.as_tensor(np.asarray(table, dtype=np.float32))
        if not isinstance(table, torch.Tensor)
        else table
    )
    emb = emb.detach().to(torch.float32)
    if project is not None:
        emb = emb @ torch.as_tensor(np.asarray(project), dtype=torch.float32)
    d = emb.shape[1]
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    out = {c: np.zeros((len(sequences), d), dtype=np.float64) for c in modes}
    emb_pad = torch.cat([emb, torch.zeros(1, d, dtype=emb.dtype)]).to(
        torch.float64
    )  # last row = padding
    pad_idx = emb.shape[0]
    for grp in _buckets(lengths, d):
        lmax = int(lengths[grp].max())
        if lmax == 0:
            continue
        idx = np.full((len(grp), lmax), pad_idx, dtype=np.int64)
        for j, u in enumerate(grp):
            s = sequences[u]
            idx[j, : len(s)] = s
        x = emb_pad[torch.from_numpy(idx)]  # [B, L, d] float64
        short = lmax < d  # then the L x L inner Gram X X^T has the same non-zero spectrum, cheaper
        real = torch.from_numpy(idx != pad_idx)[..., None].to(torch.float64)
        g = None if short else x.transpose(1, 2) @ x
        for centred in modes:
            if short:
                xc = x
                if centred:
                    n = torch.as_tensor(lengths[grp], dtype=torch.float64).clamp_min(1)
                    xc = x - (x.sum(dim=1) / n[:, None])[:, None, :] * real  # padding rows stay 0
                gm = xc @ xc.transpose(1, 2)
            elif centred:
                n = torch.as_tensor(lengths[grp], dtype=torch.float64).clamp_min(1)
                mu = x.sum(dim=1) / n[:, None]
                gm = g - n[:, None, None] * mu[:, :, None] * mu[:, None, :]
            else:
                gm = g
            ev = torch.linalg.eigvalsh(gm).flip(-1)  # descending
            floor = GRAM_REL_FLOOR * ev[:, :1].clamp_min(0)
            ev = torch.where(ev > floor, ev, torch.zeros((), dtype=ev.dtype))
            out[centred][grp, : ev.shape[1]] = ev.sqrt().numpy()
    return out


def gram_singular_values(
    sequences: list[np.ndarray],
    table: np.ndarray | torch.Tensor,
    project: np.ndarray | torch.Tensor | None = None,
    centred: bool = False,
) -> np.ndarray:
    """Singular values [U, d] of X_u = table[seq_u] (@ project) for one mode."""
    return gram_spectra(sequences, table, project, modes=(centred,))[centred]


def svd_singular_values(x: np.ndarray, centred: bool = False) -> np.ndarray:
    """Reference: numpy.linalg.svd singular values of one matrix (padded to its column count)."""
    x = np.asarray(x, dtype=np.float64)
    if centred:
        x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    return np.pad(s, (0, x.shape[1] - len(s)))


def user_table(
    sequences: list[np.ndarray],
    table: np.ndarray,
    dataset: str,
    route: str,
    matrix: str,
    users: np.ndarray | None = None,
    project: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[bool, np.ndarray]]:
    """One row per user x centred flag with the rank measures; also returns the raw spectra."""
    frames = []
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    distinct = np.fromiter(
        (len(np.unique(s)) for s in sequences), dtype=np.int64, count=len(sequences)
    )
    dim = int(table.shape[1] if project is None else np.asarray(project).shape[1])
    spectra = gram_spectra(sequences, table, project, modes=(False, True))
    for centred in (False, True):
        s = spectra[centred]
        m = rank_measures(s)
        frames.append(
            pd.DataFrame(
                {
                    "dataset": dataset,
                    "user": users if users is not None else np.arange(len(sequences)),
                    "route": route,
                    "matrix": matrix,
                    "centred": centred,
                    "n": lengths,
                    "n_distinct": distinct,
                    "dim": dim,
                    "rank_cap": np.minimum(distinct - (1 if centred else 0), dim).clip(min=0),
                    **m,
                }
            )
        )
    return pd.concat(frames, ignore_index=True), spectra


def log_bins_label(n: np.ndarray, edges: tuple[int, ...] = (1, 16, 64, 256, 1000)) -> np.ndarray:
    """N bin labels '[1,16)', ..., '[1000,inf)'."""
    labels = [f"[{a},{b})" for a, b in zip(edges[:-1], edges[1:], strict=True)] + [
        f"[{edges[-1]},inf)"
    ]
    idx = np.searchsorted(np.asarray(edges), np.asarray(n), side="right") - 1
    idx = np.clip(idx, 0, len(labels) - 1)
    return np.asarray(labels, dtype=object)[idx]


N_BIN_EDGES = (1, 16, 64, 256, 1000)
N_BIN_LABELS = tuple(
    [f"[{a},{b})" for a, b in zip(N_BIN_EDGES[:-1], N_BIN_EDGES[1:], strict=True)]
    + [f"[{N_BIN_EDGES[-1]},inf)"]
)


def bin_midpoint(label: str) -> float:
    """Geometric midpoint of an N bin (the top bin uses 2000)."""
    a, b = label.strip("[)").split(",")
    lo = float(a)
    hi = 4000.0 if b == "inf" else float(b)
    return math.sqrt(lo * hi)
