"""Self-contained HTML and PDF reports built only from result tables.

Reads `results/<device>/results.csv` (+ `cascade.csv`) written by `bench` and
`results/spectra/<dataset>/...` written by `analysis`; never imports either.
Entry point: `python -m reports build --results DIR [...] --out OUTDIR`.
"""
