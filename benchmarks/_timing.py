"""Shared timing for the benchmark scripts: warm-up call apart, then the median of repeats."""

from __future__ import annotations

import statistics
import time

import jax


def timed(fn, repeats):
    """(first call seconds — trace, compile and run —, median of `repeats` further calls, last result)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), out
