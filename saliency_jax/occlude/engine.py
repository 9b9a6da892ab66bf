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
import math
import numbers
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from saliency_jax.occlude import incremental
from saliency_jax.occlude.compile import cpu_compiler_options
from saliency_jax.occlude.windows import PLACEMENTS, as_pair, axis_masks, window_grid

__all__ = ["occlusion", "tune_chunk_size", "MODES", "SCORES", "COMBINES", "METHODS", "DEFAULT_CHUNK_SIZE"]

MODES = ("occlude", "crop")
SCORES = ("difference", "output")
COMBINES = ("mean", "sum")
METHODS = ("full", "incremental", "auto")
_FILL_NAMES = ("mean", "blur")
DEFAULT_CHUNK_SIZE = 16
"""Variants per model call for ``method="full"`` when ``chunk_size`` is not given: on a quiet
2-core CPU, 16 was the fastest for the ZF-style 224 model and within 5 % of the fastest (8) for the
small 128 model (``benchmarks/results/occlusion.md``). Use ``chunk_size="auto"`` to measure per
model and shape."""


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


# --------------------------------------------------------------------------------------------
# Validation (Python boundary, before any tracing of the occlusion computation)
# --------------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_image(image) -> jax.Array:
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise TypeError(f"`image` must be an array (H, W, C) or (N, H, W, C), got {type(image).__name__}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(
            f"`image` (dtype={image.dtype}) must be a floating-point array (float32); "
            "convert integer pixels with the model's preprocessing first"
        )
    if image.ndim not in (3, 4):
        raise ValueError(f"`image` (shape={tuple(image.shape)}) must have rank 3 (H, W, C) or 4 (N, H, W, C)")
    if 0 in image.shape:
        raise ValueError(f"`image` (shape={tuple(image.shape)}) must not have an empty axis")
    if _is_concrete(image) and not np.isfinite(np.asarray(image)).all():
        raise ValueError("`image` contains non-finite values (NaN or inf); only finite pixels are accepted")
    return jnp.asarray(image)


def _check_fill(fill, mode: str, images_shape) -> tuple[str, jax.Array]:
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
    if _is_concrete(arr) and not np.isfinite(np.asarray(arr)).all():
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


def _check_target(target, n: int, num_classes: int) -> tuple[str, jax.Array]:
    if target is None:
        return "predicted", jnp.zeros((n,), jnp.int32)
    if isinstance(target, str):
        if target != "all":
            raise ValueError(f"`target` (={target!r}) must be an int, one int per image, 'all' or None (predicted)")
        return "all", jnp.zeros((n,), jnp.int32)
    if isinstance(target, bool):
        raise TypeError(f"`target` (={target!r}) must be an int class index, not a bool")
    if isinstance(target, numbers.Integral):
        arr = jnp.full((n,), int(target), jnp.int32)
    elif hasattr(target, "shape") or isinstance(target, (list, tuple)):
        arr = jnp.asarray(target)
        if not jnp.issubdtype(arr.dtype, jnp.integer):
            raise TypeError(f"`target` (dtype={arr.dtype}) must hold integer class indices")
        if arr.ndim == 0:
            arr = jnp.full((n,), arr, jnp.int32)
        elif arr.shape != (n,):
            raise ValueError(
                f"`target` (shape={tuple(arr.shape)}) must be an int or one int per image, shape ({n},)"
            )
        arr = arr.astype(jnp.int32)
    else:
        raise TypeError(f"`target` (={target!r}) must be an int, one int per image, 'all' or None (predicted)")
    if _is_concrete(arr):
        bad = np.asarray(arr)
        if bad.min() < 0 or bad.max() >= num_classes:
            raise ValueError(f"`target` (={np.asarray(target).tolist()!r}) must lie in [0, {num_classes}) (the model has K={num_classes} outputs)")
    return "index", arr


def _leaf_signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves))


