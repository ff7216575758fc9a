"""Input families: seeded, reproducible, with the requested spectrum."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.config import Case
from bench.inputs import UnsupportedInput, build_inputs, read_profile


def case(**kw):
    base = dict(
        method="dense",
        params=(),
        family="powerlaw",
        family_params=(("alpha", 1.0), ("noise_floor", 1e-3)),
        batch=1,
        heads=2,
        n=96,
        m=5,
        d=8,
        dv=8,
        dtype="fp32",
        setting="target",
        seed=3,
        query_scale=1.0,
        padding=0.0,
        device="cpu",
    )
    base.update(kw)
    return Case(**base)


def _sv(inp):
    x = torch.cat([inp.k, inp.v], -1).double()[0, 0]
    return torch.linalg.svdvals(x)


def test_inputs_are_reproducible_and_seeded():
    a, b = build_inputs(case()), build_inputs(case())
    assert torch.equal(a.q, b.q) and torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
    c = build_inputs(case(seed=4))
    assert not torch.equal(a.k, c.k)
    assert a.info["synthetic"] and a.info["q_norm_mean"] > 0


def test_exact_rank_family_has_that_rank():
    s = _sv(build_inputs(case(family="exact_rank", family_params=(("rank", 3),))))
    assert float(s[3] / s[0]) < 1e-5 and float(s[2] / s[0]) > 1e-3


def test_powerlaw_and_exponential_spectra():
    s = _sv(build_inputs(case()))
    i = torch.arange(1, 17, dtype=torch.float64)
    expected = i**-1.0 + 1e-3
    assert torch.allclose(s / s[0], expected / expected[0], rtol=1e-4)
    s = _sv(
        build_inputs(
            case(family="exponential", family_params=(("beta", 0.5), ("noise_floor", 0.0)))
        )
    )
    assert float(s[1] / s[0]) == pytest.approx(np.exp(-0.5), rel=1e-4)


def test_spectrum_matched_profile_formats(tmp_path):
    flat = tmp_path / "ds1" / "profile.json"
    flat.parent.mkdir()
    flat.write_text(
        json.dumps({"dataset": "ds1", "model": "powerlaw", "alpha": 0.5, "noise_floor": 0.01})
    )
    nested = tmp_path / "ds2" / "profile.json"
    nested.parent.mkdir()
    nested.write_text(
        json.dumps({"model": "exponential", "params": {"beta": 0.5}, "noise_floor": 0.0})
    )
    _, d1 = read_profile(flat)
    _, d2 = read_profile(nested)
    assert d1["params"]["alpha"] == 0.5 and d1["dataset"] == "ds1"
    assert d2["params"]["beta"] == 0.5 and d2["dataset"] == "ds2"
    inp = build_inputs(case(family="spectrum_matched", family_params=(("profile", str(nested)),)))
    s = _sv(inp)
    assert float(s[1] / s[0]) == pytest.approx(np.exp(-0.5), rel=1e-4)
    assert inp.info["dataset"] == "ds2"
    npy = tmp_path / "sv.npy"
    np.save(npy, np.array([4.0, 2.0, 1.0]))
    s = _sv(build_inputs(case(family="spectrum_matched", family_params=(("profile", str(npy)),))))
    assert float(s[1] / s[0]) == pytest.approx(0.5, rel=1e-4) and float(
        s[5] / s[0]
    ) == pytest.approx(0.25, rel=1e-4)


def test_real_family_without_data_is_unsupported(tmp_path):
    with pytest.raises(UnsupportedInput, match="not found"):
        build_inputs(case(family="real", family_params=(("path", str(tmp_path / "none.npz")),)))
    f = tmp_path / "u.npz"
    np.savez(
        f,
        k=np.random.default_rng(0).normal(size=(2, 100, 8)).astype("f4"),
        v=np.ones((2, 100, 8), "f4"),
    )
    inp = build_inputs(case(family="real", family_params=(("path", str(f)),), batch=2, heads=1))
    assert inp.k.shape == (2, 1, 96, 8) and not inp.info["synthetic"]
    assert inp.info["queries"].startswith("drawn: the file has no q")
    # one head in the file is not replicated into two
    with pytest.raises(UnsupportedInput, match=r"2 heads \(has 1; heads are not replicated\)"):
        build_inputs(case(family="real", family_params=(("path", str(f)),), batch=2, heads=2))


def _real(tmp_path, fmt: str, **arrays):
    if fmt == "npz":
        f = tmp_path / "kv.npz"
        np.savez(f, **arrays)
    else:
        from safetensors.numpy import save_file

        f = tmp_path / "kv.safetensors"
        save_file(arrays, str(f))
    return f


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_real_family_reads_q_heads_and_lengths(tmp_path, fmt):
    """The same files as `analysis kv`: per-head k, v, the user's q, lengths as padding."""
    rng = np.random.default_rng(1)
    k = rng.normal(size=(3, 2, 100, 8)).astype("f4")
    v = rng.normal(size=(3, 2, 100, 8)).astype("f4")
    q = rng.normal(size=(3, 2, 7, 8)).astype("f4")
    f = _real(tmp_path, fmt, k=k, v=v, q=q, lengths=np.array([100, 50, 100], dtype=np.int64))
    c = case(family="real", family_params=(("path", str(f)),), batch=2, heads=2, query_scale=0.5)
    inp = build_inputs(c)
    assert inp.k.shape == (2, 2, 96, 8) and inp.q.shape == (2, 2, 5, 8)
    assert torch.equal(inp.k, torch.from_numpy(k[:2, :, :96]))  # heads kept, not replicated
    assert not torch.equal(inp.k[:, 0], inp.k[:, 1])
    assert torch.allclose(inp.q, 0.5 * torch.from_numpy(q[:2, :, :5]))  # the user's q, scaled
    assert inp.info["queries"].startswith("the file's q") and "lengths" in inp.info["queries"]
    assert inp.key_mask is not None and inp.key_mask[0].all()
    assert int(inp.key_mask[1].sum()) == 50
    # more candidates than the file has queries: unsupported, saying so
    with pytest.raises(UnsupportedInput, match=r"M <= 7 queries per user \(case has M = 9\)"):
        build_inputs(case(family="real", family_params=(("path", str(f)),), batch=2, m=9))
    # self-attention: queries are the keys, whatever q the file holds
    self_ = build_inputs(
        case(family="real", family_params=(("path", str(f)),), batch=2, setting="self")
    )
    assert torch.equal(self_.q, self_.k) and self_.info["queries"].startswith("self-attention")


