"""Seeded, reproducible inputs (q, k, v, key_mask) for each input family.

Everything is generated in fp32 on the target device with a seeded generator and cast to
the case dtype at the end, so a case is reproducible on a given device type.
Families:
- ``exact_rank``: [K|V] = G1 G2 with G1 N x r*, G2 r* x (d+dv) (rank exactly r*).
- ``powerlaw`` / ``exponential``: [K|V] = U diag(s) W^T, U, W random orthonormal (QR, O(N D^2)),
  s_i = i^-alpha (or exp(-beta (i-1))) + noise_floor.
- ``spectrum_matched``: s read from a profile JSON (fitted decay) or a file of singular values;
  optional ``max_rank`` caps the rank of [K|V] (a trained model's K, V share a d-dim state).
- ``real``: per-user K/V from an ``.npz`` (arrays ``k`` [U,N,d], ``v`` [U,N,dv], optional
  ``mask`` [U,N]).
Keys/values are scaled so that entries have unit mean square; queries are Gaussian times
``query_scale`` (the temperature of the logits).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attention_impls import dtype_from_name

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


def real_kv(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    path = case.family_dict.get("path")
    if not path or not Path(path).is_file():
        raise UnsupportedInput(f"real behaviour embeddings not available (file {path!r} not found)")
    with np.load(path, allow_pickle=False) as z:
        if "k" not in z or "v" not in z:
            raise UnsupportedInput(f"{path}: expected arrays 'k' and 'v' [users, N, dim]")
        k, v = z["k"], z["v"]
        mask = z["mask"] if "mask" in z else None
    if (
        k.shape[0] < case.batch
        or k.shape[1] < case.n
        or k.shape[2] != case.d
        or v.shape[2] != case.dv
    ):
        raise UnsupportedInput(
            f"{path}: holds k {k.shape}, v {v.shape}; case needs {case.batch} users, N >= {case.n}, "
            f"d = {case.d}, dv = {case.dv}"
        )
    kt = torch.from_numpy(np.ascontiguousarray(k[: case.batch, : case.n])).float()
    vt = torch.from_numpy(np.ascontiguousarray(v[: case.batch, : case.n])).float()
    kt = kt[:, None].expand(-1, case.heads, -1, -1).contiguous()
    vt = vt[:, None].expand(-1, case.heads, -1, -1).contiguous()
    mt = None if mask is None else torch.from_numpy(mask[: case.batch, : case.n].astype(bool))
    return kt, vt, mt, case.family_dict.get("dataset", Path(path).parent.name)


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
    if case.family == "real":
        k, v, mask, info["dataset"] = real_kv(case)
        k, v = k.to(device), v.to(device)
        mask = None if mask is None else mask.to(device)
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
    else:
        q = torch.randn(case.batch, case.heads, case.m, case.d, generator=g, device=device)
        q = q * case.query_scale
    info["q_norm_mean"], info["q_norm_max"] = _norms(q)
    info["k_norm_mean"], info["k_norm_max"] = _norms(k)
    info["logit_scale"] = info["q_norm_mean"] * info["k_norm_mean"] / math.sqrt(case.d)
    cast = lambda t: t.to(dtype).contiguous()  # noqa: E731
    return Inputs(cast(q), cast(k), cast(v), mask, info)
