"""Named sweeps, written as the same data a TOML file holds (see bench/config.py)."""

from __future__ import annotations

from typing import Any

POWERLAW = {"kind": "powerlaw", "alpha": 1.0, "noise_floor": 1e-3}
EXPONENTIAL = {"kind": "exponential", "beta": 0.2, "noise_floor": 1e-3}
EXACT16 = {"kind": "exact_rank", "rank": 16}

SMOKE: dict[str, Any] = {
    "name": "smoke",
    "description": "all methods, a handful of tiny cases (< 30 s on 2 CPU cores); tests and CI",
    "device": "cpu",
    "threads": 1,  # tiny cases: more threads only add OpenMP overhead
    "timing": {
        "min_calls": 2,
        "max_calls": 5,
        "min_time_s": 0.002,
        "warmup_max": 2,
        "warmup_time_s": 0.02,
    },
    "fidelity": {"max_rows": 64},
    "method_params": {"svd_exact": {"solver": ["gram"]}},
    "grid": [
        {
            "n": [64, 256],
            "m": [8],
            "d": [16],
            "rank": [4],
            "features": [16],
            "batch": [2],
            "heads": [2],
            "family": [{"kind": "exact_rank", "rank": 4}, POWERLAW],
        },
        {
            "n": [64],
            "m": [64],
            "d": [16],
            "rank": [4],
            "features": [16],
            "setting": ["self"],
            "family": [POWERLAW],
        },
        {
            "n": [128],
            "m": [8],
            "d": [16],
            "rank": [4],
            "features": [16],
            "batch": [3],
            "padding": [1.0],
            "family": [EXPONENTIAL],
        },
    ],
    "cascade": {"n": [256], "stages": [64, 16, 4], "d": 16, "rank": 4, "features": 16},
}

QUICK: dict[str, Any] = {
    "name": "quick",
    "description": "a laptop CPU view up to N = 16k (about 1 min on 2 CPU cores)",
    "device": "cpu",
    "threads": 1,  # stable on a shared machine; `--threads 2` uses both cores
    "timing": {
        "min_calls": 3,
        "max_calls": 20,
        "min_time_s": 0.05,
        "warmup_max": 3,
        "warmup_time_s": 0.1,
    },
    "fidelity": {"max_rows": 128},
    "method_params": {"svd_exact": {"solver": ["gram"]}},
    "grid": [
        {
            "n": [256, 1024, 4096, 16384],
            "m": [16, 256, 1024],
            "d": [64],
            "rank": [16],
            "features": [64],
            "family": [POWERLAW],
        },
        {
            "n": [4096],
            "m": [256],
            "d": [64],
            "rank": [4, 64],
            "features": [256],
            "family": [POWERLAW],
            "methods": ["svd_exact", "svd_tokens", "lrea", "performer"],
        },
        {
            "n": [4096],
            "m": [256],
            "d": [64],
            "rank": [16],
            "features": [64],
            "family": [EXACT16, EXPONENTIAL],
        },
        {
            "n": [1024],
            "m": [1024],
            "d": [64],
            "rank": [16],
            "features": [64],
            "setting": ["self"],
            "family": [POWERLAW],
        },
        # matched to ml-1m's fitted spectrum (written by `python -m analysis`); until that file
        # exists these rows say "input unavailable" and a re-run measures them
        {
            "n": [4096],
            "m": [256],
            "d": [64],
            "rank": [16],
            "features": [64],
            "family": [
                {
                    "kind": "spectrum_matched",
                    "profile": "results/spectra/ml-1m/profile.json",
                    "dataset": "ml-1m",
                }
            ],
        },
    ],
    "cascade": {"n": [4096, 16384], "stages": [1024, 256, 64], "d": 64, "rank": 16, "features": 64},
}

