"""Sweeps as data: presets and TOML files -> frozen dataclasses -> a list of cases.

A configuration is a dict (a preset from :mod:`bench.presets`, or a parsed TOML file)::

    name = "mine"
    methods = ["dense", "svd_exact", "performer"]      # default: every registered method
    device = "cpu"                                      # default: cuda when present
    [timing]   ...  (see Timing)
    [fidelity] ...  (see FidelityCfg)
    [memory]   enabled = true
    [method_params.svd_exact]
    solver = ["gram", "lowrank"]                        # lists are swept
    [[grid]]                                            # one or more blocks, each a product
    n = [1024, 4096]
    m = [64, 1024]
    rank = [16]                                         # methods with a `rank` parameter
    features = [64]                                     # methods with a `features` parameter
    family = [{kind = "powerlaw", alpha = 1.0, noise_floor = 1e-3}]
    [cascade]
    n = [4096]
    stages = [1024, 256, 64]

Unknown keys raise :class:`ConfigError` listing the allowed ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import validate as V
from .errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

FAMILY_KEYS: dict[str, tuple[str, ...]] = {
    "exact_rank": ("rank",),
    "powerlaw": ("alpha", "noise_floor"),
    "exponential": ("beta", "noise_floor"),
    "spectrum_matched": ("profile", "noise_floor", "max_rank"),
    "real": ("path",),
}
SETTINGS = ("target", "self")
DTYPES = ("fp32", "bf16", "fp16", "fp64")


def _check_keys(where: str, given: dict[str, Any], allowed: tuple[str, ...] | list[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where}; allowed: {', '.join(sorted(allowed))}"
        )


def _as_tuple(where: str, value: Any) -> tuple:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where} must not be empty")
        return tuple(value)
    return (value,)


def _build(cls: type, where: str, raw: dict[str, Any] | None) -> Any:
    """Frozen dataclass ``cls`` from ``raw`` with key checking; lists become tuples."""
    raw = dict(raw or {})
    names = [f.name for f in fields(cls)]
    _check_keys(where, raw, names)
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()})


@dataclass(frozen=True)
class Timing:
    """How each phase (prepare, attend, forward) is timed (see bench/timing.py).

    A sample is ``inner`` back-to-back calls between one pair of timestamps; ``min_calls`` /
    ``max_calls`` bound the number of samples."""

    min_calls: int = 3  # samples, at least
    max_calls: int = 50  # samples, at most
    min_time_s: float = 0.1  # keep sampling until this much time has been measured
    warmup_min: int = 1
    warmup_max: int = 10
    warmup_time_s: float = 0.5  # stop warming up after this long, stable or not
    stable_window: int = 3
    stable_rtol: float = 0.1
    flush_l2: bool = True  # CUDA only: flush L2 before each call when no input rotation
    sample_min_ms: float | None = None  # a sample lasts at least this (None: CUDA 1.0, CPU 0.2)
    inner_max: int = 1000  # calls per sample, at most
    rotate: bool | None = None  # input rotation (None: on for CUDA, off for CPU)
    rotate_max: int = 8  # input sets, at most
    rotate_mem_fraction: float = 0.25  # extra input copies may use this much of free memory
    cache_bytes: int | None = None  # cache the rotation overflows (None: CUDA L2 / CPU LLC)
    graph_attend: bool = True  # CUDA only: also time attend replayed from a CUDA graph
    graph_calls_max: int = 64  # calls captured in that graph, at most


@dataclass(frozen=True)
class FidelityCfg:
    enabled: bool = True
    max_rows: int = 256  # query rows per run (split over batch x heads)
    max_causal_n: int = 2048  # self-attention fidelity needs the full N x N weights
    smoothing_a: float = 1e-6
    topk: int = 10


@dataclass(frozen=True)
class MemoryCfg:
    enabled: bool = True


@dataclass(frozen=True)
class Grid:
    n: tuple[int, ...] = (1024,)
    m: tuple[int, ...] = (64,)
    d: tuple[int, ...] = (64,)
    dv: tuple[int | None, ...] = (None,)
    rank: tuple[int, ...] = (16,)
    features: tuple[int, ...] = (64,)
    batch: tuple[int, ...] = (1,)
    heads: tuple[int, ...] = (1,)
    dtype: tuple[str, ...] = ("fp32",)
    setting: tuple[str, ...] = ("target",)
    family: tuple[dict, ...] = ({"kind": "powerlaw", "alpha": 1.0, "noise_floor": 1e-3},)
    seed: tuple[int, ...] = (0,)
    query_scale: tuple[float, ...] = (1.0,)
    padding: tuple[float, ...] = (0.0,)  # fraction of the last user's behaviours padded
    methods: tuple[str, ...] | None = None  # restrict this block to these methods
    method_params: dict | None = None  # overrides the top-level [method_params] in this block


@dataclass(frozen=True)
class CascadeCfg:
    n: tuple[int, ...] = (4096,)
    stages: tuple[int, ...] = (1024, 256, 64)
    d: int = 64
    rank: int = 16
    features: int = 64
    batch: int = 1
    heads: int = 1
    dtype: str = "fp32"
    family: dict = field(
        default_factory=lambda: {"kind": "powerlaw", "alpha": 1.0, "noise_floor": 1e-3}
    )
    seed: int = 0


@dataclass(frozen=True)
class SweepConfig:
    name: str
    methods: tuple[str, ...] | None  # None = every registered method
    grids: tuple[Grid, ...]
    method_params: tuple[tuple[str, tuple[tuple[str, tuple], ...]], ...] = ()
    timing: Timing = Timing()
    fidelity: FidelityCfg = FidelityCfg()
    memory: MemoryCfg = MemoryCfg()
    cascade: CascadeCfg | None = None
    device: str | None = None
    threads: int | None = None  # torch CPU threads (None = torch's default)
    malloc_tune: bool = True  # CPU runs: raise glibc's mmap/trim thresholds (bench/malloc.py)

    def params_for(self, method: str) -> dict[str, tuple]:
        return {k: v for name, items in self.method_params if name == method for k, v in items}


TOP_KEYS = (
    "name",
    "methods",
    "grid",
    "method_params",
    "timing",
    "fidelity",
    "memory",
    "cascade",
    "device",
    "threads",
    "malloc_tune",
    "description",
)


@dataclass(frozen=True)
class Case:
    """One method x configuration: everything needed to rebuild the inputs and the operator."""

    method: str
    params: tuple[tuple[str, Any], ...]
    family: str
    family_params: tuple[tuple[str, Any], ...]
    batch: int
    heads: int
    n: int
    m: int
    d: int
    dv: int
    dtype: str
    setting: str
    seed: int
    query_scale: float
    padding: float
    device: str

    @property
    def causal(self) -> bool:
        return self.setting == "self"

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def family_dict(self) -> dict[str, Any]:
        return dict(self.family_params)

    def input_key(self) -> tuple:
        """Cases with the same input key share inputs (built once for all methods)."""
        return (
            self.family,
            self.family_params,
            self.batch,
            self.heads,
            self.n,
            self.m,
            self.d,
            self.dv,
            self.dtype,
            self.setting,
            self.seed,
            self.query_scale,
            self.padding,
            self.device,
        )

    def identity(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["params"] = dict(self.params)
        out["family_params"] = dict(self.family_params)
        return out

    @property
    def case_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def test_id(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params)
        return (
            f"{self.method}{'[' + p + ']' if p else ''}-N{self.n}-M{self.m}-d{self.d}-B{self.batch}H{self.heads}-"
            f"{self.dtype}-{self.setting}-{self.family}"
        )

    def to_json(self) -> dict[str, Any]:
        return self.identity()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Case:
        raw = dict(raw)
        raw["params"] = tuple(sorted(raw["params"].items()))
        raw["family_params"] = tuple(sorted(raw["family_params"].items()))
        return cls(**raw)


# ----------------------------------------------------------------------------- parsing


def _family(where: str, raw: Any) -> dict:
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict) or "kind" not in raw:
        raise ConfigError(
            f"{where}: a family is a table with a `kind`; kinds: {', '.join(FAMILY_KEYS)}"
        )
    kind = raw["kind"]
    if not isinstance(kind, str) or kind not in FAMILY_KEYS:
        raise ConfigError(
            f"{where}: unknown family kind {kind!r}; allowed: {', '.join(FAMILY_KEYS)}"
        )
    _check_keys(
        f"{where} (family {kind})",
        {k: v for k, v in raw.items() if k != "kind"},
        FAMILY_KEYS[kind] + ("dataset",),
    )
    V.check_section(
        f"{where} (family {kind})", {k: v for k, v in raw.items() if k != "kind"}, V.FAMILY_RULES
    )
    return dict(raw)


def parse_config(raw: dict[str, Any], *, source: str = "config") -> SweepConfig:
    """Validate a configuration dict (preset or TOML) into a :class:`SweepConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a table at the top level")
    _check_keys(source, raw, TOP_KEYS)
    grids_raw = raw.get("grid")
    if not grids_raw:
        raise ConfigError(f"{source}: needs at least one [[grid]] block")
    if isinstance(grids_raw, dict):
        grids_raw = [grids_raw]
    if not isinstance(grids_raw, list):
        raise ConfigError(f"{source}: `grid` must be one or more [[grid]] tables")
    grid_names = [f.name for f in fields(Grid)]
    grids = []
    for i, g in enumerate(grids_raw):
        where = f"{source} [[grid]] #{i + 1}"
        V.check_table(where, g)
        _check_keys(where, g, grid_names)
        kw = {}
        for k, v in g.items():
            if k == "family":
                kw[k] = tuple(_family(where, f) for f in _as_tuple(f"{where}.family", v))
            elif k == "method_params":
                kw[k] = {
                    name: {
                        pk: _as_tuple(f"{where}.method_params.{name}.{pk}", pv)
                        for pk, pv in items.items()
                    }
                    for name, items in V.check_method_params(f"{where}.method_params", v).items()
                }
            elif k in V.GRID_RULES:
                kw[k] = V.check_list(f"{where}.{k}", v, V.GRID_RULES[k])
            else:
                kw[k] = _as_tuple(f"{where}.{k}", v)
        grid = Grid(**kw)
        for s in grid.setting:
            if s not in SETTINGS:
                raise ConfigError(f"{where}: unknown setting {s!r}; allowed: {', '.join(SETTINGS)}")
        for dt in grid.dtype:
            if dt not in DTYPES:
                raise ConfigError(f"{where}: unknown dtype {dt!r}; allowed: {', '.join(DTYPES)}")
        grids.append(grid)
    mp_raw = raw.get("method_params") or {}
    if not isinstance(mp_raw, dict):
        raise ConfigError(f"{source}: [method_params] must be a table of tables")
    V.check_method_params(f"{source} method_params", mp_raw)
    method_params = tuple(
        (
            name,
            tuple((k, _as_tuple(f"method_params.{name}.{k}", v)) for k, v in sorted(items.items())),
        )
        for name, items in sorted(mp_raw.items())
    )
    cascade = None
    if raw.get("cascade") is not None:
        cwhere = f"{source} [cascade]"
        craw = dict(V.check_section(cwhere, raw["cascade"], V.CASCADE_RULES))
        for k, rule in V.CASCADE_LIST_RULES.items():
            if k in craw:
                craw[k] = V.check_list(f"{cwhere}.{k}", craw[k], rule)
        if "dtype" in craw:
            V.check(f"{cwhere}.dtype", craw["dtype"], V.Rule("str", choices=DTYPES))
        if "family" in craw:  # a bare kind ("powerlaw") becomes its table here, not after the sweep
            craw["family"] = _family(cwhere, craw["family"])
        cascade = _build(CascadeCfg, cwhere, craw)
    methods = raw.get("methods")
    V.check_section(source, {k: raw[k] for k in V.TOP_RULES if k in raw}, V.TOP_RULES, sep=": ")
    V.check_timing(f"{source} [timing]", raw.get("timing"), dataclasses.asdict(Timing()))
    V.check_section(f"{source} [fidelity]", raw.get("fidelity"), V.FIDELITY_RULES)
    V.check_section(f"{source} [memory]", raw.get("memory"), V.MEMORY_RULES)
    device = raw.get("device")
    if device is not None:  # availability is checked where it is used (a CUDA preset may fall back)
        if not isinstance(device, str) or not V.DEVICE_RE.match(device):
            raise ConfigError(
                f"{source}: device = {device!r} is not allowed; "
                "expected 'cpu', 'cuda' or 'cuda:<index>'"
            )
    return SweepConfig(
        name=str(raw.get("name", Path(source).stem)),
        methods=None
        if methods in (None, "all")
        else V.check_list(f"{source}.methods", methods, V.STR),
        grids=tuple(grids),
        method_params=method_params,
        timing=_build(Timing, f"{source} [timing]", raw.get("timing")),
        fidelity=_build(FidelityCfg, f"{source} [fidelity]", raw.get("fidelity")),
        memory=_build(MemoryCfg, f"{source} [memory]", raw.get("memory")),
        cascade=cascade,
        device=device,
        threads=raw.get("threads"),
        malloc_tune=True if raw.get("malloc_tune") is None else raw["malloc_tune"],
    )


def load_config(preset: str | None = None, path: str | Path | None = None) -> SweepConfig:
    """A preset by name, or a TOML file (the file wins when both are given)."""
    from .presets import PRESETS

    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start}); TOML files are UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot be read ({exc.strerror})") from None
        raw.setdefault("name", p.stem)
        return parse_config(raw, source=str(p))
    name = preset or "smoke"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return parse_config(PRESETS[name], source=f"preset {name}")


# ----------------------------------------------------------------------------- expansion


def _method_variants(
    cfg: SweepConfig, method: str, grid: Grid, accepted: dict[str, Any]
) -> list[dict]:
    axes: dict[str, tuple] = {}
    if "rank" in accepted:
        axes["rank"] = grid.rank
    if "features" in accepted:
        axes["features"] = grid.features
    overrides = cfg.params_for(method)
    if grid.method_params is not None and method in grid.method_params:
        overrides = dict(grid.method_params[method])
    for k, values in overrides.items():
        if k not in accepted:
            raise ConfigError(
                f"method_params.{method}: unknown parameter {k!r}; allowed: {', '.join(accepted) or 'none'}"
            )
        axes[k] = values
    keys = list(axes)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))
    ]


def resolve_methods(cfg: SweepConfig, only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(methods to run, requested methods not registered yet)."""
    import attention_impls as ai

    known = ai.available()
    wanted = list(only) if only else (list(cfg.methods) if cfg.methods else known)
    missing = [m for m in wanted if m not in known]
    return [m for m in wanted if m in known], missing


def expand(cfg: SweepConfig, methods: list[str], device: str) -> list[Case]:
    """Every (grid point x method variant) as a :class:`Case`, inputs grouped together."""
    import attention_impls as ai

    cases: list[Case] = []
    seen: set[str] = set()
    for grid in cfg.grids:
        block_methods = [m for m in methods if grid.methods is None or m in grid.methods]
        for fam, n, m, d, dv, batch, heads, dtype, setting, seed, qs, pad in itertools.product(
            grid.family,
            grid.n,
            grid.m,
            grid.d,
            grid.dv,
            grid.batch,
            grid.heads,
            grid.dtype,
            grid.setting,
            grid.seed,
            grid.query_scale,
            grid.padding,
        ):
            m_eff = n if setting == "self" else m
            fam_params = tuple(sorted((k, v) for k, v in fam.items() if k != "kind"))
            for method in block_methods:
                accepted = ai.method_class(method).PARAMS
                for params in _method_variants(cfg, method, grid, accepted):
                    case = Case(
                        method=method,
                        params=tuple(sorted(params.items())),
                        family=fam["kind"],
                        family_params=fam_params,
                        batch=int(batch),
                        heads=int(heads),
                        n=int(n),
                        m=int(m_eff),
                        d=int(d),
                        dv=int(dv if dv is not None else d),
                        dtype=dtype,
                        setting=setting,
                        seed=int(seed),
                        query_scale=float(qs),
                        padding=float(pad),
                        device=device,
                    )
                    if case.case_id not in seen:
                        seen.add(case.case_id)
                        cases.append(case)
    return cases
