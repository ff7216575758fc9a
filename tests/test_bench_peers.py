"""``python -m bench peers`` at a tiny size: the table's schema and agreement of outputs
(no timing asserts: the machine may be loaded)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.peers import (
    COLUMNS,
    interleaved_thread_times,
    linrec_core,
    malloc_state,
    plain_gram_eigh,
    ratio_interval,
)


def test_bench_peers_tiny(tmp_path, capsys):
    rc = main(
        [
            "peers",
            "--n",
            "128",
            "--m",
            "8",
            "--d",
            "16",
            "--rank",
            "4",
            "--features",
            "32",
            "--rounds",
            "3",
            "--malloc",
            "default",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    t = pd.read_csv(tmp_path / "peers.csv")
    assert list(t.columns) == COLUMNS
    # the allocator the run had is recorded (glibc has no reset: a process tuned by an
    # earlier test says "on")
    assert t["malloc_tuning"].str.match(r"^(on|off): ").all()
    assert set(t["pair"]) >= {
        "performer",
        "causal_linear",
        "linrec",
        "linrec_unchecked",
        "linrec_seq_axis",
        "svd_prepare",
        "svd_prepare_unchecked",
    }
    assert set(t["status"]) <= {"ok", "skipped", "unsupported"}
    # the causal pair runs wherever fla is installed (the test extra does not install it)
    causal = t[t["pair"] == "causal_linear"].iloc[0]
    assert causal["status"] == ("ok" if _has_fla() else "skipped"), causal["reason"]
    for _, r in t.iterrows():
        if r["status"] != "ok":
            assert isinstance(r["reason"], str) and r["reason"], r["pair"]
            continue
        assert r["ours_ms"] > 0 and r["peer_ms"] > 0
        assert r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"]
        if r["pair"] == "linrec_seq_axis":  # another operator: must be flagged as differing
            assert not r["agree"] and "another operator" in r["reason"]
        else:
            assert r["agree"] and r["max_rel_diff"] <= r["tolerance"], (
                r["pair"],
                r["max_rel_diff"],
            )
    md = (tmp_path / "peers.md").read_text()
    assert "thread CPU time" in md and "| svd_prepare |" in md
    assert "wrote" in capsys.readouterr().out


def test_malloc_choice_is_checked():
    with pytest.raises(ValueError, match="malloc must be one of"):
        malloc_state("fast")


def test_ratio_interval_brackets_the_geometric_mean():
    ratio, lo, hi = ratio_interval([2.0, 2.2, 1.8, 2.1], [1.0, 1.0, 1.0, 1.0])
    assert lo < ratio < hi and ratio == pytest.approx(
        math.exp(sum(map(math.log, [2.0, 2.2, 1.8, 2.1])) / 4)
    )
    assert math.isnan(ratio_interval([1.0], [2.0])[1])


def test_peer_references_are_what_they_say():
    """The written-out peers against plain formulas."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 9, 4, generator=g) for _ in range(3))
    elu = torch.nn.functional.elu
    qn = elu(q) / elu(q).norm(dim=-1, keepdim=True)
    kn = elu(k) / elu(k).norm(dim=-2, keepdim=True)  # over the sequence axis
    torch.testing.assert_close(linrec_core(q, k, v, -2), qn @ (kn.transpose(-1, -2) @ v) / 2.0)
    x = torch.randn(1, 1, 50, 6, generator=g)
    u, s, wt = plain_gram_eigh(x, 6)
    torch.testing.assert_close((u * s[..., None, :]) @ wt, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s, torch.linalg.svdvals(x), atol=1e-4, rtol=1e-4)


def _has_fla() -> bool:
    try:
        from fla.ops.linear_attn.naive import naive_chunk_linear_attn  # noqa: F401
    except ImportError:
        return False
    return True


def test_warm_timing_runs_each_callable_just_before_its_timed_call():
    """--warm: every timed call follows an untimed call of the same callable; the default
    rotates the order per round and calls each once per round."""
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved_thread_times(fns, rounds=2, warmup=0, warm_each=True)
    assert calls == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a"]
    assert all(len(t) == 2 for t in times.values())
    calls.clear()
    interleaved_thread_times(fns, rounds=2, warmup=0)
    assert calls == ["a", "b", "c", "b", "c", "a"]


def test_default_order_puts_each_side_of_a_pair_first_in_half_the_rounds():
    """Pairs ``x:ours`` / ``x:peer``: the pairs rotate, and inside a pair ours and the peer
    alternate in going first (neither always runs on the inputs the other just read)."""
    calls: list[str] = []
    names = ["p:ours", "p:peer", "q:ours", "q:peer"]
    fns = {name: (lambda name=name: calls.append(name)) for name in names}
    times = interleaved_thread_times(fns, rounds=4, warmup=0)
    assert all(len(t) == 4 for t in times.values())
    rounds = [calls[i : i + 4] for i in range(0, 16, 4)]
    for group in ("p", "q"):
        first = [next(c for c in r if c.startswith(group + ":")) for r in rounds]
        assert first.count(f"{group}:ours") == 2 and first.count(f"{group}:peer") == 2
    assert [r[0][0] for r in rounds] == ["p", "q", "p", "q"]  # the pairs rotate too


def test_bench_peers_warm_flag_is_recorded(tmp_path):
    args = ["peers", "--n", "64", "--m", "4", "--d", "8", "--rank", "2", "--features", "8"]
    note = ["--note", "two training jobs share the machine"]
    assert main([*args, "--rounds", "2", "--warm", *note, "--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "peers.csv")
    assert set(t["timing"]) == {"warm"}
    md = (tmp_path / "peers.md").read_text()
    assert "--warm" in md and "; two training jobs share the machine" in md


@pytest.mark.parametrize("family", ["rank16", "illcond16"])
def test_bench_solvers_times_the_default_as_prepare_runs_it(family):
    """bench.solvers' gram rows use the block decomposition svd_exact's prepare runs; on an
    input of rank r both the default and the fp64 route reconstruct it (no timing asserts)."""
    from bench.solvers import DECOMPOSE, PEER, run_case

    rows = {r["solver"]: r for r in run_case(96, 1, family, d=8, rank=4, rounds=2)}
    assert set(rows) == {"gram", "gram_fp64", "svd", "lowrank", PEER, DECOMPOSE}
    for name in ("gram", DECOMPOSE, "gram_fp64", "svd"):
        assert rows[name]["recon_err"] < 1e-5, (name, rows[name]["recon_err"])
    assert rows["gram"]["vs_gram"] == 1.0
