"""Occlusion sensitivity maps: every window at once, chunked, sharded over local devices.

The flow is ``image(s) → window grid → variants (vmap over windows) → jitted model over
fixed-size chunks (lax.map, shard_map over devices) → per-pixel accumulation``. One jitted
computation serves every call with the same shapes and settings; weights, pixels, fill values
and target indices are traced arguments, so changing them never recompiles.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> apply_fn = lambda w, x: jnp.einsum("bhwc,hwck->bk", x, w)  # a linear "model", K = 2
    >>> w = jnp.ones((8, 6, 3, 2))
    >>> image = jnp.ones((8, 6, 3))
    >>> heat = sj.occlusion(apply_fn, w, image, window=4, stride=2, target=0)
    >>> heat.shape, float(heat[0, 0])  # occluding 4×4×3 ones drops the score by 48
    ((8, 6), 48.0)
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from saliency_jax import _validate
from saliency_jax._filters import blur_matrix
from saliency_jax._dtypes import cast_floating, check_compute_dtype, map_dtype
from saliency_jax.occlude import incremental
from saliency_jax.occlude.drill_down import DrillDown, DrillDownRecord, drill_down_occlusion
from saliency_jax.occlude.compile import (CHUNK_SIZES, TUNE_CANDIDATES, backend_kind, chunk_indices, default_chunk_size,
                                          jit_with_policy, seconds_per_item)
from saliency_jax.occlude.windows import COMBINES, accumulate, window_grid, window_mask

__all__ = ["occlusion", "tune_chunk_size", "auto_plan", "auto_decisions", "AutoDecision", "MEASURE_MIN_FLOPS",
           "MODES", "SCORES",
           "COMBINES", "METHODS", "DEFAULT_CHUNK_SIZE"]

MODES = ("occlude", "crop")
SCORES = ("difference", "output")
METHODS = ("full", "incremental", "auto")
_FILL_NAMES = ("mean", "blur")
DEFAULT_CHUNK_SIZE = CHUNK_SIZES["cpu"]["full"]
"""Variants per model call for ``method="full"`` on the CPU when ``chunk_size`` is not given (other
backends: :func:`saliency_jax.occlude.compile.default_chunk_size`): on a 2-core CPU,
of the chunk sizes 1, 2, 4, 8 and 16, 16 was the fastest for both the small 128 model (w32 s8:
585.5 windows/s, next 4 at 560.7) and the ZF-style 224 model (w64 s8: 52.5 windows/s, next 8 at
51.8) (``benchmarks/results/occlusion.md``). This is the CPU value; other backends have their own
(:func:`saliency_jax.occlude.compile.default_chunk_size`). Use ``chunk_size="auto"`` to measure
per model and shape."""

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


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one occlusion computation (the jit cache key, with shapes)."""

    window: tuple[int, int]
    stride: tuple[int, int]
    placement: str
    mode: str
    score: str
    combine: str
    fill_kind: str  # "value" (scalar / per-channel), "image", "mean", "blur", "none" (crop)
    blur_sigma: float
    target_kind: str  # "index" (one per image), "all", "predicted"
    chunk_size: int
    devices: tuple[Any, ...]
    method: str = "full"  # "full" or "incremental" (resolved from "auto" before tracing)
    compute_dtype: str | None = None  # dtype name the model runs in (None: as given)
    map_dtype: str = "float32"  # scores, accumulation and the map (see map_dtype)
    compiler: str = "policy"  # "policy" (compile.jit_with_policy's options) or "xla" (XLA's defaults)


# --------------------------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------------------------


def _fill_images(images: jax.Array, fill: jax.Array, cfg: _Config) -> jax.Array:
    n, h, w, c = images.shape
    if cfg.fill_kind == "value":
        return jnp.broadcast_to(fill.astype(images.dtype), (n, h, w, c))
    if cfg.fill_kind == "image":
        return fill.astype(images.dtype)
    if cfg.fill_kind == "mean":
        return jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
    # "blur": separable Gaussian as two small matrix products.
    by = jnp.asarray(blur_matrix(h, cfg.blur_sigma))
    bx = jnp.asarray(blur_matrix(w, cfg.blur_sigma))
    hi = jax.lax.Precision.HIGHEST
    return jnp.einsum("yu,nuvc,xv->nyxc", by, images, bx, precision=hi).astype(images.dtype)


