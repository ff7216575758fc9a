"""Cascade view: one user state (one prepare), several candidate batches (attend per stage).

For each method and N, prepare once and time attend at each stage's M (e.g. 4096, 1024, 256);
the prepare cost is amortised over the stages. Rows go to ``DIR/cascade.csv``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import attention_impls as ai

from . import store
from .config import Case, SweepConfig
from .env import environment, timestamp
from .inputs import build_inputs
from .malloc import apply_malloc_tuning
from .runner import fit_model_weights, free_memory, is_oom
from .timing import PhaseTimer, summarise_times

CASCADE_LOG = "cascade.jsonl"
CASCADE_TABLE = "cascade.csv"


def cascade_cases(cfg: SweepConfig, methods: list[str], device: str) -> list[Case]:
    c = cfg.cascade
    if c is None:
        return []
    out = []
    fam = tuple(sorted((k, v) for k, v in c.family.items() if k != "kind"))
    for n in c.n:
        for method in methods:
            accepted = ai.method_class(method).PARAMS
            base: dict[str, Any] = {}
            if "rank" in accepted:
                base["rank"] = c.rank
            if "features" in accepted:
                base["features"] = c.features
            swept = {k: vals for k, vals in cfg.params_for(method).items() if k in accepted}
            for combo in itertools.product(*swept.values()):  # e.g. every svd_exact solver
                params = {**base, **dict(zip(swept, combo, strict=True))}
                out.append(
                    Case(
                        method=method,
                        params=tuple(sorted(params.items())),
                        family=c.family["kind"],
                        family_params=fam,
                        batch=c.batch,
                        heads=c.heads,
                        n=int(n),
                        m=int(max(c.stages)),
                        d=c.d,
                        dv=c.d,
                        dtype=c.dtype,
                        setting="target",
                        seed=c.seed,
                        query_scale=1.0,
                        padding=0.0,
                        device=device,
                    )
                )
    return out


def cascade_rows(
    case: Case, stages: tuple[int, ...], timer: PhaseTimer, env: dict[str, Any], inputs: Any = None
) -> list[dict[str, Any]]:
    """One row per stage for one method and N (status oom/unsupported/error rows too)."""
    base = {
        "case_id": case.case_id,
        "method": case.method,
        "n": case.n,
        "d": case.d,
        "batch": case.batch,
        "heads": case.heads,
        "dtype": case.dtype,
        "family": case.family,
        "params": str(case.params_dict),
        "label": case.method,
    }
    status, reason, times = "ok", None, {}
    try:
        op = ai.get(case.method, **case.params_dict)
        base["label"] = op.label
        shape = ai.Shape(case.batch, case.heads, case.n, case.m, case.d, case.dv)
        reasons = op.check(shape, case.dtype, case.device)
        if reasons:
            status, reason = "unsupported", "; ".join(reasons)
        else:
            inp = inputs if inputs is not None else build_inputs(case)
            fit_model_weights(op, inp.k, inp.key_mask)
            with torch.inference_mode():
                state = op.prepare(inp.k, inp.v, inp.key_mask)
                op.attend(state, inp.q)
                times["prepare"] = summarise_times(
                    timer.measure(lambda: op.prepare_unchecked(inp.k, inp.v, inp.key_mask)),
                    "prepare",
                )
                for m in stages:
                    qm = inp.q[:, :, :m].contiguous()
                    times[m] = summarise_times(
                        timer.measure(lambda qm=qm: op.attend_unchecked(state, qm)), "attend"
                    )
            del state
    except Exception as exc:  # noqa: BLE001
        status = "oom" if is_oom(exc) else "error"
        reason = f"{type(exc).__name__}: {exc}"[:300]
    if status == "oom":
        free_memory(case.device)
    rows = []
    prep = times.get("prepare", {}).get("prepare_ms_median")
    attends = [times.get(m, {}).get("attend_ms_median") for m in stages]
    total = prep + sum(attends) if prep is not None and None not in attends else None
    for s, (m, att) in enumerate(zip(stages, attends, strict=True), start=1):
        amort = None if prep is None else prep / len(stages)
        rows.append(
            {
                **base,
                "stage": s,
                "stages": len(stages),
                "m": m,
                "status": status,
                "reason": reason,
                "attend_ms_median": att,
                "attend_ms_iqr": times.get(m, {}).get("attend_ms_iqr"),
                "prepare_ms_median": prep,
                "prepare_amortised_ms": amort,
                "stage_ms": None if att is None or amort is None else att + amort,
                "total_ms": total,
                "timer": timer.name,
                **env,
                "timestamp": timestamp(),
            }
        )
    return rows


def run_cascade(
    cfg: SweepConfig, methods: list[str], device: str, out_dir: str | Path, progress: bool = True
) -> list[dict[str, Any]]:
    """Measure the cascade cases not yet in ``DIR/cascade.jsonl``; write ``DIR/cascade.csv``."""
    if cfg.cascade is None:
        return []
    out = Path(out_dir)
    log = out / CASCADE_LOG
    done = {r.get("case_id") for r in store.read_rows(log)}
    cases = [c for c in cascade_cases(cfg, methods, device) if c.case_id not in done]
    env = {**environment(device), **apply_malloc_tuning(cfg.malloc_tune, device)} if cases else {}
    timer = PhaseTimer(device, cfg.timing) if cases else None
    cache: tuple[Any, Any] = (None, None)
    for case in tqdm(cases, desc="cascade", unit="case", disable=not progress):
        if cache[0] != case.input_key():
            cache = (None, None)
            try:
                cache = (case.input_key(), build_inputs(case))
            except Exception:  # noqa: BLE001 - cascade_rows turns it into a row
                cache = (case.input_key(), None)
        store.append_row(log, cascade_rows(case, cfg.cascade.stages, timer, env, cache[1]))
    rows = store.read_rows(log)
    if rows:
        import pandas as pd

        store._atomic_write(
            out / CASCADE_TABLE, lambda t: pd.DataFrame(rows).to_csv(t, index=False)
        )
    return rows
