"""Export a trained model's item table and W_q / W_k / W_v in the files `analysis spectrum
--item-embeddings ... --wqkv ...` reads (docs/analysis.md, "Your own item embeddings").

Stands in for your own export: here the model is the dense SASRec that `analysis quality`
trained on ML-1M (results/quality/ml-1m/models), and the table is what its first attention
block sees for each item. Your own code only needs the `save` lines.

Also writes kv.npz: per-user K = X_u W_k, V = X_u W_v and Q = W_q of the user's last M items,
for the `users` longest histories cut to their last `n` behaviours (lengths for the shorter
ones), the file `analysis kv --kv` and the bench's `real` family read.

    python examples/byo_export_sasrec.py ../shared/data/ml-1m \
        results/quality/ml-1m/models/dense-34665d93622ef336.pt out/byo
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.embeddings import trained_sasrec
from analysis.loaders import load


def main(data_dir: str, model: str, out: str, users: int = 16, n: int = 1024, m: int = 256) -> None:
    data = load(Path(data_dir))
    emb = trained_sasrec(data, Path(model))  # rows in the log's item order
    Path(out).mkdir(parents=True, exist_ok=True)
    # an id column (the log's item ids) and one list column: [items, d]
    pd.DataFrame({"item": data.items, "vec": list(emb.item)}).to_parquet(f"{out}/items.parquet")
    # [d, d_head] each, applied as E @ W (a torch nn.Linear stores W.T: save weight.T)
    np.savez(f"{out}/wqkv.npz", wq=emb.w_q, wk=emb.w_k, wv=emb.w_v)
    print(f"wrote {out}/items.parquet {emb.item.shape} and {out}/wqkv.npz {emb.w_k.shape}")
    longest = np.argsort(-data.lengths(), kind="stable")[:users]
    d, dv = emb.w_k.shape[1], emb.w_v.shape[1]
    k, v = np.zeros((users, n, d), np.float32), np.zeros((users, n, dv), np.float32)
    q, lengths = np.zeros((users, m, d), np.float32), np.zeros(users, np.int64)
    for row, u in enumerate(longest):
        x = emb.item[data.sequences[u][-n:]]  # the last n behaviours, real ones first
        lengths[row] = len(x)
        k[row, : len(x)], v[row, : len(x)] = x @ emb.w_k, x @ emb.w_v
        q[row, : min(m, len(x))] = x[-m:] @ emb.w_q
    np.savez(f"{out}/kv.npz", k=k, v=v, q=q, lengths=lengths)
    print(f"wrote {out}/kv.npz: k {k.shape}, q {q.shape}, lengths {lengths.min()}..{lengths.max()}")


if __name__ == "__main__":
    main(*sys.argv[1:4], *map(int, sys.argv[4:7]))