def _bilinear_taps(origin, extent, out_size: int):
    """Source rows of a bilinear resize of ``[origin, origin + extent)`` to ``out_size`` pixels.

    Half-pixel centres, clamped at the crop's own border (nothing outside the window leaks in).
    """
    pos = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * (extent.astype(jnp.float32) / out_size) - 0.5
    pos = jnp.clip(pos, 0.0, (extent - 1).astype(jnp.float32))
    low = jnp.floor(pos).astype(jnp.int32)
    high = jnp.minimum(low + 1, extent - 1)
    frac = pos - low.astype(jnp.float32)
    return origin + low, origin + high, frac


def _crop_resize(image, oy, ox, ey, ex):
    h, w, _ = image.shape
    y0, y1, fy = _bilinear_taps(oy, ey, h)
    x0, x1, fx = _bilinear_taps(ox, ex, w)
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _grid(images_shape, cfg: _Config):
    return window_grid(tuple(images_shape[1:3]), cfg.window, cfg.stride, cfg.placement)


def _prepare(apply_fn, params, images, fill, targets, cfg: _Config) -> dict:
    """What every chunk reads, computed once per call: a dict of arrays (the engine's state).

    ``base``: the unoccluded scores ``(N, K)`` (or ``None``), ``targets`` resolved for
    ``target=None``, ``fills`` the occluding images (or ``None`` for crops), ``caches`` the
    incremental engine's per-image caches (or ``None``), beside ``params`` and ``images``.
    """
    params = cast_floating(params, cfg.compute_dtype)
    base = None
    if cfg.score == "difference" or cfg.target_kind == "predicted":
        base = apply_fn(params, _model_input(images, cfg)).astype(cfg.map_dtype)  # (N, K)
        if cfg.target_kind == "predicted":
            targets = jnp.argmax(base, axis=-1).astype(jnp.int32)
    fills = _fill_images(images, fill, cfg) if cfg.mode == "occlude" else None
    grid = _grid(images.shape, cfg)
    caches = None
    if cfg.method == "incremental":
        caches = incremental.prepare(apply_fn, params, _model_input(images, cfg), grid)
    return dict(params=params, images=images, fills=fills, targets=targets, base=base, caches=caches)


def _model_input(x: jax.Array, cfg: _Config) -> jax.Array:
    return x if cfg.compute_dtype is None else x.astype(cfg.compute_dtype)


def _chunk_scores(apply_fn, state: dict, ts: jax.Array, cfg: _Config) -> jax.Array:
    """Scores ``(chunk, K')`` of the variants with flat indices ``ts`` (row-major over images,
    then windows); ``K' = K`` for ``target='all'``, else 1."""
    params, images, fills, targets, base = (state[k] for k in ("params", "images", "fills", "targets", "base"))
    _, h, w, _ = images.shape
    grid = _grid(images.shape, cfg)
    n_cols = grid.shape[1]
    per_image = grid.size
    img, p = ts // per_image, ts % per_image
    i, j = p // n_cols, p % n_cols
    if cfg.method == "incremental":
        one = functools.partial(incremental.window_outputs, apply_fn, params, _model_input(images, cfg),
                                _model_input(fills, cfg), grid, state["caches"])
        out = jax.vmap(one)(img, i, j)[:, 0]
    else:
        if cfg.mode == "crop":
            oy, ox = jnp.asarray(grid.origins_y, jnp.int32), jnp.asarray(grid.origins_x, jnp.int32)
            ey, ex = jnp.asarray(grid.extents_y, jnp.int32), jnp.asarray(grid.extents_x, jnp.int32)
            variant = lambda n, a, b: _crop_resize(images[n], oy[a], ox[b], ey[a], ex[b])  # noqa: E731
        else:
            row_pos, col_pos = jnp.arange(h), jnp.arange(w)
            variant = lambda n, a, b: jnp.where(  # noqa: E731
                window_mask(grid, a, b, row_pos, col_pos)[:, :, None], fills[n], images[n])
        out = apply_fn(params, _model_input(jax.vmap(variant)(img, i, j), cfg))
    out = out.astype(cfg.map_dtype)

    def select(scores):  # (B, K) → (B, K')
        return scores if cfg.target_kind == "all" else jnp.take_along_axis(scores, targets[img][:, None], axis=1)

    s = select(out)
    return select(base[img]) - s if cfg.score == "difference" else s


