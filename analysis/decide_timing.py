"""Times for the decision table: bench rows at one configuration, with bootstrap intervals.

The harness stores each phase's median, IQR and sample count per row, not the samples, so a
cost's interval is the parametric bootstrap of ``bench.compare`` (each row's samples redrawn
from the log-normal with the recorded median and IQR, the median taken), times one extra
log-normal factor per row with sigma ``run_sigma`` for the drift between cases of one run
(load on a shared machine; 0 switches it off), or the drift the run itself shows when that is
larger (``drift_sigma``: the same prepare timed in the rows of several M, which it does not
depend on). Costs built from several phases (prepare + attend, a cascade's stages) add the
draws, so their intervals stay consistent.

Rows are matched exactly: same method, N, M, d, dtype, batch, heads, setting ``target`` and,
for ranked methods, the rank. Nothing is interpolated or borrowed from another N or rank.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.compare import bootstrap_medians

PHASES = ("prepare", "attend", "forward")
# configuration columns fixed to one value (the most common among dense rows) so that every
# method is timed under the same conditions
FIXED_COLS = ("dtype", "batch", "heads", "padding", "query_scale")


@dataclass(frozen=True)
class TimeOpts:
    resamples: int = 2000
    confidence: float = 0.95
    run_sigma: float = 0.05  # ~ +-10 % run-to-run spread (results/cpu/README.md)
    seed: int = 0


@dataclass
class BenchView:
    """The ok target-setting rows of one device and one configuration."""

    rows: pd.DataFrame
    device: str
    device_label: str
    fixed: dict[str, Any]
    opts: TimeOpts = field(default_factory=TimeOpts)
    # per bench run (``source``): "process_cpu" when the harness said its wall times are
    # unusable (a loaded machine; bench.summary.rank_by), else "wall"
    timing: dict[str, str] = field(default_factory=dict)
    # per bench run: the drift sigma its rows get, max(opts.run_sigma, drift_sigma(run))
    sigma: dict[str, float] = field(default_factory=dict)
    _factors: dict[int, np.ndarray] = field(default_factory=dict)

    # ------------------------------------------------------------------ row selection
    def select(
        self,
        method: str,
        n: int,
        m: int,
        d: int,
        rank: int | None = None,
        source: str | None = None,
        features: int | None = None,
    ) -> pd.DataFrame:
        """Rows of one case; Performer at ``features`` random features (None = its most
        benched count)."""
        r = self.rows
        sel = r[(r["method"] == method) & (r["n"] == n) & (r["m"] == m) & (r["d"] == d)]
        if source is not None:
            sel = sel[sel["source"].astype(str) == source]
        if method == "svd_exact" and "solver" in sel.columns and (sel["solver"] == "gram").any():
            sel = sel[sel["solver"] == "gram"]
        if rank is not None:
            sel = sel[sel["rank"] == rank] if "rank" in sel.columns else sel.iloc[0:0]
        if method == "performer" and "features" in sel.columns and sel["features"].notna().any():
            want = features if features is not None else self.default_param("performer", "features")
            sel = sel[sel["features"] == want]
        return sel

    def default_param(self, method: str, col: str) -> int | None:
        """The most common benched value of ``col`` for a method (its rank or features)."""
        r = self.rows
        v = (
            r.loc[r["method"] == method, col].dropna()
            if col in r.columns
            else pd.Series([], dtype=float)
        )
        return None if v.empty else int(Counter(v.astype(int)).most_common(1)[0][0])

    def benched_n(self, method: str, m: int, d: int) -> list[int]:
        r = self.rows
        return sorted(
            int(x)
            for x in r.loc[(r["method"] == method) & (r["m"] == m) & (r["d"] == d), "n"].unique()
        )

    # ------------------------------------------------------------------ draws
    def _row_rng(self, idx: int, what: str) -> np.random.Generator:
        """The draws of one bench row and phase come from their own stream (seed, row, phase),
        so a row's interval does not move when other cases are drawn before it."""
        return np.random.default_rng([self.opts.seed, idx, zlib.crc32(what.encode())])

    def _factor(self, idx: int, source: str) -> np.ndarray:
        if idx not in self._factors:
            o = self.opts
            sigma = self.sigma.get(source, o.run_sigma)
            self._factors[idx] = (
                np.exp(self._row_rng(idx, "run").normal(0.0, sigma, o.resamples))
                if sigma > 0
                else np.ones(o.resamples)
            )
        return self._factors[idx]

    def draws(self, rows: pd.DataFrame, phase: str) -> tuple[float, np.ndarray] | None:
        """(point ms, bootstrap draws of the median ms) of one phase over matching rows
        (the median over rows when a configuration was measured several times); None when
        no row has the phase timed."""
        pts, per = [], []
        for idx, row in rows.iterrows():
            col = (
                f"{phase}_process_cpu_ms"
                if self.timing.get(str(row.get("source"))) == "process_cpu"
                else f"{phase}_ms"
            )
            med = row.get(f"{col}_median")
            if med is None or not np.isfinite(med) or med < 0:
                continue
            iqr = row.get(f"{col}_iqr")
            iqr = float(iqr) if iqr is not None and np.isfinite(iqr) and iqr >= 0 else 0.0
            k = row.get(f"timing_samples_{phase}")
            k = int(k) if k is not None and np.isfinite(k) and k >= 1 else 1
            b = (
                bootstrap_medians(
                    float(med), iqr, k, self.opts.resamples, self._row_rng(int(idx), phase)
                )
                if med > 0
                else np.zeros(self.opts.resamples)
            )
            pts.append(float(med))
            per.append(b * self._factor(int(idx), str(row.get("source"))))
        if not pts:
            return None
        return float(np.median(pts)), np.median(np.vstack(per), axis=0)

    def interval(self, draws: np.ndarray) -> tuple[float, float]:
        """Central interval of the draws (infinite draws, e.g. a crossover never reached, kept)."""
        tail = (1.0 - self.opts.confidence) / 2.0 * 100.0
        big = np.finfo(np.float64).max
        lo, hi = np.percentile(
            np.where(np.isposinf(draws), big, draws), [tail, 100.0 - tail], method="lower"
        )
        return (math.inf if lo >= big else float(lo)), (math.inf if hi >= big else float(hi))


