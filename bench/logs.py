"""Logging for the library code of bench, analysis and reports (issue 13).

Library modules log through ``logging.getLogger(__name__)``; only the command-line entry
points print tables. ``setup_cli_logging`` gives the three packages' loggers one handler that
writes ``LEVEL: message`` lines to the *current* ``sys.stderr`` (looked up at each record, so
pytest's capture and redirected streams see them). Without it (a user importing the library)
records go wherever the user's logging configuration sends them; Python's last-resort
handler shows warnings on stderr.
"""

from __future__ import annotations

import logging
import sys

PACKAGES = ("attention_impls", "bench", "analysis", "reports")


class _CurrentStderr(logging.StreamHandler):
    """A stream handler bound to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401 - property used by StreamHandler.emit
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_cli_logging(verbose: bool = False) -> None:
    """Once per process: INFO (or DEBUG) records of the suite's packages go to stderr."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    for name in PACKAGES:
        log = logging.getLogger(name)
        if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
            log.addHandler(handler)
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        log.propagate = True  # users' and pytest's root handlers still see the records