@functools.lru_cache(maxsize=256)
def _output_shape(apply_fn, params_signature, batch_shape, dtype) -> tuple[int, ...]:
    treedef, leaves = params_signature
    abstract = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
    out = jax.eval_shape(apply_fn, abstract, jax.ShapeDtypeStruct(batch_shape, dtype))
    if not hasattr(out, "shape"):
        raise ValueError(f"`apply_fn` must return one array of scores (B, K); it returned {type(out).__name__}")
    return tuple(out.shape)


def _num_classes(apply_fn, params, images) -> int:
    try:
        hash(apply_fn)
    except TypeError as e:
        raise TypeError(f"`apply_fn` (={apply_fn!r}) must be hashable (it keys the compilation cache)") from e
    if not callable(apply_fn):
        raise TypeError(f"`apply_fn` (={apply_fn!r}) must be callable as apply_fn(params, images)")
    shape = _output_shape(apply_fn, _leaf_signature(params), tuple(images.shape), images.dtype)
    if len(shape) != 2 or shape[0] != images.shape[0]:
        raise ValueError(
            f"`apply_fn` must map a batch (B, H, W, C) to scores (B, K); on a batch of shape "
            f"{tuple(images.shape)} it returned shape {shape}"
        )
    return shape[1]


# --------------------------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------------------------


def _reflect(index: np.ndarray, dim: int) -> np.ndarray:
    """Half-sample symmetric reflection (``…c b a | a b c … z | z y …``) of any integer index."""
    period = np.mod(index, 2 * dim)
    return np.where(period < dim, period, 2 * dim - 1 - period)


