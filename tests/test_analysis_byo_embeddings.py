"""Bring your own item embeddings (route byo) and W_q/W_k/W_v (--wqkv): formats, id spaces,
wrong types, wrong shapes, and the spectra / KL they feed."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.byo_embeddings import byo_routes
from analysis.cli import main
from analysis.closing_loop import kl_by_rank, user_qkv
from analysis.loaders import load

pytestmark = pytest.mark.usefixtures("one_thread")

D = 6


def _log(tmp_path: Path, items: list[str] | None = None, users: int = 12) -> Path:
    """A (user, item) table; item ids "1".."40" unless given."""
    rng = np.random.default_rng(0)
    items = items or [str(i) for i in range(1, 41)]
    rows = [
        (u, items[j])
        for u in range(users)
        for j in rng.choice(len(items), int(rng.integers(8, 30)), replace=True)
    ]
    rows += [(0, it) for it in items]  # every item occurs
    f = tmp_path / "log.csv"
    pd.DataFrame(rows, columns=["user", "item"]).to_csv(f, index=False)
    return f


def _table(ids) -> np.ndarray:
    """Row of id i is i * 10 + column, so alignment is checkable."""
    return np.array([[float(i) * 10 + c for c in range(D)] for i in ids], np.float32)


def _check_aligned(data, x: np.ndarray) -> None:
    want = np.array([[float(i) * 10 + c for c in range(D)] for i in data.items.astype(int)])
    np.testing.assert_allclose(x, want)


def test_each_format_aligns_rows_to_the_log_ids(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    data = load(_log(tmp_path), fmt="table")
    ids = list(range(0, 45))  # a superset: 0 and 41..44 are unknown to the log (5 of 45)
    shuffled = np.random.default_rng(2).permutation(ids)
    np.save(tmp_path / "rows.npy", _table(ids))  # row i = item id i
    np.save(tmp_path / "shuf.npy", _table(shuffled))
    np.save(tmp_path / "shuf_ids.npy", shuffled)
    (tmp_path / "ids.txt").write_text("\n".join(map(str, shuffled)) + "\n")
    np.savez(tmp_path / "e.npz", embeddings=_table(shuffled), ids=shuffled.astype(str))
    save_file({"item": _table(shuffled), "ids": shuffled.astype(np.int64)}, str(tmp_path / "e.st"))
    pd.DataFrame({"item_id": shuffled, "vec": list(_table(shuffled))}).to_parquet(
        tmp_path / "list.parquet"
    )
    wide = pd.DataFrame(_table(shuffled), columns=[f"e{c}" for c in range(D)])
    wide.insert(0, "id", shuffled.astype(str))
    wide.to_parquet(tmp_path / "wide.parquet")
    cases = [
        ("rows.npy", {}),
        ("shuf.npy", {"ids_path": tmp_path / "shuf_ids.npy"}),
        ("shuf.npy", {"ids_path": tmp_path / "ids.txt"}),
        ("e.npz", {}),
        ("e.st", {}),
        ("list.parquet", {}),
        ("wide.parquet", {}),
    ]
    for name, kw in cases:
        routes = byo_routes(data.items, tmp_path / name, **kw)
        emb = routes["byo"]
        assert emb.item.shape == (40, D) and emb.w_k is None, name
        _check_aligned(data, emb.item)
        assert emb.meta["ids"]["unknown_ids"] == 5 and emb.meta["queries"] == "candidates"


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (
            lambda p: p.write_text("user,item\n1,2\n"),
            r"a text file \(first line 'user,item'\), not item embeddings; --item-embeddings "
            r"reads .*an interaction log goes to --data",
        ),
        (lambda p: p.write_bytes(pickle.dumps([1.0, 2.0])), "Python pickle .never loaded"),
        (
            lambda p: np.savez(p, k=np.zeros((2, 5, 4)), v=np.zeros((2, 5, 4))),
            r"NumPy .npz archive \(arrays k, v\); needs exactly one of the arrays item, "
            r"embeddings .*analysis kv --kv",
        ),
        (
            lambda p: np.savez(p, item=np.zeros((4, 3)), extra=np.zeros(2)),
            r"unknown arrays \['extra'\]",
        ),
        (
            lambda p: pd.DataFrame({"user": [1, 2], "item": [3, 4]}).to_parquet(p),
            "looks like an interaction log",
        ),
        (lambda p: np.save(p, np.zeros(5)), r"expected a numeric \[items, d\] array"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "object array"),
    ],
)
def test_wrong_file_type_says_what_it_is(
    tmp_path: Path, make, expect, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _log(tmp_path)
    f = tmp_path / "emb.npy"
    make(f)
    f = next(p for p in tmp_path.iterdir() if p.name.startswith("emb"))
    argv = ["kl", "--data", str(log), "--format", "table", "--embedding", "byo"]
    argv += [
        "--item-embeddings",
        str(f),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        "--cache",
        "none",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--item-embeddings" in err
    import re

    assert re.search(expect, err), err


@pytest.mark.parametrize(
    ("ids", "kw", "expect"),
    [
        (list(range(1, 31)), {}, r"10 of the log's 40 item ids are not in the file .e\.g\."),
        (list(range(0, 40)), {}, r"1 of the log's 40 item ids are not in the file"),  # offset
        (list(range(1, 41)) + list(range(100, 150)), {}, r"50 of the file's 90 ids \(56%\)"),
        (list(range(1, 41)) + [7, 8], {}, r"2 ids occur more than once \(4 rows"),
    ],
)
def test_mismatched_id_space_names_the_counts(tmp_path: Path, ids, kw, expect) -> None:
    data = load(_log(tmp_path), fmt="table")
    np.savez(tmp_path / "e.npz", item=_table(ids), ids=np.array(ids))
    with pytest.raises(ValueError, match=expect):
        byo_routes(data.items, tmp_path / "e.npz", **kw)
    # a stated fraction lets a catalog larger than the log through
    if "56%" in expect:
        assert (
            byo_routes(data.items, tmp_path / "e.npz", max_unknown=0.6)["byo"].item.shape[0] == 40
        )


def test_text_item_ids_need_ids_in_the_file(tmp_path: Path) -> None:
    data = load(_log(tmp_path, items=[f"sku{i}" for i in range(40)]), fmt="table")
    np.save(tmp_path / "e.npy", np.ones((40, D), np.float32))
    with pytest.raises(ValueError, match=r"40 of the log's 40 item ids are not non-negative"):
        byo_routes(data.items, tmp_path / "e.npy")
    np.savez(
        tmp_path / "e.npz",
        item=np.ones((40, D), "f4"),
        ids=np.array([f"sku{i}" for i in range(40)]),
    )
    assert byo_routes(data.items, tmp_path / "e.npz")["byo"].item.shape == (40, D)


def _w(tmp_path: Path, **arrays) -> Path:
    np.savez(tmp_path / "w.npz", **arrays)
    return tmp_path / "w.npz"


@pytest.mark.parametrize(
    ("shapes", "expect"),
    [
        (
            {"wq": (D, 4), "wk": (5, 4), "wv": (D, 4)},
            r"wk is \(5, 4\), but the item embeddings have d = 6",
        ),
        ({"wq": (D, 4), "wk": (4, D), "wv": (D, 4)}, "looks transposed"),
        ({"wq": (D, 3), "wk": (D, 4), "wv": (D, 4)}, "differ in d_head"),
        ({"wq": (D, 4), "wk": (D, 4)}, r"needs exactly wq, wk, wv"),
        ({"wq": (2, D, 4), "wk": (D, 4), "wv": (D, 4)}, r"all \[d, d_head\] or all \[heads"),
        ({"wq": (2, D, 4), "wk": (3, D, 4), "wv": (2, D, 4)}, "the same number of heads"),
    ],
)
def test_wrong_w_shapes_are_clear_errors(tmp_path: Path, shapes, expect) -> None:
    data = load(_log(tmp_path), fmt="table")
    np.save(tmp_path / "e.npy", _table(range(41)))
    w = _w(tmp_path, **{k: np.ones(s, np.float32) for k, s in shapes.items()})
    with pytest.raises(ValueError, match=expect):
        byo_routes(data.items, tmp_path / "e.npy", wqkv=w)


def test_wrong_file_type_for_wqkv(tmp_path: Path) -> None:
    data = load(_log(tmp_path), fmt="table")
    np.save(tmp_path / "e.npy", _table(range(41)))
    np.save(tmp_path / "w.npy", np.ones((D, 4), np.float32))
    with pytest.raises(ValueError, match=r"--wqkv .*w\.npy: a single \.npy array \(shape \(6, 4\)"):
        byo_routes(data.items, tmp_path / "e.npy", wqkv=tmp_path / "w.npy")
    (tmp_path / "w.txt").write_text("wq 1 2 3\n")
    with pytest.raises(ValueError, match=r"a text file .*--wqkv reads arrays wq, wk, wv"):
        byo_routes(data.items, tmp_path / "e.npy", wqkv=tmp_path / "w.txt")


def test_wqkv_projects_per_head_and_queries_come_from_the_users_items(tmp_path: Path) -> None:
    data = load(_log(tmp_path), fmt="table")
    rng = np.random.default_rng(3)
    np.save(tmp_path / "e.npy", rng.standard_normal((41, D)).astype(np.float32))
    w = {k: rng.standard_normal((2, D, 4)).astype(np.float32) for k in ("wq", "wk", "wv")}
    routes = byo_routes(data.items, tmp_path / "e.npy", wqkv=_w(tmp_path, **w))
    assert list(routes) == ["byo-h0", "byo-h1"]
    emb = routes["byo-h1"]
    seq = data.sequences[3]
    q, k, v = user_qkv(emb, seq, seq[:2])
    x = torch.from_numpy(emb.item)
    torch.testing.assert_close(k, x[seq] @ torch.from_numpy(w["wk"][1]))
    torch.testing.assert_close(v, x[seq] @ torch.from_numpy(w["wv"][1]))
    torch.testing.assert_close(q, x[seq[:2]] @ torch.from_numpy(w["wq"][1]))
    kl = kl_by_rank(data, emb, ranks=(1, 4), progress=False, n_candidates=10)
    n_by_user = dict(zip(data.users, data.lengths(), strict=True))
    for _, row in kl.iterrows():  # M = min(N, 10) of the user's behaviours, no drawn candidates
        assert row["m"] == min(n_by_user[row["user"]], 10)
    cands = byo_routes(
        data.items, tmp_path / "e.npy", wqkv=tmp_path / "w.npz", queries="candidates"
    )
    kl_c = kl_by_rank(data, cands["byo-h0"], ranks=(1,), progress=False, n_candidates=10)
    assert kl_c["m"].eq(10).all()


def test_spectrum_cli_with_own_embeddings_and_w(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _log(tmp_path)
    rng = np.random.default_rng(4)
    pd.DataFrame({"item": np.arange(41), "vec": list(rng.standard_normal((41, D)))}).to_parquet(
        tmp_path / "e.parquet"
    )
    np.savez(
        tmp_path / "w.npz",
        **{k: rng.standard_normal((D, 4)).astype("f4") for k in ("w_q", "w_k", "w_v")},
    )
    out = tmp_path / "out"
    argv = ["spectrum", "--data", str(log), "--format", "table", "--embedding", "random"]
    argv += ["--item-embeddings", str(tmp_path / "e.parquet"), "--wqkv", str(tmp_path / "w.npz")]
    argv += ["--kl", "--kl-users", "6", "--temperatures", "1", "--dim", "8", "--quiet"]
    assert main([*argv, "--cache", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "embeddings byo: (40, 6)" in printed and "1 of the file's 41 ids" in printed
    assert "the user's own behaviours" in printed
    summary = pd.read_csv(out / "summary.csv")
    assert {("byo", "x"), ("byo", "k"), ("byo", "kv")} <= set(
        zip(summary["route"], summary["matrix"], strict=True)
    )
    kl = pd.read_csv(out / "kl_by_rank.csv")
    assert set(kl["route"]) == {"random", "byo"} and kl.loc[kl["route"] == "byo", "d"].eq(4).all()
    assert (out / "profiles" / "byo-k.json").exists()
    assert main(["decide", "--spectra", str(out), "--route", "byo", "--out", str(out)]) == 0


def test_byo_options_need_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path)
    base = ["kl", "--data", str(log), "--format", "table", "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*base, "--embedding", "byo"]) == 2
    assert "route byo needs --item-embeddings FILE" in capsys.readouterr().err
    assert main([*base, "--wqkv", str(tmp_path / "w.npz")]) == 2
    assert "--wqkv needs --item-embeddings FILE" in capsys.readouterr().err


def test_all_needs_one_file_per_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    argv = ["all", "--data-root", str(tmp_path), "--datasets", "a,b", "--out", str(tmp_path / "o")]
    assert main([*argv, "--item-embeddings", str(tmp_path / "e.npy")]) == 2
    assert "put {dataset} in the path" in capsys.readouterr().err
