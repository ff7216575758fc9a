"""Issue 11 item 1: the checked entry points' finiteness check is one cheap reduction, with
the exact check only when that reduction is not finite. NaN/inf anywhere still raises;
huge finite values (whose sum overflows) never do."""

from __future__ import annotations

import pytest
import torch

import attention_impls as ai
from attention_impls import base
from attention_impls.validate import all_finite_fast

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ALL = {
    "dense": {},
    "svd_exact": {"rank": 4},
    "svd_tokens": {"rank": 4},
    "linrec": {},
    "lrea": {"rank": 4},
    "performer": {"features": 8},
}


@pytest.fixture
def finite_reads(monkeypatch) -> list[int]:
    """The data pointers of the tensors the fast finiteness check reads, in order."""
    import attention_impls.validate as validate

    seen: list[int] = []
    real = validate.all_finite_fast

    def counting(t):
        seen.append(t.data_ptr())
        return real(t)

    monkeypatch.setattr(base, "all_finite_fast", counting)
    monkeypatch.setattr(validate, "all_finite_fast", counting)
    return seen


def _qkv(dtype, n=48, m=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((2, 2, length, d), generator=g).to(dtype) for length in (m, n, n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_non_finite_anywhere_raises(dtype, bad, where):
    t = torch.randn(2, 3, 50, 8).to(dtype)
    idx = {"first": (0, 0, 0, 0), "middle": (1, 1, 25, 3), "last": (1, 2, 49, 7)}[where]
    t[idx] = bad
    assert not all_finite_fast(t)
    kind = "NaN" if bad != bad else "inf"
    with pytest.raises(ValueError, match=rf"k contains {kind} \(1 non-finite values"):
        base.check_finite("k", t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_finite_values_pass(dtype):
    """Values at the dtype's largest finite number: the sum overflows (the fast path says
    "maybe not"), the exact check then passes."""
    big = torch.finfo(dtype).max
    t = torch.full((1, 1, 64, 8), big, dtype=dtype)
    t[0, 0, ::3] = -big
    assert bool(torch.isfinite(t).all())
    assert not bool(torch.isfinite(t.sum()))  # the case the fallback exists for
    assert base.check_finite("k", t) is t


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_huge_finite_values_and_output_pass_forward(dtype):
    """Values of max / (2N): v's sum and the output's sum overflow, but no step of dense
    attention does (its unnormalised accumulator reaches N |v| at most), so forward returns
    the convex combination of equal values, that value."""
    q, k, _ = _qkv(dtype)
    big = torch.finfo(dtype).max / (2 * k.shape[2])
    v = torch.full_like(k, big)
    assert not bool(torch.isfinite(v.sum()))
    out = ai.get("dense").forward(q, k, v)
    assert bool(torch.isfinite(out).all())
    assert float((out.double() / float(v[0, 0, 0, 0]) - 1).abs().max()) < 1e-2


def test_fp16_total_overflow_uses_row_sums_not_the_exact_check():
    """fp16 data with a large mean: the total exceeds 65,504 but each row sum does not, so
    the fast path still proves it finite (the exact check is never called)."""
    t = torch.full((1, 1, 4096, 64), 1.0, dtype=torch.float16)
    assert not bool(torch.isfinite(t.sum()))
    assert all_finite_fast(t)


def test_fast_path_true_means_finite():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        t = torch.randn(3, 40, generator=g) * 10.0 ** float(
            torch.randint(-30, 30, (1,), generator=g)
        )
        if all_finite_fast(t):
            assert bool(torch.isfinite(t).all())


@pytest.mark.parametrize("name", sorted(ALL))
def test_forward_checks_q_values_once(name, finite_reads):
    """forward checks q's values once (attend checks only its structure afterwards), k and v
    once each (lrea: both through its small state instead; linrec: k through its sum taken
    after the ELU, v through K^T V and the witness that every key row weighs it; svd_exact:
    both through S), and the output once."""
    seen = finite_reads
    q, k, v = _qkv(torch.float32)
    op = ai.get(name, **ALL[name])
    expected_k = 0 if name in ("lrea", "svd_exact", "svd_tokens", "linrec") else 1
    expected_v = 0 if name in ("lrea", "linrec", "svd_exact", "svd_tokens") else 1
    op.forward(q, k, v)
    assert seen.count(q.data_ptr()) == 1
    assert seen.count(k.data_ptr()) == expected_k
    assert seen.count(v.data_ptr()) == expected_v
    # q, k, v, output; the states' witnesses are read together (``parts_finite``), not
    # through all_finite_fast (lrea: q, output; linrec: q, no output: ||K^T V|| bounds it;
    # svd_exact, svd_tokens: q, output)
    assert len(seen) == {"svd_exact": 2, "svd_tokens": 2, "lrea": 2, "linrec": 1}.get(name, 4), seen
    # the second call finds its structure checked (``structure_key``): the inputs the state
    # does not prove are checked before prepare; q, the state's witness and the output are
    # read together (``parts_finite``) (``_forward_seen``), not through all_finite_fast
    seen.clear()
    op.forward(q, k, v)
    assert seen.count(q.data_ptr()) == 0
    assert seen.count(k.data_ptr()) == expected_k
    assert seen.count(v.data_ptr()) == expected_v
    assert len(seen) == expected_k + expected_v, seen


@pytest.mark.parametrize("name", sorted(ALL))
def test_cached_forward_names_q_first_when_several_inputs_are_bad(name):
    """The deferred q check keeps the first call's order: with q and k (or v) both bad,
    the error names q, on the first call and on a call whose structure is cached."""
    op = ai.get(name, **ALL[name])
    q, k, v = _qkv(torch.float32)
    op.forward(q, k, v)
    for other in ("k", "v"):
        bq, bo = q.clone(), {"k": k, "v": v}[other].clone()
        bq[0, 0, 0, 0] = float("nan")
        bo[0, 0, 0, 0] = float("inf")
        args = {"q": bq, "k": k, "v": v, other: bo}
        for fresh in (ai.get(name, **ALL[name]), op):
            with pytest.raises(ValueError, match=r"q contains NaN"):
                fresh.forward(args["q"], args["k"], args["v"])


@pytest.mark.parametrize("name", sorted(ALL))
def test_forward_with_a_cached_structure_still_checks_everything(name):
    """After a good call the structure of q, k, v and the mask is remembered: values are
    still checked (each input named), and any other structure is checked afresh."""
    op = ai.get(name, **ALL[name])
    q, k, v = _qkv(torch.float32)
    mask = torch.ones(2, k.shape[2], dtype=torch.bool)
    op.forward(q, k, v)
    op.forward(q, k, v, mask)
    for tensor in ("q", "k", "v"):
        for bad in (float("nan"), float("inf"), float("-inf")):
            t = {"q": q, "k": k, "v": v}[tensor].clone()
            t[1, 1, -1, -1] = bad
            args = {"q": q, "k": k, "v": v, tensor: t}
            kind = "NaN" if bad != bad else "inf"
            for m in (None, mask):
                with pytest.raises(ValueError, match=rf"{tensor} contains {kind} \(1 non-finite"):
                    op.forward(args["q"], args["k"], args["v"], m)
    wrong = [
        ((q.double(), k, v, None), "q has dtype"),
        ((q[:1], k, v, None), "q and k must agree on \\[batch, heads\\]"),
        ((q, k, v[:, :, :-1], None), "k and v must agree"),
        ((q[..., :-1], k, v, None), "q has head dim"),
        ((q, k, v, mask.long()), "key_mask must be a bool tensor"),
        ((q, k, v, mask[:, :-1]), "key_mask must have shape"),
        ((q, k, v, [True] * k.shape[2]), "key_mask must be a torch.Tensor"),
        ((q.tolist(), k, v, None), "q must be a torch.Tensor"),
        ((q[0], k, v, None), "q must be 4-D"),
    ]
    for (qq, kk, vv, m), msg in wrong:
        with pytest.raises(ValueError, match=msg):
            op.forward(qq, kk, vv, m)
    assert torch.isfinite(op.forward(q, k, v)).all()


@pytest.mark.parametrize("name", sorted(ALL))
def test_prepare_with_a_cached_structure_still_checks_everything(name):
    """``prepare`` remembers a structure that passed, as ``forward`` does: values are still
    checked on every call (each input named, with and without a mask), and any other
    structure is checked afresh."""
    op = ai.get(name, **ALL[name])
    _, k, v = _qkv(torch.float32)
    mask = torch.ones(2, k.shape[2], dtype=torch.bool)
    op.prepare(k, v)
    op.prepare(k, v, mask)
    for tensor in ("k", "v"):
        for bad in (float("nan"), float("inf"), float("-inf")):
            t = {"k": k, "v": v}[tensor].clone()
            t[1, 1, -1, -1] = bad
            args = {"k": k, "v": v, tensor: t}
            kind = "NaN" if bad != bad else "inf"
            for m in (None, mask):
                with pytest.raises(ValueError, match=rf"{tensor} contains {kind} \(1 non-finite"):
                    op.prepare(args["k"], args["v"], m)
    wrong = [
        ((k, v[:, :, :-1], None), "k and v must agree"),
        ((k, v.double(), None), "k and v have different dtypes"),
        ((k, v, mask.long()), "key_mask must be a bool tensor"),
        ((k, v, mask[:, :-1]), "key_mask must have shape"),
        ((k, v, [True] * k.shape[2]), "key_mask must be a torch.Tensor"),
        ((k.tolist(), v, None), "k must be a torch.Tensor"),
        ((k[0], v, None), "k must be 4-D"),
    ]
    for (kk, vv, m), msg in wrong:
        with pytest.raises(ValueError, match=msg):
            op.prepare(kk, vv, m)
    state = op.prepare(k, v, mask)
    assert state.key_mask is mask


@pytest.mark.parametrize("name", sorted(ALL))
def test_prepare_skips_the_structural_checks_of_a_seen_structure(name, monkeypatch):
    op = ai.get(name, **ALL[name])
    _, k, v = _qkv(torch.float32)
    calls = []
    real = base.check_kv
    monkeypatch.setattr(base, "check_kv", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    op.prepare(k, v)
    op.prepare(k.clone(), v.clone())
    assert len(calls) == 1
    op.prepare(k[:, :, :40], v[:, :, :40])  # another structure: checked afresh
    assert len(calls) == 2


def test_lrea_refit_for_another_length_is_caught_after_a_cached_prepare():
    """prepare's cached structure includes the fitted projection's length (as forward's)."""
    _, k, v = _qkv(torch.float32)
    op = ai.get("lrea", rank=4)
    op.fit(k)
    op.prepare(k, v)
    op.fit(k[:, :, :40])
    with pytest.raises(ValueError, match="projection was fitted for N = 40, input has N = 48"):
        op.prepare(k, v)


@pytest.mark.parametrize("fitted", ["segment_means", "fitted", "fitted_with_a_dead_position"])
@pytest.mark.parametrize("tensor", ["k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("pos", [0, 23, 47])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_lrea_state_proof_catches_every_bad_value(fitted, tensor, bad, pos, dtype):
    """LREA checks K and V through C = K^T W_comp and W_decomp V: a NaN/inf at any position,
    also a padded one, still raises the input's own error."""
    q, k, v = _qkv(dtype)
    op = ai.get("lrea", rank=4)
    if fitted != "segment_means":
        op.fit(k.float())
    if fitted == "fitted_with_a_dead_position":  # weight 0 in every column: falls back
        wc, wd = op.w_comp.clone(), op.w_decomp.clone()
        wc[pos], wd[:, pos] = 0.0, 0.0
        op.set_projection(wc, wd)
        assert op._inputs_proven_by_state() == ()
    mask = torch.ones(2, 48, dtype=torch.bool)
    mask[1, pos] = False  # user 1 has the bad value in a padded position
    t = {"k": k, "v": v}[tensor].clone()
    t[1, 1, pos, 3] = bad
    args = {"k": k, "v": v, tensor: t}
    kind = "NaN" if bad != bad else "inf"
    with pytest.raises(ValueError, match=f"{tensor} contains {kind}"):
        op.prepare(args["k"], args["v"], mask)
    with pytest.raises(ValueError, match=f"{tensor} contains {kind}"):
        op.forward(q, args["k"], args["v"])


def test_lrea_projection_edited_in_place_is_rechecked():
    q, k, v = _qkv(torch.float32)
    op = ai.get("lrea", rank=4)
    op.fit(k)
    assert op._inputs_proven_by_state() == ("k", "v")
    op.w_comp[5].zero_()
    op.w_decomp[:, 5].zero_()  # position 5 now has weight 0 everywhere: K and V are read again
    assert op._inputs_proven_by_state() == ()
    bad = v.clone()
    bad[0, 0, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="v contains NaN"):
        op.prepare(k, bad)


def test_lrea_finite_inputs_that_overflow_the_state_are_not_called_non_finite():
    """fp16 keys at 60,000: C = K^T W_comp overflows fp16 (the state is non-finite), the exact
    input check then passes, and attend reports the range problem instead."""
    q, k, v = _qkv(torch.float16)
    k = torch.full_like(k, 6e4)
    op = ai.get("lrea", rank=4, form="training")
    state = op.prepare(k, v)  # no error although the state is not finite
    assert not bool(torch.isfinite(state.c).all())
    try:
        op.forward(q, k, v)
    except ValueError as exc:
        assert "contains" not in str(exc), exc


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("tensor", ["q", "k", "v"])
def test_every_entry_point_rejects_nan(name, tensor):
    op = ai.get(name, **ALL[name])
    q, k, v = _qkv(torch.float32)
    bad = {"q": q, "k": k, "v": v}[tensor].clone()
    bad[1, 1, -1, -1] = float("nan")
    args = {"q": q, "k": k, "v": v, tensor: bad}
    with pytest.raises(ValueError, match=f"{tensor} contains NaN"):
        op.forward(args["q"], args["k"], args["v"])
    if tensor == "q":
        with pytest.raises(ValueError, match="q contains NaN"):
            op.attend(op.prepare(k, v), bad)
    else:
        with pytest.raises(ValueError, match=f"{tensor} contains NaN"):
            op.prepare(args["k"], args["v"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("pos", [0, 23, 47])
@pytest.mark.parametrize("case", ["plain", "zero_key_row", "padded_row", "causal"])
def test_linrec_v_proof_catches_every_bad_value(dtype, bad, pos, case):
    """linrec checks V through K^T V: a bad value anywhere in V, also in the row of an
    all-zero key (weight 0 in K^T V) or of a padded behaviour, or in the causal form (no
    K^T V), raises the same message as the direct check, through prepare and forward."""
    q, k, v = _qkv(dtype)
    v = v.clone()
    v[1, 0, pos, 3] = bad
    mask = None
    if case == "zero_key_row":
        k = k.clone()
        k[1, 0, pos] = 0.0
    if case == "padded_row":
        mask = torch.ones(2, k.shape[2], dtype=torch.bool)
        mask[1, pos] = False
    kind = "NaN" if bad != bad else "inf"
    op = ai.get("linrec")
    with pytest.raises(ValueError, match=rf"v contains {kind} \(1 non-finite values"):
        if case == "causal":
            op.forward(k, k, v, causal=True)
        else:
            op.forward(q, k, v, mask)
    if case != "causal":
        with pytest.raises(ValueError, match=rf"v contains {kind} \(1 non-finite values"):
            op.prepare(k, v, mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("pos", [0, 23, 47])
@pytest.mark.parametrize("case", ["plain", "padded_row", "causal", "v_also_bad"])
def test_linrec_k_check_after_the_elu_catches_every_bad_value(dtype, bad, pos, case):
    """linrec sums K after the ELU (ELU(-inf) = -1 hides a -inf from everything computed
    from K^): a bad value anywhere in K, also in a padded row, in the causal form, or with V
    bad too (k is named first), raises the direct check's message through prepare and
    forward."""
    q, k, v = _qkv(dtype)
    k, v = k.clone(), v.clone()
    k[0, 1, pos, 5] = bad
    if case == "v_also_bad":
        v[1, 0, 3, 3] = float("nan")
    mask = None
    if case == "padded_row":
        mask = torch.ones(2, k.shape[2], dtype=torch.bool)
        mask[0, pos] = False
    kind = "NaN" if bad != bad else "inf"
    msg = rf"k contains {kind} \(1 non-finite values"
    op = ai.get("linrec")
    with pytest.raises(ValueError, match=msg):
        if case == "causal":
            op.forward(k.clone().nan_to_num_(0.0), k, v, causal=True)
        else:
            op.forward(q, k, v, mask)
    if case != "causal":
        with pytest.raises(ValueError, match=msg):
            op.prepare(k, v, mask)


def test_linrec_output_bound_skips_the_check_only_when_it_proves_finite():
    """||K^T V||_F bounds linrec's output. Finite K^T V whose norm passes half the dtype's
    range: the output is checked and an overflow is named; a small norm proves it finite.
    (fp16: K^T V is summed in fp32 and stored in fp16, so it can be finite while the output
    overflows; in bf16, fp32 and fp64 the fp32/fp64 sum behind K^T V overflows first.)"""
    dtype = torch.float16
    q = torch.ones(1, 1, 3, 8, dtype=dtype)
    k = torch.ones(1, 1, 8, 8, dtype=dtype)
    # every kv entry is max / 2 (finite), every output sqrt(8) max / 2 (not)
    v = torch.full((1, 1, 8, 8), torch.finfo(dtype).max / 2, dtype=dtype)
    op = ai.get("linrec")
    state = op._prepare_witnessed(k, v, None)
    assert bool(torch.isfinite(state.kv).all())
    assert not op._output_proven_finite(state, q, False)
    with pytest.raises(ValueError, match="output values are not finite"):
        op.forward(q, k, v)
    small = op._prepare_witnessed(k, torch.ones_like(v), None)
    assert op._output_proven_finite(small, q, False)
    assert not op._output_proven_finite(small, q, True)


def test_linrec_finite_keys_whose_sum_overflows_pass():
    """Keys at fp32's largest value (their sum overflows): the exact check of K passes and the
    output is finite (normalised keys)."""
    q, k, v = _qkv(torch.float32)
    k = torch.full_like(k, torch.finfo(torch.float32).max)
    assert not bool(torch.isfinite(k.sum()))
    assert bool(torch.isfinite(ai.get("linrec").forward(q, k, v)).all())


def test_linrec_v_proof_passes_finite_values_whose_state_overflows():
    """Finite V whose K^T V overflows fp16: the proof fails, the direct check of V passes, and
    the output check names the overflow (no "contains" message)."""
    q, k, _ = _qkv(torch.float16)
    v = torch.full_like(k, 6e4)
    op = ai.get("linrec")
    with pytest.raises(ValueError) as info:
        op.forward(q, k.abs() + 1.0, v)
    assert "contains" not in str(info.value)
    assert "not finite" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("tensor", ["k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("pos", [0, 23, 47])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("method", ["svd_exact", "svd_tokens"])
def test_svd_proof_through_the_factors_catches_every_bad_value(
    method, dtype, tensor, bad, pos, padded
):
    """svd_exact and svd_tokens (default gram solver) check K and V through their factors (S;
    the tokens diag(S) W^T): a bad value anywhere, also in a padded row, raises the message of
    the direct check, through prepare and forward; k is named first when both are bad, as the
    direct checks do."""
    q, k, v = _qkv(dtype)
    k, v = k.clone(), v.clone()
    {"k": k, "v": v}[tensor][0, 1, pos, 5] = bad
    mask = None
    if padded:
        mask = torch.ones(2, k.shape[2], dtype=torch.bool)
        mask[0, pos] = False
    kind = "NaN" if bad != bad else "inf"
    op = ai.get(method, rank=4)
    assert op._inputs_proven_by_state(k, v) == ("k", "v")
    msg = rf"{tensor} contains {kind} \(1 non-finite values"
    with pytest.raises(ValueError, match=msg):
        op.forward(q, k, v, mask)
    with pytest.raises(ValueError, match=msg):
        op.prepare(k, v, mask)
    if tensor == "v":
        k[1, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="k contains NaN"):
            op.prepare(k, v, mask)


@pytest.mark.parametrize("method", ["svd_exact", "svd_tokens"])
def test_svd_proof_only_where_the_gram_blocks_run(method):
    """Other solvers and autograd's fp64 route decompose (and would raise) before any check of
    the state: they check K and V directly."""
    q, k, v = _qkv(torch.float32)
    assert ai.get(method, rank=4, solver="svd")._inputs_proven_by_state(k, v) == ()
    kg = k.clone().requires_grad_(True)
    op = ai.get(method, rank=4)
    assert op._inputs_proven_by_state(kg, v) == ()
    with torch.no_grad():
        assert op._inputs_proven_by_state(kg, v) == ("k", "v")
    bad = v.clone()
    bad[0, 0, 3, 3] = float("inf")
    for solver in ("svd", "gram_fp64", "lowrank"):
        with pytest.raises(ValueError, match="v contains inf"):
            ai.get(method, rank=4, solver=solver).forward(q, k, bad)
    with pytest.raises(ValueError, match="v contains inf"):
        op.forward(q, kg, bad)


@pytest.mark.parametrize("method", ["svd_exact", "svd_tokens"])
def test_svd_finite_inputs_whose_gram_overflows_are_not_called_non_finite(method):
    """Values of 1e20: finite, but their squares overflow fp32's Gram. The proof fails, the
    direct checks pass, and the output check names the overflow."""
    q, k, v = _qkv(torch.float32)
    op = ai.get(method, rank=4)
    with pytest.raises(ValueError) as info:
        op.forward(q, k * 1e20, v)
    assert "contains" not in str(info.value) and "not finite" in str(info.value)


def test_lrea_refit_for_another_length_is_caught_after_a_cached_call():
    """The unsupported cases are cached with the input structure and the fitted projection's
    length: a refit for another N makes the same input an error again."""
    q, k, v = _qkv(torch.float32)
    op = ai.get("lrea", rank=4)
    op.fit(k)
    op.forward(q, k, v)
    op.fit(k[:, :, :40])
    with pytest.raises(ValueError, match="projection was fitted for N = 40, input has N = 48"):
        op.forward(q, k, v)
    op.fit(k)
    assert torch.isfinite(op.forward(q, k, v)).all()


def test_parts_finite_reads_every_part():
    """``parts_finite``: all finite -> True; one NaN or inf anywhere -> False (CPU reads each
    part, so finite parts whose total would overflow still pass); nothing to read -> True."""
    big = torch.tensor(torch.finfo(torch.float32).max)
    assert base.parts_finite([big, big, torch.tensor(1.0)])
    for bad in (float("nan"), float("inf"), float("-inf")):
        for i in range(3):
            parts = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)]
            parts[i] = torch.tensor(bad)
            assert not base.parts_finite(parts)
    assert base.parts_finite([])


def test_linrec_attend_skips_the_output_read_when_its_state_bounds_it(finite_reads):
    """attend, as forward: a state from the checked prepare carries ||K^T V||_F, which bounds
    every output value (rows of q^ have norm <= 1); below half the dtype's range the output is
    not read. A state from prepare_unchecked has no bound: its output is checked."""
    seen = finite_reads
    q, k, v = _qkv(torch.float32)
    op = ai.get("linrec")
    out = op.attend(op.prepare(k, v), q)
    assert seen == [q.data_ptr()]
    seen.clear()
    out2 = op.attend(op.prepare_unchecked(k, v), q)
    assert seen == [q.data_ptr(), out2.data_ptr()]
    assert torch.equal(out, out2)
    # fp16 with ||K^T V||_F above half the range: no bound, the output is read
    big = op.prepare(k.half(), (v * 4000).half())
    assert bool(torch.isfinite(big.kv).all()) and big.kv_norm.item() > 65504 / 2
    qh = q.half()
    seen.clear()
    out3 = op.attend(big, qh)
    assert seen == [qh.data_ptr(), out3.data_ptr()]


@pytest.mark.parametrize("name", sorted(ALL))
def test_attend_with_a_cached_structure_still_checks_everything(name, monkeypatch):
    """attend remembers a structure that passed (q's, the state's fields its checks read, the
    parameters): q's values are still checked on every call, every other state or query
    structure is checked afresh, and the structural checks run once per structure."""
    op = ai.get(name, **ALL[name])
    q, k, v = _qkv(torch.float32)
    state = op.prepare(k, v)
    calls = []
    real = base.check_state
    monkeypatch.setattr(base, "check_state", lambda *a: calls.append(1) or real(*a))
    op.attend(state, q)
    op.attend(state, q.clone())
    assert len(calls) == 1
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = q.clone()
        t[1, 1, -1, -1] = bad
        kind = "NaN" if bad != bad else "inf"
        with pytest.raises(ValueError, match=rf"q contains {kind} \(1 non-finite"):
            op.attend(state, t)
    other = "dense" if name != "dense" else "linrec"
    wrong = [
        ((state, q.double()), "q has dtype"),
        ((state, q[:1]), r"\[batch, heads\]"),
        ((state, q[..., :-1]), "q has head dim"),
        ((ai.get(other).prepare(k, v), q), "this state was prepared by"),
        ((op.prepare(k[:1], v[:1]), q), r"\[batch, heads\]"),
        (("not a state", q), "state must come from"),
        ((state, q.tolist()), "q must be a torch.Tensor"),
    ]
    for (st, qq), msg in wrong:
        with pytest.raises(ValueError, match=msg):
            op.attend(st, qq)
    if not op.supports_causal:
        with pytest.raises(ValueError, match="causal"):
            op.attend(state, q, causal=True)
    # a state whose fields were changed after prepare is checked afresh
    state.params = {**state.params, "seed": 123}
    with pytest.raises(ValueError, match="other parameters"):
        op.attend(state, q)
    assert torch.isfinite(op.attend(op.prepare(k, v), q)).all()
