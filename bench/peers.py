"""``python -m bench peers``: each operator side by side with the best public implementation
of the same job (issue 11), in one interleaved run timed by thread CPU time.

Pairs (ours vs peer):
- ``performer`` forward vs performer-pytorch (its ``softmax_kernel`` + ``linear_attention``,
  the body of ``FastAttention.forward``) fed the same projection matrix, eps = 0 on both sides;
- causal ``linrec`` (self-attention, M = N) vs flash-linear-attention's torch reference
  (``fla.ops.linear_attn.naive.naive_chunk_linear_attn``) fed the same feature map;
- ``linrec`` forward vs the LinRec authors' attention core written out here (two readings of
  the key normalisation, see ``linrec_core``);
- ``svd_exact`` prepare (default solver) vs a plain fp32 Gram + eigh + U = X W / S.

Peers that are not installed are rows with status ``skipped`` and the reason. Timing: each
round runs every callable once, pairs in a rotated order and inside each pair ours first in
half the rounds and the peer first in the other half (``interleaved_thread_times``; the
earlier fixed order ran every peer right after ours, on the inputs ours had just read), on one
torch thread (thread CPU time only
counts the calling thread); the ratio is the geometric mean of the per-round ratios ours/peer
with a 95 % t-interval on their logs (scipy). Outputs: max |ours - peer| and that over max |peer|.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import attention_impls as ai

COLUMNS = [
    "pair",
    "ours",
    "peer",
    "status",
    "reason",
    "phase",
    "n",
    "m",
    "d",
    "bh",
    "rounds",
    "ours_ms",
    "peer_ms",
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "max_abs_diff",
    "max_rel_diff",
    "tolerance",
    "agree",
    "seed",
    "machine",
    "torch",
    "timing",
    "malloc_tuning",
]


@dataclass
class Pair:
    """One comparison. ``ours``/``peer`` are zero-argument callables returning the output
    tensor (None with ``status`` and ``reason`` when a side cannot run)."""

    name: str
    ours_label: str
    peer_label: str
    phase: str
    tolerance: float
    ours: Callable[[], torch.Tensor] | None = None
    peer: Callable[[], torch.Tensor] | None = None
    status: str = "ok"
    reason: str = ""
    out_ours: Callable[[], torch.Tensor] | None = field(
        default=None
    )  # output to compare, if not ours()
    out_peer: Callable[[], torch.Tensor] | None = field(default=None)


def machine_name() -> str:
    """CPU model, visible cores and the 1-minute load average, in words."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {cores} visible core(s), load {load:.2f}"


def interleaved_thread_times(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, warm_each: bool = False
) -> dict[str, list[float]]:
    """Thread CPU seconds of each callable per round, in an order that favours no callable.

    Callables named ``group:side`` (``linrec:ours``, ``linrec:peer``) form a group; a name
    without ``:`` is its own group. Round i runs the groups from group i mod G on, and inside
    group g the sides from side (i + g) mod S on: with two sides each runs first (after
    another group's inputs were in cache) in half the rounds and second (right after the
    other side read the same inputs) in the other half. ``warm_each``: every timed call
    follows an untimed call of the same callable, so each is timed with its own inputs in
    cache, whatever ran before."""
    groups: dict[str, list[str]] = {}
    for name in fns:
        groups.setdefault(name.split(":", 1)[0], []).append(name)
    members = list(groups.values())
    for _ in range(warmup):
        for name in fns:
            fns[name]()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(rounds):
        for j in range(len(members)):
            g = (i + j) % len(members)
            group = members[g]
            for s in range(len(group)):
                name = group[(i + g + s) % len(group)]
                if warm_each:
                    fns[name]()
                t0 = time.thread_time()
                fns[name]()
                out[name].append(time.thread_time() - t0)
    return out


