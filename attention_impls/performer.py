"""Performer / FAVOR+ (arXiv 2009.14794): positive random features for the softmax kernel.

    x' = x d^-1/4,   phi(x) = m^-1/2 (exp(w_i . x' - ||x'||^2 / 2 - c) + eps)
    O  = D^-1 phi(Q) (phi(K)^T V),   D = phi(Q) (phi(K)^T 1)

Stabilisers: c = the row max over features for each query (cancels in D^-1), and one max
over all real keys and features per (user, head) for the keys (cancels between numerator
and denominator). eps is the floor of each feature (after the stabilisers each exp(.) lies in
(0, 1]); the denominator is guarded. Default ``eps="auto"`` = 1e-2 (256 / m)^2, chosen by
measured KL across input scales (``bench/probe_performer.py``, docs/operators.md). Without autograd, ``prepare`` and
``attend`` build the features in place in one [L, m] buffer (``key_state_inplace``,
``query_features_inplace``); with ``requires_grad`` they run the out-of-place reference.
Features: ``orthogonal`` (blocks of orthogonal rows with chi-distributed norms) or iid
Gaussian, drawn from a CPU generator seeded with ``seed`` so the draw is the same on every
device. ``redraw``: ``fixed`` (one draw per head dim, reused) or ``per_prepare`` (a new
draw for every prepared state, seed advancing deterministically). Feature maps run in fp32;
the per-user state is divided by the user's number of real behaviours so it stays in range
in fp16/bf16. Cost O((N + M) m d).

``backend``: ``torch`` = the code below (the reference); ``triton`` = feature map, both
products and the division in one fused kernel (``kernels/row_mlp.py``); ``auto`` = triton
on CUDA when Triton imports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import causal_linear
from .base import AttentionOperator, BaseState, Cost, element_size, zero_empty_users
from .registry import register
from .validate import check_choice, check_float, check_int, check_seed

REDRAW = ("fixed", "per_prepare")
# Upper bound on ``features`` (m). The estimator's variance falls like 1/m, so beyond a few
# thousand features the random-feature error is below bf16 rounding, while the cost grows
# like m: at m = 65536 one head's [N, m] fp32 feature map at N = 16384 is 4 GiB, and the
# 10**7 of issue 12 ran for minutes. Above the bound, use dense attention instead.
FEATURES_MAX = 65536
# Default floor ``eps="auto"``: EPS_AT_256 * (256 / features)^2 (at most 1), chosen by measured
# KL to softmax (docs/operators.md, "Performer's eps"; ``python -m bench.probe_performer``).
# The floor shrinks the noisy random-feature estimate towards a query-independent one. At
# m = 256, d = 64 (20 seeds, query scales 0.25-2, full-rank and rank-16 keys) 1e-6, the old
# default, gave 1.4-11x the best KL, and 1e-2 was within 2.5 % of the best measured eps at
# every scale and at or below performer-pytorch's (eps 1e-4 with a larger, norm-dependent
# effective floor) to within one standard error. The best floor falls as m grows, faster
# than 1/m where the estimate is informative: a fixed 1e-2 made the KL rise from m = 128 to
# 8192 on a d = 16 case, and at m = 1024, d = 64, 6.25e-4 beat 2.5e-3 (the 1/m rule) in 6 of
# 8 settings and tied in 2.
EPS_AT_256 = 1e-2
EPS_DEFAULT = "auto"


def resolve_eps(eps: float | str, features: int) -> float:
    """The floor a Performer with ``features`` random features uses for ``eps``."""
    return min(EPS_MAX, EPS_AT_256 * (256 / features) ** 2) if eps == "auto" else float(eps)


# Upper bound on ``eps``: after the stabilisers every feature exp(.) lies in (0, 1], so a
# floor above 1 would swamp the features it guards (the estimate tends to the plain mean).
EPS_MAX = 1.0


def draw_features(m: int, d: int, orthogonal: bool, seed: int) -> torch.Tensor:
    """[m, d] random projection in fp32 on the CPU (move it to the device afterwards)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if not orthogonal:
        return torch.randn(m, d, generator=gen)
    blocks = []
    for _ in range(-(-m // d)):
        g = torch.randn(d, d, generator=gen)
        qmat, _ = torch.linalg.qr(g)
        blocks.append(qmat.T)
    w = torch.cat(blocks, dim=0)[:m]
    norms = torch.randn(m, d, generator=gen).norm(dim=1)
    return w * norms[:, None]


def feature_logits(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """w_i . x' - ||x'||^2 / 2 with x' = x d^-1/4, in fp32: [..., L, m]."""
    d = x.shape[-1]
    xs = x.float() * d**-0.25
    return torch.matmul(xs, omega.T) - 0.5 * (xs * xs).sum(dim=-1, keepdim=True)


def query_features(q: torch.Tensor, omega: torch.Tensor, eps: float) -> torch.Tensor:
    z = feature_logits(q, omega)
    z = z - z.amax(dim=-1, keepdim=True)
    return (torch.exp(z) + eps) * omega.shape[0] ** -0.5


def key_stabiliser(z: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """One max over all real keys and features per (user, head): [B,H,1,1]."""
    if key_mask is not None:
        z = z.masked_fill(~key_mask[:, None, :, None], float("-inf"))
    c = z.amax(dim=(-1, -2), keepdim=True)
    return torch.where(torch.isfinite(c), c, torch.zeros_like(c))


def key_features(k: torch.Tensor, omega: torch.Tensor, eps: float, key_mask, c=None):
    z = feature_logits(k, omega)
    if c is None:
        c = key_stabiliser(z, key_mask)
    phi = (torch.exp(z - c) + eps) * omega.shape[0] ** -0.5
    if key_mask is not None:  # where, not a product: a padded key's exp(z - c) may be inf
        phi = phi.masked_fill(~key_mask[:, None, :, None], 0.0)
    return phi, c


def _needs_grad(*ts: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def key_state_inplace(
    k: torch.Tensor,
    v: torch.Tensor,
    omega: torch.Tensor,
    eps: float,
    key_mask: torch.Tensor | None,
    inv_n: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kv, ksum, c) of ``key_features`` without its temporaries (no autograd: in place).

    One [N, m] buffer is made (the logits) and every later step overwrites it; d^-1/4 is
    folded into omega, and m^-1/2 and 1/n_real into the small [m, dv] and [m] results
    instead of the [N, m] features. Equal to the reference up to rounding."""
    d, m = k.shape[-1], omega.shape[0]
    kf = k.float()
    z = torch.matmul(kf, (omega * d**-0.25).T)  # [B,H,N,m]: the only [N, m] buffer
    z.sub_((kf * kf).sum(dim=-1, keepdim=True).mul_(0.5 * d**-0.5))
    if key_mask is not None:
        z.masked_fill_(~key_mask[:, None, :, None], float("-inf"))
    c = z.amax(dim=(-1, -2), keepdim=True)
    c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    phi = z.sub_(c).exp_().add_(eps)  # padded keys: exp(-inf) + eps, zeroed next
    if key_mask is not None:
        phi.masked_fill_(~key_mask[:, None, :, None], 0.0)
    scale = inv_n * m**-0.5  # [B,1,1,1]
    kv = torch.matmul(phi.transpose(-1, -2), v.float()).mul_(scale)
    ksum = phi.sum(dim=-2).mul_(scale[..., 0])
    return kv, ksum, c


def query_features_inplace(q: torch.Tensor, omega: torch.Tensor, eps: float) -> torch.Tensor:
    """``query_features`` in one [M, m] buffer (no autograd)."""
    d, m = q.shape[-1], omega.shape[0]
    z = torch.matmul(q.float(), (omega * d**-0.25).T)
    z.sub_(z.amax(dim=-1, keepdim=True))  # the row's norm term cancels against its max
    return z.exp_().add_(eps).mul_(m**-0.5)


@dataclass
class PerformerState(BaseState):
    omega: torch.Tensor = None  # type: ignore[assignment]  [m, d] fp32
    kv: torch.Tensor = None  # type: ignore[assignment]     [B,H,m,dv] working dtype, / n_real
    ksum: torch.Tensor = None  # type: ignore[assignment]   [B,H,m] fp32, / n_real
    key_max: torch.Tensor = None  # type: ignore[assignment]  [B,H,1,1] key stabiliser
    k: torch.Tensor = None  # type: ignore[assignment]      reference to keys (evaluation only)
    v: torch.Tensor = None  # type: ignore[assignment]      reference to values (causal form)


@register
class PerformerAttention(AttentionOperator):
    name = "performer"
    PARAMS = {
        "features": 256,
        "orthogonal": True,
        "seed": 0,
        "redraw": "fixed",
        "eps": EPS_DEFAULT,
        "backend": "auto",
    }
    supports_causal = (
        True  # causal form: chunked prefix sums, prefix-max stabiliser (causal_linear.py)
    )
    causal_kernel = False  # the Triton kernel is the non-causal form only
    weights_are_distribution = True
    description = "FAVOR+ positive orthogonal random features for the softmax kernel"

    def __init__(self, **params):
        super().__init__(**params)
        self._draws = 0
        self._cache: dict[tuple[int, str], torch.Tensor] = {}

    def label_params(self):
        return ("features",)

    def _validate_params(self):
        check_int(self.name, "features", self.params["features"], 1, FEATURES_MAX)
        check_choice(self.name, "redraw", self.params["redraw"], REDRAW)
        if not isinstance(self.params["orthogonal"], bool):
            raise ValueError(
                f"{self.name}: orthogonal must be True or False, got {self.params['orthogonal']!r}"
            )
        eps = self.params["eps"]
        if eps != "auto":
            if isinstance(eps, str):
                raise ValueError(f"{self.name}: eps must be 'auto' or a number, got {eps!r}")
            check_float(self.name, "eps", eps, 0.0, EPS_MAX)
        self.eps: float = min(EPS_MAX, resolve_eps(eps, self.params["features"]))
        # per_prepare advances the seed by one per state: keep seed + draws inside 64 bits
        check_seed(self.name, self.params["seed"])

    def features_for(self, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The projection the next prepare() will use (fixed policy: always the same)."""
        p = self.params
        if p["redraw"] == "per_prepare":
            return draw_features(p["features"], d, p["orthogonal"], p["seed"] + self._draws).to(
                device
            )
        key = (d, str(device))
        if key not in self._cache:
            self._cache[key] = draw_features(p["features"], d, p["orthogonal"], p["seed"]).to(
                device
            )
        return self._cache[key]

    def _prepare(self, k, v, key_mask):
        omega = self.features_for(k.shape[-1], k.device)
        if self.params["redraw"] == "per_prepare":
            self._draws += 1
        if key_mask is None:
            n_real = torch.full((k.shape[0],), float(k.shape[2]), device=k.device)
        else:
            n_real = key_mask.sum(dim=1).float().clamp_min(1.0)
        inv_n = (1.0 / n_real)[:, None, None, None]
        if not _needs_grad(k, v):  # serving: in place, one [N, m] buffer
            kv, ksum, c = key_state_inplace(k, v, omega, self.eps, key_mask, inv_n)
        else:  # autograd: the out-of-place reference
            phi_k, c = key_features(k, omega, self.eps, key_mask)
            kv = torch.matmul(phi_k.transpose(-1, -2), v.float()) * inv_n
            ksum = phi_k.sum(dim=-2) * inv_n[..., 0]
        return PerformerState(
            **self._base_state_kwargs(k, v, key_mask),
            omega=omega,
            kv=kv.to(k.dtype),
            ksum=ksum,
            key_max=c,
            k=k,
            v=v,
        )

    def _attend(self, state: PerformerState, q, causal):
        if causal:  # torch only (no kernel): prefix sums over the past
            return causal_linear.performer_causal(
                q, state.k, state.v, state.key_mask, state.omega, self.eps
            )
        if self._backend(q, state) == "triton":
            from .kernels.row_mlp import performer_attend

            return performer_attend(
                q, state.omega, state.kv, state.ksum, state.empty_users, self.eps
            )
        feats = query_features if _needs_grad(q) else query_features_inplace
        phi_q = feats(q, state.omega, self.eps).to(q.dtype)
        num = torch.matmul(phi_q, state.kv)
        # the denominator uses the same rounded features as the numerator: in fp16 the eps
        # floors are subnormal and round away, and a numerator without them over an fp32
        # denominator with them was 0.2 off at large logits
        den = torch.matmul(phi_q.float(), state.ksum[..., None])  # fp32 [B,H,M,1]
        den = torch.where(
            den > 0, den, torch.ones_like(den)
        )  # not clamp(tiny): a subnormal den is valid
        out = (num.float() / den).to(q.dtype)
        return zero_empty_users(out, state.empty_users)

    def _implied_weights_chunk(self, state: PerformerState, q, row_offset, causal):
        eps = self.eps
        if causal:
            return causal_linear.performer_causal_weights(
                q, state.k, state.key_mask, state.omega, eps, row_offset
            )
        phi_q = query_features(q, state.omega, eps)
        # the stabiliser of these logits, not state.key_max: prepare's in-place logits round
        # differently, and at |x'|^2 ~ 1e9 (fp16 keys ~ 3e4) the two differ by hundreds, so
        # exp(z - key_max) overflowed (a hypothesis case, intermittently: BLAS rounding varies)
        phi_k, _ = key_features(state.k, state.omega, eps, state.key_mask)
        w = torch.matmul(phi_q, phi_k.transpose(-1, -2))
        total = w.sum(dim=-1, keepdim=True)
        return w / torch.where(total > 0, total, torch.ones_like(total))

    def cost_prepare(self, shape, dtype=torch.float32):
        n, d, dv, m, es = (
            shape.n,
            shape.d,
            shape.value_dim,
            self.params["features"],
            element_size(dtype),
        )
        flops = 2 * n * d * m + 4 * n * m + 2 * n * m * dv + n * m
        nbytes = es * n * (d + dv) + es * m * dv + 4 * m
        return Cost(
            float(shape.bh * flops), float(shape.bh * nbytes), float(shape.bh * n * m)
        )  # exp of N x m logits

    def cost_attend(self, shape, dtype=torch.float32):
        if shape.causal:  # prefix sums over the past (causal_linear.py)
            return Cost(*causal_linear.performer_causal_cost(shape, self.params["features"], dtype))
        mm, d, dv, m, es = (
            shape.m,
            shape.d,
            shape.value_dim,
            self.params["features"],
            element_size(dtype),
        )
        flops = 2 * mm * d * m + 4 * mm * m + 2 * mm * m * dv + 2 * mm * m + mm * dv
        nbytes = (
            es * (mm * d + m * dv + mm * dv) + 4 * m
        )  # q, state kv, out + the fp32 ksum (was missing)
        return Cost(
            float(shape.bh * flops), float(shape.bh * nbytes), float(shape.bh * mm * m)
        )  # exp of M x m logits

    def memory_model(self, shape, dtype=torch.float32):
        m = self.params["features"]
        return float(shape.bh * 4 * (2 * shape.n * m + 2 * shape.m * m + shape.m * shape.value_dim))
