"""Seeded, reproducible inputs (q, k, v, key_mask) for each input family.

Everything is generated in fp32 on the target device with a seeded generator and cast to
the case dtype at the end, so a case is reproducible on a given device type.
Families:
- ``exact_rank``: [K|V] = G1 G2 with G1 N x r*, G2 r* x (d+dv) (rank exactly r*).
- ``powerlaw`` / ``exponential``: [K|V] = U diag(s) W^T, U, W random orthonormal (QR, O(N D^2)),
  s_i = i^-alpha (or exp(-beta (i-1))) + noise_floor.
- ``spectrum_matched``: s read from a profile JSON (fitted decay) or a file of singular values;
  optional ``max_rank`` caps the rank of [K|V] (a trained model's K, V share a d-dim state).
- ``real``: per-user K/V from an ``.npz`` or ``.safetensors`` file read by
  ``bench.arrays.load_kv`` (the loader of ``analysis kv``): ``k`` [U,(H,)N,d], ``v``
  [U,(H,)N,dv], optional ``q`` [U,(H,)M,d] (used as the queries, times ``query_scale``; without
  it queries are drawn and the row's ``queries`` column says so), ``mask`` [U,N] or
  ``lengths`` [U]. Heads are kept, never replicated. Real K/V are not rescaled.
Keys/values are scaled so that entries have unit mean square; queries are Gaussian times
``query_scale`` (the temperature of the logits).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attention_impls import dtype_from_name

from .arrays import KVArrays, load_kv
from .config import Case


class UnsupportedInput(Exception):
    """The input family cannot be built (missing file, too few users...)."""


@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    key_mask: torch.Tensor | None
    info: dict[str, Any]  # dataset name, norm summaries -> table columns


# ----------------------------------------------------------------------------- spectra


def decay_profile(
    model: str, n_values: int, params: dict[str, float], noise_floor: float
) -> np.ndarray:
    """Normalised singular values s_1 = 1 >= s_2 ... of a decay model with a noise floor
    relative to s_1: s_i = (1 - floor) f(i) + floor, f(1) = 1 (the definition the analysis
    package fits and exports in profile.json)."""
    i = np.arange(1, n_values + 1, dtype=np.float64)
    if model == "powerlaw":
        s = i ** (-float(params["alpha"]))
    elif model == "exponential":
        s = np.exp(-float(params["beta"]) * (i - 1))
    else:
        raise UnsupportedInput(f"unknown decay model {model!r}; expected powerlaw or exponential")
    floor = float(noise_floor)
    if not 0.0 <= floor < 1.0:
        raise UnsupportedInput(f"noise_floor must be in [0, 1) relative to s_1, got {floor}")
    return (1.0 - floor) * s + floor


def read_profile(path: str | Path) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Read a spectrum file: (singular values or None, decay description).

    JSON profiles are accepted flat (``{"model": "powerlaw", "alpha": 1.1, "noise_floor": 0.01}``)
    or nested (``{"model": ..., "params": {"alpha": ...}, "noise_floor": ...}``); a list under
    ``"models"``/``"fits"`` picks the entry named by ``"best"`` or the first. Text, CSV (first
    numeric column) and ``.npy`` files are singular values.
    """
    p = Path(path)
    if not p.is_file():
        raise UnsupportedInput(f"spectrum profile {p} not found")
    if p.suffix == ".json":
        raw = json.loads(p.read_text())
        prof = raw
        if "model" not in raw:
            fits = raw.get("models") or raw.get("fits")
            if isinstance(fits, dict):
                best = raw.get("best") or next(iter(fits))
                prof = {"model": best, **fits[best]}
            elif isinstance(fits, list) and fits:
                prof = next((f for f in fits if f.get("model") == raw.get("best")), fits[0])
            else:
                raise UnsupportedInput(f"{p}: no 'model' key (expected powerlaw|exponential)")
        params = dict(prof.get("params") or {})
        for key in ("alpha", "beta"):
            if key in prof:
                params.setdefault(key, prof[key])
        desc = {
            "model": prof["model"],
            "params": params,
            "noise_floor": float(prof.get("noise_floor", params.pop("noise_floor", 0.0))),
            "dataset": raw.get("dataset", p.parent.name),
        }
        return None, desc
    if p.suffix == ".npy":
        s = np.load(p, allow_pickle=False)
    else:
        s = np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2, comments="#")
        s = s[:, 0] if s.shape[1] >= 1 else s.ravel()
    s = np.sort(np.abs(np.asarray(s, dtype=np.float64).ravel()))[::-1]
    if s.size == 0 or s[0] <= 0:
        raise UnsupportedInput(f"{p}: no positive singular values")
    return s / s[0], {"model": "values", "dataset": p.parent.name}