def view(bench: pd.DataFrame, device: str | None = None, opts: TimeOpts = TimeOpts()) -> BenchView:
    """Restrict a bench table to one device and one configuration (raises ValueError when the
    table mixes devices and none is chosen)."""
    need = {"method", "n", "m", "d", "status", "forward_ms_median"}
    missing = need - set(bench.columns)
    if missing:
        raise ValueError(f"bench table lacks columns {sorted(missing)}")
    b = bench[bench["status"] == "ok"].copy()
    if "source" not in b.columns:
        b["source"] = "table"
    devs = (
        sorted(b["device"].dropna().astype(str).unique()) if "device" in b.columns else ["unknown"]
    )
    if device is None:
        if len(devs) > 1:
            raise ValueError(
                f"the bench table holds several devices {devs}: choose one with --device"
            )
        device = devs[0] if devs else "unknown"
    elif "device" in b.columns:
        if device not in devs:
            raise ValueError(f"--device {device}: the bench table has only {devs}")
        b = b[b["device"].astype(str) == device]
    if "setting" in b.columns and (b["setting"] == "target").any():
        b = b[b["setting"] == "target"]
    if "causal" in b.columns:
        b = b[~b["causal"].fillna(False).astype(bool)]
    dense = b[b["method"] == "dense"]
    fixed: dict[str, Any] = {}
    for col in FIXED_COLS:
        if col in b.columns and b[col].notna().any():
            src = dense[col].dropna() if dense[col].notna().any() else b[col].dropna()
            val = Counter(src.tolist()).most_common(1)[0][0]
            b = b[b[col] == val]
            fixed[col] = val.item() if hasattr(val, "item") else val
    name = ""
    if "device_name" in b.columns and b["device_name"].notna().any():
        name = str(Counter(b["device_name"].dropna().astype(str)).most_common(1)[0][0])
    timing: dict[str, str] = {}
    sigma: dict[str, float] = {}  # 0 when --run-sigma 0 switches drift off
    for src, g in b.groupby("source"):
        timing[str(src)] = _timing_of(g)
        drift = drift_sigma(g, timing[str(src)])
        sigma[str(src)] = max(opts.run_sigma, drift) if opts.run_sigma > 0 else 0.0
    label = f"{device} ({name})" if name and name != device else str(device)
    if "process_cpu" in timing.values():
        label += " [process CPU time: loaded run]"  # the harness found its wall times unusable
    return BenchView(b.reset_index(drop=True), str(device), label, fixed, opts, timing, sigma)


