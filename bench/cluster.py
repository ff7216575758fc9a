"""Sweeps on a Ray cluster: ``python -m bench run ... --cluster ray [--address ADDR]``.

Long-lived actors do the measuring; the driver is the only writer of ``DIR/rows.jsonl``:

- one actor per GPU (``num_gpus=1``: Ray sets ``CUDA_VISIBLE_DEVICES`` and the actor keeps
  ``device="cuda"``, so case ids never contain a GPU index), or on CPU-only clusters one actor
  per ``--cpus-per-worker`` cores (torch threads = that many);
- the cases of one input group (same ``Case.input_key``) go to one actor, one case at a time,
  so its inputs are built once and the driver always knows which case each actor is running;
- each row is appended to the log as it arrives (the same store as a local run, so resume,
  de-duplication and ``--time-budget`` behave as today);
- an actor that dies (CUDA error, OOM kill, lost node) is replaced: the case it was running
  gets no row (a re-run with the same ``--out`` measures it), the rest of its group goes to the
  replacement. A case that fails for a reason (OOM inside torch, unsupported, operator error)
  gets its row from :func:`bench.runner.run_case`, exactly as in one process.

Ray is an optional extra (``pip install -e '.[cluster]'``); without it the CLI exits 2 with
that hint.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import store
from .config import Case, SweepConfig
from .errors import ConfigError
from .shard import input_groups

INSTALL_HINT = (
    "--cluster ray needs Ray, an optional extra: pip install -e '.[cluster]' "
    "(or pip install 'ray[default]>=2.9')"
)
MAX_DEATHS_PER_WORKER = 3  # replacements per worker slot before the run gives up


def import_ray() -> Any:
    """The ``ray`` module, or :class:`ConfigError` naming the install command."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None, **init_kwargs: Any) -> Any:
    """Connect to ``address`` (else ``RAY_ADDRESS``, else a new local Ray); reuse an open one."""
    ray = import_ray()
    if not ray.is_initialized():
        addr = address or os.environ.get("RAY_ADDRESS") or None
        init_kwargs.setdefault("include_dashboard", False)
        init_kwargs.setdefault("log_to_driver", False)
        ray.init(address=addr, **init_kwargs)
    return ray


def cluster_device(cfg_device: str | None, arg: str | None, address: str | None) -> str:
    """``cuda`` when asked for (or by default) and the cluster has GPUs, else ``cpu``; a GPU
    index is refused: Ray assigns GPUs, and the index would change the case ids."""
    if arg and arg.startswith("cuda:"):
        raise ConfigError(
            f"--device {arg} with --cluster: use --device cuda (Ray gives each "
            "worker its own GPU; an index would change the case ids)"
        )
    wanted = arg or cfg_device
    if wanted == "cpu":
        return "cpu"
    gpus = int(connect(address).cluster_resources().get("GPU", 0))
    if gpus:
        return "cuda"
    if wanted == "cuda":
        if arg:
            raise ConfigError("--device cuda but the Ray cluster reports no GPU")
        logging.getLogger(__name__).warning(
            "the preset targets CUDA but the Ray cluster has no GPU; running on CPU"
        )
    return "cpu"


class SweepWorker:
    """One measuring process (a Ray actor): caches the current group's inputs."""

    def __init__(self, cfg: SweepConfig, preset: str, device: str, threads: int | None) -> None:
        import torch

        from .env import environment
        from .malloc import apply_malloc_tuning
        from .timing import PhaseTimer

        if threads:
            torch.set_num_threads(threads)
        self.cfg, self.preset, self.device = cfg, preset, device
        self.env = {**environment(device), **apply_malloc_tuning(cfg.malloc_tune, device)}
        self.timer = PhaseTimer(device, cfg.timing)
        self.key: Any = None
        self.inputs: Any = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, case: Case) -> dict[str, Any]:
        from .runner import _build, free_memory, run_case

        if case.input_key() != self.key:
            self.key, self.inputs = None, None
            free_memory(self.device)
            self.key, self.inputs = case.input_key(), _build(case)
        return run_case(case, self.inputs, self.cfg, self.timer, self.env, self.preset)


@dataclass
class _Slot:
    actor: Any
    todo: deque = field(default_factory=deque)  # cases of the current group not yet sent
    running: tuple[Any, Case] | None = None  # (object ref, case)
    deaths: int = 0
    retired: bool = False  # died too often: no more cases


