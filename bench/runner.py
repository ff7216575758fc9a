"""Run a sweep: cases -> measured rows, appended as they finish; resumable; time-bounded."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import attention_impls as ai
from attention_impls import Shape, dtype_from_name

from . import rowcheck, store
from .ceilings import ceilings
from .config import Case, SweepConfig
from .env import device_index, environment, nvml_snapshot, timestamp
from .fidelity import case_fidelity
from .inputs import Inputs, UnsupportedInput, build_inputs
from .malloc import apply_malloc_tuning
from .memory import cpu_peak_bytes, cuda_peak_bytes
from .roofline import phase_roofline, roofline_fraction
from .timing import PhaseTimer, machine_load, summarise_phase, wall_warning

# Test hooks: BENCH_INJECT_OOM="svd_exact,dense" (method names, labels or case ids) raises an
# out-of-memory error inside the measurement; BENCH_TEST_DELAY_S sleeps in every case.
FAULT_HOOK: Callable[[Case], None] | None = None
# rows whose inputs were missing (no profile / data file yet) are measured again on resume
INPUT_UNAVAILABLE = "input unavailable: "


def finished(row: dict[str, Any]) -> bool:
    return not (
        row.get("status") == "unsupported"
        and str(row.get("reason") or "").startswith(INPUT_UNAVAILABLE)
    )


OOM_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
)


def is_oom(exc: BaseException) -> bool:
    """Any MemoryError (incl. an operator's own, carrying ``estimate_bytes``), CUDA's OOM, and
    torch's allocator messages (CPU: "DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


def _oom_reason(exc: BaseException) -> str:
    est = getattr(exc, "estimate_bytes", None)
    note = f" (estimated {est / 2**30:.3g} GiB)" if isinstance(est, (int, float)) else ""
    return f"{type(exc).__name__}: {exc}"[:480] + note


def _inject(case: Case, label: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(case)
    wanted = {s.strip() for s in os.environ.get("BENCH_INJECT_OOM", "").split(",") if s.strip()}
    if wanted & {case.method, label, case.case_id}:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by BENCH_INJECT_OOM)")
    delay = float(os.environ.get("BENCH_TEST_DELAY_S", "0") or 0)
    if delay > 0:
        time.sleep(delay)


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def base_row(case: Case, preset: str) -> dict[str, Any]:
    p = case.params_dict
    return {
        "case_id": case.case_id,
        "preset": preset,
        "method": case.method,
        "label": case.method,
        "params": json.dumps(p, sort_keys=True),
        "rank": p.get("rank"),
        "features": p.get("features"),
        "solver": p.get("solver"),
        "setting": case.setting,
        "causal": case.causal,
        "family": case.family,
        "family_params": json.dumps(case.family_dict, sort_keys=True),
        "synthetic": case.family != "real",
        "dataset": case.family_dict.get("dataset"),
        "batch": case.batch,
        "heads": case.heads,
        "n": case.n,
        "m": case.m,
        "d": case.d,
        "dv": case.dv,
        "dtype": case.dtype,
        "seed": case.seed,
        "query_scale": case.query_scale,
        "padding": case.padding,
        "status": None,
        "reason": None,
    }


def _nvml_cols(case: Case, when: str) -> dict[str, Any]:
    snap = (
        nvml_snapshot(device_index(case.device))
        if case.device.startswith("cuda")
        else nvml_snapshot(None)
    )
    return {f"nvml_{k}_{when}": v for k, v in snap.items()}


def fit_model_weights(op: Any, k: torch.Tensor, mask: torch.Tensor | None) -> dict[str, Any]:
    """Fit what a method treats as model weights before timing its per-user work.

    LREA's W_comp / W_decomp are learned offline in the paper, not per user, and its
    ``prepare`` never fits: fit them once on the case's keys (principal positions) before
    timing, so that ``prepare`` is timed as the per-user serving work only (C = K^T W_comp,
    W_decomp V) and fidelity is that of a fitted projection, not of the segment-mean default."""
    if hasattr(op, "fit") and getattr(op, "w_comp", None) is None:
        fit = op.fit(k, mask)
        return {"lrea_fit_reconstruction_err": fit["reconstruction_error"]}
    return {}


def _fields(obj: Any) -> list[tuple[str, Any]]:
    """(name, value) of a dataclass instance's fields (a prepared state); [] for anything else."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    return []


def tensor_bytes(*objs: Any) -> int:
    """Bytes of the distinct tensors in ``objs`` (tensors, None, or dataclass states)."""
    seen: set[int] = set()
    total = 0
    for obj in objs:
        for t in [v for _, v in _fields(obj)] or [obj]:
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def clone_state(state: Any) -> Any:
    """An independent copy of a prepared state: every tensor field cloned (aliases kept)."""
    memo: dict[int, torch.Tensor] = {}
    new = {}
    for name, t in _fields(state):
        if isinstance(t, torch.Tensor):
            if id(t) not in memo:
                memo[id(t)] = t.clone()
            new[name] = memo[id(t)]
    return dataclasses.replace(state, **new) if new else state


def time_phases(
    op: Any, inp: Inputs, state: Any, causal: bool, timer: PhaseTimer
) -> dict[str, Any]:
    """Time prepare, attend and forward with input rotation (bench/timing.py): independent
    copies of (k, v, mask), q and the prepared state, enough that the calls of one cycle read
    at least twice the cache, within a memory budget; consecutive calls cycle through them."""
    k, v, mask, q = inp.k, inp.v, inp.key_mask, inp.q
    plan = timer.rotation_plan(
        {"kv": tensor_bytes(k, v, mask), "q": tensor_bytes(q), "state": tensor_bytes(state)}
    )
    kvs = [(k, v, mask)] + [
        (k.clone(), v.clone(), None if mask is None else mask.clone())
        for _ in range(plan.copies["kv"] - 1)
    ]
    qs = [q] + [q.clone() for _ in range(plan.copies["q"] - 1)]
    states = [state] + [clone_state(state) for _ in range(plan.copies["state"] - 1)]
    fns = {
        "prepare": [
            lambda kk=kk, vv=vv, mm=mm: op.prepare_unchecked(kk, vv, mm)
            for kk, vv, mm in kvs[: plan.sets["prepare"]]
        ],
        "attend": [
            lambda st=st, qq=qq: op.attend_unchecked(st, qq, causal)
            for st, qq in zip(states[: plan.sets["attend"]], qs, strict=False)
        ],
        "forward": [
            lambda kk=kk, vv=vv, mm=mm, qq=qq: op.attend_unchecked(
                op.prepare_unchecked(kk, vv, mm), qq, causal
            )
            for (kk, vv, mm), qq in zip(kvs[: plan.sets["forward"]], qs, strict=False)
        ],
    }
    cols: dict[str, Any] = {
        "timing_input_sets": max(plan.sets.values()),
        "timing_rotation_note": plan.note,
        "timing_sample_min_ms": timer.sample_min_ms,
    }
    for phase, phase_fns in fns.items():
        pt = timer.run(phase_fns, working_set_bytes=plan.working_set[phase])
        cols.update(summarise_phase(pt, phase))
        cols[f"timing_working_set_bytes_{phase}"] = plan.working_set[phase]
    if timer.cuda and timer.cfg.graph_attend:
        cols.update(time_attend_graph(timer, fns["attend"], plan.working_set["attend"]))
    if not timer.cuda:
        cols.update(cpu_load_columns(cols, torch.get_num_threads()))
    del kvs, qs, states, fns
    return cols


def cpu_load_columns(cols: dict[str, Any], threads: int) -> dict[str, Any]:
    """CPU rows: the machine's load after timing, whether it made the wall times unusable
    (``timing_wall_warning``) and so which time ranks this row (``timing_rank_by``: wall, or
    process CPU time when the machine is loaded)."""
    load = machine_load()
    ratios = [cols.get(f"{p}_wall_per_cpu") for p in ("prepare", "attend", "forward")]
    worst = max((r for r in ratios if r is not None), default=None)
    warning = wall_warning(load["load_per_core"], worst, threads)
    return {
        **load,
        "timing_wall_warning": warning,
        "timing_rank_by": "process_cpu" if warning else "wall",
    }


def time_attend_graph(timer: PhaseTimer, fns: list, working_set: int | None) -> dict[str, Any]:
    """``attend_graph_*`` columns: attend replayed from a CUDA graph (device time without
    the host's launch cost); a capture that fails leaves the reason in ``timing_graph_note``."""
    try:
        pt = timer.run_graph(fns, working_set_bytes=working_set)
    except Exception as exc:  # noqa: BLE001 - e.g. an op that syncs: a note, not a crash
        if is_oom(exc):
            raise
        torch.cuda.synchronize(timer.device)
        return {
            "timing_graph_note": f"CUDA graph capture failed: {type(exc).__name__}: {exc}"[:300]
        }
    cols = summarise_phase(pt, "attend_graph")
    cols["timing_graph_calls_attend"] = pt.extra.get("graph_calls")
    return cols


def measure(
    case: Case,
    op: Any,
    inp: Inputs,
    cfg: SweepConfig,
    timer: PhaseTimer | None,
    env: dict[str, Any],
) -> dict[str, Any]:
    """Time, memory, fidelity and work columns of one supported case (may raise OOM)."""
    cols: dict[str, Any] = {}
    q, k, v, mask, causal = inp.q, inp.k, inp.v, inp.key_mask, case.causal
    dt = dtype_from_name(case.dtype)
    shape = Shape(case.batch, case.heads, case.n, case.m, case.d, case.dv, causal)
    cols.update(fit_model_weights(op, k, mask))
    with torch.inference_mode():
        state = op.prepare(k, v, mask)  # one validated call; timed loops skip validation
        out = op.attend(state, q, causal=causal)

        def fwd() -> torch.Tensor:
            return op.attend_unchecked(op.prepare_unchecked(k, v, mask), q, causal)

        if timer is not None:
            cols["timer"] = timer.name
            cols.update(time_phases(op, inp, state, causal, timer))
        cols["mem_model_bytes"] = float(op.memory_model(shape, dt))
        if cfg.memory.enabled:
            if case.device.startswith("cuda"):
                alloc, nv = cuda_peak_bytes(fwd, torch.device(case.device))
                cols.update(
                    peak_mem_alloc_bytes=alloc,
                    peak_mem_nvml_bytes=nv,
                    mem_method="cuda_allocator_peak_above_inputs;nvml_used_delta",
                )
            else:
                peak, err, how = cpu_peak_bytes(case)
                cols.update(peak_mem_cpu_bytes=peak, mem_method=how)
                if err:
                    cols["mem_note"] = err
    if cfg.fidelity.enabled:
        cols.update(case_fidelity(case, op, state, q, k, v, mask, out, cfg.fidelity))
        if hasattr(op, "absorption_error"):  # LREA's own error measures (DESIGN.md section 2)
            qs = q[:, :, : min(q.shape[2], 64)]
            cols["lrea_absorption_err"] = op.absorption_error(state, qs)
            cols["lrea_uncompressed_err"] = op.uncompressed_error(state, qs)
    del state, out
    # work (modelled) and the three-bound roofline per phase (docs/bench.md, "Roofline")
    cp, ca = op.cost_prepare(shape, dt), op.cost_attend(shape, dt)
    cf = cp + ca
    cols.update(
        flops=cf.flops,
        bytes=cf.bytes,
        exps=cf.exps,
        flops_prepare=cp.flops,
        flops_attend=ca.flops,
        bytes_prepare=cp.bytes,
        bytes_attend=ca.bytes,
        exps_prepare=cp.exps,
        exps_attend=ca.exps,
    )
    ce = ceilings(
        case.device, env.get("device_name") or "", case.dtype
    )  # measured once per device+dtype
    cols.update(ce.columns())
    pf, pb, pe = ce.matmul_flops_per_s, ce.bytes_per_s, ce.exp_per_s
    fwd_ms = cols.get("forward_ms_median")
    cols.update(
        roofline_fraction(cf.flops, cf.bytes, None if fwd_ms is None else fwd_ms / 1e3, pf, pb)
    )
    phases = [("prepare", cp), ("attend", ca), ("forward", cf)]
    if cols.get("attend_graph_ms_median") is not None:
        phases.append(("attend_graph", ca))  # the same work, without the host's launch cost
    for phase, c in phases:
        cols.update(
            phase_roofline(
                phase, c.flops, c.bytes, c.exps, cols.get(f"{phase}_ms_median"), pf, pb, pe
            )
        )
    cols["roofline_fraction"] = cols[
        "roofline_fraction_forward"
    ]  # the forward fraction, three bounds
    return cols


def run_case(
    case: Case,
    inp: Inputs | BaseException,
    cfg: SweepConfig,
    timer: PhaseTimer | None,
    env: dict[str, Any],
    preset: str,
) -> dict[str, Any]:
    """One row; never raises for OOM, unsupported or operator errors."""
    row = base_row(case, preset)
    row.update(env)
    row.update(_nvml_cols(case, "before"))
    oom_reason: str | None = None
    try:
        op = ai.get(case.method, **case.params_dict)
        row["label"] = op.label
        shape = Shape(case.batch, case.heads, case.n, case.m, case.d, case.dv, case.causal)
        reasons = op.check(shape, case.dtype, case.device)
        if not reasons:  # which implementation attend runs: torch (SDPA/matmuls) or triton
            row["backend"] = op.backend_used(case.device, case.dtype, causal=case.causal)
        if isinstance(inp, BaseException):
            if is_oom(inp):
                oom_reason = f"building inputs: {_oom_reason(inp)}"
            else:
                row.update(status="unsupported", reason=f"{INPUT_UNAVAILABLE}{inp}")
        elif reasons:
            row.update(status="unsupported", reason="; ".join(reasons))
        else:
            row.update({k: v for k, v in inp.info.items() if k != "dataset" or v is not None})
            _inject(case, op.label)
            row.update(measure(case, op, inp, cfg, timer, env))
            row["status"] = "ok"
    except BaseException as exc:  # noqa: BLE001 - rows, not crashes (except Ctrl-C)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if is_oom(exc):
            oom_reason = _oom_reason(exc)
            if isinstance(getattr(exc, "estimate_bytes", None), (int, float)):
                row.setdefault("mem_estimate_bytes", float(exc.estimate_bytes))
        else:
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
    if oom_reason is not None:  # outside the except block: the traceback no longer pins tensors
        row.update(status="oom", reason=oom_reason)
        free_memory(case.device)
    row.update(_nvml_cols(case, "after"))
    row["timestamp"] = timestamp()
    return row


def _build(case: Case) -> Inputs | BaseException:
    try:
        return build_inputs(case)
    except (UnsupportedInput, MemoryError, RuntimeError) as exc:
        return (
            exc
            if (isinstance(exc, UnsupportedInput) or is_oom(exc))
            else UnsupportedInput(f"input generation failed: {type(exc).__name__}: {exc}")
        )


def run_sweep(
    cfg: SweepConfig,
    cases: list[Case],
    out_dir: str | Path,
    *,
    preset: str | None = None,
    time_budget_min: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure the cases not yet in ``out_dir``; returns (all rows, run info)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / store.LOG_NAME
    known = frozenset(c.case_id for c in cases)

    def logged() -> list[dict[str, Any]]:  # result rows only; foreign lines are counted once
        return store.dedupe(rowcheck.split(store.read_rows(log_path), known)[0])

    good, skipped = rowcheck.split(store.read_rows(log_path), known)
    if skipped:
        logging.getLogger(__name__).warning(rowcheck.describe(log_path, skipped))
    info_skipped = sum(skipped.values())
    done = {r.get("case_id") for r in good if finished(r)}
    pending = [c for c in cases if c.case_id not in done]
    info: dict[str, Any] = {
        "total": len(cases),
        "already_done": len(cases) - len(pending),
        "measured": 0,
        "not_run": 0,
        "stopped": None,
        "skipped_lines": info_skipped,
    }
    if not pending:
        rows = logged()
        store.write_table(store.to_frame(rows), out)
        return rows, info
    device = pending[0].device
    env = {**environment(device), **apply_malloc_tuning(cfg.malloc_tune, device)}
    timer = PhaseTimer(device, cfg.timing)
    start = time.monotonic()
    last_table = 0.0
    cache_key, cache_val = None, None
    bar = tqdm(
        pending,
        desc=f"bench {preset or cfg.name}",
        unit="case",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for i, case in enumerate(bar):
            if time_budget_min is not None and time.monotonic() - start > time_budget_min * 60:
                info["stopped"] = f"time budget of {time_budget_min:g} min reached"
                info["not_run"] = len(pending) - i
                break
            bar.set_postfix_str(f"{case.method} N={case.n} M={case.m}", refresh=False)
            if case.input_key() != cache_key:
                cache_key, cache_val = None, None
                free_memory(device)
                cache_key, cache_val = case.input_key(), _build(case)
            row = run_case(case, cache_val, cfg, timer, env, preset or cfg.name)
            store.append_row(log_path, row)
            info["measured"] += 1
            if time.monotonic() - last_table > 5.0:
                store.write_table(store.to_frame(logged()), out)
                last_table = time.monotonic()
    except KeyboardInterrupt:
        info["stopped"] = "interrupted (Ctrl-C); re-run with the same --out to resume"
        info["not_run"] = len(pending) - info["measured"]
        warnings.warn(info["stopped"], stacklevel=1)
    finally:
        bar.close()
        cache_val = None
        rows = logged()
        store.write_table(store.to_frame(rows), out)
    return rows, info
