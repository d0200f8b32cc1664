"""Small array helpers shared by attacks, the model engine, training and the store. Pure NumPy."""

from __future__ import annotations

from collections.abc import Iterator


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