def _worker_count(
    ray: Any, device: str, cpus_per_worker: int, workers: int | None, groups: int
) -> tuple[int, dict[str, Any]]:
    res = ray.cluster_resources()
    if device.startswith("cuda"):
        slots = int(res.get("GPU", 0))
        if not slots:
            raise ConfigError("device cuda but the Ray cluster reports no GPU")
        opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
    else:
        slots = max(1, int(res.get("CPU", 1) // cpus_per_worker))
        opts = {"num_cpus": cpus_per_worker}
    return max(1, min(slots, workers or slots, groups)), opts


def run_sweep_ray(
    cfg: SweepConfig,
    cases: list[Case],
    out_dir: str | Path,
    *,
    preset: str | None = None,
    time_budget_min: float | None = None,
    progress: bool = True,
    address: str | None = None,
    cpus_per_worker: int = 1,
    workers: int | None = None,
    threads: int | None = None,
    worker_env: dict[str, str] | None = None,
    on_row: Callable[[dict[str, Any], list[Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`bench.runner.run_sweep` on Ray actors; returns (all rows, run info).

    ``on_row(row, actors)`` is called after each row is written (tests use it to kill a worker);
    ``worker_env`` sets environment variables in the actors (e.g. ``BENCH_TEST_DELAY_S``)."""
    from .runner import finished

    if cpus_per_worker < 1:
        raise ConfigError("--cpus-per-worker must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / store.LOG_NAME
    done = {r.get("case_id") for r in store.read_rows(log_path) if finished(r)}
    pending = [c for c in cases if c.case_id not in done]
    info: dict[str, Any] = {
        "total": len(cases),
        "already_done": len(cases) - len(pending),
        "measured": 0,
        "not_run": 0,
        "stopped": None,
        "workers": 0,
        "worker_deaths": 0,
        "lost": [],
    }
    if not pending:
        rows = store.dedupe(store.read_rows(log_path))
        store.write_table(store.to_frame(rows), out)
        return rows, info
    ray = connect(address)
    from ray.exceptions import RayActorError, RayTaskError

    device = pending[0].device
    groups = deque(deque(g) for g in input_groups(pending))
    n_workers, opts = _worker_count(ray, device, cpus_per_worker, workers, len(groups))
    if not device.startswith("cuda"):
        threads = threads or cpus_per_worker
    if worker_env:
        opts["runtime_env"] = {"env_vars": dict(worker_env)}
    actor_cls = ray.remote(max_restarts=0, **opts)(SweepWorker)
    name = preset or cfg.name

    def spawn() -> Any:
        return actor_cls.remote(cfg, name, device, threads)

    slots = [_Slot(spawn()) for _ in range(n_workers)]
    info["workers"] = n_workers
    start = time.monotonic()
    last_table = 0.0
    stopping = False
    bar = tqdm(
        total=len(pending),
        desc=f"bench {name} on ray ({n_workers} workers)",
        unit="case",
        disable=not progress,
        dynamic_ncols=True,
    )

    def feed(slot: _Slot) -> None:
        """Send the slot's next case (taking a new group when its group is done)."""
        if stopping or slot.retired:
            return
        if not slot.todo and groups:
            slot.todo = groups.popleft()
        if slot.todo:
            case = slot.todo.popleft()
            slot.running = (slot.actor.run.remote(case), case)

    try:
        for s in slots:
            feed(s)
        while True:
            if (
                not stopping
                and time_budget_min is not None
                and time.monotonic() - start > time_budget_min * 60
            ):
                stopping = True
                info["stopped"] = f"time budget of {time_budget_min:g} min reached"
            live = {s.running[0]: s for s in slots if s.running is not None}
            if not live:
                break
            ready, _ = ray.wait(list(live), num_returns=1, timeout=5.0)
            for ref in ready:
                slot = live[ref]
                case = slot.running[1]
                slot.running = None
                try:
                    row = ray.get(ref)
                except RayActorError as exc:
                    # the process died: no row for this case (a resume measures it)
                    info["worker_deaths"] += 1
                    info["lost"].append(case.case_id)
                    slot.deaths += 1
                    warnings.warn(
                        f"worker died while running {case.test_id} ({type(exc).__name__}); "
                        "no row for that case, re-run with the same --out to measure it",
                        stacklevel=1,
                    )
                    ray.kill(slot.actor, no_restart=True)
                    bar.update(1)
                    if slot.deaths > MAX_DEATHS_PER_WORKER:  # retire the slot, keep its cases
                        slot.retired = True
                        if slot.todo:
                            groups.appendleft(slot.todo)
                            slot.todo = deque()
                        if all(s.retired for s in slots):
                            stopping = True
                            info["stopped"] = (
                                "every worker died more than "
                                f"{MAX_DEATHS_PER_WORKER} times; see the Ray logs"
                            )
                        continue
                    slot.actor = spawn()
                    feed(slot)
                    continue
                except RayTaskError as exc:  # run_case raised (a harness bug): still a row
                    from .runner import base_row

                    row = base_row(case, name)
                    row.update(status="error", reason=f"worker: {exc}"[:500])
                store.append_row(log_path, row)
                info["measured"] += 1
                bar.update(1)
                if on_row is not None:
                    on_row(row, [s.actor for s in slots])
                for s in slots:  # a retired slot's group may wait for an idle worker
                    if s.running is None and s is not slot:
                        feed(s)
                feed(slot)
            if time.monotonic() - last_table > 5.0:
                store.write_table(store.to_frame(store.dedupe(store.read_rows(log_path))), out)
                last_table = time.monotonic()
    except KeyboardInterrupt:
        info["stopped"] = "interrupted (Ctrl-C); re-run with the same --out to resume"
        warnings.warn(info["stopped"], stacklevel=1)
    finally:
        bar.close()
        for s in slots:
            if not s.retired:
                ray.kill(s.actor, no_restart=True)
        left = sum(len(s.todo) + (s.running is not None) for s in slots) + sum(map(len, groups))
        info["not_run"] = left + len(info["lost"])
        rows = store.dedupe(store.read_rows(log_path))
        store.write_table(store.to_frame(rows), out)
    return rows, info


def add_run_args(r: Any) -> None:
    """The cluster and shard options of ``bench run`` (kept here so the CLI edit stays small)."""
    r.add_argument(
        "--cluster",
        choices=["ray"],
        default=None,
        help="run the cases on Ray actors (pip install -e '.[cluster]')",
    )
    r.add_argument(
        "--address", default=None, help="Ray address (default: RAY_ADDRESS, else a new local Ray)"
    )
    r.add_argument(
        "--cpus-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="CPU-only clusters: one actor (and N torch threads) per N cores (default 1)",
    )
    r.add_argument(
        "--workers",
        type=int,
        default=None,
        help="at most this many actors (default: one per GPU, or per N cores)",
    )
    r.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N (0-based; input groups I, I+N, ...); "
        "join the shards' run directories with `python -m bench merge`",
    )
