"""Check an output folder before any work: it is (or can be made) a folder we can write in.

Without this a read-only ``--out`` fails only after the first case has been measured, and a
file, a path under a file or ``/dev/null`` gives a raw OS error. (reports/outdir.py holds the
same check for the reports package, which imports nothing from the suite.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError


def writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists and takes a file; else :class:`OutputError`."""
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == p else f"is under {parent}, which is"
            raise OutputError(f"{flag} {p} {where} not a folder; give a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {p}: cannot create the folder ({exc.strerror})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{flag} {p}: the folder is not writable ({exc.strerror})") from None
    return p
