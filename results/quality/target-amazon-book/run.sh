#!/bin/bash
# The committed CPU runs of the target-attention task on amazon-book (KGAT, unordered sets),
# in the order they ran (2026-12-06, 14:57-16:22 UTC; see README.md). One thread per process;
# two processes ran at once, each writing to its own folder (OUT2 below), whose rows were then
# appended to this folder's rows.jsonl (two writers never share one log) and the tables rebuilt:
#   python -c "from analysis.target_quality import write_tables; write_tables('$OUT')"
# A re-run with the same --out skips finished rows.
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT="${OUT:-results/quality/target-amazon-book}"
OUT2="${OUT2:-$OUT}"  # the second process's folder (a side folder when both run at once)
D="${DATA:-../shared/data/amazon-book}"  # from the repository root, ../shared beside it
q() { python -m analysis quality --task target --data "$D" --quiet --threads 1 "$@"; }
date -u +"start %FT%TZ"
# 1. the whole log (cannot rank: dense and mean pooling tie); one svd_exact row on the side
q --out "$OUT" --preset cpu-book --methods pop,dense,mean_pool --seeds 0,1,2
q --out "$OUT2" --preset cpu-book --methods svd_exact --seeds 0
# 2. the search for a setting where attention beats mean pooling (one seed each)
for p in cpu-book-long cpu-book-long-pop; do
  q --out "$OUT2" --preset "$p" --methods pop,dense,mean_pool --seeds 0
done
q --out "$OUT2" --preset cpu-book-50-pop --methods dense,mean_pool --seeds 0
# 3. the ranking setting, every method, 3 seeds (two processes)
q --out "$OUT2" --preset cpu-book-long-pop-e12 --methods pop,dense,mean_pool,linrec,svd_exact,performer --seeds 0,1,2
q --out "$OUT" --preset cpu-book-long-pop-e12 --methods lrea,svd_tokens --seeds 0,1,2
q --out "$OUT" --preset cpu-book-long-pop-e12 --methods svd_tokens:rank=32,lrea:rank=32 --seeds 0,1,2
q --out "$OUT2" --preset cpu-book-long-pop-e12 --methods performer:features=64 --seeds 0,1,2
q --out "$OUT2" --preset cpu-book-long-pop-e12 --methods svd_exact:rank=8 --seeds 0,1,2
# 4. svd_exact swapped into the ranking setting's dense models, and KL by rank on them
for s in 0 1 2; do
  python -m analysis swap --task target --quality "$OUT" --data "$D" --seeds "$s" \
    --presets cpu-book-long-pop-e12 --kl-users 300
done
# 5. sixth session: LREA from the segment-mean start (the layer's default since 9a4cb9b), and
#    every method with histories capped at the latest 128 items (side folders, appended)
q --out "$OUT" --preset cpu-book-long-pop-e12 --methods lrea --seeds 0,1,2
q --out "$OUT" --preset cpu-book-long-pop-e12-cap128 --methods pop,dense,mean_pool,lrea --seeds 0,1,2
q --out "$OUT2" --preset cpu-book-long-pop-e12-cap128 --methods linrec,svd_tokens --seeds 0,1,2
q --out "$OUT2" --preset cpu-book-long-pop-e12-cap128 --methods svd_exact,performer --seeds 0,1,2
PYTHONPATH=. python results/quality/target-amazon-book/lrea_scale_probe.py "$D"
date -u +"end %FT%TZ"
