"""One run at a time per results folder: ``DIR/.bench.lock`` names the holder.

Two ``bench run --out SAME`` at once would both measure every pending case (duplicate lines,
timings contending for the same cores). The lock file is created complete and atomically
(written to a temporary name, then hard-linked: the link fails if the lock exists). A second
run reads who holds it (pid, host, start time) and stops with :class:`~bench.errors.OutputError`.
A lock left by a process that no longer exists on this host (``kill -9``, a crash) is stale:
it is taken over with a message. A lock from another host cannot be checked and is respected.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .errors import OutputError

LOCK_NAME = ".bench.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _holder(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
        if isinstance(started, (int, float))
        else "an unknown time"
    )
    return f"pid {info.get('pid')} on host {info.get('host')}, started {when}"


class RunLock:
    """Context manager holding ``DIR/.bench.lock`` for the duration of a run."""

    def __init__(self, out_dir: str | Path, log: Any = None) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self.log = log or logging.getLogger(__name__).warning
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "argv": sys.argv[:8],
        }
        self.held = False

    def _try_create(self) -> bool:
        text = json.dumps(self.info) + "\n"
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        for _ in range(3):
            if self._try_create():
                self.held = True
                return self
            info = _read(self.path)
            if info is None:
                self.log(
                    f"{self.path} is unreadable (a crash while it was written?); taking it over"
                )
            elif (
                info.get("host") == self.info["host"]
                and isinstance(info.get("pid"), int)
                and (not _alive(info["pid"]) or info["pid"] == os.getpid())
            ):
                gone = (
                    "that process is gone" if info["pid"] != os.getpid() else "left by this process"
                )
                self.log(
                    f"taking over a stale lock on {self.path.parent} ({_holder(info)}; {gone})"
                )
            else:
                same_host = info.get("host") == self.info["host"]
                raise OutputError(
                    f"{self.path.parent} is in use by another bench run ({_holder(info)}); wait for "
                    "it, or use another --out. If "
                    + ("that pid is not a bench run" if same_host else "that run is dead")
                    + f", delete {self.path}"
                )
            self.path.unlink(missing_ok=True)
        raise OutputError(f"{self.path}: could not take the lock (another run keeps taking it)")

    def release(self) -> None:
        if self.held and (_read(self.path) or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