def _n_variants(images_shape, cfg: _Config) -> int:
    return images_shape[0] * _grid(images_shape, cfg).size


def _scanned_scores(apply_fn, state: dict, cfg: _Config) -> jax.Array:
    """Scores of all padded variants in one program, ``(n_devices, n_chunks, chunk, K')``,
    sharded on axis 0: ``lax.map`` over the chunks, ``shard_map`` over the devices.

    Flat variant ``t`` sits at ``[t // (n_chunks·chunk), (t // chunk) % n_chunks, t % chunk]``.
    """
    n_dev = len(cfg.devices)
    # (n_dev, n_chunks, chunk), as even as possible; the padding's results are dropped by _finish
    flat = chunk_indices(_n_variants(state["images"].shape, cfg), cfg.chunk_size, n_dev)

    def per_device(idx):  # idx: (1, n_chunks, chunk) on one device
        return jax.lax.map(lambda ts: _chunk_scores(apply_fn, state, ts, cfg), idx[0])[None]

    if n_dev == 1:
        return per_device(flat)
    mesh = Mesh(np.asarray(cfg.devices), ("windows",))
    flat = jax.lax.with_sharding_constraint(flat, jax.sharding.NamedSharding(mesh, PartitionSpec("windows")))
    return jax.shard_map(per_device, mesh=mesh, in_specs=PartitionSpec("windows"), out_specs=PartitionSpec("windows"))(
        flat
    )


def _finish(scores, images_shape, cfg: _Config) -> jax.Array:
    """Padded chunk scores ``(..., K')`` to the per-pixel map ``(N, K', H, W)``."""
    n = images_shape[0]
    grid = _grid(images_shape, cfg)
    n_rows, n_cols = grid.shape
    k_out = scores.shape[-1]
    scores = scores.reshape(-1, k_out)[: n * n_rows * n_cols].reshape(n, n_rows, n_cols, k_out)
    return accumulate(scores, grid, tuple(images_shape[1:3]), cfg.combine)


def _occlusion_fn(apply_fn, params, images, fill, targets, cfg: _Config) -> jax.Array:
    """The whole computation as one program (``lax.map`` over chunks): map ``(N, K', H, W)``."""
    state = _prepare(apply_fn, params, images, fill, targets, cfg)
    return _finish(_scanned_scores(apply_fn, state, cfg), images.shape, cfg)


def _host_loop(apply_fn, params, images, fill, targets, cfg: _Config) -> jax.Array:
    """The same computation driven from Python: one jitted call per chunk (concrete arguments,
    one device). See :func:`occlusion`'s notes on execution for why."""
    args = (params, images, fill, targets)
    state = _state(apply_fn, args, cfg)
    chunk = jit_with_policy(_chunk_scores, (0, 3), args=args, library_defaults=cfg.compiler == "xla")
    flat = np.asarray(chunk_indices(_n_variants(images.shape, cfg), cfg.chunk_size))[0]
    scores = jnp.stack([chunk(apply_fn, state, ts, cfg) for ts in flat])
    return jit_with_policy(_finish, (1, 2), args=args)(scores, tuple(images.shape), _unchunked(cfg))


def _unchunked(cfg: _Config) -> _Config:
    """``cfg`` without its chunk size and compiler, for the steps that do not depend on them (one
    compilation, under the policy)."""
    return dataclasses.replace(cfg, chunk_size=0, compiler="policy")


