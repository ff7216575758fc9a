"""Ad-hoc probe (issue 11): would torch.compile (inductor's C++ CPU code) make LinRec's checked
prepare as cheap as its unchecked one? Times, in thread CPU time, one process, one thread,
interleaved rounds: the suite's unchecked prepare, its checked prepare (``_prepare_witnessed``:
K's sum, 1 / the smallest row norm, ||K^T V||), and one compiled function computing the same
K^T V and the same witnesses (ELU, row norm, division and K's sum fused by inductor). Synthetic
inputs of ``bench.probe_overhead`` (B = H = 1, d = 64, rank-16 [K|V]). Needs a C++ compiler.

    PYTHONPATH=. python results/cpu/issue11/linrec_compiled_probe.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

import attention_impls as ai
from bench.malloc import apply_malloc_tuning
from bench.probe_overhead import make_inputs


def fused(k: torch.Tensor, v: torch.Tensor):
    y = F.elu(k)
    norms = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    kv = torch.matmul((y / norms.clamp_min(1e-12)).transpose(-1, -2), v) * k.shape[-1] ** -0.5
    return kv, k.sum(), norms.amin().reciprocal(), torch.linalg.vector_norm(kv)


def main() -> None:
    torch.set_num_threads(1)
    print("#", apply_malloc_tuning(True, "cpu"))
    op = ai.get("linrec")
    compiled = torch.compile(fused, dynamic=False)
    for n in (4096, 16384):
        _, k, v = make_inputs(n)
        with torch.inference_mode():
            t0 = time.perf_counter()
            kv = compiled(k, v)[0]
            first = time.perf_counter() - t0
            ref = op.prepare_unchecked(k, v).kv
            diff = float((kv - ref).abs().max() / ref.abs().max())
            fs = {
                "unchecked": lambda k=k, v=v: op.prepare_unchecked(k, v),
                "checked (eager witnesses)": lambda k=k, v=v: op._prepare_witnessed(k, v, None),
                "compiled with witnesses": lambda k=k, v=v: compiled(k, v),
            }
            for f in fs.values():
                f()
            res: dict[str, list[float]] = {a: [] for a in fs}
            for r in range(21):
                items = list(fs.items())
                for a, f in items if r % 2 else items[::-1]:
                    s = time.thread_time()
                    for _ in range(10):
                        f()
                    res[a].append((time.thread_time() - s) / 10)
            base = np.array(res["unchecked"])
            print(
                f"N={n}: first compiled call {first:.1f} s (compile or cache), rel diff {diff:.1e}"
            )
            for a, x in res.items():
                x = np.array(x)
                print(
                    f"  {a:28s} {1e3 * np.median(x):7.3f} ms  ratio to unchecked {np.median(x / base):.3f}"
                )


if __name__ == "__main__":
    main()
