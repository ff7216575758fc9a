"""Benchmark harness: sweeps of N, M, d, r across all attention methods.

Configuration in (a preset name or a TOML file), tidy rows out (``DIR/results.csv``).
Entry points: ``python -m bench run ...`` and ``pytest --benchmark-only``.
"""

__all__ = ["config", "inputs", "metrics", "runner", "store", "summary"]