def _blur_matrix(dim: int, sigma: float) -> np.ndarray:
    """``(dim, dim)`` matrix applying a truncated (3σ), normalised Gaussian with symmetric edges."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((dim, dim), np.float64)
    rows = np.arange(dim)
    for off, k in zip(offsets, kernel):
        np.add.at(matrix, (rows, _reflect(rows + off, dim)), k)
    return matrix.astype(np.float32)


def _fill_images(images: jax.Array, fill: jax.Array, cfg: _Config) -> jax.Array:
    n, h, w, c = images.shape
    if cfg.fill_kind == "value":
        return jnp.broadcast_to(fill.astype(images.dtype), (n, h, w, c))
    if cfg.fill_kind == "image":
        return fill.astype(images.dtype)
    if cfg.fill_kind == "mean":
        return jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
    # "blur": separable Gaussian as two small matrix products.
    by = jnp.asarray(_blur_matrix(h, cfg.blur_sigma))
    bx = jnp.asarray(_blur_matrix(w, cfg.blur_sigma))
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


def _sharded_scores(apply_fn, params, images, fill, targets, cfg: _Config) -> jax.Array:
    """Scores of all padded variants, ``(n_devices, n_chunks, chunk, K')``, sharded on axis 0.

    ``K' = K`` for ``target='all'``, else 1. Flat variant ``t`` (row-major over images, then
    windows) sits at ``[t // (n_chunks·chunk), (t // chunk) % n_chunks, t % chunk]``.
    """
    n, h, w, c = images.shape
    grid = window_grid((h, w), cfg.window, cfg.stride, cfg.placement)
    n_cols = grid.shape[1]
    per_image = grid.size
    total = n * per_image
    oy, ox = jnp.asarray(grid.origins_y, jnp.int32), jnp.asarray(grid.origins_x, jnp.int32)
    ey, ex = jnp.asarray(grid.extents_y, jnp.int32), jnp.asarray(grid.extents_x, jnp.int32)

    base = None
    if cfg.score == "difference" or cfg.target_kind == "predicted":
        base = apply_fn(params, images).astype(jnp.float32)  # (N, K)
        if cfg.target_kind == "predicted":
            targets = jnp.argmax(base, axis=-1).astype(jnp.int32)
    fills = _fill_images(images, fill, cfg) if cfg.mode == "occlude" else None
    row_pos, col_pos = jnp.arange(h), jnp.arange(w)
    caches = incremental.prepare(apply_fn, params, images, grid) if cfg.method == "incremental" else None

    def incremental_outputs(ts):  # (chunk,) flat window indices → (chunk, K): changed regions only
        img, p = ts // per_image, ts % per_image
        one = functools.partial(incremental.window_outputs, apply_fn, params, images, fills, grid, caches)
        return jax.vmap(one)(img, p // n_cols, p % n_cols)[:, 0]

    def variant(t):
        img, p = t // per_image, t % per_image
        i, j = p // n_cols, p % n_cols
        if cfg.mode == "crop":
            return _crop_resize(images[img], oy[i], ox[j], ey[i], ex[j])
        inside_y = (row_pos >= oy[i]) & (row_pos < oy[i] + ey[i])
        inside_x = (col_pos >= ox[j]) & (col_pos < ox[j] + ex[j])
        inside = inside_y[:, None, None] & inside_x[None, :, None]
        return jnp.where(inside, fills[img], images[img])

    def select(scores, img):  # scores (B, K) → (B, K')
        if cfg.target_kind == "all":
            return scores
        return jnp.take_along_axis(scores, targets[img][:, None], axis=1)

    def run_chunk(ts):  # ts: (chunk,) flat window indices
        if cfg.method == "incremental":
            out = incremental_outputs(ts).astype(jnp.float32)
        else:
            out = apply_fn(params, jax.vmap(variant)(ts)).astype(jnp.float32)
        img = ts // per_image
        s = select(out, img)
        if cfg.score == "difference":
            s = select(base[img], img) - s
        return s

    n_dev = len(cfg.devices)
    n_chunks = -(-total // (cfg.chunk_size * n_dev))
    chunk = -(-total // (n_chunks * n_dev))  # as even as possible: at most n_dev * n_chunks - 1 padding
    padded = n_dev * n_chunks * chunk
    # Padding repeats the last real window; its results are dropped below.
    flat = jnp.minimum(jnp.arange(padded, dtype=jnp.int32), total - 1).reshape(n_dev, n_chunks, chunk)

    def per_device(idx):  # idx: (1, n_chunks, chunk) on one device
        return jax.lax.map(run_chunk, idx[0])[None]

    if n_dev == 1:
        return per_device(flat)
    mesh = Mesh(np.asarray(cfg.devices), ("windows",))
    flat = jax.lax.with_sharding_constraint(flat, jax.sharding.NamedSharding(mesh, PartitionSpec("windows")))
    return jax.shard_map(per_device, mesh=mesh, in_specs=PartitionSpec("windows"), out_specs=PartitionSpec("windows"))(
        flat
    )


def _window_scores(apply_fn, params, images, fill, targets, cfg: _Config) -> jax.Array:
    """Per-window scores ``(N, n_rows, n_cols, K')`` with ``K' = K`` for ``target='all'``, else 1."""
    n, h, w, _ = images.shape
    n_rows, n_cols = window_grid((h, w), cfg.window, cfg.stride, cfg.placement).shape
    scores = _sharded_scores(apply_fn, params, images, fill, targets, cfg)
    k_out = scores.shape[-1]
    return scores.reshape(-1, k_out)[: n * n_rows * n_cols].reshape(n, n_rows, n_cols, k_out)


def _accumulate(scores: jax.Array, size, cfg: _Config) -> jax.Array:
    """Per-pixel mean (or sum) of the scores of the windows covering it: ``(N, K', H, W)``."""
    grid = window_grid(size, cfg.window, cfg.stride, cfg.placement)
    rows, cols = axis_masks(grid, size)
    count = np.outer(rows.sum(0), cols.sum(0))
    total = jnp.einsum(
        "iy,nijk,jx->nkyx",
        jnp.asarray(rows, jnp.float32),
        scores,
        jnp.asarray(cols, jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )
    count = count[None, None]  # (1, 1, H, W)
    if cfg.combine == "mean":
        total = total / jnp.asarray(np.maximum(count, 1), jnp.float32)
    return jnp.where(jnp.asarray(count > 0), total, jnp.nan)


def _occlusion_fn(apply_fn, params, images, fill, targets, cfg: _Config) -> jax.Array:
    scores = _window_scores(apply_fn, params, images, fill, targets, cfg)
    return _accumulate(scores, images.shape[1:3], cfg)


_nested_jit = jax.jit(_occlusion_fn, static_argnums=(0, 5))


@functools.cache
def _single_device_jit():
    """The engine jitted with :func:`saliency_jax.occlude.compile.cpu_compiler_options`, built on first use
    (not at import, so that a user's ``XLA_FLAGS`` are read first); ``_nested_jit`` where the
    options are empty."""
    options = cpu_compiler_options()
    return jax.jit(_occlusion_fn, static_argnums=(0, 5), compiler_options=options) if options else _nested_jit


def _engine(n_devices: int, *args):
    """The jitted engine for one call. Inside a caller's ``jit``/``vmap`` (traced ``args``) the
    caller's compilation decides: plain ``jit``.

    Sharded over several devices the engine keeps the library's defaults: with YNNPACK off,
    full re-inference of the shipped model sharded over two host devices returned wrong maps
    (max error 2.95 on maps up to 10.3; ``tests/test_occlusion_devices.py`` guards it)."""
    if n_devices > 1 or not all(_is_concrete(x) for x in jax.tree.leaves(args)):
        return _nested_jit
    return _single_device_jit()


_TUNED: dict = {}


def tune_chunk_size(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image_shape: tuple[int, int, int],
    candidates: Sequence[int] = (1, 2, 4, 8, 16, 32),
    repeats: int = 3,
) -> int:
    """Measure the model's forward time per image at each batch size and return the fastest.

    The result is cached per ``(apply_fn, image_shape, parameter shapes, candidates)``; this is
    what ``occlusion(..., chunk_size="auto")`` uses. It compiles the model once per candidate.

    Args:
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> (B, K)``.
        params: its parameters (concrete arrays).
        image_shape: ``(H, W, C)`` of one variant.
        candidates: batch sizes to try (positive ints).
        repeats: timed runs per candidate after one warm-up; the median counts.

    Returns:
        The candidate with the lowest median time per image.

    Example:
        >>> best = sj.tune_chunk_size(model.apply, variables, (128, 128, 3))  # doctest: +SKIP
    """
    if not candidates or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1 for c in candidates):
        raise ValueError(f"`candidates` (={candidates!r}) must be a non-empty sequence of positive ints")
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise ValueError(f"`repeats` (={repeats!r}) must be a positive int")
    shape = tuple(int(d) for d in image_shape)
    key = (apply_fn, shape, _leaf_signature(params), tuple(candidates))
    if key not in _TUNED:
        forward = jax.jit(apply_fn, compiler_options=cpu_compiler_options() or None)  # as the engine compiles
        per_image = {}
        for batch in candidates:
            x = jnp.zeros((batch, *shape), jnp.float32)
            forward(params, x).block_until_ready()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                forward(params, x).block_until_ready()
                times.append(time.perf_counter() - start)
            per_image[batch] = float(np.median(times)) / batch
        _TUNED[key] = min(per_image, key=per_image.get)
    return _TUNED[key]


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
) -> jax.Array:
    """Occlusion-sensitivity map of ``apply_fn`` for ``image``, all windows in one computation.

    For each window of the grid a variant of the image is built (``mode="occlude"``: the window is
    replaced by ``fill``; ``mode="crop"``: only the window is kept, resized to the image's size)
    and scored; each pixel then gets the mean (or sum) of the scores of the windows covering it.

    Args:
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> scores (B, K)``, logits or
            probabilities, e.g. a Flax ``model.apply``. Hashable; it keys the compilation cache.
        params: the first argument of ``apply_fn`` (e.g. Flax variables); traced, so new weights
            of the same shapes reuse the compiled computation.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating point (float32), finite.
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
            windows); default :data:`DEFAULT_CHUNK_SIZE`; ``"auto"`` measures the model once per
            shape with :func:`tune_chunk_size`. The last chunk is padded, so there is one trace
            per shape.
        devices: the devices to shard the windows over; default all local devices.
        method: ``"auto"`` (default), ``"full"`` or ``"incremental"``. ``"full"``: every
            occluded image runs through the whole model.
            ``"incremental"``: exact incremental re-inference (``mode="occlude"`` only): the
            unoccluded image's activations are cached once and, per window, each convolution,
            pooling and elementwise layer is recomputed only on the region the window changes
            (:mod:`saliency_jax.occlude.incremental`); the map equals ``"full"`` up to float32
            rounding, and a model without such layers simply runs in full. Default chunk size
            :data:`saliency_jax.occlude.incremental.DEFAULT_CHUNK_SIZE` (``"auto"`` uses it too).
            ``"auto"``: ``"incremental"`` when ``mode="occlude"`` and its counted FLOPs are at
            least :data:`saliency_jax.occlude.incremental.AUTO_MIN_RATIO` times fewer, else ``"full"``
            (decided from the traced program; nothing is run).

    Returns:
        float32 ``(H, W)`` for one image, ``(N, H, W)`` for a batch, with a class axis before
        ``H`` for ``target="all"``: ``(K, H, W)`` or ``(N, K, H, W)``.

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
    images = _check_image(image)
    single = images.ndim == 3
    if single:
        images = images[None]
    n, h, w, _ = images.shape
    if mode not in MODES:
        raise ValueError(f"`mode` (={mode!r}) must be one of {MODES}")
    if score is None:
        score = "difference" if mode == "occlude" else "output"
    if score not in SCORES:
        raise ValueError(f"`score` (={score!r}) must be one of {SCORES}")
    if combine not in COMBINES:
        raise ValueError(f"`combine` (={combine!r}) must be one of {COMBINES}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` (={method!r}) must be one of {METHODS}")
    if method == "incremental" and mode != "occlude":
        raise ValueError(
            f"`method` (={method!r}) applies to mode='occlude' only (a crop changes every pixel); "
            f"with mode={mode!r} use method='full' or 'auto'"
        )
    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` (={placement!r}) must be one of {PLACEMENTS}")
    window_grid((h, w), window, stride, placement)  # validates window/stride against the image
    window_yx = as_pair("window", window)
    stride_yx = window_yx if stride is None else as_pair("stride", stride)
    fill_kind, fill_arr = _check_fill(fill, mode, images.shape)
    if blur_sigma is None:
        blur_sigma = max(min(window_yx) / 4.0, 0.5)
    elif isinstance(blur_sigma, bool) or not isinstance(blur_sigma, numbers.Real) or not blur_sigma > 0:
        raise ValueError(f"`blur_sigma` (={blur_sigma!r}) must be a positive number of pixels")
    if not (chunk_size is None or chunk_size == "auto") and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` (={chunk_size!r}) must be a positive int, 'auto' or None")
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    if not devices:
        raise ValueError("`devices` (=()) must name at least one device")
    num_classes = _num_classes(apply_fn, params, images)
    target_kind, targets = _check_target(target, n, num_classes)
    if method == "auto":  # counted FLOPs only: nothing is run
        method = "full"
        if mode == "occlude":
            report = incremental.flop_report(
                apply_fn, params, images.shape[1:], window=window_yx, stride=stride_yx, placement=placement
            )
            method = "incremental" if report.ratio >= incremental.AUTO_MIN_RATIO else "full"
    if method == "incremental" and (chunk_size is None or chunk_size == "auto"):
        chunk_size = incremental.DEFAULT_CHUNK_SIZE
    elif chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE
    elif chunk_size == "auto":
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(params))
        chunk_size = DEFAULT_CHUNK_SIZE if traced else tune_chunk_size(apply_fn, params, images.shape[1:])

    cfg = _Config(
        window=window_yx,
        stride=stride_yx,
        placement=placement,
        mode=mode,
        score=score,
        combine=combine,
        fill_kind=fill_kind,
        blur_sigma=float(blur_sigma),
        target_kind=target_kind,
        chunk_size=int(chunk_size),
        devices=devices,
        method=method,
    )
    heat = _engine(len(devices), params, images, fill_arr, targets)(apply_fn, params, images, fill_arr, targets, cfg)  # (N, K', H, W)
    if target_kind != "all":
        heat = heat[:, 0]
    return heat[0] if single else heat
