"""``linrec(backend="compiled")`` (attention_impls/linrec_compiled.py) against its reference,
the eager torch path: outputs, the prepared state and its witnesses, the checked calls'
errors, the eager fall-back under autograd and for causal calls, and a failed build.

Compiling needs a C++ compiler on a CPU: without one the module is skipped, saying so."""

from __future__ import annotations

import pytest
import torch

import attention_impls as ai
from attention_impls import linrec_compiled

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def _compiler_works():
    try:
        linrec_compiled.run("attend", torch.randn(1, 1, 3, 4), torch.randn(1, 1, 4, 4), 1e-12)
    except RuntimeError as exc:
        pytest.skip(f"torch.compile cannot build here: {exc}")


def _inputs(b=2, h=2, n=37, m=11, d=8, dv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, h, m, d, generator=g),
        torch.randn(b, h, n, d, generator=g),
        torch.randn(b, h, n, dv, generator=g),
    )


def _pair():
    return ai.get("linrec", backend="torch"), ai.get("linrec", backend="compiled")


def test_forward_and_unchecked_paths_equal_the_torch_path() -> None:
    eager, comp = _pair()
    assert comp.label == "linrec[backend=compiled]" and comp.backend_used("cpu") == "compiled"
    for n, m in ((37, 11), (64, 3)):  # a second length reuses the dynamic build
        q, k, v = _inputs(n=n, m=m)
        torch.testing.assert_close(comp(q, k, v), eager(q, k, v), rtol=1e-5, atol=1e-6)
        ref = eager.attend_unchecked(eager.prepare_unchecked(k, v), q)
        got = comp.attend_unchecked(comp.prepare_unchecked(k, v), q)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_masked_keys_and_an_empty_user_equal_the_torch_path() -> None:
    eager, comp = _pair()
    q, k, v = _inputs()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[0, 20:] = False
    mask[1] = False  # user 1 has no behaviour: an all-zero output
    got = comp(q, k, v, key_mask=mask)
    torch.testing.assert_close(got, eager(q, k, v, key_mask=mask), rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(got[1]) == 0


def test_state_and_witnesses_equal_the_torch_path() -> None:
    eager, comp = _pair()
    _, k, v = _inputs()
    a, b = eager._prepare_witnessed(k, v, None), comp._prepare_witnessed(k, v, None)
    torch.testing.assert_close(b.kv, a.kv, rtol=1e-5, atol=1e-6)
    for name in ("k_witness", "v_witness", "kv_norm"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-5)
    k0 = k.clone()
    k0[0, 0, 3] = 0.0  # elu(0) = 0: a zero key row makes the V witness infinite
    assert torch.isinf(comp._prepare_witnessed(k0, v, None).v_witness)


@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_get_the_torch_paths_error(where: str, bad: float) -> None:
    eager, comp = _pair()
    q, k, v = _inputs()
    t = {"q": q, "k": k, "v": v}[where]
    t[1, 0, 2, 1] = bad  # -inf in k: elu(-inf) = -1 is finite; k's own sum still catches it
    msgs = []
    for op in (eager, comp):
        with pytest.raises(ValueError, match=f"^{where} contains") as info:
            op(q, k, v)
        msgs.append(str(info.value))
        with pytest.raises(ValueError, match=f"^{where} contains"):
            op.attend(op.prepare(k, v), q)
    assert msgs[0] == msgs[1]


def test_autograd_and_causal_calls_run_the_eager_path() -> None:
    eager, comp = _pair()
    assert comp.backend_used("cpu", requires_grad=True) == "torch"
    assert comp.backend_used("cpu", causal=True) == "torch"
    q, k, v = _inputs()
    grads = []
    for op in (eager, comp):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        op(qq, kk, vv).square().sum().backward()
        grads.append([t.grad for t in (qq, kk, vv)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)  # the same eager code ran
    qs, ks, vs = _inputs(n=9, m=9)
    torch.testing.assert_close(comp(qs, ks, vs, causal=True), eager(qs, ks, vs, causal=True))


def test_a_failed_build_names_the_cause(monkeypatch) -> None:
    def broken(name):
        def fail(*args):
            raise OSError("no C++ compiler found\nmore detail")

        return fail

    monkeypatch.setattr(linrec_compiled, "_compiled", broken)
    q, k, v = _inputs()
    with pytest.raises(RuntimeError, match="torch.compile could not build.*no C\\+\\+ compiler"):
        ai.get("linrec", backend="compiled")(q, k, v)


def test_other_methods_refuse_the_compiled_backend() -> None:
    with pytest.raises(ValueError, match="dense: unknown backend 'compiled'; use one of auto"):
        ai.get("dense", backend="compiled")
    with pytest.raises(ValueError, match="auto, torch, triton, compiled"):
        ai.get("linrec", backend="fused")
