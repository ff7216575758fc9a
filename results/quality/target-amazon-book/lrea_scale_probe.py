"""Why LREA learns nothing on amazon-book: the size of what attention hands the MLP at step 0.

The target model of preset cpu-book-long-pop-e12 (d = 32, no recency), freshly initialised
(seed 0, as every trained row starts), on 128 real users with >= 20 items (the first 128 of
amazon-book's train.txt; whole histories, left-padded), each scoring 5 random candidates.
Printed per core: the RMS of the attention output `a` (the MLP's input [a, e, a * e]),
against dense's, and the norm of the loss gradient reaching W_v, against dense's. LREA's
projection spans n positions, right-aligned: n = 4,474 (the longest user: what the whole
history rows used) or n = 128 (preset cpu-book-long-pop-e12-cap128, histories capped).

    PYTHONPATH=. python results/quality/target-amazon-book/lrea_scale_probe.py \
        ../shared/data/amazon-book > results/quality/target-amazon-book/lrea_scale_probe.txt
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from analysis.mean_pool import MeanPool
from analysis.target_data import pad_left
from analysis.target_quality import PRESETS
from analysis.target_task import TargetModel, TrainConfig
from attention_impls import AttentionLayer

torch.set_num_threads(1)
data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/amazon-book"
hists, n_items = [], 0
with open(f"{data}/train.txt") as fh:
    for line in fh:
        items = [int(x) + 1 for x in line.split()[1:]]  # 0 = padding
        n_items = max([n_items, *items])
        if len(items) >= 20 and len(hists) < 128:
            hists.append(np.array(items))
p = PRESETS["cpu-book-long-pop-e12"]
fields = TrainConfig.__dataclass_fields__
cfg = TrainConfig(**{k: v for k, v in vars(p).items() if k in fields and k not in ("recency", "seed")},
                  recency=False, seed=0)  # fmt: skip
lengths = np.array([len(h) for h in hists])
print(f"# {len(hists)} users, history length median {np.median(lengths):.0f}, max {lengths.max()}")
gen = torch.Generator().manual_seed(0)
cand = torch.randint(1, n_items + 1, (len(hists), 5), generator=gen)
cores = {
    "dense": lambda: AttentionLayer("dense"),
    "mean_pool": MeanPool,
    "lrea n=4474 init=segments": lambda: AttentionLayer("lrea", n=4474),
    "lrea n=4474 init=random": lambda: AttentionLayer("lrea", n=4474, init="random"),
    "lrea n=128 init=segments (cap 128)": lambda: AttentionLayer("lrea", n=128),
}
ref: dict[str, float] = {}
print("| core | RMS of attention output | vs dense | norm of grad on W_v | vs dense |")
print("|---|---|---|---|---|")
for name, make in cores.items():
    torch.manual_seed(0)
    cap = 128 if "cap 128" in name else None
    hist = torch.from_numpy(pad_left([h[-cap:] if cap else h for h in hists]))
    model = TargetModel(n_items, cfg, make(), pad_to=16 if "lrea" in name else 1)
    mask = hist > 0
    h = model.emb(hist)
    q = model.w_q(model.emb(cand))[:, None]
    a = model.attn(q, model.w_k(h)[:, None], model.w_v(h)[:, None], key_mask=mask)[:, 0]
    labels = torch.zeros(cand.shape)
    labels[:, 0] = 1.0
    F.binary_cross_entropy_with_logits(model(hist, cand), labels).backward()
    rms, grad = float(a.detach().pow(2).mean().sqrt()), float(model.w_v.weight.grad.norm())
    ref = ref or {"rms": rms, "grad": grad}
    print(
        f"| {name} | {rms:.2e} | {rms / ref['rms']:.2g} | {grad:.2e} | {grad / ref['grad']:.2g} |"
    )
