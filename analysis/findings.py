"""Collect the headline numbers of several result folders into one markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.markdown import table as md_table

TOP_BIN = "[1000,inf)"


def collect(root: str | Path) -> pd.DataFrame:
    """One row per dataset x route x matrix: users and median ranks at N >= 1000, KL-rank needs, SASRec quality."""
    rows = []
    for folder in sorted(p for p in Path(root).iterdir() if (p / "summary.csv").exists()):
        summ = pd.read_csv(folder / "summary.csv")
        meta = (
            json.loads((folder / "dataset.json").read_text())
            if (folder / "dataset.json").exists()
            else {}
        )
        need_path = folder / "rank_needed_summary.csv"
        need = pd.read_csv(need_path) if need_path.exists() else pd.DataFrame()
        data = meta.get("data", {})
        for (route, matrix), g in summ.groupby(["route", "matrix"], sort=False):
            top = g[g["n_bin"] == TOP_BIN]
            unc = top[~top["centred"]]
            cen = top[top["centred"]]
            allu = g[(g["n_bin"] == "all") & (~g["centred"])]
            row = {
                "dataset": folder.name,
                "ordered": data.get("time_ordered"),
                "route": route,
                "matrix": matrix,
                "users_N>=1000": int(unc["users"].iloc[0]) if len(unc) else 0,
                "distinct_med_N>=1000": float(unc["n_distinct_median"].iloc[0])
                if len(unc) and "n_distinct_median" in unc
                else None,
                "r99_med_N>=1000": float(unc["r99_median"].iloc[0]) if len(unc) else None,
                "r99_med_N>=1000_centred": float(cen["r99_median"].iloc[0]) if len(cen) else None,
                "r90_med_N>=1000": float(unc["r90_median"].iloc[0]) if len(unc) else None,
                "erank_med_N>=1000": round(float(unc["effective_rank_median"].iloc[0]), 1)
                if len(unc)
                else None,
                "r99_med_all": float(allu["r99_median"].iloc[0]) if len(allu) else None,
            }
            if matrix == "x" and not need.empty:
                for b in (0.01, 0.001):
                    sel = need[
                        (need["route"] == route)
                        & (need["n_bin"] == TOP_BIN)
                        & (need["budget"] == b)
                    ]
                    row[f"r_kl{b:g}_med_N>=1000"] = (
                        float(sel["r_median"].iloc[0]) if len(sel) else None
                    )
            if route == "sasrec" and matrix == "x":
                m = meta.get("routes", {}).get("sasrec", {}).get("metrics", {})
                row["hr@10"] = m.get("hr@10")
                row["ndcg@10"] = m.get("ndcg@10")
                row["pop_hr@10"] = m.get("pop_hr@10")
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    return md_table(df)
