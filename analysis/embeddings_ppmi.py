"""Route (a): item embeddings from co-occurrence, truncated SVD of the positive PMI matrix.

Items co-occur when they are within ``window`` positions of each other in a user's
sequence (for unordered data the file order stands in; the window then is an arbitrary
neighbourhood, which the output notes). PPMI_ij = max(0, log(c_ij * T / (c_i c_j))) with
context-distribution smoothing c_j^0.75 (Levy, Goldberg & Dagan 2015). Embedding
E = U_d sqrt(S_d) from ``scipy.sparse.linalg.svds``, then rescaled so that the mean squared
row norm equals d (unit RMS per coordinate, the scale a LayerNorm'd model input has; the
rank measures are scale-free, the KL of the closing-the-loop step is not).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds


def cooccurrence(sequences: list[np.ndarray], n_items: int, window: int = 5) -> sp.csr_matrix:
    """Symmetric item-item counts of pairs within ``window`` positions (self-pairs excluded)."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for off in range(1, window + 1):
        a = [s[:-off] for s in sequences if len(s) > off]
        b = [s[off:] for s in sequences if len(s) > off]
        if not a:
            break
        rows.append(np.concatenate(a))
        cols.append(np.concatenate(b))
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    keep = r != c
    r, c = r[keep], c[keep]
    data = np.ones(len(r) * 2, dtype=np.float64)
    m = sp.coo_matrix(
        (data, (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n_items, n_items)
    )
    return m.tocsr()


def ppmi(counts: sp.csr_matrix, alpha: float = 0.75) -> sp.csr_matrix:
    """Positive PMI with context smoothing ``alpha``."""
    counts = counts.tocoo()
    total = counts.sum()
    if total == 0:
        return counts.tocsr()
    row = np.asarray(counts.sum(axis=1)).ravel()
    col = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    col_p = col / col.sum()
    row_p = row / total
    p_ij = counts.data / total
    pmi = np.log(p_ij / (row_p[counts.row] * col_p[counts.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def ppmi_embeddings(
    sequences: list[np.ndarray], n_items: int, dim: int = 64, window: int = 5, seed: int = 0
) -> np.ndarray:
    """[n_items, dim] float32 embeddings; items with no co-occurrence get zero rows."""
    m = ppmi(cooccurrence(sequences, n_items, window))
    k = min(dim, min(m.shape) - 1)
    if k < 1 or m.nnz == 0:
        return np.zeros((n_items, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(min(m.shape))
    u, s, _ = svds(m.astype(np.float64), k=k, v0=v0)
    order = np.argsort(s)[::-1]
    u, s = u[:, order], s[order]
    # fix the sign of each component for reproducibility
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    emb = (u * signs) * np.sqrt(s)
    if k < dim:
        emb = np.pad(emb, ((0, 0), (0, dim - k)))
    return rescale_rms(emb).astype(np.float32)


def rescale_rms(emb: np.ndarray) -> np.ndarray:
    """Scale so mean_i ||e_i||^2 = dim over the non-zero rows."""
    norms2 = (emb**2).sum(axis=1)
    nz = norms2 > 0
    if not nz.any():
        return emb
    return emb * np.sqrt(emb.shape[1] / norms2[nz].mean())


def random_embeddings(n_items: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Null model: i.i.d. N(0, 1) entries, [n_items, dim] float32."""
    return np.random.default_rng(seed).standard_normal((n_items, dim)).astype(np.float32)