def test_real_family_bad_files_are_unsupported_rows(tmp_path):
    (tmp_path / "log.npz").write_text("1 2\n1 3\n")
    with pytest.raises(UnsupportedInput, match="a text file.*an interaction log goes to --data"):
        build_inputs(case(family="real", family_params=(("path", str(tmp_path / "log.npz")),)))
    pad = np.zeros((1, 100, 8), "f4")
    pad[0, :60] = 1.0  # trailing zero rows without a mask: padding the file does not declare
    f = _real(tmp_path, "npz", k=pad, v=pad)
    with pytest.raises(UnsupportedInput, match="no mask or lengths, but 40 behaviour rows"):
        build_inputs(case(family="real", family_params=(("path", str(f)),), heads=1))


def test_decay_profile_floor_is_relative_to_s1():
    """Same definition as analysis' profile.json: s_i / s_1 = (1 - floor) f(i) + floor."""
    import numpy as np

    from bench.inputs import decay_profile

    s = decay_profile("powerlaw", 1000, {"alpha": 2.0}, 0.01)
    assert s[0] == 1.0
    assert np.isclose(s[-1], 0.99 * 1000.0**-2 + 0.01)
    e = decay_profile("exponential", 50, {"beta": 0.5}, 0.0)
    assert np.isclose(e[3], np.exp(-1.5))
