"""The wheel carries what the installed code needs: package data, console commands, and
dependencies declared once (the full install-and-run check is .ci/wheel_check.sh)."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("attention_impls", "bench", "analysis", "reports")
# report outputs committed inside the reports folder; no code reads them
NOT_PACKAGE_DATA = ("reports/cpu/*", "reports/h100/*")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_non_python_file_in_the_packages_is_package_data() -> None:
    globs = _pyproject()["tool"]["setuptools"]["package-data"]
    missing = []
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*"):
            rel = f.relative_to(ROOT).as_posix()
            if (
                not f.is_file()
                or f.suffix in (".py", ".pyc")
                or "__pycache__" in rel
                or any(fnmatch.fnmatch(rel, g) for g in NOT_PACKAGE_DATA)
            ):
                continue
            inner = f.relative_to(ROOT / pkg).as_posix()
            if not any(fnmatch.fnmatch(inner, g) for g in globs.get(pkg, [])):
                missing.append(rel)
    assert not missing, f"not package data (add to [tool.setuptools.package-data]): {missing}"


def test_dependencies_declared_once() -> None:
    proj = _pyproject()["project"]
    deps = proj["dependencies"]
    names = [
        d.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() for d in deps
    ]
    assert len(names) == len(set(names))
    assert any(d.startswith("numpy") and "<2.4" in d for d in deps)
    assert any(d.startswith("tomli") and "python_version < '3.11'" in d for d in deps)
    for extra, reqs in proj["optional-dependencies"].items():
        again = [
            r
            for r in reqs
            if r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower() in names
        ]
        assert not again, f"[{extra}] repeats main dependencies: {again}"
    assert set(proj["scripts"]) == {
        "lifelong-attn-bench",
        "lifelong-attn-analysis",
        "lifelong-attn-report",
    }


@pytest.mark.slow
def test_wheel_has_template_and_console_commands(tmp_path: Path) -> None:
    pytest.importorskip(
        "setuptools", minversion="77", reason="pyproject.toml needs setuptools >= 77"
    )
    src = tmp_path / "src"
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    whl = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        eps = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        meta = next(z.read(n).decode() for n in names if n.endswith("METADATA"))
    assert "reports/templates/report.html.j2" in names
    assert not any(n.startswith(("reports/cpu/", "reports/h100/")) for n in names)
    for cmd, target in (
        ("lifelong-attn-bench", "bench.cli:main"),
        ("lifelong-attn-analysis", "analysis.cli:main"),
        ("lifelong-attn-report", "reports.cli:main"),
    ):
        assert f"{cmd} = {target}" in eps
    assert 'tomli>=2.0; python_version < "3.11"' in meta and "numpy<2.4,>=1.24" in meta