def _state(apply_fn, args, cfg: _Config) -> dict:
    """:func:`_prepare`, jitted under the policy, for the host loop (concrete ``args``)."""
    return _engine(1, *args)(apply_fn, *args, _unchunked(cfg))


def _host_executes(n_devices: int, args) -> bool:
    """The host loop runs where the arguments are concrete and there is one device."""
    return n_devices == 1 and all(_validate.is_concrete(x) for x in jax.tree.leaves(args))


def _engine(n_devices: int, *args):
    """The call's top-level jitted program under the compile policy of
    :func:`saliency_jax.occlude.compile.jit_with_policy` (``args``: the call's array arguments):
    :func:`_prepare` for the host loop, else the whole :func:`_occlusion_fn`."""
    fn = _prepare if _host_executes(n_devices, args) else _occlusion_fn
    return jit_with_policy(fn, (0, 5), args=args, n_devices=n_devices)


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
            :data:`saliency_jax.occlude.compile.TUNE_CANDIDATES` (CPU 1 … 32, GPU/TPU 8 … 256).
        repeats: timed runs per candidate after one warm-up; the fastest counts.
        compute_dtype: as for :func:`occlusion` (the model measured in that dtype).

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
) -> list[tuple[str, int]]:
    """The candidates ``method="auto"`` considers: ``[(method, chunk_size, compiler), ...]``, the
    first one the counted-FLOP rule's choice; with more than one, the fastest measured wins.
    ``compiler`` is ``"policy"`` (:func:`saliency_jax.occlude.compile.jit_with_policy`'s CPU
    options: XLA's own convolutions) or ``"xla"`` (XLA's defaults: YNNPACK).

    * Counted-FLOP rule: incremental where ``ratio`` (full over incremental FLOPs) is at least
      :data:`saliency_jax.occlude.incremental.AUTO_MIN_RATIO`, else full.
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
    rule = "incremental" if ratio is not None and ratio >= incremental.AUTO_MIN_RATIO else "full"
    methods = [rule]
    if measurable and ratio is not None and ratio > 1.0:
        if backend_kind(platform) != "cpu" or rule == "full":
            methods.append("full" if rule == "incremental" else "incremental")
    plan = [(m, chunk_size or default_chunk_size(m, platform), "policy") for m in methods]
    if measurable and chunk_size is None and "full" in methods and backend_kind(platform) == "cpu" \
            and full_flops >= MEASURE_MIN_FLOPS:
        full = default_chunk_size("full", platform)
        plan += [("full", 1, "policy"), ("full", 1, "xla"), ("full", full, "xla")]
    return plan


_PLANS: dict = {}


def auto_decisions() -> tuple[AutoDecision, ...]:
    """Every measured ``method="auto"`` decision of this process, oldest first (one per model,
    shape and setting: each is measured once, on the first call, then reused).

    Example:
        >>> isinstance(auto_decisions(), tuple)
        True
    """
    return tuple(_PLANS.values())


def _seconds_per_window(apply_fn, args, trial: _Config, state: dict, first: int, windows: int) -> float:
    """Time ``trial``'s chunk function on ``windows`` of this call's windows from ``first`` on,
    in chunks of the length the real run will use (so its compilation is reused)."""
    total = _n_variants(args[1].shape, trial)
    chunk = jit_with_policy(_chunk_scores, (0, 3), args=args, library_defaults=trial.compiler == "xla")
    length = chunk_indices(total, trial.chunk_size).shape[-1]
    calls = [np.minimum(np.arange(first + k * length, first + (k + 1) * length), total - 1).astype(np.int32)
             for k in range(-(-windows // length))]
    return seconds_per_item(lambda: [chunk(apply_fn, state, ts, trial) for ts in calls], len(calls) * length,
                            repeats=2)


def _measured(apply_fn, args, cfg: _Config, plan: list[tuple[str, int, str]]) -> _Config:
    """``cfg`` with the fastest of ``plan``'s ``(method, chunk_size, compiler)``, timed on this
    call's own windows (from the middle of the grid) on the first call for the shape, then cached."""
    params, images = args[0], args[1]
    key = (apply_fn, _validate.signature(params), tuple(images.shape), images.dtype.name,
           dataclasses.replace(cfg, method="full", chunk_size=1, compiler="policy"), tuple(plan))
    if key not in _PLANS:
        total = _n_variants(images.shape, cfg)
        windows = min(total, max(c for _, c, _ in plan))  # per timed sample, the same for every candidate
        first = max(0, total // 2 - windows // 2)
        timings, states = [], {}
        for method, chunk_size, compiler in plan:
            trial = dataclasses.replace(cfg, method=method, chunk_size=chunk_size, compiler=compiler)
            if method not in states:  # full and incremental differ (the caches); chunk and compiler do not
                states[method] = _state(apply_fn, args, trial)
            seconds = _seconds_per_window(apply_fn, args, trial, states[method], first, windows)
            timings.append((method, chunk_size, compiler, seconds))
        best = min(timings, key=lambda t: t[3])
        _PLANS[key] = AutoDecision(*best[:3], tuple(timings))
    d = _PLANS[key]
    return dataclasses.replace(cfg, method=d.method, chunk_size=d.chunk_size, compiler=d.compiler)


def occlusion(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    target: int | Sequence[int] | jax.Array | str | None = None,
    mode: str = "occlude",
    fill: float | jax.Array | str | None = None,
    score: str | None = None,
    combine: str = "mean",
    placement: str = "clip",
    blur_sigma: float | None = None,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
    drill_down: DrillDown | None = None,
) -> jax.Array | tuple[jax.Array, DrillDownRecord]:
    """Occlusion-sensitivity map of ``apply_fn`` for ``image``, all windows in one computation.

    For each window of the grid a variant of the image is built (``mode="occlude"``: the window is
    replaced by ``fill``; ``mode="crop"``: only the window is kept, resized to the image's size)
    and scored; each pixel then gets the mean (or sum) of the scores of the windows covering it.

    Args:
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> scores (B, K)``, logits or
            probabilities, e.g. a Flax ``model.apply``. Hashable; it keys the compilation cache.
        params: the first argument of ``apply_fn`` (e.g. Flax variables); traced, so new weights
            of the same shapes reuse the compiled computation.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating point (float32; float16, bfloat16 and
            float64 too), finite.
        window: ``(h, w)`` or an int; the window spans all channels.
        stride: ``(sh, sw)`` or an int, ``1 <= s <= window``; ``None`` means ``window``.
        target: the class scored: an int, one int per image (``(N,)``), ``"all"`` (every class;
            the output gains a class axis), or ``None`` for each image's predicted class
            (``argmax`` of its unoccluded scores).
        mode: ``"occlude"`` or ``"crop"``. A crop is resized bilinearly (half-pixel centres, clamped
            at the crop's border) to ``(H, W)``; windows clipped by the border are cropped too.
        fill: ``mode="occlude"`` only: a number (default ``0.0``), a per-channel vector ``(C,)``,
            a baseline image ``(H, W, C)`` or ``(N, H, W, C)``, ``"mean"`` (the per-channel mean of
            each image) or ``"blur"`` (a Gaussian-blurred copy of each image, see ``blur_sigma``).
        score: ``"difference"``: ``f(x)[t] − f(variant)[t]`` (positive = the region supports the
            class; default for ``"occlude"``), or ``"output"``: ``f(variant)[t]`` itself (default
            for ``"crop"``: the window's own score).
        combine: ``"mean"`` over the windows covering a pixel (Captum, xaitk) or ``"sum"``
            (PAIR saliency, xplique).
        placement: ``"clip"`` (Captum's grid, ``ceil((D − w)/s) + 1`` windows per axis, the last
            clipped at the border) or ``"valid"`` (full windows only; pixels that no window
            covers are NaN).
        blur_sigma: Gaussian σ in pixels for ``fill="blur"`` (truncated at 3σ, symmetric edges);
            default a quarter of the window's shorter side.
        chunk_size: variants per model call (memory grows with it, not with the number of
            windows); default per backend and method
            (:func:`saliency_jax.occlude.compile.default_chunk_size`: CPU 16 for ``"full"``, 32
            for ``"incremental"``; GPU/TPU 64 and 128); ``"auto"`` measures full re-inference's
            batch on the device once per model and shape with :func:`tune_chunk_size` (the
            incremental method keeps its default). The last chunk is padded, so there is one
            trace per shape.
        devices: the devices to shard the windows over; default all local devices.
        method: ``"auto"`` (default), ``"full"`` or ``"incremental"``. ``"full"``: every
            occluded image runs through the whole model.
            ``"incremental"``: exact incremental re-inference (``mode="occlude"`` only): the
            unoccluded image's activations are cached once and, per window, each convolution,
            pooling and elementwise layer is recomputed only on the region the window changes
            (:mod:`saliency_jax.occlude.incremental`); the map equals ``"full"`` up to float32
            rounding, and a model without such layers simply runs in full.
            ``"auto"``: the candidates of :func:`auto_plan`, the counted-FLOP rule's choice
            first (incremental where its counted FLOPs are at least
            :data:`saliency_jax.occlude.incremental.AUTO_MIN_RATIO` times fewer). Where there
            are several (both methods on a GPU/TPU or below that ratio on the CPU; one window
            per call beside the default chunk on the CPU), each is timed on a few of this
            call's own windows on the first call for a model, shape and setting, and the
            fastest is kept (:func:`auto_decisions` lists them); later calls reuse it. Inside a
            caller's ``jit``/``vmap`` or over several devices nothing is timed: the rule decides.

            Execution: with concrete arguments on one device, the chunks are driven from Python,
            one jitted call each; inside a caller's ``jit``/``vmap`` and over several devices,
            one program runs them (``lax.map``, ``shard_map``). Same maps. The first is the
            default because XLA:CPU runs channels-first convolutions (``NCHW``/``OIHW``
            kernels, as Equinox and PyTorch ports write them) an order of magnitude slower
            inside a loop body (jax-ml/jax#12868; ``benchmarks/results/execution.md``).
        compute_dtype: ``None`` (default: the model sees the image's dtype and ``params`` as
            given) or a floating dtype such as ``jnp.bfloat16``: every variant and every
            floating leaf of ``params`` is cast to it before the model runs; the scores are cast
            back and the map is accumulated in the map dtype below.
        drill_down: ``None`` (exact, the default) or a :class:`~saliency_jax.occlude.drill_down.DrillDown`:
            an APPROXIMATE map by adaptive drill-down (after Krypton): a coarse pass at
            ``drill_down.coarse_stride``, then windows at ``stride`` only over the top
            ``drill_down.fraction`` of the fine grid, ranked by the coarse scores
            (:func:`~saliency_jax.occlude.drill_down.drill_down_occlusion`, which lists the
            options it does not offer). The call then returns ``(map, record)``.

    Returns:
        ``(H, W)`` for one image, ``(N, H, W)`` for a batch, with a class axis before ``H`` for
        ``target="all"``: ``(K, H, W)`` or ``(N, K, H, W)``. float32 whatever the image's
        floating dtype, float64 for a float64 image (with ``jax_enable_x64``); the same rule as
        the backprop maps (:func:`saliency_jax._dtypes.map_dtype`). With ``drill_down``:
        ``(map, DrillDownRecord)``, the record saying which windows were computed.

    Raises:
        TypeError, ValueError: for a malformed argument, before the occlusion is traced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import saliency_jax as sj
        >>> model = sj.get_model("small", width=0.25, fc=(8,))
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
        >>> image = jax.random.normal(jax.random.key(1), (128, 128, 3))
        >>> heat = sj.occlusion(model.apply, variables, image, window=32, stride=8, target=1)
        >>> heat.shape
        (128, 128)
    """
    if drill_down is not None:
        if not isinstance(drill_down, DrillDown):
            raise TypeError(f"`drill_down` (={drill_down!r}) must be None or a DrillDown(coarse_stride=..., fraction=...)")
        return drill_down_occlusion(
            apply_fn, params, image, window=window, stride=stride, drill_down=drill_down, target=target, mode=mode,
            fill=fill, score=score, combine=combine, placement=placement, blur_sigma=blur_sigma,
            chunk_size=chunk_size, devices=devices, method=method, compute_dtype=compute_dtype)
    cfg, images, fill_arr, targets, batched, plan = _resolve(
        apply_fn, params, image, window=window, stride=stride, target=target, mode=mode, fill=fill, score=score,
        combine=combine, placement=placement, blur_sigma=blur_sigma, chunk_size=chunk_size, devices=devices,
        method=method, compute_dtype=compute_dtype,
    )
    args = (params, images, fill_arr, targets)
    if _host_executes(len(cfg.devices), args):
        if len(plan) > 1:
            cfg = _measured(apply_fn, args, cfg, plan)
        heat = _host_loop(apply_fn, *args, cfg)  # (N, K', H, W)
    else:
        heat = _engine(len(cfg.devices), *args)(apply_fn, *args, cfg)
    if cfg.target_kind != "all":
        heat = heat[:, 0]
    return heat if batched else heat[0]


# --------------------------------------------------------------------------------------------
# Validation and resolution of the options (Python boundary, before any tracing)
# --------------------------------------------------------------------------------------------


def _resolve(apply_fn, params, image, *, window, stride, target, mode, fill, score, combine, placement, blur_sigma,
             chunk_size, devices, method, compute_dtype=None):
    """Check every argument of :func:`occlusion` and resolve its defaults.

    Returns ``(cfg, images (N, H, W, C), fill, targets (N,) int32, batched)``. The model is
    traced (abstractly) only after every other argument has passed, to count its classes.
    """
    _validate.apply_fn(apply_fn)
    images, batched = _validate.image(image)
    n, h, w, _ = images.shape
    mode = _validate.choice("mode", mode, MODES)
    score = _validate.choice("score", ("difference" if mode == "occlude" else "output") if score is None else score,
                             SCORES)
    combine = _validate.choice("combine", combine, COMBINES)
    method = _validate.choice("method", method, METHODS)
    if method == "incremental" and mode != "occlude":
        raise ValueError(
            f"`method` (={method!r}) applies to mode='occlude' only (a crop changes every pixel); "
            f"with mode={mode!r} use method='full' or 'auto'"
        )
    window_grid((h, w), window, stride, placement)  # validates window, stride and placement against the image
    window_yx = _validate.pair("window", window)
    stride_yx = window_yx if stride is None else _validate.pair("stride", stride)
    fill_kind, fill_arr = _check_fill(fill, mode, images.shape)
    blur_sigma = _check_blur_sigma(blur_sigma, window_yx)
    _check_chunk_size(chunk_size)
    compute_dtype = check_compute_dtype(compute_dtype)
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    if not devices:
        raise ValueError("`devices` (=()) must name at least one device")
    target_kind, targets = _validate.target(target, n=n, num_classes=_validate.num_classes(apply_fn, params, images))
    measurable = _host_executes(len(devices), (params, images, fill_arr, targets))
    geometry = dict(window=window_yx, stride=stride_yx, placement=placement)
    plan = _plan(apply_fn, params, images, mode, geometry, method, chunk_size, devices[0].platform, measurable,
                 compute_dtype)
    cfg = _Config(
        window=window_yx,
        stride=stride_yx,
        placement=placement,
        mode=mode,
        score=score,
        combine=combine,
        fill_kind=fill_kind,
        blur_sigma=blur_sigma,
        target_kind=target_kind,
        chunk_size=plan[0][1],
        compiler=plan[0][2],
        devices=devices,
        method=plan[0][0],
        compute_dtype=compute_dtype,
        map_dtype=map_dtype(images.dtype).name,
    )
    return cfg, images, fill_arr, targets, batched, plan


def _check_fill(fill, mode: str, images_shape) -> tuple[str, jax.Array]:
    """``(fill_kind, fill)`` for :class:`_Config` (see its ``fill_kind``)."""
    n, h, w, c = images_shape
    if mode == "crop":
        if fill is not None:
            raise ValueError(f"`fill` (={fill!r}) has no effect with mode='crop' (only the window is kept); leave it None")
        return "none", jnp.zeros((), jnp.float32)
    if fill is None:
        return "value", jnp.zeros((), jnp.float32)
    if isinstance(fill, str):
        if fill not in _FILL_NAMES:
            raise ValueError(
                f"`fill` (={fill!r}) must be a number, a per-channel vector (C,), a baseline image "
                f"(H, W, C) or (N, H, W, C), or one of {_FILL_NAMES}"
            )
        return fill, jnp.zeros((), jnp.float32)
    if isinstance(fill, bool) or not (isinstance(fill, numbers.Real) or hasattr(fill, "shape")):
        raise TypeError(f"`fill` (={fill!r}) must be a number, an array or one of {_FILL_NAMES}")
    arr = jnp.asarray(fill)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`fill` (dtype={arr.dtype}) must be real-valued")
    if _validate.is_concrete(arr) and not np.isfinite(np.asarray(arr)).all():
        raise ValueError("`fill` contains non-finite values; only finite fills are accepted")
    arr = arr.astype(jnp.float32)
    if arr.shape in ((), (c,)):
        return "value", arr
    if arr.shape == (h, w, c):
        return "image", jnp.broadcast_to(arr, (n, h, w, c))
    if arr.shape == (n, h, w, c):
        return "image", arr
    raise ValueError(
        f"`fill` (shape={tuple(arr.shape)}) must be a scalar, a per-channel vector ({c},), or a baseline "
        f"image ({h}, {w}, {c}) or ({n}, {h}, {w}, {c})"
    )


def _check_blur_sigma(blur_sigma, window_yx) -> float:
    """``blur_sigma`` in pixels; by default a quarter of the window's shorter side (at least 0.5)."""
    if blur_sigma is None:
        return max(min(window_yx) / 4.0, 0.5)
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, numbers.Real) or not blur_sigma > 0:
        raise ValueError(f"`blur_sigma` (={blur_sigma!r}) must be a positive number of pixels")
    return float(blur_sigma)


