#!/usr/bin/env bash
# The GPU issue's measurements, on a CUDA machine, from the source tree (no install needed:
# the GPU image's torch, triton, pandas, pytest, pytest-benchmark and nvidia-ml-py are enough).
#
#   bash gpu_job.sh [STAGE ...]      stages: tests aot kernels paper targets report (default: all), quality
#
# Each stage fits one 10-minute device call; the paper sweep resumes where it stopped, so
# `bash gpu_job.sh paper` can simply be run again. Writes, for GPU name G (e.g. h100, h200):
#   results/G/tests.log              the test suite on CUDA (compiled kernels, graph capture)
#   results/G/aot.txt                sm_90 compiler report of the Triton kernels
#   results/G/kernels/kernel_check.csv   fused kernel vs SDPA at the target case, plan sweep
#   results/G/paper/results.{csv,parquet} + results/G/paper.{csv,parquet}   the paper preset
#   results/G/targets.md (+ results/G/paper/targets.csv)   the issue's targets on that table
#   reports/G/                       the report built from it
#   results/quality/G/ml-1m/         stage `quality` (not in the default list): SASRec on ML-1M
#                                    with the `paper` preset on CUDA, 3 seeds, every method;
#                                    checkpoints each epoch, so run the stage again until done
#                                    (QUALITY_DATA overrides ../shared/data/ml-1m)
# Environment: GPU_NAME overrides G; BENCH_GIT_COMMIT is taken from git when available.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
if [ -z "${BENCH_GIT_COMMIT:-}" ]; then
  BENCH_GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
fi
export BENCH_GIT_COMMIT
G="${GPU_NAME:-$(python3 - <<'EOF'
import re, sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_job.sh needs a CUDA device")
name = torch.cuda.get_device_name()
m = re.search(r"\b([A-Z]\d{2,3}[A-Z]?)\b", name.upper())
print((m.group(1) if m else name.split()[-1]).lower())
EOF
)}"
OUT="results/$G"
mkdir -p "$OUT"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(tests aot kernels paper targets report)
echo "== GPU job on $G (commit $BENCH_GIT_COMMIT): ${STAGES[*]}"

for stage in "${STAGES[@]}"; do
  case "$stage" in
    tests)
      echo "== tests on CUDA -> $OUT/tests.log"
      python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" ;;
    aot)
      echo "== sm_90 compiler report -> $OUT/aot.txt"
      python3 -m attention_impls.kernels.aot --arch 90 | tee "$OUT/aot.txt" ;;
    kernels)
      echo "== fused kernel vs SDPA at the target case -> $OUT/kernels"
      python3 -m bench.kernel_check --out "$OUT/kernels" ;;
    paper)
      echo "== paper preset -> $OUT/paper (resumes)"
      python3 -m bench run --preset paper --out "$OUT/paper" --no-progress --time-budget 9 --yes
      cp "$OUT/paper/results.csv" "$OUT/paper.csv"
      [ -f "$OUT/paper/results.parquet" ] && cp "$OUT/paper/results.parquet" "$OUT/paper.parquet" ;;
    targets)
      echo "== targets -> $OUT/targets.md"
      python3 -m bench targets "$OUT/paper" --out "$OUT/targets.md" ;;
    report)
      echo "== report -> reports/$G"
      Q=(); [ -d results/quality ] && Q=(--results results/quality)
      python3 -m reports build --results "$OUT/paper" --results results/spectra "${Q[@]}" --out "reports/$G" ;;
    quality)
      echo "== quality (paper preset, cuda) -> results/quality/$G/ml-1m (resumes per epoch)"
      timeout 540 python3 -m analysis quality --task seqrec --data "${QUALITY_DATA:-../shared/data/ml-1m}" \
        --methods dense,linrec,performer,performer:features=64,mean_pool,pop --seeds 0,1,2 \
        --preset paper --device cuda --quiet --out "results/quality/$G/ml-1m" || true ;;
    *)
      echo "unknown stage '$stage' (tests aot kernels paper targets report quality)" >&2; exit 2 ;;
  esac
done
