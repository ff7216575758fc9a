"""The answer first: a short plain verdict per dataset, route, budget and scenario, and the
decision rows as readable lines (integers for ranks, reasons instead of empty cells)."""

from __future__ import annotations

import math

import pandas as pd


def _ms(x) -> str:
    return (
        "-"
        if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x)
        else f"{x:.3g} ms"
    )


def _ci(r) -> str:
    s, lo, hi = (r.get(k) for k in ("speedup", "speedup_lo", "speedup_hi"))
    if s is None or pd.isna(s) or not math.isfinite(s):
        return "-"
    return f"{s:.2f}x [{lo:.2f}, {hi:.2f}]"


def _who(r) -> str:
    rank, feats = r.get("rank"), r.get("features")
    if rank is not None and not pd.isna(rank):
        return f"{r['method']} r={int(rank)}"
    if r["method"] == "performer" and feats is not None and not pd.isna(feats):
        return f"performer m={int(feats)}"
    return str(r["method"])


def _regime(r) -> str:
    n = f"N={int(r['bench_n'])}" if not pd.isna(r.get("bench_n")) else f"N~{r['n_median']:g}"
    return f"{r['n_bin']} ({n}), M={r['m']}"


def _trained(r) -> str:
    """', trained NDCG loss +0.001 [-0.002, +0.004] (3 seeds)' when the row has quality results."""
    loss, lo, hi = (r.get(k) for k in ("quality_loss", "quality_loss_lo", "quality_loss_hi"))
    if loss is None or pd.isna(loss):
        return ""
    name = "AUC" if r.get("quality_metric") == "auc" else "NDCG"
    iv = "" if lo is None or pd.isna(lo) else f" [{lo:+.2g}, {hi:+.2g}]"
    seeds = int(r.get("quality_seeds") or 0)
    parts = (r.get(k) for k in ("quality_task", "quality_dataset", "quality_preset"))
    where = ", ".join(str(v) for v in parts if pd.notna(v) and v != "")
    where = f"; {where}" if where else ""
    return f", trained {name} loss {loss:+.2g}{iv} ({seeds} seed{'s' if seeds != 1 else ''}{where})"


def verdict_lines(dec: pd.DataFrame, dataset: str = "") -> list[str]:
    """One line per (route, budget, scenario): the method chosen in each N bin x M regime,
    grouped, with speedups and their 95 % intervals; null-model routes marked as baselines."""
    if dec.empty:
        return [f"{dataset}: no decision rows"]
    dev = ", ".join(sorted(dec["device"].astype(str).unique()))
    lines = [
        f"{dataset} - device: {dev}; a method counts as faster only when its 95 % interval is above 1"
    ]
    for (route, b), gb in dec.groupby(["route", "kl_budget"], sort=False):
        tag = (
            " (null model: a baseline, not a deployment option)"
            if gb["baseline_route"].any()
            else ""
        )
        if (gb["method"] == "dense").all():
            scen = ", ".join(dict.fromkeys(gb["scenario"]))
            lines.append(f"  {route}{tag}, KL <= {b:g}: dense in all {len(gb)} regimes ({scen})")
            continue
        for scen, g in gb.groupby("scenario", sort=False):
            lines.append(f"  {route}{tag}, KL <= {b:g}, {scen}: " + "; ".join(_parts(g)))
    return lines


def _parts(g: pd.DataFrame) -> list[str]:
    parts = []
    for meth, h in g.groupby(g.apply(_who, axis=1), sort=False):
        if meth.startswith("undecided"):
            parts.append(f"undecided (not benched) in {len(h)} regime(s)")
        elif meth == "dense":
            parts.append(f"dense in {len(h)} of {len(g)} regime(s)")
        else:
            best = h.sort_values("speedup").iloc[-1]
            kl = best.get("expected_kl")
            q = (
                f", mean KL {kl:.2g} over the bin's users"
                if kl is not None and not pd.isna(kl)
                else ""
            ) + _trained(best)
            x = best.get("crossover_r")
            xr = f", pays off from R={int(x)} requests" if x is not None and not pd.isna(x) else ""
            parts.append(
                f"{meth} in {len(h)} regime(s), e.g. {_regime(best)}: {_ms(best['expected_ms'])}, "
                f"{_ci(best)} vs dense{q}{xr}"
            )
    return parts


def decision_lines(dec: pd.DataFrame) -> list[str]:
    """Every decision row as one readable line."""
    out = []
    for _, r in dec.iterrows():
        kl = r.get("expected_kl")
        q = (
            "exact"
            if r["method"] == "dense"
            else f"KL {kl:.2g}"
            if kl is not None and not pd.isna(kl)
            else ""
        ) + _trained(r)
        x = r.get("crossover_r")
        xr = f", crossover R={int(x)}" if x is not None and not pd.isna(x) else ""
        sb = r.get("state_bytes_per_user_head")
        sbt = f", state {sb / 1024:.1f} KiB/user-head" if sb is not None and not pd.isna(sb) else ""
        out.append(
            f"{r['route']} | KL<={r['kl_budget']:g} | {_regime(r)} | {r['scenario']} | {r['device']} -> "
            f"{_who(r)} {q} {_ms(r.get('expected_ms'))} {_ci(r)}{xr}{sbt}. {r.get('why') or ''}".rstrip()
        )
    return out