def spectrum_for(case: Case, dims: int) -> tuple[np.ndarray, dict[str, Any]]:
    fp = case.family_dict
    nf = float(fp.get("noise_floor", 1e-3))
    if case.family == "powerlaw":
        return decay_profile("powerlaw", dims, {"alpha": fp.get("alpha", 1.0)}, nf), {}
    if case.family == "exponential":
        return decay_profile("exponential", dims, {"beta": fp.get("beta", 0.2)}, nf), {}
    if case.family == "spectrum_matched":
        if "profile" not in fp:
            raise UnsupportedInput("spectrum_matched needs family parameter `profile` (a file)")
        values, desc = read_profile(fp["profile"])
        used: dict[str, Any] = {"dataset": fp.get("dataset", desc.get("dataset"))}
        if values is None:
            floor = float(fp.get("noise_floor", desc["noise_floor"]))
            values = decay_profile(desc["model"], dims, desc["params"], floor)
            # the fit actually used, so a row stays interpretable after profile.json is re-fitted
            used["spectrum_profile"] = json.dumps(
                {"model": desc["model"], "params": desc["params"], "noise_floor": floor},
                sort_keys=True,
            )
        else:
            if values.size < dims:  # pad with the smallest value given (a noise floor)
                values = np.concatenate([values, np.full(dims - values.size, values[-1])])
            used["spectrum_profile"] = json.dumps({"singular_values_file": str(fp["profile"])})
        return values[:dims], used
    raise UnsupportedInput(f"family {case.family!r} has no spectrum")


# ----------------------------------------------------------------------------- builders


