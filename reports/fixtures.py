"""Small made-up result tables in the contract's format, for tests and demos.

Every value here is invented (preset "fixture", git commit "fixture"); the
numbers only have to look like the real thing so each figure has something to draw.
`python -m reports fixtures OUTDIR` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = [
    ("dense", {}, "dense"),
    ("svd_exact", {"rank": 8, "solver": "gram"}, "svd_exact[rank=8,solver=gram]"),
    ("svd_exact", {"rank": 16, "solver": "gram"}, "svd_exact[rank=16,solver=gram]"),
    ("svd_exact", {"rank": 4, "solver": "gram"}, "svd_exact[rank=4,solver=gram]"),
    ("svd_tokens", {"rank": 16}, "svd_tokens[rank=16]"),
    ("linrec", {}, "linrec"),
    ("lrea", {"rank": 16}, "lrea[rank=16,form=absorbed]"),
    ("performer", {"features": 64}, "performer[features=64]"),
]
FAMILIES = [("exact_rank", {"rank": 8}), ("powerlaw", {"alpha": 1.0, "floor": 1e-3})]


def _env(device: str) -> dict:
    return {
        "device": device,
        "device_name": "Fixture CPU" if device == "cpu" else "Fixture GPU",
        "driver": "" if device == "cpu" else "550.00",
        "cuda_version": "" if device == "cpu" else "12.4",
        "torch_version": "2.13.0",
        "cpu_model": "Fixture 2-core",
        "threads": 2,
        "git_commit": "fixture",
        "hostname": "fixture-host",
        "timestamp": "2026-11-22T19:00:00Z",
        "timer": "perf_counter" if device == "cpu" else "cuda_events",
    }


def bench_table(device: str = "cpu", seed: int = 0, small: bool = False) -> pd.DataFrame:
    """A results.csv-like table; `small` keeps 3 N x 2 M x 1 d for fast tests."""
    rng = np.random.default_rng(seed)
    ns, ms, ds = (
        ((256, 1024, 4096), (1, 64), (64,))
        if small
        else ((256, 1024, 4096, 16384), (1, 64, 512), (32, 64))
    )
    speed = 1.0 if device == "cpu" else 0.02
    rows = []
    for fam, fparams in FAMILIES:
        for n in ns:
            for m in ms:
                for d in ds:
                    for method, params, label in METHODS:
                        r = params.get("rank", np.nan)
                        f = params.get("features", np.nan)
                        base = 1e-5 * speed
                        if method == "dense":
                            prep, att = 0.0, base * m * n * d / 64 + 0.02
                        elif method == "svd_exact":
                            prep, att = base * n * d * r / 40 + 0.05, base * m * n * r / 50 + 0.02
                        elif method == "svd_tokens":
                            prep, att = base * n * d * r / 40 + 0.05, base * m * r * d / 60 + 0.01
                        elif method == "linrec":
                            prep, att = base * n * d * d / 300 + 0.02, base * m * d * d / 300 + 0.01
                        elif method == "lrea":
                            prep, att = base * n * d * r / 50 + 0.03, base * m * r * d / 50 + 0.01
                        else:
                            prep, att = base * n * f * d / 200 + 0.03, base * m * f * d / 200 + 0.02
                        jitter = float(np.exp(rng.normal(0, 0.05)))
                        prep, att = prep * jitter, att * jitter
                        if method == "svd_exact":
                            low = fam == "exact_rank" and r >= fparams.get("rank", 1e9)
                            kl = 1e-8 if low else 0.05 / r
                            err = 3e-7 if low else 0.2 / np.sqrt(r)
                        elif method == "dense":
                            kl, err = 0.0, 0.0
                        elif method == "svd_tokens":
                            kl, err = 0.8, 0.3
                        elif method == "linrec":
                            kl, err = 1.4 + 0.1 * np.log(n), 0.6
                        elif method == "lrea":
                            kl, err = 1.1, 0.5
                        else:
                            kl, err = 0.2, 0.15
                        row = {
                            "case_id": f"{fam}-{n}-{m}-{d}",
                            "preset": "fixture",
                            "method": method,
                            "label": label,
                            "params": json.dumps(params),
                            "rank": r,
                            "features": f,
                            "solver": params.get("solver", ""),
                            "setting": "target",
                            "causal": False,
                            "family": fam,
                            "family_params": json.dumps(fparams),
                            "synthetic": True,
                            "dataset": "",
                            "batch": 1,
                            "heads": 2,
                            "n": n,
                            "m": m,
                            "d": d,
                            "dv": d,
                            "dtype": "fp32",
                            "seed": 0,
                            "status": "ok",
                            "reason": "",
                            "prepare_ms_median": prep,
                            "attend_ms_median": att,
                            "forward_ms_median": prep + att,
                            "prepare_ms_iqr": 0.05 * prep,
                            "attend_ms_iqr": 0.05 * att,
                            "forward_ms_iqr": 0.05 * (prep + att),
                            "peak_mem_cpu_bytes" if device == "cpu" else "peak_mem_alloc_bytes": 4
                            * (m * n if method == "dense" else (n * (r if r == r else d) + m * d))
                            * 1.3,
                            "mem_model_bytes": 4
                            * (m * n if method == "dense" else (n * (r if r == r else d) + m * d)),
                            "mem_method": "tracemalloc" if device == "cpu" else "allocator",
                            "kl_mean": kl,
                            "kl_p99": kl * 3,
                            "kl_max": kl * 5,
                            "tv_mean": min(0.95, np.sqrt(kl / 2)),
                            "out_err_mean": err,
                            "out_err_p99": err * 2,
                            "neg_mass_mean": 0.2
                            if method in ("linrec", "lrea", "svd_tokens")
                            else 0.0,
                            "flops": 4.0 * m * n * d,
                            "bytes": 4.0 * (2 * n * d + 2 * m * d),
                        }
                        if method == "lrea":
                            row["absorption_err_mean"] = 0.35
                            row["absorption_err_p99"] = 0.6
                        t = (prep + att) / 1e3
                        row["flops_per_s"] = row["flops"] / t
                        row["bytes_per_s"] = row["bytes"] / t
                        row["arithmetic_intensity"] = row["flops"] / row["bytes"]
                        row["peak_flops"] = 1e11 if device == "cpu" else 5e14
                        row["peak_bytes_per_s"] = 2e10 if device == "cpu" else 3e12
                        row["roofline_fraction"] = row["flops_per_s"] / row["peak_flops"]
                        row.update(_env(device))
                        rows.append(row)
    # self-attention at a single N: a table row, not a line
    for method, t in (("dense", 3.0), ("svd_exact", 2.0)):
        row = {
            "preset": "fixture",
            "method": method,
            "label": method,
            "family": "powerlaw",
            "synthetic": True,
            "n": 1024,
            "m": 1024,
            "d": 64,
            "dtype": "fp32",
            "setting": "self",
            "causal": True,
            "status": "ok",
            "forward_ms_median": t,
            "attend_ms_median": t * 0.8,
            "prepare_ms_median": t * 0.2,
            "batch": 1,
            "heads": 2,
            "padding": 0.0,
            "query_scale": 1.0,
        }
        row.update(_env(device))
        rows.append(row)
    # status rows: never plotted as numbers
    for method, status, reason in (
        ("dense", "oom", "CUDA out of memory at N=65536, M=4096"),
        ("svd_tokens", "unsupported", "causal self-attention not defined for svd_tokens"),
        ("performer", "error", "RuntimeError: NaN in output"),
    ):
        row = {
            "preset": "fixture",
            "method": method,
            "label": method,
            "family": "powerlaw",
            "synthetic": True,
            "n": 65536,
            "m": 4096,
            "d": 64,
            "dtype": "fp32",
            "status": status,
            "reason": reason,
            "setting": "target",
        }
        row.update(_env(device))
        rows.append(row)
    return pd.DataFrame(rows)


def with_three_bounds(df: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """The columns of the three-bound roofline (exps, per-phase work, peak_exp_per_s,
    roofline_{floor_ms,bound,fraction}_<phase>) added to a ``bench_table``, as a newer
    harness writes them. Invented numbers, like the rest of this module."""
    df = df.copy()
    bh = df["batch"].fillna(1) * df["heads"].fillna(1)
    n, m, d = df["n"], df["m"].fillna(df["n"]), df["d"]
    r, f = df["rank"].fillna(16), df["features"].fillna(256)
    meth = df["method"]
    exps_att = (
        np.select(
            [
                meth.isin(["dense", "svd_exact"]),
                meth == "svd_tokens",
                meth == "linrec",
                meth == "performer",
            ],
            [m * n, m * r, m * d, m * f],
            0.0,
        )
        * bh
    )
    exps_prep = np.select([meth == "linrec", meth == "performer"], [n * d, n * f], 0.0) * bh
    share = (df["attend_ms_median"] / df["forward_ms_median"]).fillna(1.0)
    df["flops_attend"], df["flops_prepare"] = df["flops"] * share, df["flops"] * (1 - share)
    df["bytes_attend"], df["bytes_prepare"] = df["bytes"] * share, df["bytes"] * (1 - share)
    df["exps_attend"], df["exps_prepare"] = exps_att, exps_prep
    df["exps"] = exps_att + exps_prep
    df["peak_exp_per_s"] = 4e8 if device == "cpu" else 3.9e12
    df["peak_source"] = "measured"
    for phase, (fc, bc, ec) in {
        "prepare": ("flops_prepare", "bytes_prepare", "exps_prepare"),
        "attend": ("flops_attend", "bytes_attend", "exps_attend"),
        "forward": ("flops", "bytes", "exps"),
    }.items():
        t = pd.DataFrame(
            {
                "matmul": df[fc] / df["peak_flops"],
                "memory": df[bc] / df["peak_bytes_per_s"],
                "exp": df[ec] / df["peak_exp_per_s"],
            }
        )
        ok = t.notna().all(axis=1) & (t.max(axis=1) > 0)
        df[f"roofline_floor_ms_{phase}"] = (t.max(axis=1) * 1e3).where(ok)
        df[f"roofline_bound_{phase}"] = t.fillna(-1).idxmax(axis=1).where(ok)
        df[f"roofline_fraction_{phase}"] = (
            df[f"roofline_floor_ms_{phase}"] / df[f"{phase}_ms_median"]
        )
    df["roofline_fraction"] = df["roofline_fraction_forward"].where(
        df["roofline_fraction_forward"].notna(), df["roofline_fraction"]
    )
    return df


def cascade_table(device: str = "cpu") -> pd.DataFrame:
    rows = []
    stages = [(1, 2048), (2, 256), (3, 32)]
    for n in (1024, 16384):
        for method, params, label in METHODS[:3] + METHODS[4:]:
            r = params.get("rank", 16)
            prep = 0.0 if method == "dense" else 1e-5 * n * 64 * r / 40 + 0.05
            for stage, m in stages:
                att = 1e-5 * m * n * (64 if method == "dense" else r) / 50 + 0.02
                rows.append(
                    {
                        "method": method,
                        "label": label,
                        "n": n,
                        "stage": stage,
                        "stages": len(stages),
                        "m": m,
                        "status": "ok",
                        "family": "powerlaw",
                        "dtype": "fp32",
                        "attend_ms_median": att,
                        "prepare_ms_median": prep,
                        "prepare_amortised_ms": prep / len(stages),
                        "total_ms": att + prep / len(stages),
                        **_env(device),
                    }
                )
    return pd.DataFrame(rows)


def _bin(n: int) -> str:
    edges = (1, 16, 64, 256, 1000)
    i = max(k for k, e in enumerate(edges) if n >= e)
    return f"[{edges[i]},{edges[i + 1]})" if i + 1 < len(edges) else f"[{edges[i]},inf)"


def spectra_dataset(out: Path, name: str, seed: int = 0, style: str = "analysis") -> None:
    """Write users/summary/scree/kl_by_rank/profile/decisions for one fake dataset.

    style "analysis" mirrors what `python -m analysis` writes (centred and uncentred rows,
    N bins like "[64,256)" plus "all", decisions.json as {"decisions": [...]}); "simple"
    is a thinner variant (other names, no centred column) the reader must also accept.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    routes = [("ppmi", "x"), ("sasrec", "x"), ("sasrec", "k"), ("random", "x")]
    if style == "simple":
        routes = [("pmi", "x"), ("random", "x")]
    centreds = (False, True) if style == "analysis" else (False,)
    users = []
    for u in range(80):
        n = int(np.exp(rng.uniform(np.log(20), np.log(3000))))
        for route, matrix in routes:
            for centred in centreds:
                scale = 4.0 if route == "random" else 1.0
                r90 = min(64, n, int(3 * scale + np.log(n) * scale * rng.uniform(0.8, 1.2)))
                users.append(
                    {
                        "dataset": name,
                        "user": u,
                        "route": route,
                        "matrix": matrix,
                        "centred": centred,
                        "n": n,
                        "dim": 64,
                        "r90": r90,
                        "r95": min(64, int(r90 * 1.4)),
                        "r99": min(64, int(r90 * 2.2)),
                        "effective_rank": r90 * 1.6,
                        "stable_rank": r90 * 0.4,
                        "s1": 10.0,
                    }
                )
    users_df = pd.DataFrame(users)
    if style == "simple":
        users_df = users_df.drop(columns="centred")
    users_df.to_csv(out / "users.csv", index=False)
    users_df["n_bin"] = users_df["n"].map(_bin)
    keys = ["route", "matrix"] + (["centred"] if "centred" in users_df.columns else [])
    summ = (
        users_df.groupby(keys + ["n_bin"], observed=True)
        .agg(
            users=("user", "count"),
            n_median=("n", "median"),
            r90_median=("r90", "median"),
            r95_median=("r95", "median"),
            r99_median=("r99", "median"),
            effective_rank_median=("effective_rank", "median"),
            stable_rank_median=("stable_rank", "median"),
        )
        .reset_index()
    )
    summ.insert(0, "dataset", name)
    summ.to_csv(out / "summary.csv", index=False)
    scree = []
    for route, matrix in routes:
        for centred in centreds:
            for n_bin, users_in in (
                ("[64,256)", 30),
                ("[256,1000)", 25),
                ("[1000,inf)", 4),
                ("all", 80),
            ):
                alpha = 0.3 if route == "random" else 1.1 + 0.1 * centred
                sv = np.arange(1, 65, dtype=float) ** -alpha
                sv = sv / sv[0]
                energy = np.cumsum(sv**2) / np.sum(sv**2)
                for i in range(64):
                    scree.append(
                        {
                            "route": route,
                            "matrix": matrix,
                            "centred": centred,
                            "n_bin": n_bin,
                            "users": users_in,
                            "index": i + 1,
                            "sv_mean": sv[i],
                            "energy_cum": energy[i],
                        }
                    )
    pd.DataFrame(scree).to_csv(out / "scree.csv", index=False)
    kl = []
    rcol = "rank" if style == "analysis" else "r"
    for u in range(20):
        for route in [r for r, _ in routes if _ == "x"]:
            for r in (2, 4, 8, 16, 32, 64):
                base = 2.0 if route == "random" else 0.5
                kl.append(
                    {
                        "dataset": name,
                        "route": route,
                        "user": u,
                        "n": 500,
                        "m": 64,
                        "d": 64,
                        rcol: r,
                        "kl_mean": base * r**-1.5 * rng.uniform(0.5, 2),
                        "n_bin": "[256,1000)",
                    }
                )
    pd.DataFrame(kl).to_csv(out / "kl_by_rank.csv", index=False)
    pd.DataFrame(
        [
            {
                "route": route,
                "n_bin": "[256,1000)",
                "rank": r,
                "users": 5,
                "kl_max_median": 0.1 * r**-1.5,
                "kl_bound_median": 30.0 * r**-0.5,
                "looseness_median": 300.0 * r,
                "bound_holds": True,
            }
            for route in ("ppmi", "sasrec")
            for r in (4, 8, 16, 32, 64)
        ]
    ).to_csv(out / "kl_bound.csv", index=False)
    pd.DataFrame(
        [
            {
                "temperature": t,
                "route": route,
                "n_bin": "[256,1000)",
                "budget": b,
                "users": 5,
                "unmet": 0,
                "r_median": min(64.0, 16.0 * t / b**0.1),
                "r_p90": 64.0,
            }
            for t in (0.25, 0.5, 1.0, 2.0)
            for route in ("ppmi", "sasrec")
            for b in (1e-2, 1e-3)
        ]
    ).to_csv(out / "kl_by_temperature.csv", index=False)
    (out / "profile.json").write_text(
        json.dumps(
            {
                "dataset": name,
                "route": "ppmi",
                "model": "exponential",
                "params": {"beta": 0.07},
                "noise_floor": 0.06,
            }
        )
    )
    if style == "simple":
        dec = [
            {
                "regime": "N<=512, M<=64",
                "method": "dense",
                "r": None,
                "expected_kl": 0.0,
                "expected_ms": 0.05,
            },
            {
                "regime": "N>512, M>=64",
                "method": "svd_exact",
                "r": 16,
                "expected_kl": 2e-3,
                "expected_ms": 0.4,
            },
        ]
        (out / "decisions.json").write_text(json.dumps(dec))
        return  # JSON only: the reader falls back to it
    dec = []
    for route in ("ppmi", "sasrec"):
        for nb, nmed in (("[64,256)", 120.0), ("[256,1000)", 450.0)):
            for m in (16, 256):
                for budget in (0.01, 0.001):
                    r = 16 if budget == 0.01 else 32
                    fast = nmed > 200
                    dec.append(
                        {
                            "route": route,
                            "n_bin": nb,
                            "n_median": nmed,
                            "users": 30,
                            "m": m,
                            "kl_budget": budget,
                            "rank_quantile": 0.9,
                            "svd_rank_needed": r,
                            "share_users_meeting_at_rank": 0.9,
                            "svd_expected_kl": budget / 3,
                            "svd_bench_rank": r,
                            "svd_expected_ms": 0.3,
                            "dense_expected_ms": 0.5 if fast else 0.2,
                            "method": "svd_exact" if fast else "dense",
                            "rank": r if fast else None,
                            "expected_kl": budget / 3 if fast else 0.0,
                            "expected_ms": 0.3 if fast else 0.2,
                            "speedup_vs_dense": 1.67 if fast else None,
                            "time_source": "fixture",
                            "note": "faster of the two that meet the budget",
                        }
                    )
    pd.DataFrame(dec).to_csv(out / "decisions.csv", index=False)
    (out / "decisions.json").write_text(json.dumps({"dataset": name, "decisions": dec}))


def write_all(
    root: Path,
    devices: tuple[str, ...] = ("cpu",),
    datasets: tuple[str, ...] = ("ml-1m", "lastfm"),
    small: bool = False,
    three_bounds: bool = False,
) -> dict[str, Path]:
    """Write fixture bench dirs (root/<device>) and spectra (root/spectra/<dataset>);
    ``three_bounds`` adds the columns of the three-bound roofline (``with_three_bounds``)."""
    paths = {}
    for i, dev in enumerate(devices):
        d = root / dev
        d.mkdir(parents=True, exist_ok=True)
        table = bench_table(dev, seed=i, small=small)
        if three_bounds:
            table = with_three_bounds(table, dev)
        table.to_csv(d / "results.csv", index=False)
        cascade_table(dev).to_csv(d / "cascade.csv", index=False)
        paths[dev] = d
    for i, ds in enumerate(datasets):
        spectra_dataset(root / "spectra" / ds, ds, seed=i, style="analysis" if i == 0 else "simple")
    paths["spectra"] = root / "spectra"
    return paths