def ratio_interval(
    ours: list[float], peer: list[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Geometric mean of ours_i / peer_i with a t-interval on the log ratios (rounds pair up:
    both ran in the same round). NaN interval with fewer than 2 rounds."""
    from scipy import stats

    logs = [math.log(max(a, 1e-9) / max(b, 1e-9)) for a, b in zip(ours, peer, strict=True)]
    mean = sum(logs) / len(logs)
    if len(logs) < 2:
        return math.exp(mean), float("nan"), float("nan")
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(logs) - 1)) * sd / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def max_diffs(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = float((a.double() - b.double()).abs().max())
    return diff, diff / max(float(b.double().abs().max()), 1e-30)


def linrec_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_axis: int) -> torch.Tensor:
    """The attention core of LinRec (Liu et al., SIGIR 2023, arXiv 2411.01537; the authors'
    RecBole-based code): ELU on Q and K, L2 normalisation of Q over the feature axis and of K
    over ``key_axis`` (-2: the sequence axis, as the paper's column-wise normalisation of K;
    -1: the feature axis, the reading this suite's ``linrec`` implements, DESIGN.md), then
    Q (K^T V) / sqrt(d). Written out here from the formula, no code copied."""
    qn = F.normalize(F.elu(q), p=2.0, dim=-1, eps=1e-12)
    kn = F.normalize(F.elu(k), p=2.0, dim=key_axis, eps=1e-12)
    return torch.matmul(qn, torch.matmul(kn.transpose(-1, -2), v)) / math.sqrt(q.shape[-1])


def plain_gram_eigh(x: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The peer baseline of ``svd_exact`` prepare: fp32 Gram, eigh, U = X W / S (top r)."""
    lam, w = torch.linalg.eigh(torch.matmul(x.transpose(-1, -2), x))
    s = lam.flip(-1)[..., :r].clamp_min(0).sqrt()
    w = w.flip(-1)[..., :r]
    u = torch.matmul(x, w) / s.clamp_min(torch.finfo(x.dtype).tiny)[..., None, :]
    return u, s, w.transpose(-1, -2)


def _inputs(n: int, m: int, d: int, bh: int, rank: int, seed: int):
    """Synthetic fp32 inputs: q [1,bh,m,d]; K, V with [K|V] of exact rank ``rank`` (the
    svd_exact regime; the other pairs do not depend on rank)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, bh, m, d, generator=g)
    left = torch.randn(1, bh, n, rank, generator=g)
    right = torch.randn(1, bh, rank, 2 * d, generator=g) / math.sqrt(rank)
    x = torch.matmul(left, right)
    return q, x[..., :d].contiguous(), x[..., d:].contiguous()


def build_pairs(n: int, m: int, d: int, bh: int, rank: int, features: int, seed: int) -> list[Pair]:
    q, k, v = _inputs(n, m, d, bh, rank, seed)
    pairs: list[Pair] = []

    # Performer vs performer-pytorch: same projection matrix, eps = 0 on both sides. The
    # peer's FastAttention hard-codes eps = 1e-4 and adds it after another key stabiliser (max
    # of w.x instead of ours, max of w.x - |x|^2/2), so two eps floors are two functions
    # (measured: 48x the output scale apart at N = 4096, m = 256); with eps = 0 both are
    # FAVOR+ exactly. The peer runs its own softmax_kernel + linear_attention, the body of
    # FastAttention.forward.
    perf = ai.get("performer", features=features, seed=seed, eps=0.0)
    label = f"performer[m={features},eps=0] forward"
    try:
        from performer_pytorch.performer_pytorch import linear_attention, softmax_kernel
    except ImportError as exc:
        pairs.append(
            Pair(
                "performer",
                label,
                "performer-pytorch",
                "forward",
                1e-4,
                status="skipped",
                reason=f"performer-pytorch not installed ({exc})",
            )
        )
    else:
        omega = perf.features_for(d)

        def peer_performer() -> torch.Tensor:
            qp = softmax_kernel(q, projection_matrix=omega, is_query=True, eps=0.0)
            kp = softmax_kernel(k, projection_matrix=omega, is_query=False, eps=0.0)
            return linear_attention(qp, kp, v)

        pairs.append(
            Pair(
                "performer",
                label,
                "performer-pytorch softmax_kernel + linear_attention (same features)",
                "forward",
                1e-4,
                ours=lambda: perf.forward(q, k, v),
                peer=peer_performer,
            )
        )

    # causal LinRec vs fla's torch reference of chunked causal linear attention: the same job
    # (o_t = sum_{s<=t} (q^_t . k^_s) v_s / sqrt(d)) once both sides use LinRec's feature map
    # rownorm(elu(.)); the peer gets the mapped features (the map's time counted on its side)
    # in its [B, T, H, D] layout with T a multiple of its 64-row chunk
    lin_c = ai.get("linrec", backend="torch")
    try:
        from fla.ops.linear_attn.naive import naive_chunk_linear_attn
    except ImportError as exc:
        pairs.append(
            Pair(
                "causal_linear",
                "linrec causal forward",
                "fla naive_chunk_linear_attn",
                "forward",
                1e-4,
                status="skipped",
                reason=f"flash-linear-attention (fla) not importable ({exc})",
            )
        )
    else:
        t = (n // 64) * 64
        ks, vs = k[:, :, :t].contiguous(), v[:, :, :t].contiguous()
        qs = torch.randn(
            ks.shape, generator=torch.Generator().manual_seed(seed + 1)
        )  # synthetic queries

        def peer_causal() -> torch.Tensor:
            def fmap(x: torch.Tensor) -> torch.Tensor:
                return F.normalize(F.elu(x), p=2.0, dim=-1, eps=1e-12).transpose(1, 2)

            o = naive_chunk_linear_attn(fmap(qs), fmap(ks), vs.transpose(1, 2), scale=d**-0.5)
            return o.transpose(1, 2)

        pairs.append(
            Pair(
                "causal_linear",
                "linrec causal forward (self-attention, M = N)",
                "fla.ops.linear_attn.naive.naive_chunk_linear_attn (same feature map)",
                "forward",
                1e-4,
                ours=lambda: lin_c.forward(qs, ks, vs, causal=True),
                peer=peer_causal,
                reason=f"N = {t} queries over N keys",
            )
        )

    # LinRec vs the authors' core (both readings of K's normalisation axis)
    lin = ai.get("linrec", backend="torch")
    pairs.append(
        Pair(
            "linrec",
            "linrec forward",
            "LinRec core, K normalised over features (suite's reading)",
            "forward",
            1e-5,
            ours=lambda: lin.forward(q, k, v),
            peer=lambda: linrec_core(q, k, v, -1),
        )
    )
    pairs.append(
        Pair(
            "linrec_unchecked",
            "linrec attend_unchecked(prepare_unchecked)",
            "LinRec core, K normalised over features (suite's reading)",
            "forward",
            1e-5,
            ours=lambda: lin.attend_unchecked(lin.prepare_unchecked(k, v, None), q, False),
            peer=lambda: linrec_core(q, k, v, -1),
            reason="without input validation (the harness times this path)",
        )
    )
    pairs.append(
        Pair(
            "linrec_seq_axis",
            "linrec forward",
            "LinRec core, K normalised over the sequence (paper)",
            "forward",
            1e-5,
            ours=lambda: lin.forward(q, k, v),
            peer=lambda: linrec_core(q, k, v, -2),
            reason="another operator: keys normalised over the sequence, not over features as the "
            "suite's linrec (DESIGN.md) does; timing of the same-cost core, outputs differ",
        )
    )

    # svd_exact prepare vs a plain fp32 Gram + eigh: compare the reconstructions of [K|V]
    svd = ai.get("svd_exact", rank=rank)
    x = torch.cat([k, v], dim=-1)

    def ours_rec() -> torch.Tensor:
        st = svd.prepare(k, v)
        return torch.cat([st.u @ st.a, st.u @ st.b], dim=-1)

    def peer_rec() -> torch.Tensor:
        u, s, wt = plain_gram_eigh(x, rank)
        return (u * s[..., None, :]) @ wt

    pairs.append(
        Pair(
            "svd_prepare",
            f"svd_exact[rank={rank},solver=gram] prepare",
            "plain fp32 Gram + eigh + U = XW/S",
            "prepare",
            1e-5,
            ours=lambda: svd.prepare(k, v),
            peer=lambda: plain_gram_eigh(torch.cat([k, v], -1), rank),
            out_ours=ours_rec,
            out_peer=peer_rec,
        )
    )
    pairs.append(
        Pair(
            "svd_prepare_unchecked",
            f"svd_exact[rank={rank},solver=gram] prepare_unchecked",
            "plain fp32 Gram + eigh + U = XW/S",
            "prepare",
            1e-5,
            ours=lambda: svd.prepare_unchecked(k, v, None),
            peer=lambda: plain_gram_eigh(torch.cat([k, v], -1), rank),
            out_ours=ours_rec,
            out_peer=peer_rec,
            reason="without input validation (the harness times this path)",
        )
    )
    return pairs


def run_peers(
    n: int = 4096,
    m: int = 256,
    d: int = 64,
    bh: int = 1,
    rank: int = 16,
    features: int = 256,
    rounds: int = 11,
    seed: int = 0,
    warm_each: bool = False,
    note: str = "",
    malloc: str = "tuned",
) -> list[dict]:
    """Build the pairs, time every runnable callable in one interleaved run, return table rows
    (``warm_each``: see ``interleaved_thread_times``; ``malloc``: ``tuned`` tunes glibc malloc
    first, as the harness's CPU runs do, for both sides alike; ``default`` leaves it as the
    process started)."""
    tuning = malloc_state(malloc)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            pairs = build_pairs(n, m, d, bh, rank, features, seed)
            fns = {}
            for p in pairs:
                if p.status == "ok":
                    fns[f"{p.name}:ours"] = p.ours
                    fns[f"{p.name}:peer"] = p.peer
            times = interleaved_thread_times(fns, rounds, warm_each=warm_each) if fns else {}
            machine = machine_name() + (f"; {note}" if note else "")
            rows = []
            for p in pairs:
                row = {c: None for c in COLUMNS}
                row.update(
                    pair=p.name,
                    ours=p.ours_label,
                    peer=p.peer_label,
                    status=p.status,
                    reason=p.reason,
                    phase=p.phase,
                    n=n,
                    m=m,
                    d=d,
                    bh=bh,
                    rounds=rounds,
                    tolerance=p.tolerance,
                    seed=seed,
                    machine=machine,
                    torch=torch.__version__,
                    timing="warm" if warm_each else "alternated",
                    malloc_tuning=tuning,
                )
                if p.status == "ok":
                    to, tp = times[f"{p.name}:ours"], times[f"{p.name}:peer"]
                    ratio, lo, hi = ratio_interval(to, tp)
                    a = (p.out_ours or p.ours)()
                    b = (p.out_peer or p.peer)()
                    mad, mrd = max_diffs(a, b)
                    row.update(
                        ours_ms=_median(to) * 1e3,
                        peer_ms=_median(tp) * 1e3,
                        ratio=ratio,
                        ratio_lo=lo,
                        ratio_hi=hi,
                        max_abs_diff=mad,
                        max_rel_diff=mrd,
                        agree=bool(mrd <= p.tolerance),
                    )
                rows.append(row)
            return rows
    finally:
        torch.set_num_threads(threads)


MALLOC_CHOICES = ("tuned", "default")


def malloc_state(malloc: str) -> str:
    """Apply ``malloc`` (``tuned``: glibc's mmap/trim thresholds raised, as the harness does on
    CPU; ``default``: untouched) and say what the process runs with. glibc has no reset, so a
    process tuned earlier says so whatever is asked."""
    from attention_impls.allocator import malloc_tuning, tune_glibc_malloc

    if malloc not in MALLOC_CHOICES:
        raise ValueError(f"malloc must be one of {MALLOC_CHOICES}, got {malloc!r}")
    done = malloc_tuning()
    if done is not None:
        return f"on: {done.describe()}"
    if malloc == "default":
        return "off: glibc defaults"
    t = tune_glibc_malloc()
    return ("on: " if t.applied else "off: ") + t.describe()


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    k = len(s)
    return s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])


TIMING_WORDS = {
    "alternated": "pairs in rotated order, and within each pair ours first in half the rounds "
    "and the peer first in the other half",
    "rotated": "rotated order: each pair's ours runs after the previous pair's peer, its peer "
    "after ours",
    "warm": "--warm: each timed call right after an untimed call of itself",
}


def to_markdown(rows: list[dict]) -> str:
    head = rows[0] if rows else {}
    ns = sorted({int(r["n"]) for r in rows})
    lines = [
        "# Side by side with public implementations (`python -m bench peers`)",
        "",
        f"Machine: {head.get('machine')}; torch {head.get('torch')}; one torch thread; thread CPU time, "
        f"{head.get('rounds')} interleaved rounds ({TIMING_WORDS.get(head.get('timing'), str(head.get('timing')))}); "
        f"synthetic fp32 inputs (seed {head.get('seed')}), "
        f"N = {', '.join(map(str, ns))}, M = {head.get('m')}, d = dv = {head.get('d')}, B x H = {head.get('bh')}. "
        f"malloc tuning {head.get('malloc_tuning')}. "
        "Ratio = geometric mean of per-round ours/peer, 95 % t-interval. Rel diff = max |ours - peer| / "
        "max |peer|.",
        "",
        "| pair | N | ours | peer | status | ours ms | peer ms | ours/peer [95 % CI] | max abs diff | "
        "max rel diff | agree (tol) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = r.get("reason") or ""
        note = "" if not isinstance(note, str) else note
        if r["status"] != "ok":
            lines.append(
                f"| {r['pair']} | {r['n']} | {r['ours']} | {r['peer']} | {r['status']} | | | | | | | {note} |"
            )
            continue
        lines.append(
            f"| {r['pair']} | {r['n']} | {r['ours']} | {r['peer']} | ok | {r['ours_ms']:.3g} | {r['peer_ms']:.3g} | "
            f"{r['ratio']:.2f} [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}] | {r['max_abs_diff']:.2g} | "
            f"{r['max_rel_diff']:.2g} | {'yes' if r['agree'] else 'NO'} ({r['tolerance']:g}) | {note} |"
        )
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """results/<device>/peers.md and peers.csv."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "peers.md", out / "peers.csv"
    md.write_text(to_markdown(rows))
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, index=False)
    return md, csv