DRIFT_KEY = ("method", "label", "params", "n", "d", "dv", "dtype", "batch", "heads", "family")
# prepares below this measure timer and dispatch jitter (each row's own IQR), not drift
DRIFT_FLOOR_MS = 0.5


def drift_sigma(rows: pd.DataFrame, timing: str = "wall") -> float:
    """The drift between rows of one bench run, as the run itself shows it: ``prepare`` does
    not depend on M, so rows that differ only in M time the same call; the pooled standard
    deviation of their log medians (0 when no case was timed at two M). On the 2-vCPU dev VM
    the same prepare took 1.90-2.64 ms in three rows of one quiet run: far more than
    ``TimeOpts.run_sigma`` assumes. It includes each row's own sampling noise, which the
    bootstrap counts too (small next to it: many samples per row)."""
    col = "prepare_process_cpu_ms_median" if timing == "process_cpu" else "prepare_ms_median"
    if col not in rows.columns:
        return 0.0
    x = rows[pd.to_numeric(rows[col], errors="coerce") >= DRIFT_FLOOR_MS]
    key = [c for c in DRIFT_KEY if c in x.columns]
    ss, dof = 0.0, 0
    for _, g in x.groupby(key, dropna=False):
        if len(g) > 1:
            lg = np.log(g[col].to_numpy(float))
            ss += float(((lg - lg.mean()) ** 2).sum())
            dof += len(g) - 1
    return math.sqrt(ss / dof) if dof else 0.0


def _timing_of(rows: pd.DataFrame) -> str:
    """How one bench run is timed for the decision: the harness's own ranking rule."""
    from bench.summary import rank_by

    return rank_by(rows)[0]


def state_bytes(
    method: str, n: int, d: int, params: dict[str, Any], dtype: str = "fp32"
) -> int | None:
    """Bytes of one user-head's prepared state (what pre-storing costs), measured on a
    prepared state of random input; for dense, K and V themselves."""
    import torch

    import attention_impls as ai

    dt = {
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "fp64": torch.float64,
    }.get(dtype, torch.float32)
    g = torch.Generator().manual_seed(0)
    k = torch.randn(1, 1, n, d, generator=g).to(dt)
    v = torch.randn(1, 1, n, d, generator=g).to(dt)
    if method == "dense":
        return int(k.nbytes + v.nbytes)
    try:
        st = ai.get(method, **params).prepare(k, v)
    except (ValueError, MemoryError):
        return None
    skip = {"key_mask", "empty_users"}
    total = 0
    for f in dataclasses.fields(st):
        t = getattr(st, f.name)
        if f.name not in skip and isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return int(total)


def fmt_ci(point: float, lo: float, hi: float) -> str:
    return f"{point:.2f}x [{lo:.2f}, {hi:.2f}]" if math.isfinite(point) else "-"
