"""Common interface of every attention operator, plus input validation.

Every method splits its work into the per-user part (`prepare`: independent of the
candidates, e.g. an SVD) and the per-candidate part (`attend`). A state is reused across
any number of candidate batches (cascade stages).

Tensors are laid out ``[batch, heads, length, dim]``; ``key_mask`` is ``[batch, N]`` bool
with True marking a real behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from . import validate as validation
from .kernels import resolve_backend, validate_backend
from .validate import (
    all_finite_fast,
    check_memory,
    check_not_meta,
    check_output,
    check_state,
    state_params,
)

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DTYPE_NAMES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp64": torch.float64,
    "float64": torch.float64,
}


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    """'bf16' / 'bfloat16' / torch.bfloat16 -> torch.bfloat16 (ValueError for anything else)."""
    if isinstance(name, torch.dtype):
        if name not in SUPPORTED_DTYPES:
            raise ValueError(f"unsupported dtype {name}; use one of fp16, bf16, fp32, fp64")
        return name
    try:
        return DTYPE_NAMES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(set(DTYPE_NAMES))}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {
        torch.float16: "fp16",
        torch.bfloat16: "bf16",
        torch.float32: "fp32",
        torch.float64: "fp64",
    }.get(dtype, str(dtype))


def element_size(dtype: torch.dtype) -> int:
    return dtype.itemsize  # no tensor allocation: this runs in every checked call


@dataclass(frozen=True)
class Shape:
    """Problem size of one call: B users, H heads, N behaviours, M queries, head dims d, dv."""

    batch: int
    heads: int
    n: int
    m: int
    d: int
    dv: int | None = None
    causal: bool = False

    def __post_init__(self) -> None:
        for name in ("batch", "heads", "n", "m", "d"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Shape.{name} must be a positive int, got {value!r}")
        if self.dv is not None and (not isinstance(self.dv, int) or self.dv < 1):
            raise ValueError(f"Shape.dv must be a positive int, got {self.dv!r}")

    @property
    def value_dim(self) -> int:
        return self.d if self.dv is None else self.dv

    @property
    def bh(self) -> int:
        return self.batch * self.heads


class Cost(NamedTuple):
    """Analytic model of one call (modelled, not measured).

    - ``flops``: floating-point operations, dominated by the matmuls (small elementwise terms
      such as the softmax's max/sub/sum/div are included);
    - ``bytes``: compulsory memory traffic: inputs read once, the per-user state written /
      read once, outputs written once (not the intermediates of unfused implementations);
    - ``exps``: exponentials / special-function evaluations (exp, the exp inside ELU), the
      third roofline bound on a GPU (MUFU throughput). Defaults to 0, so ``Cost(flops, bytes)``
      still works.
    """

    flops: float
    bytes: float
    exps: float = 0.0

    def __add__(self, other: object) -> Cost:  # type: ignore[override]
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.flops + other.flops, self.bytes + other.bytes, self.exps + other.exps)


@dataclass
class BaseState:
    """Fields every prepared state carries; methods subclass it with their own tensors."""

    n: int
    d: int
    dv: int
    dtype: torch.dtype
    device: torch.device
    key_mask: torch.Tensor | None  # [B, N] bool or None
    empty_users: torch.Tensor | None  # [B] bool: users with no real behaviour, or None
    # Who made the state and for which users (checked by attend: no state of another method,
    # other parameters or another batch/heads is used silently).
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    batch: int = 0
    heads: int = 0


# ----------------------------------------------------------------------------- validation


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_tensor(name: str, t: Any) -> torch.Tensor:
    check_structure(name, t)
    check_finite(name, t)
    return t


def check_structure(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_not_meta(name, t)
    if t.dim() != 4:
        raise ValueError(
            f"{name} must be 4-D [batch, heads, length, dim], got {t.dim()}-D ({_describe(t)})"
        )
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"{name} has dtype {t.dtype}; attention needs a floating dtype "
            "(float16, bfloat16, float32 or float64)"
        )
    if 0 in t.shape:
        raise ValueError(f"{name} is empty ({_describe(t)})")
    return t


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """ValueError naming ``t`` if any value is NaN or inf.

    Fast path: one reduction. A NaN or inf anywhere makes the sum non-finite, so a finite
    sum proves every value finite (one pass, no [shape] bool temporary: 0.07 ms against
    2.9 ms for ``isfinite(t).all()`` on 16384 x 64 fp32). Only a non-finite sum, which finite
    values can also give by overflowing, pays for the exact check that finds and counts the
    bad values (and passes when there are none)."""
    if all_finite_fast(t):
        return t
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int(finite.numel() - int(finite.sum()))
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} contains {kind} ({bad} non-finite values, {_describe(t)})")
    return t


def check_kv(
    k: Any, v: Any, key_mask: Any, finite: tuple[str, ...] = ("k", "v")
) -> torch.Tensor | None:
    """Validate keys, values and mask; returns the mask as a bool tensor (or None).

    ``finite``: which of k, v to check for NaN/inf here (an operator whose prepared state
    proves the others finite checks them through the state, ``AttentionOperator.prepare``)."""
    check_structure("k", k)
    check_structure("v", v)
    if k.device != v.device:
        raise ValueError(f"k and v are on different devices: k on {k.device}, v on {v.device}")
    if k.dtype != v.dtype:
        raise ValueError(f"k and v have different dtypes: k {k.dtype}, v {v.dtype}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"k and v must agree on [batch, heads, N]: k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if "k" in finite:
        check_finite("k", k)
    if "v" in finite:
        check_finite("v", v)
    if key_mask is None:
        return None
    if not isinstance(key_mask, torch.Tensor):
        raise ValueError(f"key_mask must be a torch.Tensor or None, got {type(key_mask).__name__}")
    if key_mask.dtype != torch.bool:
        raise ValueError(
            f"key_mask must be a bool tensor (True = real behaviour), got dtype {key_mask.dtype}"
        )
    expected = (k.shape[0], k.shape[2])
    if tuple(key_mask.shape) != expected:
        raise ValueError(
            f"key_mask must have shape [batch, N] = {list(expected)}, got {list(key_mask.shape)}"
        )
    if key_mask.device != k.device:
        raise ValueError(f"key_mask is on {key_mask.device} but k is on {k.device}")
    return key_mask


def check_query(q: Any, state: BaseState, causal: bool) -> torch.Tensor:
    """q's structure and values, and q against the prepared state."""
    check_tensor("q", q)
    check_query_fits(q, state.device, state.dtype, state.d, state.n, causal, "the prepared state")
    return q


def check_query_fits(
    q: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    d: int,
    n: int,
    causal: bool,
    holder: str = "k",
) -> None:
    """q (already structurally checked) fits keys of this device, dtype, head dim and length."""
    if q.device != device:
        raise ValueError(f"q is on {q.device} but {holder} is on {device}")
    if q.dtype != dtype:
        raise ValueError(f"q has dtype {q.dtype} but k/v had {dtype}")
    if q.shape[-1] != d:
        raise ValueError(f"q has head dim {q.shape[-1]} but k has {d}")
    if causal and q.shape[2] != n:
        raise ValueError(
            f"causal self-attention needs as many queries as behaviours (M == N); "
            f"got M = {q.shape[2]}, N = {n}"
        )


def empty_users_of(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    if key_mask is None:
        return None
    return ~key_mask.any(dim=1)


def zero_padded(x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the rows of padded behaviours: x [B,H,N,D], key_mask [B,N]."""
    if key_mask is None:
        return x
    return x * key_mask[:, None, :, None].to(x.dtype)


def zero_empty_users(out: torch.Tensor, empty_users: torch.Tensor | None) -> torch.Tensor:
    """Users whose behaviours are all padding get an all-zero output (never NaN)."""
    if empty_users is None:
        return out
    return torch.where(
        empty_users[:, None, None, None], torch.zeros((), dtype=out.dtype, device=out.device), out
    )


def sdpa_mask(
    key_mask: torch.Tensor | None, empty_users: torch.Tensor | None
) -> torch.Tensor | None:
    """Boolean SDPA mask [B,1,1,N]; empty users attend everywhere (their output is zeroed later)."""
    if key_mask is None:
        return None
    mask = key_mask
    if empty_users is not None:
        mask = mask | empty_users[:, None]
    return mask[:, None, None, :]


def masked_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    empty_users: torch.Tensor | None,
    causal: bool,
    scale: float | None = None,
) -> torch.Tensor:
    """Fused attention (torch SDPA) with a padding mask and optional causal mask.

    Rows with no visible key (an all-padding user, or a causal row whose visible keys are
    all padding) get zeros instead of SDPA's NaN.
    """
    mask = sdpa_mask(key_mask, empty_users)
    if not causal:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return zero_empty_users(out, empty_users)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    n = k.shape[2]
    mask = mask & causal_mask(q.shape[2], n, q.device)[None, None]
    dead = ~mask.any(dim=-1, keepdim=True)  # [B,1,M,1]
    mask = mask | (dead & (torch.arange(n, device=q.device) == 0))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out = torch.where(dead, torch.zeros((), dtype=out.dtype, device=out.device), out)
    return zero_empty_users(out, empty_users)


def query_chunks(m: int, n: int, bh: int, budget_bytes: int = 256 * 2**20) -> int:
    """Rows of queries per chunk so that a [B*H, chunk, N] fp32 block stays under budget."""
    per_row = max(1, bh * n * 4 * 3)  # a few fp32 temporaries per element
    return max(1, min(m, budget_bytes // per_row))


def causal_mask(m: int, n: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """[m, n] bool, True where query (row offset+i) may see key j (j <= i)."""
    rows = torch.arange(offset, offset + m, device=device)[:, None]
    cols = torch.arange(n, device=device)[None, :]
    return cols <= rows


# ----------------------------------------------------------------------------- operator


class AttentionOperator:
    """Base class: validation, forward = attend(prepare(...)), parameter handling.

    Subclasses set ``name``, ``PARAMS`` (name -> default), ``supports_causal`` and
    ``weights_are_distribution``, and implement ``_prepare``, ``_attend``,
    ``_implied_weights``, ``cost_prepare`` and ``cost_attend``.
    """

    name: ClassVar[str] = "base"
    PARAMS: ClassVar[dict[str, Any]] = {}
    supports_causal: ClassVar[bool] = False
    causal_kernel: ClassVar[bool] = True  # False: causal calls run torch whatever ``backend`` says
    weights_are_distribution: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            allowed = ", ".join(f"{k}={v!r}" for k, v in self.PARAMS.items()) or "none"
            raise ValueError(
                f"unknown parameter(s) {unknown} for method {self.name!r}; allowed: {allowed}"
            )
        self.params: dict[str, Any] = {**self.PARAMS, **params}
        if "backend" in self.PARAMS:  # every method with a Triton kernel takes auto|torch|triton
            validate_backend(self.params["backend"], self.name)
        self._validate_params()

    # -- to override ----------------------------------------------------------------
    def _validate_params(self) -> None:
        pass

    def _prepare(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> BaseState:
        raise NotImplementedError

    def _attend(self, state: BaseState, q: torch.Tensor, causal: bool) -> torch.Tensor:
        raise NotImplementedError

    def _implied_weights_chunk(
        self, state: BaseState, q: torch.Tensor, row_offset: int, causal: bool
    ) -> torch.Tensor:
        raise NotImplementedError

    def cost_prepare(self, shape: Shape, dtype: torch.dtype = torch.float32) -> Cost:
        raise NotImplementedError

    def cost_attend(self, shape: Shape, dtype: torch.dtype = torch.float32) -> Cost:
        raise NotImplementedError

    def memory_model(self, shape: Shape, dtype: torch.dtype = torch.float32) -> float:
        """Modelled peak extra bytes of forward beyond the inputs (analytic, not measured)."""
        es = element_size(dtype)
        return float(shape.bh * shape.m * shape.value_dim * es)

    def _check_extra(self, shape: Shape, dtype: torch.dtype, device: torch.device) -> list[str]:
        """Reasons this operator cannot run the case. Must depend on nothing but the
        arguments, ``params`` and ``_unsupported_key()`` (``forward`` caches a pass)."""
        return []

    def _unsupported_key(self) -> Any:
        """What ``_check_extra`` reads besides its arguments and ``params`` (hashable; LREA:
        the length of a fitted projection). Default: None."""
        return None

    # -- public API -------------------------------------------------------------------
    @property
    def label(self) -> str:
        shown = {k: v for k, v in self.params.items() if k in self.label_params()}
        if "backend" in self.params and self.params["backend"] != self.PARAMS.get("backend"):
            shown["backend"] = self.params["backend"]  # two backends of one method stay apart
        if not shown:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in shown.items())
        return f"{self.name}[{inner}]"

    def label_params(self) -> tuple[str, ...]:
        return ()

    def _backend(self, q: torch.Tensor, state: BaseState | None = None) -> str:
        """The resolved backend for ``q``'s device and dtype, cached (no work per call).

        The Triton kernels have no backward: when autograd records this call (``q`` or a
        tensor of ``state`` requires grad) the torch path runs instead (see ``needs_grad``)."""
        key = (q.device, q.dtype)
        cache = self.__dict__.setdefault("_backend_cache", {})
        if key not in cache:
            cache[key] = self.backend_used(q.device, q.dtype)
        resolved = cache[key]
        # only a kernel needs the autograd test (it walks the state's tensors: ~10 us a call)
        return "torch" if resolved == "torch" or needs_grad(q, state) else resolved

    def backend_used(
        self,
        device: torch.device | str,
        dtype: torch.dtype | str | None = None,
        requires_grad: bool = False,
        causal: bool = False,
    ) -> str:
        """Which implementation ``attend`` runs on ``device``: ``torch`` or ``triton``.

        Methods with a ``backend`` parameter resolve it (see ``attention_impls.kernels``).
        ``requires_grad=True`` (a call autograd records): always ``torch``, the kernels have
        no backward (an explicit ``triton`` that cannot run still raises, saying why); so
        does ``causal=True`` for a method whose kernel has no causal form (``causal_kernel``)."""
        if "backend" not in self.params:
            return "torch"
        dt = None if dtype is None else dtype_from_name(dtype)
        resolved = resolve_backend(self.params["backend"], device, self.name, dt)
        return "torch" if requires_grad or (causal and not self.causal_kernel) else resolved

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    def check(
        self,
        shape: Shape,
        dtype: torch.dtype | str = torch.float32,
        device: torch.device | str = "cpu",
    ) -> list[str]:
        """Human-readable reasons this operator cannot run the case (empty list = it can)."""
        reasons: list[str] = []
        try:
            dt = dtype_from_name(dtype)
        except ValueError as exc:
            return [str(exc)]
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            reasons.append("CUDA requested but torch.cuda.is_available() is False")
        if shape.causal and not self.supports_causal:
            reasons.append(f"{self.name} has no causal (self-attention) mask")
        if shape.causal and shape.m != shape.n:
            reasons.append(f"causal self-attention needs M == N (got M={shape.m}, N={shape.n})")
        if not reasons:
            try:
                self.backend_used(dev, dt)  # an explicit backend that cannot run says why
            except ValueError as exc:
                reasons.append(str(exc))
        reasons.extend(self._check_extra(shape, dt, dev))
        return reasons

    def cost(self, shape: Shape, dtype: torch.dtype | str = torch.float32) -> Cost:
        dt = dtype_from_name(dtype)
        return self.cost_prepare(shape, dt) + self.cost_attend(shape, dt)

    def _inputs_proven_by_state(self, k: Any = None, v: Any = None) -> tuple[str, ...]:
        """Which of "k", "v" the prepared state proves finite (for these k, v: a method may
        prove them only on some paths; anything that is not a tensor gets the direct check,
        which also rejects it): a NaN or inf anywhere in them
        makes ``_state_tensors(state)`` non-finite under IEEE arithmetic (NaN x w = NaN,
        inf x 0 = NaN, inf - inf = NaN), even with a BLAS that skips zero factors. ``prepare``
        then checks the small state instead of reading those N x d inputs again (a state
        whose ``_state_tensors`` is empty proves nothing: the inputs are then checked).
        Default: none (every input gets its own finiteness pass)."""
        return ()

    def _state_tensors(self, state: BaseState) -> tuple[torch.Tensor, ...]:
        return ()

    def _state_witness(self, state: BaseState) -> list[torch.Tensor] | None:
        """0-d tensors whose finiteness proves every ``_state_tensors`` value finite (a tensor's
        sum: a NaN or inf anywhere makes it non-finite; finite values can overflow it too, and
        then the exact checks run), or None when the state proves nothing. Read together by
        ``parts_finite``."""
        parts = [t if t.dim() == 0 else t.sum() for t in self._state_tensors(state)]
        return parts or None

    def _output_proven_finite(self, state: BaseState, q: torch.Tensor, causal: bool) -> bool:
        """True when the checked state bounds every output value (and every intermediate of
        ``_attend``) below the dtype's range for any finite q: ``forward`` then skips reading
        the output. Default: False (the output is checked)."""
        return False

    def _prepare_witnessed(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> BaseState:
        """The state the checked calls make: ``_prepare``'s, plus any witness that only the
        proof of ``_inputs_proven_by_state`` needs (LinRec: K's sum, taken while the ELU has
        K in cache). Default: ``_prepare``."""
        return self._prepare(k, v, key_mask)

    def _recall(self, entry: str, key: tuple | None) -> tuple[tuple | None, float | None]:
        """(key, the memory estimate remembered for ``key`` by the ``entry`` point's checks,
        or None when that structure has not passed); key None when it does not hash (an
        unhashable parameter value: no caching)."""
        cache = self.__dict__.setdefault("_structure_caches", {}).setdefault(entry, {})
        try:
            return key, cache.get(key)
        except TypeError:
            return None, None

    def _remember(self, entry: str, key: tuple | None, estimate: float) -> float:
        """Remember that ``key``'s structure passed ``entry``'s checks (up to
        ``STRUCTURE_CACHE_SIZE`` per entry point, then start afresh); returns ``estimate``."""
        if key is not None:
            cache = self.__dict__["_structure_caches"][entry]
            if len(cache) >= STRUCTURE_CACHE_SIZE:
                cache.clear()
            cache[key] = estimate
        return estimate

    def prepare(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> BaseState:
        return self._prepare_checked(k, v, key_mask, for_causal=False)

    def _prepare_for_causal(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> BaseState:
        """The state ``forward(..., causal=True)`` attends with at once; a method whose causal
        form needs less than its reusable state (LinRec: no K^T V sum) overrides this."""
        return self._prepare(k, v, key_mask)

    def _prepare_checked(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, for_causal: bool
    ) -> BaseState:
        """``prepare``'s checks, then the state. As in ``forward``, a structure that passed
        before (``structure_key`` of k, v and the mask) skips the structural checks, the
        unsupported cases and the memory model; the values and the free memory are checked
        on every call, in the same order."""
        proven = self._inputs_proven_by_state(k, v)
        key, estimate = self._recall(
            "prepare",
            structure_key(k, k, v, key_mask, False, self.params, self._unsupported_key()),
        )
        if estimate is None:
            key_mask = check_kv(
                k, v, key_mask, finite=tuple(x for x in ("k", "v") if x not in proven)
            )
            shape = Shape(k.shape[0], k.shape[1], k.shape[2], 1, k.shape[3], v.shape[3])
            self._raise_if_unsupported(shape, k.dtype, k.device)
            estimate = self._remember("prepare", key, self.memory_model(shape, k.dtype))
        else:
            for name, t in (("k", k), ("v", v)):
                if name not in proven:
                    check_finite(name, t)
        if estimate >= validation.MEMORY_CHECK_FLOOR:  # below it check_memory returns at once
            check_memory(lambda: f"{self.label}.prepare", estimate, k.device)
        return self._prepare_proving(k, v, key_mask, for_causal, proven)

    def _prepare_proving(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        for_causal: bool,
        proven: tuple[str, ...],
    ) -> BaseState:
        """Prepare checked inputs; the ``proven`` ones are checked through the state."""
        state = self._checked_state(k, v, key_mask, for_causal)
        if not proven:
            return state
        parts = self._state_witness(state)
        if parts is None or not parts_finite(parts):
            for name, t in (("k", k), ("v", v)):  # find and name the bad input (or pass:
                if name in proven:  # a finite input can overflow the state; attend says so)
                    check_finite(name, t)
        return state

    def _checked_state(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, for_causal: bool
    ) -> BaseState:
        """The state a checked call makes: the causal form's (``forward`` attends with it at
        once) or the one with the witnesses its proof reads."""
        if for_causal:
            return self._prepare_for_causal(k, v, key_mask)
        return self._prepare_witnessed(k, v, key_mask)

    def attend(self, state: BaseState, q: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """The state's origin, q's structure and values, q against the state, the unsupported
        cases and the memory model, then the output. As in ``forward``, a call whose structure
        (``attend_key``: q's, the state's fields these checks read, the parameters) passed
        before runs only q's value check and the free-memory test before the work."""
        key, estimate = self._recall(
            "attend", attend_key(state, q, causal, self.params, self._unsupported_key())
        )
        if estimate is None:
            if not isinstance(state, BaseState):
                raise ValueError(
                    f"state must come from {self.name}.prepare(), got {type(state).__name__}"
                )
            check_query(q, state, causal)
            check_state(self, state, q)
            if causal and not self.supports_causal:
                raise ValueError(f"{self.name} does not support causal self-attention")
            shape = Shape(q.shape[0], q.shape[1], state.n, q.shape[2], state.d, state.dv, causal)
            if causal:  # what prepare could not know: e.g. svd_exact's causal needs full rank
                self._raise_if_unsupported(shape, q.dtype, q.device)
            estimate = self._remember("attend", key, self.memory_model(shape, q.dtype))
        else:
            check_finite("q", q)
        if estimate >= validation.MEMORY_CHECK_FLOOR:  # below it check_memory returns at once
            check_memory(lambda: f"{self.label}.attend", estimate, q.device)
        out = self._attend(state, q, causal)
        if self._output_proven_finite(state, q, causal):  # q was checked above
            return out
        return check_output(lambda: self.label, out, q)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """attend(prepare(k, v, key_mask), q, causal) with the same checks and messages, each
        done once: q's values, k and v, the query against the keys, the unsupported cases and
        the memory model of the whole call (M queries) before any work, the output after.
        The state made here is used at once, so its origin needs no check (``check_state``).

        The structural checks (types, devices, dtypes, shapes, the mask's), the unsupported
        cases and the memory model depend only on those properties, the parameters and
        ``_unsupported_key()``: a call whose properties passed before (``structure_key``)
        skips them and runs the rest (values, the free-memory test) in the same order."""
        key, estimate = self._recall(
            "forward",
            structure_key(q, k, v, key_mask, causal, self.params, self._unsupported_key()),
        )
        if estimate is not None:
            return self._forward_seen(q, k, v, key_mask, causal, estimate)
        shape = self._check_forward_structure(q, k, v, key_mask, causal)
        self._raise_if_unsupported(shape, k.dtype, k.device)
        estimate = self._remember("forward", key, self.memory_model(shape, q.dtype))
        proven = self._inputs_proven_by_state(k, v)
        if estimate >= validation.MEMORY_CHECK_FLOOR:  # below it check_memory returns at once
            check_memory(lambda: f"{self.label}.forward", estimate, q.device)
        state = self._prepare_proving(k, v, key_mask, causal, proven)
        out = self._attend(state, q, causal)
        if self._output_proven_finite(state, q, causal) or all_finite_fast(out):
            return out
        return check_output(lambda: self.label, out, q)

    def _forward_seen(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        causal: bool,
        estimate: float,
    ) -> torch.Tensor:
        """``forward`` for a structure that passed before: the same value checks and
        messages, with one sync. q's sum, the state's witness (``_state_witness``, for the
        inputs it proves) and the output's sum (unless ``_output_proven_finite``) are read
        together (``parts_finite``); all finite proves every value finite. Only a non-finite
        part (a bad value, or finite values that overflow a sum) runs the exact
        checks, in the order of the first call: q, k, v, then the output. k and v that the
        state does not prove are checked before prepare, as always (a decomposition must not
        meet NaN); q's check may wait, as no prepare reads q."""
        proven = self._inputs_proven_by_state(k, v)
        inputs = (("k", k), ("v", v))
        _check_after_q(q, [(name, t) for name, t in inputs if name not in proven])
        if estimate >= validation.MEMORY_CHECK_FLOOR:  # below it check_memory returns at once
            check_memory(lambda: f"{self.label}.forward", estimate, q.device)
        state = self._checked_state(k, v, key_mask, causal)
        parts = [q.sum()]
        if proven:
            witness = self._state_witness(state)
            if witness is None:  # the state proves nothing here: the inputs get their pass
                _check_after_q(q, [(name, t) for name, t in inputs if name in proven])
            else:
                parts.extend(witness)
        out = self._attend(state, q, causal)
        if not self._output_proven_finite(state, q, causal):
            parts.append(out.sum())
        if parts_finite(parts):
            return out
        check_finite("q", q)
        for name, t in inputs:
            if name in proven:
                check_finite(name, t)
        return check_output(lambda: self.label, out, q)

    def _check_forward_structure(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        causal: bool,
    ) -> Shape:
        """Every check of ``forward`` before the unsupported cases, in order (q's structure
        and values, k and v with the values the state does not prove, the mask, the query
        against the keys); returns the call's Shape."""
        check_tensor("q", q)
        if q.device != k.device:
            raise ValueError(f"q is on {q.device} but k is on {k.device}")
        if q.shape[:2] != k.shape[:2]:
            raise ValueError(
                f"q and k must agree on [batch, heads]: q {tuple(q.shape)}, k {tuple(k.shape)}"
            )
        proven = self._inputs_proven_by_state(k, v)
        check_kv(k, v, key_mask, finite=tuple(x for x in ("k", "v") if x not in proven))
        check_query_fits(q, k.device, k.dtype, k.shape[3], k.shape[2], causal)
        if causal and not self.supports_causal:
            raise ValueError(f"{self.name} does not support causal self-attention")
        return Shape(k.shape[0], k.shape[1], k.shape[2], q.shape[2], k.shape[3], v.shape[3], causal)

    __call__ = forward

    def prepare_unchecked(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> BaseState:
        """prepare() without input validation (for timing loops after one checked call)."""
        return self._prepare(k, v, key_mask)

    def attend_unchecked(
        self, state: BaseState, q: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        """attend() without input validation (for timing loops after one checked call)."""
        return self._attend(state, q, causal)

    @torch.no_grad()
    def implied_weights(
        self, state: BaseState, q: torch.Tensor, causal: bool = False
    ) -> torch.Tensor:
        """[B,H,M,N] float32 weights this method puts on each behaviour (evaluation only)."""
        check_query(q, state, causal)
        check_state(self, state, q)
        b, h, m, _ = q.shape
        chunk = query_chunks(m, state.n, b * h)
        # the [B,H,M,N] fp32 result plus about three fp32 temporaries per chunk element
        check_memory(
            f"{self.label}.implied_weights", 4 * b * h * state.n * (m + 3 * chunk), q.device
        )
        out = torch.empty((b, h, m, state.n), dtype=torch.float32, device=q.device)
        for start in range(0, m, chunk):
            stop = min(m, start + chunk)
            w = self._implied_weights_chunk(state, q[:, :, start:stop], start, causal)
            if state.key_mask is not None:
                w = w * state.key_mask[:, None, None, :].to(w.dtype)
            out[:, :, start:stop] = w
        if state.empty_users is not None:
            out[state.empty_users] = 0.0
        return check_output(f"{self.label}.implied_weights", out, q, working_dtype=q.dtype)

    def _raise_if_unsupported(self, shape: Shape, dtype: torch.dtype, device: torch.device) -> None:
        reasons = self._check_extra(shape, dtype, device)
        if reasons:
            raise ValueError(f"{self.label} cannot run this input: " + "; ".join(reasons))

    def _base_state_kwargs(
        self, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> dict[str, Any]:
        return dict(
            n=k.shape[2],
            d=k.shape[3],
            dv=v.shape[3],
            dtype=k.dtype,
            device=k.device,
            key_mask=key_mask,
            empty_users=empty_users_of(key_mask),
            method=self.name,
            params=state_params(self.params),
            batch=k.shape[0],
            heads=k.shape[1],
        )


def parts_finite(parts: list[torch.Tensor]) -> bool:
    """True proves every 0-d tensor in ``parts`` finite. On CPU each is read (an ``.item()``
    costs 0.15 us, a 0-d add 1.3 us); on an accelerator they are added and read once (one
    sync; finite parts can overflow the total, and the caller then runs the exact checks)."""
    if not parts:
        return True
    if parts[0].device.type == "cpu":
        return all(math.isfinite(p.item()) for p in parts)
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return math.isfinite(total.item())


def _check_after_q(q: torch.Tensor, named: list[tuple[str, torch.Tensor]]) -> None:
    """The fast check of each (name, tensor); one that fails gets the exact checks, q's first
    (with several bad inputs the error names q, as on a first call)."""
    for name, t in named:
        if not all_finite_fast(t):
            check_finite("q", q)
            check_finite(name, t)


STRUCTURE_CACHE_SIZE = 64  # distinct input structures remembered per operator


def attend_key(
    state: Any, q: Any, causal: bool, params: dict[str, Any], extra: Any
) -> tuple | None:
    """What ``attend``'s checks before the work read, besides q's values: q's type, shape,
    dtype and device, causal, the operator's parameters and ``extra``, and the state's type
    and the fields ``check_query``/``check_state``/``Shape`` read (method, parameters, n, d,
    dv, dtype, device, batch, heads). None for a q that is not a tensor or a state that is not
    a ``BaseState`` (never cached)."""
    if not (
        isinstance(q, torch.Tensor)
        and isinstance(state, BaseState)
        and isinstance(state.params, dict)
    ):
        return None
    return (
        type(q), q.shape, q.dtype, q.device, bool(causal), tuple(params.values()), extra,
        type(state), state.method, tuple(state.params.items()), state.n, state.d, state.dv,
        state.dtype, state.device, state.batch, state.heads,
    )  # fmt: skip


def structure_key(
    q: Any, k: Any, v: Any, key_mask: Any, causal: bool, params: dict[str, Any], extra: Any
) -> tuple | None:
    """What ``forward``'s structural checks, unsupported cases and memory model depend on
    (type, shape, dtype, device of q, k, v and the mask, causal, the parameters' values,
    ``extra``), or None for a non-tensor input (never cached; neither is a key that does not
    hash)."""
    if not (
        isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
    ):
        return None
    if key_mask is None:
        mask = None
    elif isinstance(key_mask, torch.Tensor):
        mask = (type(key_mask), key_mask.shape, key_mask.dtype, key_mask.device)
    else:
        return None
    return (
        type(q), q.shape, q.dtype, q.device,
        type(k), k.shape, k.dtype, k.device,
        type(v), v.shape, v.dtype, v.device,
        mask, bool(causal), tuple(params.values()), extra,
    )  # fmt: skip


def needs_grad(q: torch.Tensor, state: BaseState | None = None) -> bool:
    """True when autograd records a call on ``q`` and ``state``: grad mode is on and ``q`` or
    any tensor of the state (k, v or what prepare made of them) requires grad."""
    if not torch.is_grad_enabled():
        return False
    if q.requires_grad:
        return True
    if state is None:
        return False
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in vars(state).values())


def inv_sqrt(d: int) -> float:
    return 1.0 / math.sqrt(d)
