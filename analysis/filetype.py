"""What a file is, by its first bytes (never by its name): logs are text, gzip or parquet;
arrays (.npy, .npz, safetensors) and pickles are not logs and get an error that says what the
file is and which part of the suite reads it. Nothing is unpickled."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path


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


def _npy_shape(path: Path) -> str:
    import numpy as np

    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fh)  # the header only, never the data
    return f"shape {tuple(shape)}, dtype {dtype}"


def _safetensors_names(path: Path) -> str:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(min(n, 10_000_000)))
    names = [k for k in header if k != "__metadata__"]
    return ", ".join(f"{k} {header[k].get('shape')}" for k in names[:6]) + (
        " ..." if len(names) > 6 else ""
    )


def check_log_file(path: Path, flag: str = "--data") -> None:
    """Raise a ValueError when ``path`` is not an interaction log (text, gzip or parquet)."""
    if not path.is_file():
        return
    kind = sniff(path)
    if kind in ("text", "gzip", "parquet"):
        return
    reads = f"{flag} reads interaction logs (text, CSV/TSV, gzip, parquet)"
    if kind == "npy":
        raise ValueError(
            f"{path}: a NumPy .npy array ({_npy_shape(path)}), not an interaction log; {reads}. "
            "An item embedding table [items, dim] is read by `spectrum --cluster ray "
            "--item-table FILE.npy`"
        )
    if kind == "npz":
        with zipfile.ZipFile(path) as z:
            arrays = ", ".join(n[:-4] for n in z.namelist()[:8])
        raise ValueError(
            f"{path}: a NumPy .npz archive (arrays {arrays}), not an interaction log; {reads}. "
            "Per-user K/V (arrays k [users, N, d], v, optional q, mask or lengths) are read by "
            "`python -m analysis kv --kv FILE.npz` (then decide) and by the bench's `real` input "
            'family: family = [{kind = "real", path = "FILE.npz"}] in a sweep TOML'
        )
    if kind == "safetensors":
        raise ValueError(
            f"{path}: a safetensors file (tensors {_safetensors_names(path)}), not an interaction "
            f"log; {reads}. Per-user K/V tensors (k, v, optional q, mask or lengths) are read by "
            "`python -m analysis kv --kv FILE.safetensors`"
        )
    if kind == "pickle":
        raise ValueError(
            f"{path}: a Python pickle, not an interaction log; {reads}. Pickles are never "
            "loaded (unpickling runs code): save arrays with numpy.save / numpy.savez"
        )
    raise ValueError(f"{path}: a zip archive that is not an .npz, not an interaction log; {reads}")
