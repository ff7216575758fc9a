"""Library code logs (issue 13): only command-line entry points print, and a CLI shows the
library's warnings on stderr as ``WARNING: ...`` lines."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from bench.logs import setup_cli_logging

ROOT = Path(__file__).resolve().parents[1]
# modules whose job is a command line: they print tables and progress for a person
CLI_MODULES = {
    "bench/cli.py",
    "bench/__main__.py",
    "bench/kernel_check.py",
    "bench/estimate.py",
    "bench/probe_overhead.py",
    "bench/probe_performer.py",
    "bench/solvers.py",  # probe scripts
    "analysis/cli.py",
    "analysis/__main__.py",
    "analysis/cluster.py",
    "analysis/scale_bench.py",
    "analysis/quality_cli.py",
    "analysis/seeds_regime_cli.py",
    "analysis/synthlog.py",
    "reports/cli.py",
    "reports/__main__.py",
    "attention_impls/kernels/aot.py",
}


def _prints(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
    ]


def test_library_modules_do_not_print():
    offenders = {}
    for pkg in ("attention_impls", "bench", "analysis", "reports"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in CLI_MODULES and (lines := _prints(path)):
                offenders[rel] = lines
    assert not offenders, f"print() in library code (use logging.getLogger(__name__)): {offenders}"


def test_cli_logging_writes_warnings_to_the_current_stderr(capsys):
    setup_cli_logging()
    setup_cli_logging()  # idempotent: one line per record, not two
    logging.getLogger("bench.runner").warning("skipped %d line(s)", 3)
    logging.getLogger("analysis.loaders").info("read %s", "log.csv")
    logging.getLogger("bench.runner").debug("not shown at INFO")
    err = capsys.readouterr().err.splitlines()
    assert err.count("WARNING: skipped 3 line(s)") == 1
    assert "INFO: read log.csv" in err and not any("not shown" in e for e in err)
