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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from saliency_jax import _validate
from saliency_jax._dtypes import cast_floating, check_compute_dtype, map_dtype
from saliency_jax._filters import blur_matrix
from saliency_jax._lazy import deprecated_aliases
from saliency_jax.occlude import incremental, masked, tune
from saliency_jax.occlude import options as opt
from saliency_jax._compile import CHUNK_SIZES, chunk_indices, default_chunk_size, jit_with_policy
from saliency_jax.occlude.flops import flop_report
from saliency_jax.occlude.drill_down import DrillDown, DrillDownRecord, drill_down_occlusion
from saliency_jax.occlude.options import EXECUTIONS, MODES, SCORES, OcclusionOptions
from saliency_jax.occlude.tune import auto_decisions, auto_plan, tune_chunk_size
from saliency_jax.occlude.masked import MaskSet
from saliency_jax.occlude.windows import COMBINES, accumulate, window_grid, window_mask

# The tuner's names are re-exported here, where the README and the benchmarks first named them.
__all__ = ["occlusion", "evaluate_masks", "tune_chunk_size", "auto_plan", "auto_decisions", "MODES", "SCORES", "COMBINES", "EXECUTIONS",
           "DEFAULT_CHUNK_SIZE"]

__getattr__ = deprecated_aliases(__name__, {"METHODS": ("EXECUTIONS", EXECUTIONS)})

DEFAULT_CHUNK_SIZE = CHUNK_SIZES["cpu"]["full"]
"""Variants per model call for ``method="full"`` on the CPU when ``chunk_size`` is not given (other
backends: :func:`saliency_jax._compile.default_chunk_size`): on a 2-core CPU,
of the chunk sizes 1, 2, 4, 8 and 16, 16 was the fastest for both the small 128 model (w32 s8:
585.5 windows/s, next 4 at 560.7) and the ZF-style 224 model (w64 s8: 52.5 windows/s, next 8 at
51.8) (``benchmarks/results/occlusion.md``). This is the CPU value; other backends have their own
(:func:`saliency_jax._compile.default_chunk_size`). Use ``chunk_size="auto"`` to measure
per model and shape."""


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
    masks: MaskSet | None = None  # None: the window grid; else the mask set of evaluate_masks


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
    if cfg.masks is not None:  # the boxes of the masks' supports, variant t at (t, t)
        return masked.box_grid(cfg.masks.boxes or ((0, 0, 0, 0),))
    return window_grid(tuple(images_shape[1:3]), cfg.window, cfg.stride, cfg.placement)


def _prepare(apply_fn, params, images, fill, targets, mask_data, cfg: _Config) -> dict:
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
    return dict(params=params, images=images, fills=fills, targets=targets, base=base, caches=caches,
                mask_data=mask_data)


def _model_input(x: jax.Array, cfg: _Config) -> jax.Array:
    return x if cfg.compute_dtype is None else x.astype(cfg.compute_dtype)


def _chunk_scores(apply_fn, state: dict, ts: jax.Array, cfg: _Config) -> jax.Array:
    """Scores ``(chunk, K')`` of the variants with flat indices ``ts`` (row-major over images,
    then windows); ``K' = K`` for ``target='all'``, else 1."""
    params, images, fills, targets, base = (state[k] for k in ("params", "images", "fills", "targets", "base"))
    if cfg.masks is not None:
        img, out = _masked_outputs(apply_fn, state, ts, cfg)
        return _selected(out.astype(cfg.map_dtype), base, targets, img, cfg)
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
    return _selected(out.astype(cfg.map_dtype), base, targets, img, cfg)


def _selected(out, base, targets, img, cfg: _Config) -> jax.Array:
    """The chunk's scores ``(B, K')`` from the model's ``out`` ``(B, K)`` (the score, the target)."""

    def select(scores):  # (B, K) → (B, K')
        return scores if cfg.target_kind == "all" else jnp.take_along_axis(scores, targets[img][:, None], axis=1)

    s = select(out)
    return select(base[img]) - s if cfg.score == "difference" else s


