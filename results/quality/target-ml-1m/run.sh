#!/bin/bash
# The committed CPU run of the target-attention task on ML-1M: one process at a time, one
# thread. A re-run with the same --out skips finished rows, so each line only adds what is
# missing. The lines ran in this order; see README.md for when and at which niceness.
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=results/quality/target-ml-1m
D="${DATA:-../shared/data/ml-1m}"  # from the repository root, ../shared beside it
q() { python -m analysis quality --task target --data "$D" --out "$OUT" --quiet --threads 1 "$@"; }
date -u +"start %FT%TZ"
q --preset cpu --methods dense,mean_pool,pop --seeds 0,1,2
q --preset cpu-pop --methods dense,mean_pool,pop --seeds 0,1,2
q --preset cpu --methods linrec,svd_exact,performer,lrea,svd_tokens --seeds 0,1,2
# second ranks / feature counts (2026-12-06, third session)
q --preset cpu --methods performer:features=64,svd_exact:rank=8,svd_tokens:rank=32,lrea:rank=32 --seeds 0,1,2
# svd_exact swapped into each retrained dense model, and KL by rank on its own Q, K, V
for s in 0 1 2; do
  python -m analysis swap --task target --quality "$OUT" --data "$D" --seeds "$s" --kl-users 300
done
q --preset cpu-pop --methods svd_exact,performer,linrec,svd_tokens,lrea --seeds 0,1,2
q --preset cpu-pop-norec --methods dense,mean_pool --seeds 0,1,2
q --preset cpu-pop --methods svd_exact:rank=8,performer:features=64 --seeds 0,1,2
# fifth session: the second ranks of LREA and svd_tokens on cpu-pop (two processes, side folders)
q --preset cpu-pop --methods lrea:rank=32,svd_tokens:rank=32 --seeds 0,1,2
# sixth session: LREA from the segment-mean start (init=segments, the layer's default since
# 9a4cb9b) over the whole history, then every method with histories capped at 200
q --preset cpu --methods lrea,lrea:rank=32 --seeds 0,1,2
q --preset cpu-pop --methods lrea,lrea:rank=32 --seeds 0,1,2
q --preset cpu-pop-cap200 --methods pop,dense,mean_pool,lrea --seeds 0,1,2
q --preset cpu-pop-cap200 --methods linrec,svd_exact,performer,svd_tokens --seeds 0,1,2
q --preset cpu-pop-cap200 --methods svd_tokens:token_scaling=rms --seeds 0,1,2
q --preset cpu-pop --methods svd_tokens:token_scaling=rms --seeds 0,1,2
date -u +"end %FT%TZ"
