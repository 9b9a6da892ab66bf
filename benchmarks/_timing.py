"""Shared timing for the benchmark scripts: warm-up call apart, then the median of repeats.

Compile time is *measured*, not inferred. ``first call − median`` is not a compile time: on a
loaded machine the repeats of an 11 s call vary by more than its 0.5 s compile, and the
difference came out negative (−0.69 s for the ZF model at chunk 4 in an earlier
``occlusion.json``). :func:`timed_with_compile` instead sums the spans JAX itself reports for
tracing, lowering and compiling (``jax.monitoring`` events under ``/jax/core/compile/``) during
the first call, merging overlapping spans (a nested trace inside an outer one counts once).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import jax

__all__ = ["timed", "timed_with_compile", "compile_spans", "union_seconds", "matmul_peak", "forward_flops",
           "COMPILE_EVENTS"]

COMPILE_EVENTS = "/jax/core/compile/"
"""Prefix of JAX's trace, jaxpr→MLIR and backend-compile events (``jax._src.dispatch``)."""


def timed(fn, repeats, *, clock=time.perf_counter):
    """(first call seconds — trace, compile and run —, median of `repeats` further calls, last result)."""
    start = clock()
    out = jax.block_until_ready(fn())
    first = clock() - start
    times = []
    for _ in range(repeats):
        start = clock()
        out = jax.block_until_ready(fn())
        times.append(clock() - start)
    return first, (statistics.median(times) if times else first), out


def matmul_peak(n: int, repeats: int = 3) -> dict:
    """The f32 matmul rate of this machine (``n × n`` by ``n × n``, XLA's default precision):
    ``{"n", "seconds", "flops_per_s"}``, the median of at least 3 calls after a warm-up."""
    import jax.numpy as jnp

    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (0, 1))
    f = jax.jit(jnp.matmul)
    _, t, _ = timed(lambda: f(a, b), max(3, repeats))
    return {"n": n, "seconds": t, "flops_per_s": 2 * n**3 / t}


def forward_flops(apply_fn, params, x) -> float:
    """FLOPs of one jitted ``apply_fn(params, x)`` by XLA's cost analysis (NaN where it counts none)."""
    cost = jax.jit(apply_fn).lower(params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


@contextlib.contextmanager
def compile_spans():
    """Collect ``(start, end)`` of every JAX trace/lower/compile event inside the block."""
    spans: list[tuple[float, float]] = []

    def listen(event, start, end, **_):
        if event.startswith(COMPILE_EVENTS):
            spans.append((start, end))

    jax.monitoring.register_event_time_span_listener(listen)
    try:
        yield spans
    finally:
        jax.monitoring.unregister_event_time_span_listener(listen)


def union_seconds(spans) -> float:
    """Total length of the union of ``(start, end)`` intervals (overlaps counted once; ≥ 0)."""
    total, end_so_far = 0.0, None
    for start, end in sorted(spans):
        if end_so_far is None or start > end_so_far:
            total += end - start
            end_so_far = end
        elif end > end_so_far:
            total += end - end_so_far
            end_so_far = end
    return total


def timed_with_compile(fn, repeats, *, clock=time.perf_counter, watch=compile_spans):
    """:func:`timed` plus the trace + compile seconds of the first call, measured from JAX's events.

    Returns ``(first_call_s, median_s, trace_compile_s, out)``. ``trace_compile_s`` is never
    negative and never larger than it was measured to be; the first call's run time is
    ``first_call_s − trace_compile_s`` (also noisy, hence not reported apart).
    """
    with watch() as spans:
        first, median, out = timed(fn, repeats, clock=clock)
    return first, median, union_seconds(spans), out
