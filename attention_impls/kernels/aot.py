"""Compile the Triton kernels ahead of time for a GPU architecture, with no GPU present.

Triton's wheel carries ptxas and cuobjdump, so the compiled path (Triton front end, LLVM,
ptxas) can be exercised on any Linux x86-64 machine: this proves the CUDA kernels build,
and gives the compiler's resource report (registers, spills, shared memory) and the
instruction mix of the machine code (tensor-core HGMMA/HMMA, MUFU.EX2 exponentials, F2FP
conversions, LDL/STL local-memory traffic), which is what METHOD.md asks to read before any
device time is spent. Runs in its own process: ``triton.jit`` decides interpreter-or-not
when a kernel module is imported, and the tests import the kernels interpreted.

    python -m attention_impls.kernels.aot [--arch 90] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SASS_OPS = (
    "HGMMA",
    "HMMA",
    "MUFU.EX2",
    "MUFU.RCP",
    "F2FP",
    "FFMA",
    "FMUL",
    "FADD",
    "FSEL",
    "FMNMX",
    "LDL",
    "STL",
)


@dataclass(frozen=True)
class KernelSpec:
    """One compile: a jitted kernel, its pointer dtypes and constexpr values."""

    name: str
    module: str
    kernel: str
    pointers: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int = 4
    num_stages: int = 3
    floats: tuple[str, ...] = ()


@dataclass
class KernelReport:
    name: str
    arch: int
    ok: bool
    registers: int | None = None
    local_bytes: int | None = None
    stack_bytes: int | None = None
    shared_bytes: int | None = None
    sass: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def flash_specs() -> list[KernelSpec]:
    """The fused attention kernel as the suite launches it at the issue's case (N = 10,000,
    M = 2,048, B*H = 8, d = 64, bf16, 132 SMs; tiles and warps from ``plan_launch``):
    svd_exact r = 16 (split, whole tiles; and with a padding mask), r = 64, dense d = 64,
    fp32 causal, and the merge kernel."""
    import torch

    from .flash_small_head import plan_launch

    mod = "attention_impls.kernels.flash_small_head"
    bf16 = {p: "*bf16" for p in ("q_ptr", "a_ptr", "k_ptr", "v_ptr", "bo_ptr", "out_ptr")}
    bf16.update(mask_ptr="*i1", part_acc_ptr="*fp32", part_ml_ptr="*fp32")
    fp32 = {p: ("*fp32" if t == "*bf16" else t) for p, t in bf16.items()}

    def fwd(name, head, blocks, dtype=torch.bfloat16, **flags):
        plan = plan_launch(2048, 10000, 8, head, causal=flags.get("CAUSAL", False), dtype=dtype)
        const = dict(
            BLOCK_M=plan.block_m,
            BLOCK_N=plan.block_n,
            PROJ_Q=True,
            PROJ_O=True,
            SAME_KV=True,
            HAS_MASK=False,
            CAUSAL=False,
            SPLIT=plan.splits > 1,
            DOT_F32=False,
            PREC="ieee" if dtype == torch.float32 else "tf32",
            NEED_MASK=False,
        )
        const.update(blocks)
        const.update(flags)
        return KernelSpec(
            name,
            mod,
            "_flash_fwd",
            fp32 if dtype == torch.float32 else bf16,
            const,
            plan.num_warps,
            plan.num_stages,
            floats=("qk_scale",),
        )

    r16 = dict(BLOCK_D=64, BLOCK_R=16, BLOCK_V=16, BLOCK_O=64)
    r64 = dict(BLOCK_D=64, BLOCK_R=64, BLOCK_V=64, BLOCK_O=64)
    merge_ptrs = {
        "part_acc_ptr": "*fp32",
        "part_ml_ptr": "*fp32",
        "bo_ptr": "*bf16",
        "out_ptr": "*bf16",
    }
    return [
        fwd("svd_exact r16 bf16", 16, r16),
        fwd("svd_exact r16 bf16 padding mask", 16, r16, HAS_MASK=True, NEED_MASK=True),
        fwd("svd_exact r16 bf16 unsplit", 16, r16, SPLIT=False),  # large M x B x H: no key splits
        fwd("svd_exact r64 bf16", 64, r64),
        fwd("dense d64 bf16", 64, r64, PROJ_Q=False, PROJ_O=False, SAME_KV=False),
        fwd(
            "svd_exact r16 fp32 causal",
            16,
            r16,
            dtype=torch.float32,
            CAUSAL=True,
            SPLIT=False,
            NEED_MASK=True,
        ),
        KernelSpec(
            "merge r16 bf16",
            mod,
            "_flash_merge",
            merge_ptrs,
            dict(BLOCK_M=128, BLOCK_V=16, BLOCK_O=64, PROJ_O=True, DOT_F32=False, PREC="tf32"),
        ),
    ]


def all_specs() -> list[KernelSpec]:
    specs = flash_specs()
    try:
        from .row_mlp import aot_specs  # the cheap-attend kernel, when present
    except ImportError:
        return specs
    return specs + list(aot_specs())


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def parse_resource_usage(text: str) -> dict[str, int]:
    """'REG:168 STACK:0 SHARED:1024 LOCAL:0 ...' -> {'REG': 168, ...} (first function)."""
    found = re.search(r"Function [^:\n]+:\s*\n\s*(.+)", text)
    if not found:
        return {}
    return {k: int(v) for k, v in re.findall(r"([A-Z]+):(\d+)", found.group(1))}


def count_sass(sass: str) -> dict[str, int]:
    counts = dict.fromkeys(SASS_OPS, 0)
    for line in sass.splitlines():
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if not m:
            continue
        op = m.group(1)
        for key in SASS_OPS:
            if op == key or op.startswith(key + "."):
                counts[key] += 1
    return counts


def compile_spec(spec: KernelSpec, arch: int = 90) -> KernelReport:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(spec.module), spec.kernel)
    signature: dict[str, str] = {}
    for arg in fn.arg_names:
        if arg in spec.constexprs:
            signature[arg] = "constexpr"
        elif arg in spec.pointers:
            signature[arg] = spec.pointers[arg]
        elif arg in spec.floats:
            signature[arg] = "fp32"
        else:
            signature[arg] = "i32"
    try:
        src = ASTSource(fn=fn, signature=signature, constexprs=dict(spec.constexprs))
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
        )
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            usage = subprocess.run(
                [_tool("cuobjdump"), "--dump-resource-usage", str(cubin)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            sass = subprocess.run(
                [_tool("cuobjdump"), "--dump-sass", str(cubin)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    except Exception as exc:  # noqa: BLE001 - a failed compile is a result to report
        return KernelReport(spec.name, arch, False, error=f"{type(exc).__name__}: {exc}"[:2000])
    res = parse_resource_usage(usage)
    return KernelReport(
        spec.name,
        arch,
        True,
        registers=res.get("REG"),
        local_bytes=res.get("LOCAL"),
        stack_bytes=res.get("STACK"),
        shared_bytes=int(compiled.metadata.shared) + res.get("SHARED", 0),
        sass=count_sass(sass),
    )


def run_in_subprocess(arch: int = 90, timeout_s: float = 600) -> list[dict[str, Any]]:
    """Compile every spec in a fresh process with the interpreter off; list of report dicts."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "attention_impls.kernels.aot", "--arch", str(arch), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"aot compile process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--arch", type=int, default=90, help="SM version, e.g. 90 (Hopper), 80 (Ampere)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(
            "unset TRITON_INTERPRET: ahead-of-time compiles need the compiled path", file=sys.stderr
        )
        return 2
    reports = [compile_spec(s, args.arch) for s in all_specs()]
    if args.json:
        print(json.dumps([asdict(r) for r in reports]))
    else:
        print(f"{'kernel':36} {'regs':>5} {'local':>6} {'smem':>7}  sass (per kernel, static)")
        for r in reports:
            if not r.ok:
                print(f"{r.name:36} FAILED: {r.error}")
                continue
            mix = " ".join(f"{k}={v}" for k, v in r.sass.items() if v)
            print(f"{r.name:36} {r.registers:>5} {r.local_bytes:>6} {r.shared_bytes:>7}  {mix}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
