"""Issue 12, items 8, 9, 14, 16 and 17: strict text decoding with --encoding, broken gzip and
parquet files, dataset names that would escape a folder, and reports from damaged tables or
with a `$` in a label."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from analysis.cli import main as analysis_main
from analysis.loaders import check_name, load
from reports.cli import main as reports_main
from reports.load import load as load_results


def test_latin1_text_is_an_error_naming_the_file_not_merged_items(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_bytes("u1 café\nu1 cafí\nu2 tea\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"pairs.txt.*not valid utf-8.*--encoding"):
        load(f)  # was: 'café' and 'cafí' both became 'caf\ufffd' (3 items loaded as 2)
    assert load(f, encoding="latin-1").n_items == 3


def test_utf16_csv_needs_and_takes_an_encoding(tmp_path):
    f = tmp_path / "log.csv"
    f.write_bytes("user,item\nu1,a\nu2,b\nu2,c\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"log.csv.*--encoding"):
        load(f)
    assert load(f, encoding="utf-16").n_interactions == 3


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("truncated", "truncated"),
        ("not_gzip", "not a valid gzip"),
        ("parquet", "not a readable parquet"),
    ],
)
def test_broken_compressed_and_parquet_files(tmp_path, kind, words):
    if kind == "parquet":
        f = tmp_path / "log.parquet"
        f.write_bytes(b"PAR1 not parquet at all")
    else:
        f = tmp_path / "seq.txt.gz"
        data = gzip.compress(b"1 2 3 4\n" * 3000)
        f.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"1 2 3\n4 5 6\n")
    with pytest.raises(ValueError) as err:
        load(f, fmt="table" if kind == "parquet" else "kgat")
    msg = str(err.value)
    assert str(f) in msg and words in msg and "\n" not in msg  # was EOFError / BadGzipFile


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "", "a\\b"])
def test_dataset_names_cannot_escape_a_folder(tmp_path, capsys, name):
    with pytest.raises(ValueError, match="not allowed"):
        check_name(name)
    f = tmp_path / "pairs.txt"
    f.write_text("1 2\n1 3\n2 4\n")
    with pytest.raises(SystemExit) as ex:
        analysis_main(
            [
                "spectrum",
                "--data",
                str(f),
                "--name",
                name,
                "--out",
                str(tmp_path / "o"),
                "--cache",
                str(tmp_path / "c" / "d"),
            ]
        )
    assert ex.value.code == 2 and "--name" in capsys.readouterr().err
    assert not any(tmp_path.parent.glob("escaped*"))


@pytest.mark.parametrize("flag", ["--out", "--cache"])
def test_analysis_output_folders_are_checked_before_loading(tmp_path, capsys, flag):
    (tmp_path / "f").write_text("x")
    paths = {
        "--out": str(tmp_path / "o"),
        "--cache": str(tmp_path / "c"),
        flag: str(tmp_path / "f"),
    }
    rc = analysis_main(
        [
            "spectrum",
            "--data",
            str(tmp_path / "missing.txt"),
            *[x for kv in paths.items() for x in kv],
        ]
    )
    assert rc == 2 and f"{flag} " in capsys.readouterr().err


def _bench_dir(tmp_path):
    from reports.fixtures import write_all

    return write_all(tmp_path / "fx")["cpu"]


def test_report_warns_about_a_cut_last_line_and_bad_times(tmp_path):
    d = _bench_dir(tmp_path)
    csv = d / "results.csv"
    df = pd.read_csv(csv)
    df.loc[0, "forward_ms_median"] = -1.0
    df.loc[1, "forward_ms_median"] = float("inf")
    df.to_csv(csv, index=False)
    csv.write_bytes(csv.read_bytes()[:-30])  # cut mid-line
    rs = load_results([d])
    text = " ".join(rs.warnings)
    assert "last line is cut short" in text and "negative or infinite" in text
    assert len(rs.bench) == len(df) - 1
    assert not (rs.bench["forward_ms_median"] < 0).any()
    assert pd.Series(rs.bench["forward_ms_median"]).abs().max() < float("inf")


def test_dollar_in_a_label_does_not_reach_mathtext():
    import matplotlib.pyplot as plt

    from reports.figures.common import png_bytes, setup_style

    setup_style()
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2], label="perf$x^{$")
    ax.set_title("perf$x^{$")
    ax.legend()
    try:
        assert png_bytes(fig)[:4] == b"\x89PNG"  # was ValueError from matplotlib's mathtext
    finally:
        plt.close(fig)


@pytest.mark.parametrize("out", ["/dev/null", "FILE", "FILE/sub"])
def test_report_out_is_checked_first(tmp_path, capsys, out):
    (tmp_path / "FILE").write_text("x")
    out = out.replace("FILE", str(tmp_path / "FILE"))
    assert reports_main(["build", "--results", str(tmp_path), "--out", out, "--no-pdf"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_utf8_byte_order_mark_is_not_part_of_the_first_id_or_column(tmp_path):
    f = tmp_path / "log.csv"
    f.write_bytes(b"\xef\xbb\xbfuser,item\nu1,a\nu2,b\n")  # as spreadsheet exports write it
    assert load(f).n_users == 2
    g = tmp_path / "pairs.txt"
    g.write_bytes(b"\xef\xbb\xbf1 2\n1 3\n")
    assert load(g).users.tolist() == ["1"]
