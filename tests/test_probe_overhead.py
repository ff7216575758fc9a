"""``bench.probe_overhead checked``: rows per (N, method, phase) with the users per call."""

from __future__ import annotations

import pytest

from bench import probe_overhead

pytestmark = pytest.mark.usefixtures("one_thread")


def test_make_inputs_shapes_and_default_batch():
    q, k, v = probe_overhead.make_inputs(32, m=8, d=4, bh=3)
    assert q.shape == (3, 1, 8, 4) and k.shape == v.shape == (3, 1, 32, 4)
    q1, k1, _ = probe_overhead.make_inputs(32, m=8, d=4)
    assert q1.shape[0] == 1 and k1.shape[0] == 1


def test_checked_rows_name_the_batch(capsys):
    rows = probe_overhead.checked([64], 2, ["linrec", "lrea"], bh=2)
    assert {(r["method"], r["phase"]) for r in rows} == {
        (m, p) for m in ("linrec", "lrea") for p in ("prepare", "attend", "forward")
    }
    for r in rows:
        assert r["bh"] == 2 and r["n"] == 64 and r["rounds"] == 2
        assert r["lo"] <= r["ratio"] <= r["hi"] and r["ratio"] > 0
    assert "B=2 linrec" in capsys.readouterr().out
