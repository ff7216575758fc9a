"""Rank-spectrum analysis of real behaviour embeddings, feeding a decision table.

Pipeline: load a real interaction log (`loaders`) -> learn item embeddings from it
(`embeddings_ppmi`, `sasrec`, `embeddings` for the random null model and the cache) ->
per-user singular values and rank measures (`spectra`, `summaries`) -> decay fit and
profile export (`fit`) -> measured KL of svd_exact by rank on real users (`closing_loop`)
-> regime -> method table (`decide`) -> headline table (`findings`). Data without
``../shared/data``: `packaged` (MovieLens-100k inside the recbole wheel).
Entry point: ``python -m analysis`` (`cli`).
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
