"""Closing the loop: measured KL of ``svd_exact`` at each rank on real users' K, V.

For a seeded sample of users stratified by N bin: K = X_u W_k, V = X_u W_v and queries
Q = X_cand W_q (sasrec), or K = V = X_u and Q = X_cand (ppmi, random), where the
candidates are ``n_candidates`` random items plus the user's held-out item when known; a route
whose meta says ``queries: behaviours`` (``byo`` with ``--wqkv``) takes up to
``n_candidates`` of the user's own behaviours as the query items instead.
Dense softmax weights P and the implied weights of ``svd_exact[rank=r, solver=gram]``
(a true distribution) give KL(P || P_r) per query row with ``bench.metrics.kl_rows``
(smoothing a = 1e-6); the per-user mean over rows is stored for every r.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .embeddings import RouteEmbeddings
from .loaders import Interactions
from .spectra import N_BIN_LABELS, log_bins_label

RANKS = (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 96, 128)
BUDGETS = (1e-2, 1e-3)


def _kl_rows(p: torch.Tensor, q: torch.Tensor, a: float = 1e-6) -> torch.Tensor:
    try:
        from bench.metrics import kl_rows
    except ImportError:  # bench not installed: same formula, local copy
        q_s = (1 - a) * q.double() + a / p.shape[-1]
        p = p.double()
        return torch.where(p > 0, p * torch.log(p / q_s), torch.zeros_like(p)).sum(-1).clamp_min(0)
    return kl_rows(p, q, None, a)[0]


def sample_users(
    lengths: np.ndarray, max_users: int = 300, min_n: int = 2, seed: int = 0
) -> np.ndarray:
    """Up to ``max_users`` users, equal shares per N bin (bins with fewer users give all of them)."""
    rng = np.random.default_rng(seed)
    bins = log_bins_label(
        lengths,
    )
    eligible = lengths >= min_n
    groups = [np.flatnonzero(eligible & (bins == b)) for b in N_BIN_LABELS]
    groups = [g for g in groups if len(g)]
    chosen: list[np.ndarray] = []
    left = max_users
    for i, g in enumerate(sorted(groups, key=len)):
        share = left // (len(groups) - i)
        take = g if len(g) <= share else rng.choice(g, share, replace=False)
        chosen.append(np.sort(take))
        left -= len(take)
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def user_qkv(
    emb: RouteEmbeddings, seq: np.ndarray, candidates: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.asarray(emb.item, dtype=np.float32))
    xu, xc = x[torch.from_numpy(seq)], x[torch.from_numpy(candidates)]
    if emb.w_k is not None:
        wq, wk, wv = (
            torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in (emb.w_q, emb.w_k, emb.w_v)
        )
        return xc @ wq, xu @ wk, xu @ wv
    return xc, xu, xu


def s_next(sv: np.ndarray, r: int) -> float:
    """s_{r+1}: the largest singular value a rank-r factorisation drops (0 if none)."""
    return float(sv[r]) if r < len(sv) else 0.0


def truncate_state(state: Any, r: int) -> Any:
    """The svd_exact state of rank r from one of higher rank (leading r singular triplets)."""
    if r == state.rank:
        return state
    return dataclasses.replace(
        state,
        u=state.u[..., :r],
        a=state.a[..., :r, :],
        b=state.b[..., :r, :],
        s=state.s[..., :r],
        rank=r,
    )


def user_kl_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ids: dict[str, Any],
    ranks: tuple[int, ...],
    methods: tuple[str, ...],
    solver: str = "gram",
    ops: dict[int, object] | None = None,
) -> list[dict[str, Any]]:
    """KL(dense || method at rank r) of one user's queries q [M, d] over keys k [N, d] and
    values v [N, dv] (real behaviours only), one row per method x rank."""
    import attention_impls as ai

    ops = {} if ops is None else ops
    q4, k4, v4 = q[None, None], k[None, None], v[None, None]
    dense = ai.get("dense")
    p = dense.implied_weights(dense.prepare(k4, v4), q4)[0, 0]
    n, d = k.shape
    limit = min(n, d + v.shape[1])  # above that the factorisation is exact anyway
    r_top = min(max(ranks), limit)
    op = ops.setdefault(r_top, ai.get("svd_exact", rank=r_top, solver=solver))
    state = op.prepare(k4, v4)  # one decomposition per user; rank r = its leading r factors
    # the score-error bound of DESIGN.md: KL(P || P_r) <= 2 s_{r+1} max_i ||q_i|| / sqrt(d),
    # s_{r+1} the (r+1)-th singular value of [K | V] (fp64; 0 where r reaches its rank)
    sv = torch.linalg.svdvals(torch.cat([k, v], dim=1).double()).numpy()
    q_norm_max = float(q.double().norm(dim=1).max())
    rows = []
    for meth, r in [(m_, r_) for m_ in methods for r_ in ranks]:
        r_used = min(r, limit)
        if meth == "svd_exact":
            w = op.implied_weights(truncate_state(state, r_used), q4)[0, 0]
        else:
            from bench.metrics import signed_to_distribution

            tok = ai.get("svd_tokens", rank=r_used, solver=solver)
            w = signed_to_distribution(tok.implied_weights(tok.prepare(k4, v4), q4)[0, 0])[0]
        kl = _kl_rows(p, w).numpy()
        rows.append(
            {
                **ids,
                "method": meth,
                "n": int(n),
                "m": int(q.shape[0]),
                "d": int(d),
                "rank": int(r),
                "rank_used": int(r_used),
                "kl_mean": float(kl.mean()),
                "kl_p99": float(np.quantile(kl, 0.99)),
                "kl_max": float(kl.max()),
                "q_norm_max": q_norm_max,
                "s_next": s_next(sv, r_used),
                "kl_bound": 2.0 * s_next(sv, r_used) * q_norm_max / math.sqrt(d),
            }
        )
    return rows


def kl_by_rank(
    data: Interactions,
    emb: RouteEmbeddings,
    ranks: tuple[int, ...] = RANKS,
    max_users: int = 300,
    n_candidates: int = 64,
    seed: int = 0,
    solver: str = "gram",
    progress: bool = True,
    methods: tuple[str, ...] = ("svd_exact",),
    temperature: float = 1.0,
) -> pd.DataFrame:
    """One row per sampled user x method x rank: mean / p99 / max KL over the user's query rows.
    ``temperature`` scales the queries (q -> t q, i.e. logits x t) to show how a KL budget
    depends on the score scale; the decision uses t = 1, the model's own scale.

    ``svd_tokens`` (optional) has signed, unnormalised implied weights over the behaviours:
    negatives are clipped and rows renormalised (``bench.metrics.signed_to_distribution``,
    as the harness does) before the KL."""
    bad = set(methods) - {"svd_exact", "svd_tokens"}
    if bad:
        raise ValueError(f"--kl-methods: {sorted(bad)} not supported (svd_exact, svd_tokens)")

    lengths = data.lengths()
    users = sample_users(lengths, max_users, seed=seed)
    rng = np.random.default_rng(seed + 1)
    ops: dict[int, object] = {}
    rows = []
    for u in tqdm(users, desc=f"kl {data.name}/{emb.route}", disable=not progress, leave=False):
        seq = data.sequences[u]
        cand = rng.integers(0, data.n_items, n_candidates)
        if emb.meta.get("queries") == "behaviours":  # byo with W: Q = E_u W_q, self-attention
            cand = rng.choice(seq, min(len(seq), n_candidates), replace=False)
        elif data.held_out is not None and data.held_out[u] >= 0:
            cand = np.append(cand, data.held_out[u])
        q, k, v = user_qkv(emb, seq, cand)
        q = q * temperature if temperature != 1.0 else q
        ids = {"dataset": data.name, "route": emb.route, "user": str(data.users[u])}
        rows += user_kl_rows(q, k, v, ids, ranks, methods, solver, ops)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["n_bin"] = log_bins_label(df["n"].to_numpy())
    return df


def rank_needed(
    kl: pd.DataFrame, budgets: tuple[float, ...] = BUDGETS, method: str = "svd_exact"
) -> pd.DataFrame:
    """Per user: the smallest measured r whose mean KL meets each budget (NaN: none up to the
    largest r), for one method's rows (tables without a method column are svd_exact's)."""
    out = []
    if "method" in kl.columns:
        kl = kl[kl["method"].fillna("svd_exact") == method]
    for (ds, route, user), g in kl.groupby(["dataset", "route", "user"], sort=False):
        g = g.sort_values("rank")
        row = {
            "dataset": ds,
            "route": route,
            "user": user,
            "n": int(g["n"].iloc[0]),
            "n_bin": g["n_bin"].iloc[0],
        }
        for b in budgets:
            ok = g.loc[g["kl_mean"] <= b, "rank"]
            row[f"r_kl_{b:g}"] = float(ok.min()) if len(ok) else math.nan
        out.append(row)
    return pd.DataFrame(out)


def rank_needed_summary(need: pd.DataFrame, budgets: tuple[float, ...] = BUDGETS) -> pd.DataFrame:
    """Distribution over users of the rank needed, per route and N bin (unmet counted, not dropped)."""
    rows = []
    for (route, nb), g in need.groupby(["route", "n_bin"], sort=False):
        for b in budgets:
            col = g[f"r_kl_{b:g}"]
            met = col.dropna()
            rows.append(
                {
                    "route": route,
                    "n_bin": nb,
                    "budget": b,
                    "users": len(g),
                    "unmet": int(col.isna().sum()),
                    "r_median": float(met.median()) if len(met) else math.nan,
                    "r_p90": float(np.quantile(col.fillna(np.inf), 0.9)) if len(col) else math.nan,
                }
            )
    return pd.DataFrame(rows)


TEMPERATURES = (0.25, 0.5, 1.0, 2.0)


def by_temperature(
    tables: dict[float, pd.DataFrame], budgets: tuple[float, ...] = BUDGETS
) -> pd.DataFrame:
    """``rank_needed_summary`` per query temperature, stacked (column ``temperature``): the rank
    a KL budget needs is not a property of the data alone but of the score scale too."""
    frames = []
    for t, kl in sorted(tables.items()):
        summ = rank_needed_summary(rank_needed(kl, budgets), budgets)
        summ.insert(0, "temperature", t)
        frames.append(summ)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def bound_vs_measured(kl: pd.DataFrame, method: str = "svd_exact") -> pd.DataFrame:
    """Per route x N bin x rank: median measured worst-row KL against the median score-error
    bound 2 s_{r+1} max||q|| / sqrt(d), and how loose the bound is (median of bound / KL per
    user, over users with KL > 1e-12). Ranks at which the factorisation is exact drop out."""
    if "kl_bound" not in kl.columns:
        raise ValueError("kl_by_rank table has no kl_bound column (measured before the bound was)")
    d = kl[(kl.get("method", pd.Series(method, index=kl.index)).fillna(method) == method)]
    d = d[d["s_next"] > 0].copy()
    d["ratio"] = d["kl_bound"] / d["kl_max"].where(d["kl_max"] > 1e-5)
    out = (
        d.groupby(["route", "n_bin", "rank"], sort=True)
        .agg(
            users=("user", "nunique"),
            kl_max_median=("kl_max", "median"),
            kl_bound_median=("kl_bound", "median"),
            looseness_median=("ratio", "median"),
            bound_holds=("kl_bound", lambda b: bool((d.loc[b.index, "kl_max"] <= b + 1e-5).all())),
        )
        .reset_index()
    )
    return out
