"""What a file is, by its first bytes (never by its name): logs are text, gzip or parquet;
arrays (.npy, .npz, safetensors) and pickles are not logs and get an error that says what the
file is and which part of the suite reads it. Nothing is unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

from bench.arrays import npy_shape as _npy_shape
from bench.arrays import safetensors_names as _safetensors_names
from bench.arrays import sniff

__all__ = ["check_log_file", "sniff"]


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
            "An item embedding table [items, dim] is read by `spectrum --item-embeddings "
            "FILE.npy` (or, on a cluster, `spectrum --cluster ray --item-table FILE.npy`)"
        )
    if kind == "npz":
        with zipfile.ZipFile(path) as z:
            arrays = ", ".join(n[:-4] for n in z.namelist()[:8])
        raise ValueError(
            f"{path}: a NumPy .npz archive (arrays {arrays}), not an interaction log; {reads}. "
            "Per-user K/V (arrays k [users, N, d], v, optional q, mask or lengths) are read by "
            "`python -m analysis kv --kv FILE.npz` (then decide) and by the bench's `real` input "
            'family: family = [{kind = "real", path = "FILE.npz"}] in a sweep TOML; item '
            "embeddings (arrays item or embeddings, optional ids) by `spectrum --item-embeddings "
            "FILE.npz`, W_q/W_k/W_v (wq, wk, wv) by `spectrum --item-embeddings E --wqkv FILE.npz`"
        )
    if kind == "safetensors":
        raise ValueError(
            f"{path}: a safetensors file (tensors {_safetensors_names(path)}), not an interaction "
            f"log; {reads}. Per-user K/V tensors (k, v, optional q, mask or lengths) are read by "
            "`python -m analysis kv --kv FILE.safetensors`, item embeddings (item or embeddings, "
            "optional ids) by `spectrum --item-embeddings FILE`, W_q/W_k/W_v by `--wqkv FILE`"
        )
    if kind == "pickle":
        raise ValueError(
            f"{path}: a Python pickle, not an interaction log; {reads}. Pickles are never "
            "loaded (unpickling runs code): save arrays with numpy.save / numpy.savez"
        )
    raise ValueError(f"{path}: a zip archive that is not an .npz, not an interaction log; {reads}")