def _masked_outputs(apply_fn, state: dict, ts: jax.Array, cfg: _Config) -> tuple[jax.Array, jax.Array]:
    """``(img (B,), model outputs (B, K))`` for the flat variants ``ts`` of a mask set (row-major
    over images, then masks): the masks are built here, per chunk
    (:func:`saliency_jax.occlude.masked.mask_at`)."""
    params, images, fills, data = (state[k] for k in ("params", "images", "fills", "mask_data"))
    spec, size = cfg.masks, tuple(images.shape[1:3])
    img, p = ts // spec.n_masks, ts % spec.n_masks
    if cfg.method == "incremental":
        grid = _grid(images.shape, cfg)

        def one(n, q, t):
            def region(rows, cols):
                return jnp.take(jnp.take(masked.mask_at(spec, data, n, q, size), rows, axis=0, mode="clip"), cols,
                                axis=1, mode="clip")
            return incremental.window_outputs(apply_fn, params, _model_input(images, cfg), _model_input(fills, cfg),
                                              grid, state["caches"], n, t, t, region_mask=region)

        return img, jax.vmap(one)(img, p, ts)[:, 0]
    variant = lambda n, q: masked.blend(images[n], fills[n], masked.mask_at(spec, data, n, q, size),  # noqa: E731
                                        spec.soft)
    return img, apply_fn(params, _model_input(jax.vmap(variant)(img, p), cfg))


def _n_variants(images_shape, cfg: _Config) -> int:
    if cfg.masks is not None:
        return images_shape[0] * cfg.masks.n_masks
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
    """Padded chunk scores ``(..., K')`` to the per-pixel map ``(N, K', H, W)`` (a mask set: the
    scores ``(N, P, K')``)."""
    n = images_shape[0]
    if cfg.masks is not None:
        return scores.reshape(-1, scores.shape[-1])[: n * cfg.masks.n_masks].reshape(n, cfg.masks.n_masks, -1)
    grid = _grid(images_shape, cfg)
    n_rows, n_cols = grid.shape
    k_out = scores.shape[-1]
    scores = scores.reshape(-1, k_out)[: n * n_rows * n_cols].reshape(n, n_rows, n_cols, k_out)
    return accumulate(scores, grid, tuple(images_shape[1:3]), cfg.combine)


def _occlusion_fn(apply_fn, params, images, fill, targets, mask_data, cfg: _Config) -> jax.Array:
    """The whole computation as one program (``lax.map`` over chunks): map ``(N, K', H, W)``."""
    state = _prepare(apply_fn, params, images, fill, targets, mask_data, cfg)
    return _finish(_scanned_scores(apply_fn, state, cfg), images.shape, cfg)


