"""Array files read by content, never by name, and never unpickled; and per-user K/V files.

One loader serves ``python -m analysis kv --kv FILE`` and the bench's ``real`` input family
(analysis imports bench, attention_impls imports neither), so both accept the same files:
``.npz`` (``numpy.savez``) or ``.safetensors`` with ``k`` [users, N, d] and ``v``
[users, N, dv] (or [users, heads, N, d]), optional ``q`` [users, M, d] (or with heads), and
``mask`` [users, N] (bool, True = real behaviour) or ``lengths`` [users] (the first L are
real). Errors are ``ValueError`` naming the file, the flag that read it and the problem.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KV_KEYS = ("k", "v", "q", "mask", "lengths")


def sniff(path: Path) -> str:
    """One of npy, npz, zip, safetensors, parquet, gzip, pickle, text."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "zip"
        return "npz" if names and all(n.endswith(".npy") for n in names) else "zip"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{ "):
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000:
            return "safetensors"
    return "text"


def npy_shape(path: Path) -> str:
    """'shape (a, b), dtype d' from the .npy header only, never the data."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fh)
    return f"shape {tuple(shape)}, dtype {dtype}"


def safetensors_names(path: Path) -> str:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(min(n, 10_000_000)))
    names = [k for k in header if k != "__metadata__"]
    return ", ".join(f"{k} {header[k].get('shape')}" for k in names[:6]) + (
        " ..." if len(names) > 6 else ""
    )


def describe(path: Path, kind: str | None = None) -> str:
    """What a file is, in words, for error messages (its arrays or shape where it has them)."""
    kind = kind or sniff(path)
    if kind == "npy":
        return f"a NumPy .npy array ({npy_shape(path)})"
    if kind == "npz":
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] for n in z.namelist()]
        return f"a NumPy .npz archive (arrays {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})"
    if kind == "safetensors":
        return f"a safetensors file (tensors {safetensors_names(path)})"
    if kind == "pickle":
        return "a Python pickle (never loaded: unpickling runs code)"
    if kind == "parquet":
        return "a parquet table"
    if kind == "gzip":
        return "a gzip file"
    if kind == "zip":
        return "a zip archive that is not an .npz"
    with open(path, "rb") as fh:
        first = fh.readline(80).decode("utf-8", "replace").strip()
    return f"a text file (first line {first!r})"


def load_named(path: str | Path, flag: str, reads: str) -> dict[str, np.ndarray]:
    """Named arrays of an .npz or .safetensors file; any other type is a ValueError that says
    what the file is and that ``flag`` reads ``reads``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{flag} {p}: no such file")
    kind = sniff(p)
    if kind == "npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except ValueError as exc:  # an object array needs pickle: refused
            raise ValueError(
                f"{flag} {p}: holds an object array ({exc}); save numeric arrays"
            ) from None
    if kind == "safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(p)))
    if kind == "npy":
        raise ValueError(
            f"{flag} {p}: a single .npy array ({npy_shape(p)}); {flag} reads {reads}, as named "
            "arrays in an .npz (numpy.savez) or .safetensors file"
        )
    log = "; an interaction log goes to --data" if kind in ("text", "gzip", "parquet") else ""
    raise ValueError(
        f"{flag} {p}: {describe(p, kind)}, not an .npz or .safetensors of named arrays; "
        f"{flag} reads {reads}{log}"
    )


@dataclass
class KVArrays:
    """A K/V file, validated: heads always present, padding as a boolean mask."""

    k: np.ndarray  # [users, heads, N, d] float32
    v: np.ndarray  # [users, heads, N, dv] float32
    q: np.ndarray | None  # [users, heads, M, d] float32, or None (queries are drawn)
    mask: np.ndarray  # [users, N] bool, True = real behaviour
    padding: str  # where the mask came from, in words

    @property
    def shape(self) -> tuple[int, int, int, int]:
        u, h, n, d = self.k.shape
        return u, h, n, d


def _heads(a: np.ndarray, name: str, where: str) -> np.ndarray:
    """[U, N, d] -> [U, 1, N, d]; [U, H, N, d] kept."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        return a
    raise ValueError(
        f"{where}: {name} has shape {a.shape}; expected [users, N, d] or [users, heads, N, d]"
    )


def _float(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{where}: {name} has dtype {a.dtype}; expected a float array")
    return np.asarray(a, np.float32)


def load_kv(path: str | Path, flag: str = "--kv") -> KVArrays:
    """Read and check a per-user K/V file (see the module docstring)."""
    p = Path(path)
    where = f"{flag} {p}"
    a = load_named(p, flag, "per-user K/V arrays k, v (optional q, mask or lengths)")
    missing = {"k", "v"} - set(a)
    if missing:
        raise ValueError(
            f"{where}: lacks arrays {sorted(missing)} (has {sorted(a)}; needs k, v, optional "
            "q, mask or lengths)"
        )
    unknown = set(a) - set(KV_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown arrays {sorted(unknown)} (allowed: {', '.join(KV_KEYS)})"
        )
    k = _heads(_float(a["k"], "k", where), "k", where)
    v = _heads(_float(a["v"], "v", where), "v", where)
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"{where}: k {a['k'].shape} and v {a['v'].shape} differ in users, heads or N"
        )
    u_, h_, n_, d_ = k.shape
    if not np.isfinite(k).all() or not np.isfinite(v).all():
        raise ValueError(f"{where}: k or v holds NaN or inf")
    q = None
    if "q" in a:
        q = _heads(_float(a["q"], "q", where), "q", where)
        if q.shape[0] != u_ or q.shape[1] != h_ or q.shape[3] != d_:
            raise ValueError(
                f"{where}: q {a['q'].shape} does not match k {a['k'].shape} (users, heads, d)"
            )
        if not np.isfinite(q).all():
            raise ValueError(f"{where}: q holds NaN or inf")
    if "mask" in a and "lengths" in a:
        raise ValueError(f"{where}: give mask or lengths, not both")
    if "mask" in a:
        mask = np.asarray(a["mask"])
        if mask.dtype != bool or mask.shape != (u_, n_):
            raise ValueError(
                f"{where}: mask must be bool [users, N] = {(u_, n_)}, got {mask.dtype} {mask.shape}"
            )
        padding = "the file's mask"
    elif "lengths" in a:
        ln = np.asarray(a["lengths"])
        if (
            ln.shape != (u_,)
            or not np.issubdtype(ln.dtype, np.integer)
            or (ln < 0).any()
            or (ln > n_).any()
        ):
            raise ValueError(f"{where}: lengths must be integers in [0, {n_}], one per user ({u_})")
        mask = np.arange(n_)[None, :] < ln[:, None]
        padding = "the file's lengths"
    else:
        # zero keys still get softmax weight exp(0): all-zero rows are padding that needs a mask
        zero = ~(k.any(axis=(1, 3)) | v.any(axis=(1, 3)))  # [U, N]
        if zero.any():
            raise ValueError(
                f"{where}: no mask or lengths, but {int(zero.sum())} behaviour rows of "
                f"{int(zero.any(axis=1).sum())} users have all-zero k and v (padding?); add "
                "mask [users, N] (bool, True = real) or lengths [users]"
            )
        mask = np.ones((u_, n_), bool)
        padding = "none in the file: every behaviour is real"
    return KVArrays(k, v, q, mask, padding)