PAPER: dict[str, Any] = {
    "name": "paper",
    "description": "the papers' regime on one GPU (an earlier 444-case version took 3.5 min on "
    "an H100): bf16, N 1k..64k (+ the target case N 10000, M 2048), M 64..4096, "
    "d 64/128, r 4..64, B = 4 users x 2 heads",
    "device": "cuda",
    # samples of >= 1 ms of back-to-back calls on rotated inputs (bench/timing.py): the
    # issue's noise target is IQR/median < 3 % for every case
    "timing": {
        "min_calls": 20,
        "max_calls": 100,
        "min_time_s": 0.05,
        "warmup_max": 20,
        "warmup_time_s": 0.2,
        "sample_min_ms": 1.0,
    },
    "fidelity": {"max_rows": 256},
    "method_params": {"svd_exact": {"solver": ["gram", "gram_lowrank"]}},
    "grid": [
        # the target case (`python -m bench targets`); N = 10000 is not a power of two
        # on purpose
        {
            "n": [10000],
            "m": [2048],
            "d": [64],
            "rank": [16],
            "features": [256],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [POWERLAW],
        },
        # ... and the other backend of every method there: SDPA + matmuls for the methods
        # whose default on CUDA is the suite's Triton kernel, the kernel for dense
        {
            "n": [10000],
            "m": [2048],
            "d": [64],
            "rank": [16],
            "features": [256],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [POWERLAW],
            "method_params": {
                "dense": {"backend": ["triton"]},
                "svd_exact": {"solver": ["gram_lowrank"], "backend": ["torch"]},
                "svd_tokens": {"backend": ["torch"]},
                "linrec": {"backend": ["torch"]},
                "lrea": {"backend": ["torch"]},
                "performer": {"backend": ["torch"]},
            },
        },
        # main sweep: crossover N per M and d
        {
            "n": [1024, 2048, 4096, 8192, 16384, 32768, 65536],
            "m": [64, 256, 1024, 4096],
            "d": [64, 128],
            "rank": [16],
            "features": [256],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [POWERLAW],
        },
        # rank / features sweep
        {
            "n": [16384, 65536],
            "m": [1024],
            "d": [64, 128],
            "rank": [4, 8, 32, 64],
            "features": [64, 1024],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [POWERLAW],
            "methods": ["svd_exact", "svd_tokens", "lrea", "performer"],
        },
        # SVD solvers
        {
            "n": [16384, 65536],
            "m": [1024],
            "d": [64],
            "rank": [16],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [POWERLAW],
            "methods": ["svd_exact"],
            "method_params": {"svd_exact": {"solver": ["lowrank", "svd"]}},
        },
        # input families and dtypes
        {
            "n": [16384],
            "m": [1024],
            "d": [64],
            "rank": [16],
            "features": [256],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16", "fp16", "fp32"],
            "family": [EXACT16, EXPONENTIAL],
        },
        # self-attention (SASRec setting), M = N
        {
            "n": [1024, 4096],
            "d": [64],
            "rank": [16],
            "features": [256],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "setting": ["self"],
            "family": [POWERLAW],
        },
        # lifelong N with the spectrum of real ML-1M SASRec keys (synthetic, spectrum-matched)
        {
            "n": [16384, 65536],
            "m": [1024],
            "d": [64],
            "rank": [4, 8, 16, 32],
            "features": [256],
            "batch": [4],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [
                {
                    "kind": "spectrum_matched",
                    "profile": "results/spectra/ml-1m/profile.json",
                    "dataset": "ml-1m",
                }
            ],
        },
    ],
    "cascade": {
        "n": [16384, 65536],
        "stages": [4096, 1024, 256],
        "d": 64,
        "rank": 16,
        "features": 256,
        "batch": 4,
        "heads": 2,
        "dtype": "bf16",
    },
}

FULL: dict[str, Any] = {
    "name": "full",
    "description": "everything: all families, dtypes, solvers, query scales (about 3,200 cases; "
    "roughly an hour on a GPU)",
    "timing": {
        "min_calls": 10,
        "max_calls": 200,
        "min_time_s": 0.1,
        "warmup_max": 30,
        "warmup_time_s": 0.5,
    },
    "method_params": {"svd_exact": {"solver": ["gram"]}},
    "grid": [
        # scaling in N, M, d and dtype (every SVD solver)
        {
            "n": [256, 1024, 4096, 16384, 65536, 131072],
            "m": [1, 16, 64, 256, 1024, 4096],
            "d": [32, 64, 128],
            "rank": [16],
            "features": [256],
            "batch": [1],
            "heads": [2],
            "dtype": ["fp32", "bf16", "fp16"],
            "family": [POWERLAW],
            "method_params": {"svd_exact": {"solver": ["gram", "lowrank", "svd"]}},
        },
        # rank and features against the spectrum
        {
            "n": [4096, 16384, 65536],
            "m": [1024],
            "d": [64, 128],
            "rank": [4, 8, 16, 32, 64],
            "features": [64, 256, 1024],
            "batch": [1],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [
                {"kind": "exact_rank", "rank": 8},
                EXACT16,
                POWERLAW,
                {"kind": "powerlaw", "alpha": 0.5, "noise_floor": 1e-2},
                EXPONENTIAL,
            ],
            "methods": ["svd_exact", "svd_tokens", "lrea", "performer"],
        },
        # temperature of the logits (Performer's error depends on the norms)
        {
            "n": [16384],
            "m": [1024],
            "d": [64],
            "features": [256],
            "dtype": ["fp32"],
            "query_scale": [0.25, 0.5, 1.0, 2.0, 4.0],
            "family": [POWERLAW, EXACT16],
        },
        # users per batch
        {
            "n": [16384],
            "m": [1024],
            "d": [64],
            "batch": [1, 8, 32],
            "heads": [2],
            "dtype": ["bf16"],
            "family": [POWERLAW],
        },
        # self-attention
        {"n": [1024, 4096, 16384], "d": [64], "setting": ["self"], "family": [POWERLAW]},
    ],
    "cascade": {"n": [4096, 16384, 65536], "stages": [4096, 1024, 256], "d": 64},
}

PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "quick": QUICK, "paper": PAPER, "full": FULL}