def _orthonormal(
    rows: int, cols: int, bh: int, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    a = torch.randn(bh, rows, cols, generator=g, device=device)
    qmat, r = torch.linalg.qr(a)
    return qmat * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def _unit_mean_square(x: torch.Tensor) -> torch.Tensor:
    ms = x.pow(2).mean(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    return x / ms.sqrt()


def synthetic_kv(case: Case, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """[B*H, N, d+dv] fp32 with the spectrum of the case's family."""
    bh, n, width = case.batch * case.heads, case.n, case.d + case.dv
    if case.family == "exact_rank":
        r = int(case.family_dict.get("rank", 16))
        x = torch.randn(bh, n, r, generator=g, device=device) @ torch.randn(
            bh, r, width, generator=g, device=device
        )
        return _unit_mean_square(x)
    # max_rank: a trained model's K and V project one d-dim hidden state, so [K|V] has rank <= d
    dims = min(n, width, int(case.family_dict.get("max_rank", width)))
    s, _ = spectrum_for(case, dims)
    u = _orthonormal(n, dims, bh, g, device)
    w = _orthonormal(width, dims, bh, g, device)
    st = torch.as_tensor(s, dtype=torch.float32, device=device)
    x = (u * st) @ w.transpose(-1, -2)
    return _unit_mean_square(x)


@functools.lru_cache(maxsize=2)
def _kv_file(path: str, mtime_ns: int, size: int) -> KVArrays:
    """One read per file (and version) for all the cases of a sweep."""
    return load_kv(path, "real family path")


@dataclass
class RealInputs:
    k: torch.Tensor  # [B, H, N, d]
    v: torch.Tensor  # [B, H, N, dv]
    q: torch.Tensor | None  # [B, H, M, d] from the file, or None (queries are drawn)
    mask: torch.Tensor | None  # [B, N]; None when the file says every behaviour is real
    dataset: str
    padding: str


def real_kv(case: Case) -> RealInputs:
    """The case's slice of a K/V file (``bench.arrays.load_kv``: .npz or .safetensors, mask or
    lengths, heads kept): the first ``batch`` users, ``heads`` heads, ``n`` behaviours, ``m``
    queries. Heads are never replicated: a file with fewer heads than the case is unsupported."""
    path = case.family_dict.get("path")
    if not path or not Path(path).is_file():
        raise UnsupportedInput(f"real behaviour embeddings not available (file {path!r} not found)")
    st = Path(path).stat()
    try:
        a = _kv_file(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    except ValueError as exc:
        raise UnsupportedInput(str(exc)) from None
    u_, h_, n_, d_ = a.shape
    dv_ = a.v.shape[3]
    need = []
    if u_ < case.batch:
        need.append(f"{case.batch} users (has {u_})")
    if h_ < case.heads:
        need.append(f"{case.heads} heads (has {h_}; heads are not replicated)")
    if n_ < case.n:
        need.append(f"N >= {case.n} (has {n_})")
    if d_ != case.d or dv_ != case.dv:
        need.append(f"d = {case.d}, dv = {case.dv} (has {d_}, {dv_})")
    if a.q is not None and case.setting == "target" and a.q.shape[2] < case.m:
        need.append(f"M <= {a.q.shape[2]} queries per user (case has M = {case.m})")
    if need:
        raise UnsupportedInput(
            f"{path}: k {a.k.shape}, v {a.v.shape}"
            + ("" if a.q is None else f", q {a.q.shape}")
            + "; the case needs "
            + ", ".join(need)
        )
    b, h, n = case.batch, case.heads, case.n

    def take(x: np.ndarray, rows: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x[:b, :h, :rows]))

    q = None if a.q is None else take(a.q, case.m)
    mask = a.mask[:b, :n]
    mt = None if mask.all() else torch.from_numpy(np.ascontiguousarray(mask))
    ds = case.family_dict.get("dataset", Path(path).parent.name)
    return RealInputs(take(a.k, n), take(a.v, n), q, mt, ds, a.padding)


def padding_mask(case: Case, device: torch.device) -> torch.Tensor | None:
    """Last user has ``padding`` of its behaviours padded (1.0 = a fully padded user)."""
    if case.padding <= 0:
        return None
    mask = torch.ones(case.batch, case.n, dtype=torch.bool, device=device)
    real = int(round(case.n * (1.0 - case.padding)))
    mask[-1, real:] = False
    return mask


def _norms(x: torch.Tensor) -> tuple[float, float]:
    nrm = x.float().norm(dim=-1)
    return float(nrm.mean()), float(nrm.max())


def build_inputs(case: Case) -> Inputs:
    """The (q, k, v, key_mask) of a case; raises UnsupportedInput with a reason."""
    device = torch.device(case.device)
    dtype = dtype_from_name(case.dtype)
    g = torch.Generator(device=device).manual_seed(case.seed)
    info: dict[str, Any] = {"dataset": None, "synthetic": case.family != "real"}
    q = None
    if case.family == "real":
        real = real_kv(case)
        k, v, info["dataset"] = real.k.to(device), real.v.to(device), real.dataset
        mask = None if real.mask is None else real.mask.to(device)
        if case.setting == "self":
            info["queries"] = "self-attention: the file's keys"
        elif real.q is not None:
            q = real.q.to(device) * case.query_scale
            info["queries"] = f"the file's q (first {case.m} per user and head)"
        else:
            info["queries"] = "drawn: the file has no q, so seeded Gaussian queries"
        info["queries"] += f"; padding: {real.padding}"
    else:
        x = synthetic_kv(case, g, device).reshape(case.batch, case.heads, case.n, case.d + case.dv)
        k, v = x[..., : case.d], x[..., case.d :]
        mask = padding_mask(case, device)
        if case.family == "spectrum_matched":
            used = spectrum_for(case, 2)[1]
            info["dataset"] = used.get("dataset")
            info["spectrum_profile"] = used.get("spectrum_profile")
    if case.setting == "self":
        q = k * case.query_scale
    elif q is None:
        q = torch.randn(case.batch, case.heads, case.m, case.d, generator=g, device=device)
        q = q * case.query_scale
    info["q_norm_mean"], info["q_norm_max"] = _norms(q)
    info["k_norm_mean"], info["k_norm_max"] = _norms(k)
    info["logit_scale"] = info["q_norm_mean"] * info["k_norm_mean"] / math.sqrt(case.d)
    cast = lambda t: t.to(dtype).contiguous()  # noqa: E731
    return Inputs(cast(q), cast(k), cast(v), mask, info)