def _host_loop(apply_fn, params, images, fill, targets, mask_data, cfg: _Config) -> jax.Array:
    """The same computation driven from Python: one jitted call per chunk (concrete arguments,
    one device). See :func:`occlusion`'s notes on execution for why."""
    args = (params, images, fill, targets, mask_data)
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
    :func:`saliency_jax._compile.jit_with_policy` (``args``: the call's array arguments):
    :func:`_prepare` for the host loop, else the whole :func:`_occlusion_fn`."""
    fn = _prepare if _host_executes(n_devices, args) else _occlusion_fn
    return jit_with_policy(fn, (0, 6), args=args, n_devices=n_devices)


def _measured(apply_fn, args, cfg: _Config, candidates: list[tuple[str, int, str]]) -> _Config:
    """``cfg`` with the fastest of ``candidates``' ``(method, chunk_size, compiler)``, timed on this
    call's own windows on the first call for the model, shape and setting, then cached
    (:func:`saliency_jax.occlude.tune.measure`)."""
    params, images = args[0], args[1]
    key = (apply_fn, _validate.signature(params), tuple(images.shape), images.dtype.name,
           dataclasses.replace(cfg, method="full", chunk_size=1, compiler="policy"), tuple(candidates))
    total = _n_variants(images.shape, cfg)
    states: dict = {}  # full and incremental differ (the caches); chunk and compiler do not

    def seconds(method, chunk_size, compiler, first, windows):
        trial = dataclasses.replace(cfg, method=method, chunk_size=chunk_size, compiler=compiler)
        if method not in states:
            states[method] = _state(apply_fn, args, trial)
        chunk = jit_with_policy(_chunk_scores, (0, 3), args=args, library_defaults=compiler == "xla")
        return tune.seconds_per_window(lambda ts: chunk(apply_fn, states[method], ts, trial), total, chunk_size,
                                       first, windows)

    d = tune.measure(key, candidates, total, seconds)
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
            (:func:`saliency_jax._compile.default_chunk_size`: CPU 16 for ``"full"``, 32
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
            ``"auto"``: the candidates of :func:`~saliency_jax.occlude.tune.auto_plan`, the counted-FLOP rule's choice
            first (incremental where its counted FLOPs are at least
            :data:`saliency_jax.occlude.options.AUTO_MIN_RATIO` times fewer). Where there
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
    options = OcclusionOptions(window=window, stride=stride, placement=placement, mode=mode, fill=fill, score=score,
                               combine=combine, blur_sigma=blur_sigma, chunk_size=chunk_size, devices=devices,
                               method=method, compute_dtype=compute_dtype)
    cfg, images, fill_arr, targets, batched, candidates = _configure(options, apply_fn, params, image, target)
    args = (params, images, fill_arr, targets, None)
    if _host_executes(len(cfg.devices), args):
        if len(candidates) > 1:
            cfg = _measured(apply_fn, args, cfg, candidates)
        heat = _host_loop(apply_fn, *args, cfg)  # (N, K', H, W)
    else:
        heat = _engine(len(cfg.devices), *args)(apply_fn, *args, cfg)
    if cfg.target_kind != "all":
        heat = heat[:, 0]
    return heat if batched else heat[0]


# --------------------------------------------------------------------------------------------
# Validation and resolution of the options (Python boundary, before any tracing)
# --------------------------------------------------------------------------------------------


def _configure(options: OcclusionOptions, apply_fn, params, image, target):
    """The call's checked inputs (:mod:`saliency_jax.occlude.options`) and its static
    configuration: ``(cfg, images (N, H, W, C), fill, targets (N,) int32, batched, candidates)``,
    ``candidates`` the ``(method, chunk_size, compiler)`` still to measure (one: nothing to measure).
    The model is traced (abstractly) only after every other argument has passed, to count its
    classes."""
    got = opt.inputs(options, apply_fn, image)
    fill = got.fill.astype(jnp.float32)
    kind, targets = opt.targets(apply_fn, params, got.images, target)
    devices = options.devices or tuple(jax.local_devices())
    measurable = _host_executes(len(devices), (params, got.images, fill, targets))
    candidates = tune.plan(options, apply_fn, params, got.images.shape[1:], platform=devices[0].platform,
                           measurable=measurable)
    method, chunk_size, compiler = candidates[0]
    cfg = _Config(
        window=options.window_yx,
        stride=options.stride_yx,
        placement=options.placement,
        mode=options.mode,
        score=options.score,
        combine=options.combine,
        fill_kind=got.fill_kind,
        blur_sigma=options.blur_sigma,
        target_kind=kind,
        chunk_size=chunk_size,
        compiler=compiler,
        devices=devices,
        method=method,
        compute_dtype=options.compute_dtype,
        map_dtype=map_dtype(got.images.dtype).name,
    )
    return cfg, got.images, fill, targets, got.batched, candidates


# --------------------------------------------------------------------------------------------
# Any mask set: the masked-evaluation core's entry (windows above are its first case)
# --------------------------------------------------------------------------------------------


def evaluate_masks(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    masks: Any,
    *,
    target: int | Sequence[int] | jax.Array | str | None = None,
    fill: float | jax.Array | str | None = None,
    score: str = "output",
    blur_sigma: float | None = None,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
) -> jax.Array:
    """The model's scores on every masked copy ``x·(1 − m) + fill·m`` of ``image``, one per mask.

    The same engine as :func:`occlusion` (whose windows are one mask set): the copies are built
    per chunk with ``vmap``, the jitted model runs over fixed-size chunks (the last one padded:
    one trace per shape), sharded over ``devices``; where every mask's support has a bounding
    box (concrete masks), ``method="incremental"`` recomputes only the region each one changes
    (:mod:`saliency_jax.occlude.incremental`, the windows' union-box rules) and ``"auto"``
    chooses by the same counted-FLOP rule (:func:`saliency_jax.occlude.options.counted_choice`).

    Args:
        apply_fn, params: the model, as for :func:`occlusion`.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating point, finite.
        masks: explicit masks ``(P, H, W)`` — bool (binary: the pixel is replaced where true) or
            floating in ``[0, 1]`` (soft) — shared by every image, or a ``(MaskSet, data)``
            pair from :mod:`saliency_jax.occlude.masked` (coalitions of segments, RISE grids).
        target: as for :func:`occlusion` (int, ``(N,)``, ``"all"``, ``None`` = predicted).
        fill: what a masked pixel becomes: a number (default ``0.0``), a per-channel ``(C,)``,
            a baseline image ``(H, W, C)`` / ``(N, H, W, C)``, ``"mean"`` or ``"blur"``.
        score: ``"output"`` (``f(copy)[t]``, default) or ``"difference"`` (``f(x)[t] − f(copy)[t]``).
        blur_sigma: σ for ``fill="blur"``; default a sixteenth of the shorter side (at least 0.5).
        chunk_size, devices, compute_dtype: as for :func:`occlusion`.
        method: ``"auto"``, ``"full"`` or ``"incremental"`` (needs concrete masks with a box:
            not RISE's grids).

    Returns:
        float32 scores ``(P,)`` for one image, ``(N, P)`` for a batch; ``target="all"`` adds a
        class axis last: ``(P, K)`` / ``(N, P, K)``.

    Raises:
        TypeError, ValueError: for a malformed argument, before anything is traced.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: x.sum(axis=(1, 2))                       # (B, H, W, C) -> (B, C)
        >>> m = jnp.zeros((2, 4, 4), bool).at[0, :2].set(True)        # mask 0: the top half
        >>> evaluate_masks(f, None, jnp.ones((4, 4, 1)), m, target=0).tolist()
        [8.0, 16.0]
    """
    spec, data = _check_masks(masks)
    _validate.apply_fn(apply_fn)
    images, batched = _validate.image(image)
    n, h, w, _ = images.shape
    _check_mask_shapes(spec, data, images.shape)
    _validate.choice("score", score, SCORES)
    method = _validate.choice("method", method, EXECUTIONS)
    chunk = opt.check_chunk_size(chunk_size)
    dtype = check_compute_dtype(compute_dtype)
    if blur_sigma is None:
        blur_sigma = max(min(h, w) / 16.0, 0.5)
    elif isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or not blur_sigma > 0:
        raise ValueError(f"`blur_sigma` (={blur_sigma!r}) must be a positive number of pixels")
    devices = tuple(jax.local_devices()) if devices is None else tuple(devices)
    if not devices:
        raise ValueError("`devices` (=()) must name at least one device")
    fill_kind, fill_arr = opt.check_fill(fill, "occlude", images.shape)
    fill_arr = fill_arr.astype(jnp.float32)
    spec = _with_boxes(spec, data, n, method)
    kind, targets = opt.targets(apply_fn, params, images, target)
    args = (params, images, fill_arr, targets, data)
    measurable = _host_executes(len(devices), args)
    candidates = _mask_plan(apply_fn, params, images, spec, method, chunk, devices, measurable)
    m, c, k = candidates[0]
    cfg = _Config(window=(1, 1), stride=(1, 1), placement="clip", mode="occlude", score=score, combine="mean",
                  fill_kind=fill_kind, blur_sigma=float(blur_sigma), target_kind=kind, chunk_size=c, compiler=k,
                  devices=devices, method=m, compute_dtype=dtype, map_dtype=map_dtype(images.dtype).name,
                  masks=spec)
    if measurable and len(candidates) > 1:
        cfg = _measured(apply_fn, args, cfg, candidates)
    if cfg.method != "incremental":  # full re-inference reads no boxes: new masks of the same shapes, no retrace
        cfg = dataclasses.replace(cfg, masks=dataclasses.replace(spec, boxes=None))
    if measurable:
        scores = _host_loop(apply_fn, *args, cfg)
    else:
        scores = _engine(len(devices), *args)(apply_fn, *args, cfg)  # (N, P, K')
    if kind != "all":
        scores = scores[..., 0]
    return scores if batched else scores[0]


def _check_masks(masks) -> tuple[MaskSet, dict]:
    """``(spec, data)`` of ``evaluate_masks``'s ``masks`` (explicit masks checked for values in [0, 1])."""
    if isinstance(masks, tuple) and len(masks) == 2 and isinstance(masks[0], MaskSet):
        return masks
    if not hasattr(masks, "shape"):
        raise TypeError(f"`masks` (={type(masks).__name__}) must be an array (P, H, W) or a (MaskSet, data) pair")
    arr = jnp.asarray(masks)
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise ValueError(f"`masks` (shape={tuple(arr.shape)}) must be (P, H, W) with P >= 1")
    if arr.dtype != jnp.bool_:
        if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
            raise TypeError(f"`masks` (dtype={arr.dtype}) must be bool or real-valued in [0, 1]")
        if _validate.is_concrete(arr):
            a = np.asarray(arr, np.float64)
            if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
                raise ValueError(f"`masks` (values in [{a.min()}, {a.max()}]) must lie in [0, 1]")
    return masked.explicit_masks(arr)


def _check_mask_shapes(spec: MaskSet, data: dict, images_shape) -> None:
    n, h, w, _ = images_shape
    if spec.kind == "explicit" and tuple(data["masks"].shape[1:]) != (h, w):
        raise ValueError(f"`masks` (shape={tuple(data['masks'].shape)}) must be (P, {h}, {w}) for images "
                         f"(H={h}, W={w})")
    if spec.kind == "coalitions" and tuple(data["segments"].shape) not in ((n, h, w),):
        raise ValueError(f"the segments (shape={tuple(data['segments'].shape)}) must be ({n}, {h}, {w})")


def _with_boxes(spec: MaskSet, data: dict, n: int, method: str) -> MaskSet:
    """``spec`` with the bounding boxes of its masks where they can be known (concrete, not RISE's
    grids) and may be used; ``method="incremental"`` without them is refused."""
    concrete = all(_validate.is_concrete(x) for x in jax.tree.leaves(data))
    if method == "full" or spec.kind == "cells" or not concrete:
        if method == "incremental":
            why = "RISE's grids change every pixel" if spec.kind == "cells" else "the masks are traced"
            raise ValueError(f"`method` (='incremental') needs concrete masks with a bounding box; {why}: use "
                             "'full' or 'auto'")
        return spec
    if spec.boxes is not None:
        return spec
    if spec.kind == "coalitions":
        found = masked.coalition_boxes(np.asarray(data["off"]), np.asarray(data["segments"]))
    else:
        found = masked.explicit_boxes(np.asarray(data["masks"])) * n
    return dataclasses.replace(spec, boxes=found)


def _mask_plan(apply_fn, params, images, spec: MaskSet, method, chunk, devices, measurable):
    """The ``(method, chunk_size, compiler)`` candidates of a mask set (:func:`tune.auto_plan` on
    the boxes' counted FLOPs; full re-inference where there are no boxes)."""
    platform = devices[0].platform
    given = chunk if _validate.is_int(chunk) else None
    if chunk == "auto" and all(_validate.is_concrete(x) for x in jax.tree.leaves(params)):
        given = tune_chunk_size(apply_fn, params, images.shape[1:]) if method != "incremental" else None
    if method != "auto" or spec.boxes is None:
        m = "full" if method == "auto" else method
        return [(m, given or default_chunk_size(m, platform), "policy")]
    report = flop_report(apply_fn, params, images.shape[1:], grid=masked.box_grid(spec.boxes))
    return list(dict.fromkeys(tune.auto_plan(ratio=report.ratio, full_flops=report.full_flops, platform=platform,
                                             chunk_size=given, measurable=measurable)))
