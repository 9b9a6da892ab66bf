"""What ``method="auto"`` and ``chunk_size="auto"`` measure and choose, and the caches of both.

* :func:`tune_chunk_size` — the model's forward time per image at each batch size (the
  ``chunk_size="auto"`` of full re-inference);
* :func:`auto_plan` — the candidates ``method="auto"`` considers, the counted-FLOP rule's choice
  first (:func:`saliency_jax.occlude.options.counted_choice`); :func:`plan` resolves a call's
  options into them;
* :func:`measure` — the fastest candidate, timed once per model, shape and setting on the call's
  own windows (:func:`seconds_per_window`), then reused; :func:`auto_decisions` lists what was
  measured and chosen.

The engine supplies what is timed (its chunk function); this module decides what to time and
keeps the results.

Example:
    >>> from saliency_jax.occlude.tune import auto_plan
    >>> auto_plan(ratio=3.0, full_flops=1e9, platform="cpu", chunk_size=None, measurable=True)
    [('incremental', 32, 'policy')]
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax._dtypes import cast_floating, check_compute_dtype
from saliency_jax._compile import (TUNE_CANDIDATES, backend_kind, chunk_indices, default_chunk_size,
                                          jit_with_policy, seconds_per_item)
from saliency_jax.occlude.flops import flop_report
from saliency_jax.occlude.options import OcclusionOptions, counted_choice

__all__ = ["tune_chunk_size", "auto_plan", "plan", "measure", "seconds_per_window", "auto_decisions", "AutoDecision",
           "MEASURE_MIN_FLOPS"]

MEASURE_MIN_FLOPS = 1e7
"""``method="auto"`` on the CPU also measures full re-inference one window per call (the naive
loop's batch) against the default chunk, for models of at least this many counted FLOPs per
forward pass (10 MFLOP: about 0.1 ms at this CPU's 100 GFLOP/s, where one call's overhead
starts to matter less than the batch's memory traffic). Below it batching wins, so nothing is
measured (and nothing extra compiled: the test suite's toy models stay below)."""


class AutoDecision(NamedTuple):
    """What ``method="auto"`` measured and chose for one model, shape and setting.

    Attributes:
        method: ``"full"`` or ``"incremental"``: the choice.
        chunk_size: windows per model call: the choice.
        compiler: ``"policy"`` or ``"xla"`` (see :func:`auto_plan`): the choice.
        seconds_per_window: ``((method, chunk_size, compiler, seconds), ...)`` for every
            candidate measured.
    """

    method: str
    chunk_size: int
    compiler: str
    seconds_per_window: tuple[tuple[str, int, str, float], ...]


_TUNED: dict = {}


def _too_big(err: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower()


def tune_chunk_size(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image_shape: tuple[int, int, int],
    candidates: Sequence[int] | None = None,
    repeats: int = 3,
    *,
    compute_dtype: Any = None,
) -> int:
    """Measure the model's forward time per image at each batch size and return the fastest.

    It runs on the default device, compiled as the engine compiles. The result is cached per
    ``(apply_fn, image_shape, parameter shapes, candidates, compute_dtype)``; this is what
    ``occlusion(..., chunk_size="auto")`` uses for full re-inference. It compiles the model once
    per candidate. A candidate the device has no memory for (``RESOURCE_EXHAUSTED``) ends the
    search: larger ones are not tried.

    Args:
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> (B, K)``.
        params: its parameters (concrete arrays).
        image_shape: ``(H, W, C)`` of one variant.
        candidates: batch sizes to try (positive ints); default per backend,
            :data:`saliency_jax._compile.TUNE_CANDIDATES` (CPU 1 … 32, GPU/TPU 8 … 256).
        repeats: timed runs per candidate after one warm-up; the fastest counts.
        compute_dtype: as for :func:`saliency_jax.occlusion` (the model measured in that dtype).

    Returns:
        The candidate with the lowest time per image.

    Example:
        >>> best = sj.tune_chunk_size(model.apply, variables, (128, 128, 3))  # doctest: +SKIP
    """
    _validate.apply_fn(apply_fn)
    if candidates is None:
        candidates = TUNE_CANDIDATES[backend_kind()]
    if not candidates or any(not _validate.is_int(c) or c < 1 for c in candidates):
        raise ValueError(f"`candidates` (={candidates!r}) must be a non-empty sequence of positive ints")
    repeats = _validate.integer("repeats", repeats, lo=1)
    compute_dtype = check_compute_dtype(compute_dtype)
    shape = tuple(int(d) for d in image_shape)
    key = (apply_fn, shape, _validate.signature(params), tuple(candidates), compute_dtype)
    if key not in _TUNED:
        cast = cast_floating(params, compute_dtype)
        forward = jit_with_policy(apply_fn, args=params)  # as the engine compiles
        per_image = {}
        for batch in sorted(candidates):
            x = jnp.zeros((batch, *shape), compute_dtype or jnp.float32)
            try:
                per_image[batch] = seconds_per_item(lambda: forward(cast, x), batch, repeats)
            except Exception as err:  # noqa: BLE001 — only a device out of memory ends the search
                if not _too_big(err) or not per_image:
                    raise
                break
        _TUNED[key] = min(per_image, key=per_image.get)
    return _TUNED[key]


def auto_plan(
    *,
    ratio: float | None,
    full_flops: float,
    platform: str,
    chunk_size: int | None,
    measurable: bool,
) -> list[tuple[str, int, str]]:
    """The candidates ``method="auto"`` considers: ``[(method, chunk_size, compiler), ...]``, the
    first one the counted-FLOP rule's choice; with more than one, the fastest measured wins.
    ``compiler`` is ``"policy"`` (:func:`saliency_jax._compile.jit_with_policy`'s CPU
    options: XLA's own convolutions) or ``"xla"`` (XLA's defaults: YNNPACK).

    * Counted-FLOP rule (:func:`saliency_jax.occlude.options.counted_choice`): incremental where
      ``ratio`` (full over incremental FLOPs) is at least
      :data:`saliency_jax.occlude.options.AUTO_MIN_RATIO`, else full.
    * Nothing is measured where the call cannot run the model (``measurable`` false: inside a
      caller's ``jit``/``vmap``, or sharded over several devices), nor where incremental has
      nothing to save (``ratio <= 1``, or a crop: ``ratio`` is ``None``).
    * On a GPU/TPU both methods are measured (gathers and small convolutions can make the
      incremental engine slower than its FLOPs promise there, as Krypton found).
    * On the CPU the rule stands where it is clear (ratio at least ``AUTO_MIN_RATIO``) and both
      are measured below it. Where full re-inference is a candidate, ``chunk_size`` is not
      given and the model has at least :data:`MEASURE_MIN_FLOPS` per forward pass, one window
      per call (the naive loop's batch) is measured too, and both batches under XLA's default
      compile options: on a 2-core CPU, batches of 16 were slower per image than single
      images, and YNNPACK faster than XLA's own convolutions, for small, depthwise and
      channels-first models (``benchmarks/results/execution.md``).

    Args:
        ratio: ``flop_report(...).ratio``, or ``None`` for ``mode="crop"``.
        full_flops: counted FLOPs of one forward pass (``flop_report(...).full_flops``).
        platform: the device's ``platform`` (``"cpu"``, ``"cuda"``, ``"tpu"`` …).
        chunk_size: the user's int, or ``None`` for the backend's defaults.
        measurable: whether the call can time the model (concrete arguments, one device).

    Example:
        >>> auto_plan(ratio=3.0, full_flops=1e9, platform="cpu", chunk_size=None, measurable=True)
        [('incremental', 32, 'policy')]
        >>> auto_plan(ratio=3.0, full_flops=1e9, platform="cuda", chunk_size=None, measurable=True)
        [('incremental', 128, 'policy'), ('full', 64, 'policy')]
        >>> auto_plan(ratio=1.0, full_flops=1e4, platform="cpu", chunk_size=None, measurable=True)
        [('full', 16, 'policy')]
    """
    rule = counted_choice(ratio)
    methods = [rule]
    if measurable and ratio is not None and ratio > 1.0:
        if backend_kind(platform) != "cpu" or rule == "full":
            methods.append("full" if rule == "incremental" else "incremental")
    candidates = [(m, chunk_size or default_chunk_size(m, platform), "policy") for m in methods]
    if measurable and chunk_size is None and "full" in methods and backend_kind(platform) == "cpu" \
            and full_flops >= MEASURE_MIN_FLOPS:
        full = default_chunk_size("full", platform)
        candidates += [("full", 1, "policy"), ("full", 1, "xla"), ("full", full, "xla")]
    return candidates


def plan(options: OcclusionOptions, apply_fn: Callable, params: Any, image_shape, *, platform: str | None,
         measurable: bool, tune_chunk: bool = True) -> list[tuple[str, int, str]]:
    """``[(method, chunk_size, compiler), ...]`` for a call: one entry where nothing is left to
    measure, else :func:`auto_plan`'s candidates (the counted-FLOP rule's choice first).

    Args:
        options: the call's :class:`~saliency_jax.occlude.options.OcclusionOptions`.
        apply_fn, params: the model.
        image_shape: ``(H, W, C)``.
        platform: the device's ``platform``; ``None`` for the default backend's.
        measurable: whether the call can time the model (concrete arguments, one device).
        tune_chunk: whether ``chunk_size="auto"`` measures full re-inference's batch
            (:func:`tune_chunk_size`, with concrete ``params``); otherwise it means the default.

    Example:
        >>> from saliency_jax.occlude.options import OcclusionOptions
        >>> f = lambda p, x: x.sum(axis=(1, 2))
        >>> plan(OcclusionOptions(window=2, method="full"), f, None, (4, 4, 3), platform="cpu", measurable=True)
        [('full', 16, 'policy')]
    """
    method, chunk_size = options.method, options.chunk_size
    tuned = None
    if tune_chunk and chunk_size == "auto" and method != "incremental" and all(_validate.is_concrete(x)
                                                                              for x in jax.tree.leaves(params)):
        tuned = tune_chunk_size(apply_fn, params, image_shape, compute_dtype=options.compute_dtype)
    given = chunk_size if _validate.is_int(chunk_size) else None
    if method != "auto":
        return [(method, tuned or given or default_chunk_size(method, platform), "policy")]
    report = flop_report(apply_fn, params, image_shape, window=options.window_yx, stride=options.stride_yx,
                         placement=options.placement)
    candidates = auto_plan(ratio=report.ratio if options.mode == "occlude" else None, full_flops=report.full_flops,
                           platform=platform, chunk_size=given, measurable=measurable)
    if tuned is not None:  # chunk_size="auto" already measured full re-inference's batch
        candidates = [(m, tuned if m == "full" else c, k) for m, c, k in candidates
                      if k == "policy" and (m, c) != ("full", 1)]
    return list(dict.fromkeys(candidates))


_PLANS: dict = {}


def auto_decisions() -> tuple[AutoDecision, ...]:
    """Every measured ``method="auto"`` decision of this process, oldest first (one per model,
    shape and setting: each is measured once, on the first call, then reused).

    Example:
        >>> isinstance(auto_decisions(), tuple)
        True
    """
    return tuple(_PLANS.values())


def measure(key, candidates: Sequence[tuple[str, int, str]], total: int,
            seconds: Callable[[str, int, str, int, int], float]) -> AutoDecision:
    """The fastest of ``candidates``, measured on the first call for ``key``, then cached.

    Every candidate is timed on the same run of the call's windows, from the middle of the grid:
    as many as the largest candidate chunk holds (at most ``total``).

    Args:
        key: hashable: the model, shape and setting the decision holds for.
        candidates: ``[(method, chunk_size, compiler), ...]`` (:func:`auto_plan`).
        total: how many variants the call scores.
        seconds: ``seconds(method, chunk_size, compiler, first, windows)``: seconds per window
            of that candidate on ``windows`` variants from ``first`` on (:func:`seconds_per_window`).

    Example:
        >>> d = measure(("doc",), [("full", 4, "policy"), ("full", 1, "policy")], 10,
        ...             lambda m, c, k, first, windows: 1.0 / c)
        >>> d.method, d.chunk_size, d.compiler
        ('full', 4, 'policy')
    """
    if key not in _PLANS:
        windows = min(total, max(c for _, c, _ in candidates))  # per timed sample, the same for every candidate
        first = max(0, total // 2 - windows // 2)
        timings = [(m, c, k, seconds(m, c, k, first, windows)) for m, c, k in candidates]
        best = min(timings, key=lambda t: t[3])
        _PLANS[key] = AutoDecision(*best[:3], tuple(timings))
    return _PLANS[key]


def seconds_per_window(chunk: Callable[[jax.Array], Any], total: int, chunk_size: int, first: int,
                       windows: int) -> float:
    """Seconds per window of ``chunk(ts)`` on ``windows`` of the ``total`` variants from ``first``
    on, in chunks of the length the real run will use (so its compilation is reused).

    Args:
        chunk: scores the variants with flat indices ``ts`` (int32 ``(length,)``).
        total: how many variants the call scores.
        chunk_size: the candidate's chunk size.
        first: the first variant timed.
        windows: how many variants are timed.

    Example:
        >>> import jax.numpy as jnp
        >>> seconds_per_window(lambda ts: jnp.sin(ts), total=10, chunk_size=4, first=3, windows=4) > 0
        True
    """
    length = chunk_indices(total, chunk_size).shape[-1]
    calls = [np.minimum(np.arange(first + k * length, first + (k + 1) * length), total - 1).astype(np.int32)
             for k in range(-(-windows // length))]
    return seconds_per_item(lambda: [chunk(ts) for ts in calls], len(calls) * length, repeats=2)
