"""Exceptions of the operators beyond ``ValueError`` (which bad input raises)."""

from __future__ import annotations


class InsufficientMemoryError(MemoryError):
    """A call would allocate more than the device has free; raised *before* allocating.

    ``estimate_bytes``: the modelled allocation; ``free_bytes``: what was free (psutil's
    available memory on CPU, ``torch.cuda.mem_get_info`` plus torch's cached blocks on CUDA).
    A ``MemoryError`` subclass, so callers that record out-of-memory rows catch it as such.
    """

    def __init__(self, what: str, estimate_bytes: int, free_bytes: int, device: str) -> None:
        self.estimate_bytes = int(estimate_bytes)
        self.free_bytes = int(free_bytes)
        self.device = device
        super().__init__(
            f"{what} needs about {_gib(estimate_bytes)} but only {_gib(free_bytes)} is free on {device} "
            "(estimated before allocating; use fewer queries, users or behaviours per call)"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB ({int(n):,} bytes)"
