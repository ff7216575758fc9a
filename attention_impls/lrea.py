"""LREA (arXiv 2503.02542): low-rank compression of the sequence axis, LeakyReLU attention.

Compression W_comp (N x r) and decompression W_decomp (r x N). Per user, the pre-stored
state is C = K^T W_comp (d x r) and the absorbed values Bv = W_decomp V (r x dv). With
a = q C / sqrt(d) (1 x r), phi = LeakyReLU(slope):

- training form:  O = phi(a W_decomp) V        (attention over the reconstructed keys
                                                 K~ = (C W_decomp)^T, O(M r N))
- absorbed form:  O = phi(a) (W_decomp V)      (serving, O(r d) per candidate)

The two agree exactly when phi(a W_decomp) = phi(a) W_decomp, e.g. when W_decomp >= 0 and
every entry of a has the same sign (the non-negativity the paper's penalty aims at);
``absorption_error`` reports ||phi(AB) - phi(A) B|| / ||phi(AB)||. Weights are signed and
unnormalised; LREA targets DIN-style attention, so ``uncompressed_error`` reports the error
against LeakyReLU attention over the uncompressed keys.

W_comp / W_decomp are learned in the paper, offline: serving never refits. ``prepare`` runs
no decomposition. It uses the projection set by ``fit`` (the top-r principal directions of the
position axis, pooled over the users and heads of a sample batch, optionally refined by a
few Adam steps with a non-negativity penalty on W_decomp) or by ``set_projection`` (e.g. one
loaded from a trained model); without either, the default is the **segment-mean basis**
(``segment_basis``): the N positions are cut into r contiguous segments of near-equal
length and W_comp = W_decomp^T has 1/sqrt(n_s) on segment s, so K~ replaces every key by
the mean of its segment. Why this default: it is deterministic and free (no SVD, no seed,
the same for every user), non-negative with disjoint supports, so the absorbed form is
exact (phi(a W_decomp) = phi(a) W_decomp entrywise: absorption error 0, the property the
paper's penalty aims at), and recency-local, as behaviour sequences are. A projection fitted
by SVD reconstructs K better; ``fit`` buys that explicitly, once.

``backend`` (absorbed form): ``torch`` = the code below (the reference); ``triton`` = both
products and the LeakyReLU in one fused kernel (``kernels/row_mlp.py``); ``auto`` = triton on
CUDA when Triton imports. The training form always runs torch (``auto`` resolves to torch;
``backend="triton"`` with ``form="training"`` is a ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import (
    AttentionOperator,
    BaseState,
    Cost,
    element_size,
    inv_sqrt,
    zero_empty_users,
    zero_padded,
)
from .registry import register
from .svd_exact import validate_rank_param
from .validate import check_choice, check_float, check_seed

FORMS = ("absorbed", "training")


def principal_positions(
    k: torch.Tensor, key_mask: torch.Tensor | None, rank: int, seed: int = 0
) -> torch.Tensor:
    """Top-``rank`` principal directions of the position axis, pooled over users, heads and
    features: left singular vectors of [K_(b,h)]_(b,h) as an N x (B H d) matrix. fp32."""
    kz = zero_padded(k.float(), key_mask)
    b, h, n, d = kz.shape
    y = kz.permute(2, 0, 1, 3).reshape(n, b * h * d)
    if min(n, b * h * d) <= 4 * rank or n <= 512:
        u, _, _ = torch.linalg.svd(y, full_matrices=False)
    else:
        devices = [y.device] if y.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            u, _, _ = torch.svd_lowrank(y, q=min(rank + 8, n, b * h * d), niter=3)
    return u[:, :rank].contiguous()


def segment_basis(n: int, rank: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """N x r fp32 with orthonormal, non-negative, disjoint columns: column s is
    1/sqrt(n_s) on the s-th of r contiguous segments of near-equal length (position j lies
    in segment floor(j r / N)). P P^T K replaces each key by its segment's mean."""
    seg = torch.div(torch.arange(n, device=device) * rank, n, rounding_mode="floor")
    onehot = torch.nn.functional.one_hot(seg, rank).float()  # [N, r]
    return onehot * onehot.sum(dim=0).rsqrt()


@dataclass
class LreaState(BaseState):
    c: torch.Tensor = None  # type: ignore[assignment]      [B,H,d,r] working dtype, C / sqrt(d)
    bv: torch.Tensor = None  # type: ignore[assignment]     [B,H,r,dv] working dtype, W_decomp V
    w_decomp: torch.Tensor = None  # type: ignore[assignment]  [r,N] fp32 (padded positions zeroed per user at use)
    gamma: torch.Tensor = None  # type: ignore[assignment]  [B,H,1,r] fp32: c holds C gamma, bv W_decomp V / gamma
    v: torch.Tensor = None  # type: ignore[assignment]      reference to values (training form)
    k: torch.Tensor = None  # type: ignore[assignment]      reference to keys (evaluation only)