def _check_chunk_size(chunk_size) -> None:
    if chunk_size is None or isinstance(chunk_size, str):
        if chunk_size not in (None, "auto"):
            raise ValueError(f"`chunk_size` (={chunk_size!r}) must be a positive int, 'auto' or None")
        return
    _validate.integer("chunk_size", chunk_size, lo=1)


def _plan(apply_fn, params, images, mode, geometry, method, chunk_size, platform, measurable, compute_dtype):
    """``[(method, chunk_size), ...]``: one entry where nothing is left to measure, else
    :func:`auto_plan`'s candidates (the counted-FLOP rule's choice first)."""
    tuned = None
    if chunk_size == "auto" and method != "incremental" and all(_validate.is_concrete(x)
                                                                for x in jax.tree.leaves(params)):
        tuned = tune_chunk_size(apply_fn, params, images.shape[1:], compute_dtype=compute_dtype)
    given = chunk_size if _validate.is_int(chunk_size) else None
    if method != "auto":
        return [(method, tuned or given or default_chunk_size(method, platform), "policy")]
    report = incremental.flop_report(apply_fn, params, images.shape[1:], **geometry)
    plan = auto_plan(ratio=report.ratio if mode == "occlude" else None, full_flops=report.full_flops,
                     platform=platform, chunk_size=given, measurable=measurable)
    if tuned is not None:  # chunk_size="auto" already measured full re-inference's batch
        plan = [(m, tuned if m == "full" else c, k) for m, c, k in plan if k == "policy" and (m, c) != ("full", 1)]
    return list(dict.fromkeys(plan))
