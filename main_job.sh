#!/usr/bin/env bash
# The main job, end to end on one machine: the quick benchmark sweep, the rank-spectrum
# analysis of a real behaviour log (closing the loop with svd_exact's KL by rank), the
# decision table joined with the sweep, and the HTML + PDF report.
#
#   bash main_job.sh [OUT_DIR]            (default OUT_DIR: out)
#
# Environment knobs:
#   DATA=PATH|packaged:ml-100k   real log to analyse (default: MovieLens-100k shipped in the
#                                recbole wheel; e.g. DATA=../shared/data/ml-1m)
#   PRESET=quick|smoke|paper     benchmark preset (default quick; paper needs a CUDA GPU)
#   THREADS=N                    torch/BLAS CPU threads per process (default: the quick
#                                preset's 1 for the sweep; for the analysis, the cores idle at
#                                its start, printed as "threads: ..."; bench/threads.py)
#   FORMAT=NAME                  log format, when autodetection is not enough (docs/analysis.md)
#   USER_COL=, ITEM_COL=, TIME_COL=   column names of your own CSV/TSV/parquet log
#   YES=1                        start a sweep estimated above a few minutes without asking
#   QUALITY=smoke|cpu|...        also train both end-task quality tasks on DATA (next-item
#                                SASRec and DIN-style target attention) with all six methods
#                                and the two baselines (mean pooling, popularity), preset
#                                QUALITY of each task (smoke: minutes; cpu: hours on 2 cores),
#                                into OUT/quality/{seqrec,target}-NAME, and report them
#                                (section 9); methods a task cannot train are rows with the
#                                operator's reason
#   QUALITY_SEEDS=0,1,2          the seeds of those runs (default 0,1,2)
set -euo pipefail
cd "$(dirname "$0")"
OUT="${1:-out}"
DATA="${DATA:-packaged:ml-100k}"
PRESET="${PRESET:-quick}"
THREAD_ARGS=()
[ -n "${THREADS:-}" ] && THREAD_ARGS=(--threads "$THREADS")
NAME="$(basename "${DATA#packaged:}")"
DATA_ARGS=()
[ -n "${FORMAT:-}" ] && DATA_ARGS+=(--format "$FORMAT")
[ -n "${USER_COL:-}" ] && DATA_ARGS+=(--user-col "$USER_COL")
[ -n "${ITEM_COL:-}" ] && DATA_ARGS+=(--item-col "$ITEM_COL")
[ -n "${TIME_COL:-}" ] && DATA_ARGS+=(--time-col "$TIME_COL")
YES_ARGS=()
[ -n "${YES:-}" ] && YES_ARGS=(--yes)

echo "== 1/4 benchmark sweep ($PRESET) -> $OUT/bench"
python -m bench run --preset "$PRESET" --out "$OUT/bench" "${THREAD_ARGS[@]}" "${YES_ARGS[@]}"

echo "== 2/4 rank spectra of real behaviour embeddings ($DATA) -> $OUT/spectra/$NAME"
python -m analysis spectrum --data "$DATA" --name "$NAME" --out "$OUT/spectra/$NAME" --kl \
  --cache "$OUT/cache" "${THREAD_ARGS[@]}" "${DATA_ARGS[@]}"

echo "== 3/4 decision table -> $OUT/spectra/$NAME/decisions.{json,csv}"
python -m analysis decide --spectra "$OUT/spectra/$NAME" --bench "$OUT/bench" --out "$OUT/spectra/$NAME"

REPORT_ARGS=(--results "$OUT/bench" --results "$OUT/spectra")
if [ -n "${QUALITY:-}" ]; then
  METHODS=dense,linrec,svd_exact,performer,lrea,svd_tokens,mean_pool,pop
  for TASK in seqrec target; do
    echo "== quality: $TASK, preset $QUALITY, all methods -> $OUT/quality/$TASK-$NAME"
    python -m analysis quality --task "$TASK" --data "$DATA" --methods "$METHODS" \
      --seeds "${QUALITY_SEEDS:-0,1,2}" --preset "$QUALITY" --out "$OUT/quality/$TASK-$NAME" \
      "${THREAD_ARGS[@]}"
  done
  REPORT_ARGS+=(--results "$OUT/quality")
fi

echo "== 4/4 report -> $OUT/report"
python -m reports build "${REPORT_ARGS[@]}" --out "$OUT/report"

echo
echo "Report: $OUT/report/index.html (and $OUT/report/report.pdf)"