@register
class LreaAttention(AttentionOperator):
    name = "lrea"
    PARAMS = {"rank": 16, "slope": 0.01, "form": "absorbed", "seed": 0, "backend": "auto"}
    supports_causal = False
    weights_are_distribution = False
    description = (
        "low-rank compression of the sequence axis with LeakyReLU attention (absorbed serving form)"
    )

    def __init__(self, **params):
        super().__init__(**params)
        self.w_comp: torch.Tensor | None = None
        self.w_decomp: torch.Tensor | None = None
        self._default: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._covers_cache: tuple = (None, None, None, True)

    def label_params(self):
        return ("rank", "form")

    def _validate_params(self):
        validate_rank_param(self.params["rank"], self.name)
        check_choice(self.name, "form", self.params["form"], FORMS)
        check_float(self.name, "slope", self.params["slope"], 0.0, 1.0, hi_open=True)
        check_seed(self.name, self.params["seed"])
        if self.params["backend"] == "triton" and self.params["form"] == "training":
            raise ValueError(
                f"{self.name}: backend='triton' serves the absorbed form only; form='training' "
                "runs torch (use backend='torch' or 'auto')"
            )

    def backend_used(self, device, *args, **kwargs):
        """The training form always runs torch; the absorbed form resolves ``backend``."""
        if self.params["form"] == "training":
            return "torch"
        return super().backend_used(device, *args, **kwargs)

    def _check_extra(self, shape, dtype, device):
        reasons = []
        if self.params["rank"] > shape.n:
            reasons.append(
                f"{self.name}: rank {self.params['rank']} is larger than the data allows: N = {shape.n}"
            )
        if self.w_comp is not None and self.w_comp.shape[0] != shape.n:
            reasons.append(
                f"{self.name}: projection was fitted for N = {self.w_comp.shape[0]}, input has N = {shape.n}"
            )
        return reasons

    def _unsupported_key(self):
        return None if self.w_comp is None else self.w_comp.shape[0]

    # -- projection ---------------------------------------------------------------------
    def set_projection(self, w_comp: torch.Tensor, w_decomp: torch.Tensor) -> None:
        """Use given W_comp (N x r) and W_decomp (r x N) instead of the training-free default."""
        r = self.params["rank"]
        if (
            w_comp.dim() != 2
            or w_decomp.dim() != 2
            or w_comp.shape[1] != r
            or w_decomp.shape != (r, w_comp.shape[0])
        ):
            raise ValueError(
                f"{self.name}: W_comp must be N x {r} and W_decomp {r} x N; got "
                f"{tuple(w_comp.shape)} and {tuple(w_decomp.shape)}"
            )
        if not (torch.isfinite(w_comp).all() and torch.isfinite(w_decomp).all()):
            raise ValueError(f"{self.name}: W_comp / W_decomp contain NaN or inf")
        self._use_projection(w_comp.float(), w_decomp.float())

    def _use_projection(self, w_comp: torch.Tensor, w_decomp: torch.Tensor) -> None:
        """Store the projection as normal tensors: one made under ``torch.inference_mode()``
        (a fit there, an inference-mode caller of ``set_projection``) is cloned out of it, so
        later calls in any mode can use it (inference tensors track no version counter, which
        ``_covers_all`` reads, and cannot be saved for backward)."""
        self.w_comp, self.w_decomp = (normal_tensor(w) for w in (w_comp, w_decomp))

    def _covers_all(self) -> bool:
        """Every position has a non-zero weight in some column of W_comp and of W_decomp: then
        a NaN/inf in K or V reaches C or W_decomp V. Cached per projection object and version
        (the cache holds the tensors, so an id is never reused; in-place edits bump _version)."""
        wc, wd, version, ok = self._covers_cache
        if (
            wc is not self.w_comp
            or wd is not self.w_decomp
            or version != (self.w_comp._version, self.w_decomp._version)
        ):
            ok = bool((self.w_comp != 0).any(dim=1).all() and (self.w_decomp != 0).any(dim=0).all())
            self._covers_cache = (
                self.w_comp,
                self.w_decomp,
                (self.w_comp._version, self.w_decomp._version),
                ok,
            )
        return ok

    def _inputs_proven_by_state(self, k=None, v=None) -> tuple[str, ...]:
        """C = K^T W_comp and W_decomp V: with the segment-mean default every position has a
        positive weight, so any NaN/inf of K or V makes C or W_decomp V non-finite; a fitted
        or set projection does too unless a position has weight 0 in every column."""
        return ("k", "v") if self.w_comp is None or self._covers_all() else ()

    def _state_tensors(self, state):
        return (state.c, state.bv)

    def fit(
        self,
        k: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        nonneg_penalty: float = 0.0,
        steps: int = 0,
        lr: float = 1e-2,
    ) -> dict[str, float]:
        """Fit W_comp/W_decomp on sample sequences k [B,H,N,d]: principal positions, then
        optionally ``steps`` Adam steps on ||K - W_decomp^T W_comp^T K||^2 / ||K||^2
        + nonneg_penalty * ||min(W_decomp, 0)||^2. Returns the final loss terms."""
        from .base import check_kv

        mask = check_kv(k, k, key_mask)
        # a fit is a fixed preprocessing step: no gradient to the samples; it runs the same
        # under inference_mode / no_grad (its Adam steps record their own graph)
        with torch.inference_mode(False), torch.enable_grad():
            return self._fit(normal_tensor(k.detach()), mask, nonneg_penalty, steps, lr)

    def _fit(
        self,
        k: torch.Tensor,
        mask: torch.Tensor | None,
        nonneg_penalty: float,
        steps: int,
        lr: float,
    ) -> dict[str, float]:
        """``fit`` outside inference mode, with grad on, on normal (non-inference) tensors."""
        mask = None if mask is None else normal_tensor(mask)
        p = principal_positions(k, mask, self.params["rank"], self.params["seed"])
        w_comp, w_decomp = p.clone(), p.T.clone()
        kz = zero_padded(k.float(), mask)
        y = kz.permute(2, 0, 1, 3).reshape(k.shape[2], -1)  # N x (BHd)
        if steps > 0:
            w_comp.requires_grad_(True)
            w_decomp.requires_grad_(True)
            opt = torch.optim.Adam([w_comp, w_decomp], lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                rec = w_decomp.T @ (w_comp.T @ y)
                loss = ((y - rec) ** 2).sum() / (y**2).sum() + nonneg_penalty * (
                    w_decomp.clamp_max(0) ** 2
                ).sum()
                loss.backward()
                opt.step()
            w_comp, w_decomp = w_comp.detach(), w_decomp.detach()
        with torch.no_grad():
            rec = w_decomp.T @ (w_comp.T @ y)
            recon = float(((y - rec) ** 2).sum() / (y**2).sum().clamp_min(1e-30))
            negative = float((w_decomp.clamp_max(0) ** 2).sum())
        self._use_projection(w_comp, w_decomp)
        return {"reconstruction_error": recon, "negative_mass": negative}

    @property
    def projection_source(self) -> str:
        """``fitted`` (``fit`` / ``set_projection``) or ``segment_means`` (the default)."""
        return "segment_means" if self.w_comp is None else "fitted"

    def _projection(self, k, key_mask):
        """Never a fit: the fitted / set projection, else the cached segment-mean basis."""
        if self.w_comp is not None:
            return self.w_comp.to(k.device), self.w_decomp.to(k.device)
        key = (k.shape[2], str(k.device))
        if key not in self._default:
            with torch.inference_mode(False):  # cached: usable by later calls in any mode
                p = segment_basis(k.shape[2], self.params["rank"], k.device)
                self._default[key] = (p, p.T.contiguous())
        return self._default[key]

    # -- operator -------------------------------------------------------------------------
    def _prepare(self, k, v, key_mask):
        w_comp, w_decomp = self._projection(k, key_mask)
        kz = zero_padded(k.float(), key_mask)
        c = torch.matmul(kz.transpose(-1, -2), w_comp) * inv_sqrt(k.shape[-1])  # [B,H,d,r]
        vz = zero_padded(v.float(), key_mask)
        bv = torch.matmul(w_decomp, vz)  # [B,H,r,dv]
        gamma = torch.ones_like(c[..., :1, :])
        if self.params["form"] == "absorbed":
            gamma = balance_gamma(c, bv)
            c, bv = c * gamma, bv / gamma.transpose(-1, -2)
        return LreaState(
            **self._base_state_kwargs(k, v, key_mask),
            c=c.to(k.dtype),
            bv=bv.to(k.dtype),
            gamma=gamma,
            w_decomp=w_decomp,
            v=v,
            k=k,
        )

    def _phi(self, x):
        return F.leaky_relu(x, negative_slope=self.params["slope"])

    def _decomp(self, state: LreaState, dtype) -> torch.Tensor:
        """W_decomp with padded positions zeroed per user: [B,1,r,N]."""
        w = state.w_decomp.to(dtype)[None, None]
        if state.key_mask is not None:
            w = w * state.key_mask[:, None, None, :].to(dtype)
        return w

    def _attend(self, state: LreaState, q, causal):
        if (
            self._backend(q, state) == "triton"
        ):  # absorbed form (the training form resolves to torch)
            from .kernels.row_mlp import lrea_attend

            return lrea_attend(q, state.c, state.bv, state.empty_users, self.params["slope"])
        a = torch.matmul(q, state.c)  # [B,H,M,r]
        if self.params["form"] == "absorbed":
            out = torch.matmul(self._phi(a), state.bv)
        else:
            s = torch.matmul(a, self._decomp(state, q.dtype))
            out = torch.matmul(self._phi(s), zero_padded(state.v, state.key_mask))
        return zero_empty_users(out, state.empty_users)

    def _implied_weights_chunk(self, state: LreaState, q, row_offset, causal):
        a = torch.matmul(q.float(), state.c.float()) / state.gamma
        w = self._decomp(state, torch.float32)
        if self.params["form"] == "absorbed":
            return torch.matmul(self._phi(a), w)
        return self._phi(torch.matmul(a, w))

    @torch.no_grad()
    def absorption_error(self, state: LreaState, q: torch.Tensor) -> float:
        """||phi(a W) - phi(a) W||_F / ||phi(a W)||_F over all users, heads and queries."""
        a = torch.matmul(q.float(), state.c.float()) / state.gamma
        w = self._decomp(state, torch.float32)
        exact = self._phi(torch.matmul(a, w))
        absorbed = torch.matmul(self._phi(a), w)
        return float((exact - absorbed).norm() / exact.norm().clamp_min(1e-30))

    @torch.no_grad()
    def uncompressed_error(self, state: LreaState, q: torch.Tensor) -> float:
        """Relative output error against LeakyReLU attention over the uncompressed keys."""
        ref = leaky_attention(q, state.k, state.v, state.key_mask, self.params["slope"])
        out = self._attend(state, q, False).float()
        return float((out - ref).norm() / ref.norm().clamp_min(1e-30))

    def cost_prepare(self, shape, dtype=torch.float32):
        n, d, dv, r, es = (
            shape.n,
            shape.d,
            shape.value_dim,
            self.params["rank"],
            element_size(dtype),
        )
        flops = shape.bh * (2 * n * d * r + 2 * n * r * dv)  # no fit: serving never refits
        return Cost(
            float(flops), float(shape.bh * es * (n * (d + dv) + r * (d + dv))), 0.0
        )  # no exp: LeakyReLU

    def cost_attend(self, shape, dtype=torch.float32):
        m, n, d, dv, r, es = (
            shape.m,
            shape.n,
            shape.d,
            shape.value_dim,
            self.params["rank"],
            element_size(dtype),
        )
        if self.params["form"] == "absorbed":
            flops = 2 * m * d * r + m * r + 2 * m * r * dv
            nbytes = es * (m * d + d * r + r * dv + m * dv)
        else:
            flops = 2 * m * d * r + 2 * m * r * n + m * n + 2 * m * n * dv
            nbytes = es * (m * d + d * r + r * n + n * dv + m * dv)
        return Cost(float(shape.bh * flops), float(shape.bh * nbytes), 0.0)

    def memory_model(self, shape, dtype=torch.float32):
        r, es = self.params["rank"], element_size(dtype)
        extra = es * shape.m * (r + shape.value_dim)
        if self.params["form"] == "training":
            extra += es * shape.m * shape.n
        return float(shape.bh * (4 * shape.n * (shape.d + shape.value_dim) + extra))


def normal_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a clone outside inference mode when ``t`` is an inference tensor."""
    if not t.is_inference():
        return t
    with torch.inference_mode(False):
        return t.clone()


def balance_gamma(c: torch.Tensor, bv: torch.Tensor) -> torch.Tensor:
    """Per (user, head, rank column) power of two g with max|C g| ~ max|W_decomp V / g|.

    LeakyReLU is positively homogeneous, phi(a g) / g = phi(a) for g > 0, so the absorbed
    output phi(q C g) (W_decomp V / g) is unchanged while neither factor carries the whole
    scale (W_decomp V grows like sqrt(N) |V| and overflowed fp16 at |V| ~ 1e3). [B,H,1,r]"""
    cmax = c.abs().amax(dim=-2, keepdim=True)  # [B,H,1,r]
    bmax = bv.abs().amax(dim=-1).unsqueeze(-2)  # [B,H,1,r]
    ok = (cmax > 0) & (bmax > 0)
    ratio = torch.where(
        ok, bmax / torch.where(ok, cmax, torch.ones_like(cmax)), torch.ones_like(cmax)
    )
    return torch.exp2(torch.round(torch.log2(ratio) / 2))


def leaky_attention(q, k, v, key_mask, slope: float) -> torch.Tensor:
    """Plain reference: LeakyReLU(q k^T / sqrt(d)) v over all real behaviours, fp32."""
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * inv_sqrt(k.shape[-1])
    w = F.leaky_relu(s, negative_slope=slope)
    if key_mask is not None:
        w = w * key_mask[:, None, None, :].float()
    return torch.matmul(w, v.float())
