"""Section 7 figures: scree / cumulative energy, energy ranks vs N, KL vs r on real data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..load import DatasetSpectra
from .common import Fig, empty_note, grid, legend_below, log2_axis, series_colors

MEASURES = [
    ("r90", "r_0.90"),
    ("r95", "r_0.95"),
    ("r99", "r_0.99"),
    ("effective_rank", "effective rank"),
]


def is_null(route: str) -> bool:
    r = route.lower()
    return "random" in r or "null" in r or "gauss" in r


def series_name(df: pd.DataFrame) -> pd.Series:
    """'route' or 'route:matrix' when a route has several matrices (x, k, ...)."""
    route = df["route"].astype(str) if "route" in df.columns else pd.Series("all", index=df.index)
    if "matrix" not in df.columns:
        return route
    matrix = df["matrix"].astype(str)
    multi = df.groupby(route)["matrix"].transform("nunique") > 1
    return route.where(~multi, route + ":" + matrix)


def _style(name: str, colors: dict[str, str]) -> dict:
    """Colour by route (same in every panel), dash-dot for the K matrix, grey dashes for the null."""
    if is_null(name):
        return {"color": "#888888", "ls": "--", "lw": 1.6}
    route, _, matrix = name.partition(":")
    ls = {"": "-", "x": "-", "k": "-.", "kv": ":", "v": (0, (6, 2, 1, 2, 1, 2))}.get(
        matrix, (0, (1, 1))
    )
    return {
        "color": colors.get(route, colors.get(name, "#1f77b4")),
        "ls": ls,
        "lw": 2.2 if matrix == "kv" else 1.8,
    }


def route_colors(spectra: dict[str, DatasetSpectra]) -> dict[str, str]:
    """Series names in drawing order -> colour of their route."""
    names = _all_series(spectra)
    routes = list(dict.fromkeys(n.partition(":")[0] for n in names if not is_null(n)))
    pal = series_colors(routes)
    return {n: pal.get(n.partition(":")[0], "#888888") for n in names} | pal


def uncentred(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    if "centred" not in df.columns or df["centred"].nunique() <= 1:
        return df, ""
    c = df["centred"].astype(str).str.lower().isin(["true", "1", "yes"])
    return df[~c], " (uncentred)"


def _bin_value(b) -> float:
    nums = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", str(b))]
    if not nums:
        return np.nan
    return float(np.sqrt(nums[0] * nums[1])) if len(nums) >= 2 else nums[0]


def pick_bin(s: pd.DataFrame, min_users: int = 10) -> str:
    """The longest-history N bin that every series has with >= min_users users, else 'all'."""
    bins = [b for b in s["n_bin"].astype(str).unique() if not np.isnan(_bin_value(b))]
    n_series = s["series"].nunique()
    good = []
    for b in bins:
        g = s[s["n_bin"].astype(str) == b]
        users = (
            g.groupby("series")["users"].min()
            if "users" in g.columns
            else pd.Series(min_users, index=g["series"].unique())
        )
        if len(users) == n_series and users.min() >= min_users:
            good.append(b)
    if good:
        return max(good, key=_bin_value)
    return "all" if "all" in set(s["n_bin"].astype(str)) else s["n_bin"].astype(str).iloc[0]


def _all_series(spectra: dict[str, DatasetSpectra]) -> list[str]:
    names: list[str] = []
    for ds in spectra.values():
        for df in (ds.users, ds.scree, ds.summary, ds.kl_by_rank):
            if df is not None and "route" in df.columns:
                names += list(series_name(df).unique())
    names = list(dict.fromkeys(names))
    return [n for n in names if not is_null(n)] + [n for n in names if is_null(n)]


def scree(spectra: dict[str, DatasetSpectra], key: str) -> Fig | None:
    dss = [
        ds
        for ds in spectra.values()
        if ds.scree is not None and {"index", "sv_mean"} <= set(ds.scree.columns)
    ]
    if not dss:
        return None
    colors = route_colors(spectra)
    fig, axes = grid(len(dss), 2, row_h=2.6, sharex=False, sharey="col")
    notes = []
    for i, ds in enumerate(dss):
        s = ds.scree.copy()
        s["series"] = series_name(s)
        s, cen = uncentred(s)
        if "n_bin" in s.columns and s["n_bin"].nunique() > 1:
            b = pick_bin(s)
            s = s[s["n_bin"] == b]
            notes.append(f"{ds.name}: N bin {b}{cen}")
        for name in [n for n in _all_series(spectra) if n in set(s["series"])]:
            g = s[s["series"] == name].sort_values("index")
            st = _style(name, colors)
            axes[i, 0].plot(g["index"], g["sv_mean"], label=name, **st)
            if "energy_cum" in g.columns:
                axes[i, 1].plot(g["index"], g["energy_cum"], label=name, **st)
        for lvl in (0.90, 0.95, 0.99):
            axes[i, 1].axhline(lvl, color="#bbb", lw=0.8, ls=":")
        axes[i, 0].set_yscale("log")
        axes[i, 0].set_title(f"{ds.name} - scree (normalised singular values), real data")
        axes[i, 1].set_title(f"{ds.name} - cumulative energy, real data")
        axes[i, 0].set_ylabel("sigma_i / sigma_1")
        axes[i, 1].set_ylabel("energy fraction")
        for ax in axes[i]:
            ax.set_xlabel("index i")
    title = "Rank spectra of real behaviour embeddings (dashed grey: random null)"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "Mean normalised singular values of each user's behaviour matrix X_u (and K = X_u W_k for the "
        "sequential model) per embedding route, and the cumulative energy; dotted lines at 0.90, 0.95, "
        "0.99. Random embeddings of the same shape are the null model. "
        + ("Shown: " + "; ".join(notes) + "." if notes else "")
    )
    return Fig(key, title, cap, fig)


def _ranks_table(ds: DatasetSpectra) -> tuple[pd.DataFrame, str]:
    """Median measure per series and N bin, from users.csv (preferred) or summary.csv."""
    if ds.users is not None and "n" in ds.users.columns:
        u, cen = uncentred(ds.users.copy())
        u["series"] = series_name(u)
        u["n"] = pd.to_numeric(u["n"], errors="coerce")
        u = u[u["n"] > 0]
        edges = 2.0 ** np.arange(
            np.floor(np.log2(u["n"].min())), np.ceil(np.log2(u["n"].max())) + 1
        )
        if len(edges) < 2:
            edges = np.array([u["n"].min(), u["n"].max() + 1])
        u["bin"] = pd.cut(u["n"], edges, include_lowest=True)
        cols = [c for c, _ in MEASURES if c in u.columns]
        g = (
            u.groupby(["series", "bin"], observed=True)
            .agg(n_mid=("n", "median"), users=("n", "size"), **{c: (c, "median") for c in cols})
            .reset_index()
        )
        return g[g["users"] >= 3], "users.csv (median per log2 N bin, bins with >= 3 users)" + cen
    if ds.summary is not None:
        s, cen = uncentred(ds.summary.copy())
        s["series"] = series_name(s)
        nc = next((c for c in ("n_median", "n_mid", "n_mean", "n") if c in s.columns), None)
        s["n_mid"] = (
            pd.to_numeric(s[nc], errors="coerce")
            if nc
            else s.get("n_bin", pd.Series(dtype=str)).map(_bin_value)
        )
        for c, _ in MEASURES:
            src = next(
                (x for x in (f"{c}_median", f"{c}_p50", f"{c}_mean", c) if x in s.columns), None
            )
            if src is not None:
                s[c] = pd.to_numeric(s[src], errors="coerce")
        return s, "summary.csv" + cen
    return pd.DataFrame(), ""


def ranks_vs_n(spectra: dict[str, DatasetSpectra], key: str) -> Fig | None:
    tabs = [(ds, *_ranks_table(ds)) for ds in spectra.values()]
    tabs = [t for t in tabs if not t[1].empty]
    if not tabs:
        return None
    colors = route_colors(spectra)
    fig, axes = grid(len(tabs), len(MEASURES), row_h=2.4, sharex=False, sharey="row")
    srcs = []
    for i, (ds, t, src) in enumerate(tabs):
        srcs.append(f"{ds.name}: {src}")
        for j, (c, lab) in enumerate(MEASURES):
            ax = axes[i, j]
            if c not in t.columns:
                empty_note(ax, f"no {c} column")
                continue
            for name in [n for n in _all_series(spectra) if n in set(t["series"])]:
                g = t[t["series"] == name].sort_values("n_mid")
                ax.plot(g["n_mid"], g[c], marker="o", ms=3, label=name, **_style(name, colors))
            log2_axis(ax, "x")
            if i == 0:
                ax.set_title(lab)
            if i == len(tabs) - 1:
                ax.set_xlabel("N (user history length)")
            if j == 0:
                ax.set_ylabel(f"{ds.name}\nrank", fontsize=9)
    title = "Energy ranks and effective rank vs N - real data against the random null"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "r_p is the smallest r whose top singular values hold a fraction p of the energy; effective rank "
        "is exp of the entropy of the normalised singular values (Roy and Vetterli 2007). Dashed grey: "
        "random embeddings (null). Source: " + "; ".join(srcs) + "."
    )
    return Fig(key, title, cap, fig)


def kl_by_rank(spectra: dict[str, DatasetSpectra], key: str) -> Fig | None:
    dss = []
    for ds in spectra.values():
        k = ds.kl_by_rank
        if k is None:
            continue
        rcol = next((c for c in ("r", "rank") if c in k.columns), None)
        vcol = next((c for c in ("kl_mean", "kl", "kl_p50", "kl_median") if c in k.columns), None)
        if rcol and vcol:
            dss.append((ds, rcol, vcol))
    if not dss:
        return None
    colors = route_colors(spectra)
    ncols = min(3, len(dss))
    nrows = -(-len(dss) // ncols)
    fig, axes = grid(nrows, ncols, row_h=3.0, sharey=True, sharex=False)
    for ax in axes.ravel()[len(dss) :]:
        ax.set_visible(False)
    for j, (ds, rcol, vcol) in enumerate(dss):
        ax = axes.ravel()[j]
        k = ds.kl_by_rank.copy()
        k["series"] = series_name(k) if "route" in k.columns else "svd_exact"
        for name in [n for n in _all_series(spectra) if n in set(k["series"])] or sorted(
            k["series"].unique()
        ):
            g = k[k["series"] == name].groupby(rcol)[vcol]
            med = g.median()
            lo, hi = g.quantile(0.1), g.quantile(0.9)
            st = _style(name, colors)
            ax.plot(med.index, np.maximum(med.values, 1e-10), marker="o", ms=3, label=name, **st)
            ax.fill_between(
                med.index,
                np.maximum(lo.values, 1e-10),
                np.maximum(hi.values, 1e-10),
                color=st["color"],
                alpha=0.15,
                lw=0,
            )
        log2_axis(ax, "x")
        ax.set_yscale("log")
        ax.set_title(ds.name)
        ax.set_xlabel("rank r")
        if j % ncols == 0:
            ax.set_ylabel(f"{vcol} per user")
    title = "Measured KL of svd_exact vs r on real behaviour embeddings (real data)"
    fig.suptitle(title, fontsize=11)
    legend_below(fig, axes)
    cap = (
        "Per-user KL(P || P_r) of svd_exact on real X_u at each rank r: median line and 10-90% band "
        "over users. This is what the decision table's rank choice rests on."
    )
    return Fig(key, title, cap, fig)
