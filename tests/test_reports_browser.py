"""Render the report in headless Chromium and the PDF with pdftoppm (skipped when not installed)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from reports.build import build
from reports.fixtures import write_all

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
PDFTOPPM = shutil.which("pdftoppm")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    paths = write_all(root, small=True, datasets=("ml-1m",))
    out = root / "report"
    build([paths["cpu"], paths["spectra"]], out)
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)"
)
def test_chromium_renders_report(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        (report / "index.html").resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), res.stderr[-2000:]
    assert png_size(shot) == (1280, 4000)
    assert shot.stat().st_size > 100_000  # figures and tables drawn, not a blank page
    from PIL import Image  # pillow comes with matplotlib

    hist = Image.open(shot).convert("L").histogram()
    inked = sum(hist[:200]) / sum(hist)  # text, lines, header bar
    assert inked > 0.02, f"screenshot is nearly blank ({inked:.3%} dark pixels)"


@pytest.mark.skipif(
    PDFTOPPM is None, reason="pdftoppm not installed (Debian: apt-get install poppler-utils)"
)
def test_pdftoppm_renders_first_page(report, tmp_path):
    subprocess.run(
        [
            PDFTOPPM,
            "-r",
            "60",
            "-png",
            "-f",
            "1",
            "-l",
            "1",
            str(report / "report.pdf"),
            str(tmp_path / "page"),
        ],
        check=True,
        timeout=120,
    )
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 1
    w, h = png_size(pages[0])
    assert abs(max(w, h) / min(w, h) - 2**0.5) < 0.01 and abs(max(w, h) - 702) <= 2  # A4 at 60 dpi
    assert pages[0].stat().st_size > 5_000
