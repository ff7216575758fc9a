"""Input handling: detection by content, missing sections, clear errors, several devices."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.cli import main
from reports.fixtures import bench_table, spectra_dataset, write_all
from reports.load import ReportInputError, detect, load


def test_detect_by_content(tmp_path):
    paths = write_all(tmp_path, small=True)
    assert [s.kind for s in detect(paths["cpu"])] == ["bench"]
    assert sorted(s.path.name for s in detect(paths["spectra"])) == ["lastfm", "ml-1m"]
    assert [s.kind for s in detect(paths["spectra"] / "ml-1m")] == ["spectra"]
    kinds = sorted(s.kind for s in detect(tmp_path))  # the parent of everything
    assert kinds == ["bench", "spectra", "spectra"]


def test_empty_dir_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "junk.txt").write_text("not a table")
    with pytest.raises(ReportInputError, match="no readable result table"):
        load([tmp_path])
    assert main(["build", "--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no readable result table" in capsys.readouterr().err


def test_missing_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["build", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_table_without_required_columns(tmp_path):
    d = tmp_path / "cpu"
    d.mkdir()
    pd.DataFrame({"x": [1]}).to_csv(d / "results.csv", index=False)
    with pytest.raises(ReportInputError, match="'method' and 'n'"):
        load([d])


def _html(out):
    return (out / "index.html").read_text(encoding="utf-8")


def _section(html: str, key: str) -> str:
    start = html.index(f'id="sec-{key}"')
    return html[start : html.index("</section>", start)]


def test_only_spectra_leaves_bench_sections_missing(tmp_path):
    spectra_dataset(tmp_path / "spectra" / "ml-1m", "ml-1m")
    out = tmp_path / "out"
    assert (
        main(
            [
                "build",
                "--results",
                str(tmp_path / "spectra" / "ml-1m"),
                "--out",
                str(out),
                "--no-pdf",
            ]
        )
        == 0
    )
    html = _html(out)
    for key in ("time", "memory", "fidelity", "roofline", "cascade"):
        sec = _section(html, key)
        assert "Missing:" in sec and "python -m bench" in sec, key
        assert "<img" not in sec
    assert "<img" in _section(html, "spectra")
    assert "not testable here" in _section(html, "decisions")


def test_only_bench_leaves_spectra_missing(tmp_path):
    d = tmp_path / "cpu"
    d.mkdir()
    bench_table("cpu", small=True).to_csv(d / "results.csv", index=False)
    out = tmp_path / "out"
    assert main(["build", "--results", str(d), "--out", str(out), "--no-pdf"]) == 0
    html = _html(out)
    assert "python -m analysis" in _section(html, "spectra")
    assert "No cascade.csv" in _section(html, "cascade")
    assert "<img" in _section(html, "time")


def test_minimal_columns_still_build(tmp_path):
    d = tmp_path / "cpu"
    d.mkdir()
    rows = [
        {
            "method": m,
            "n": n,
            "m": 16,
            "d": 64,
            "forward_ms_median": n * (1.0 if m == "dense" else 0.3) + 5,
        }
        for m in ("dense", "svd_exact")
        for n in (128, 512, 2048)
    ]
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    out = tmp_path / "out"
    assert main(["build", "--results", str(d), "--out", str(out)]) == 0
    html = _html(out)
    assert "<img" in _section(html, "time")
    assert "Missing:" in _section(html, "fidelity")
    assert (out / "report.pdf").stat().st_size > 1000


def test_two_devices_never_share_a_line(tmp_path):
    paths = write_all(tmp_path, devices=("cpu", "h100"), datasets=(), small=True)
    # leave only time columns so the build stays quick
    out = tmp_path / "out"
    assert (
        main(
            [
                "build",
                "--results",
                str(paths["cpu"]),
                "--results",
                str(paths["h100"]),
                "--out",
                str(out),
                "--no-pdf",
            ]
        )
        == 0
    )
    html = _html(out)
    assert 'id="fig-time-cpu-fp32-target"' in html
    assert 'id="fig-time-h100-fp32-target"' in html
    assert 'id="fig-cascade-h100"' in html
    rs = load([paths["cpu"], paths["h100"]])
    assert sorted(rs.bench["device"].unique()) == ["cpu", "h100"]


def test_only_failed_rows_build_with_status_table(tmp_path):
    d = tmp_path / "h100"
    d.mkdir()
    rows = [
        {
            "method": m,
            "label": m,
            "n": 65536,
            "m": 4096,
            "d": 64,
            "status": s,
            "reason": r,
            "device": "h100",
        }
        for m, s, r in (("dense", "oom", "CUDA out of memory"), ("linrec", "error", "boom"))
    ]
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    out = tmp_path / "out"
    assert main(["build", "--results", str(d), "--out", str(out)]) == 0
    html = _html(out)
    sec = _section(html, "time")
    assert "Missing:" in sec and 'id="tbl-status"' in sec and "CUDA out of memory" in sec
    assert "<img" not in html


def test_users_parquet_is_read(tmp_path):
    d = tmp_path / "spectra" / "big"
    spectra_dataset(d, "big")
    pd.read_csv(d / "users.csv").to_parquet(d / "users.parquet")
    (d / "users.csv").unlink()
    rs = load([tmp_path / "spectra"])
    assert rs.spectra["big"].users is not None and len(rs.spectra["big"].users) > 0
