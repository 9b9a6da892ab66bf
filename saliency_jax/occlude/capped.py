"""APPROXIMATE occlusion with a capped projective field (Krypton's threshold τ, Nakandala et al. 2019).

One of the two approximate modes, beside :mod:`saliency_jax.occlude.drill_down` (which scores
fewer windows); this one scores every window but recomputes less per window. It runs the exact
incremental engine (:mod:`saliency_jax.occlude.incremental`) with a cap: at every convolution /
pooling the changed region is cut to at most ``ceil(cap · size)`` rows and columns around its
centre, and beyond it the layer keeps the unoccluded image's activations. ``cap >= 1`` is exact.

Example:
    >>> import jax.numpy as jnp
    >>> from saliency_jax.occlude.capped import capped_occlusion
    >>> f = lambda p, x: x.sum(axis=(1, 2))                   # (B, H, W, C) -> (B, C)
    >>> capped_occlusion(f, None, jnp.ones((4, 4, 2)), window=2, stride=2, target=0, cap=1.0).shape
    (4, 4)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from saliency_jax import _validate
from saliency_jax.occlude import options as opt
from saliency_jax._compile import chunk_indices, default_chunk_size, jit_with_policy
from saliency_jax.occlude.incremental import DEFAULT_CHUNK_SIZE, prepare, window_outputs
from saliency_jax.occlude.windows import accumulate, window_grid

__all__ = ["capped_occlusion"]


def _capped(apply_fn, params, images, fill, targets, grid_key, cap, chunk, target_kind):
    """The capped map ``(N, K', H, W)`` (``K' = K`` for ``target_kind="all"``, else 1)."""
    n, h, w, _ = images.shape
    grid = window_grid((h, w), *grid_key)
    fills = jnp.broadcast_to(fill.astype(images.dtype), images.shape)
    caches = prepare(apply_fn, params, images, grid, cap=cap)
    n_cols, per_image = grid.shape[1], grid.size
    total = n * per_image

    def one(t):
        img, p = t // per_image, t % per_image
        return window_outputs(apply_fn, params, images, fills, grid, caches, img, p // n_cols, p % n_cols, cap=cap)[0]

    outs = lax.map(jax.vmap(one), chunk_indices(total, chunk)[0])
    outs = outs.reshape(-1, outs.shape[-1])[:total].astype(jnp.float32)
    base = apply_fn(params, images).astype(jnp.float32)  # (N, K)
    drops = base[:, None] - outs.reshape(n, per_image, -1)
    heat = accumulate(drops.reshape(n, *grid.shape, -1), grid, (h, w), "mean")  # (N, K, H, W)
    if target_kind == "all":
        return heat
    if target_kind == "predicted":
        targets = jnp.argmax(base, axis=-1).astype(jnp.int32)
    return jnp.take_along_axis(heat, targets[:, None, None, None], axis=1)


def capped_occlusion(
    apply_fn: Callable, params: Any, image: jax.Array, *, window, stride=None, target, cap: float,
    fill: float = 0.0, chunk_size: int | str | None = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """APPROXIMATE occlusion map with a capped projective field (Krypton's threshold τ).

    As ``occlusion(..., method="incremental")`` with ``score="difference"``, ``combine="mean"``,
    ``placement="clip"`` and a constant ``fill``, except that at every convolution / pooling the
    changed region is cut to at most ``ceil(cap · size)`` rows and columns around its centre;
    beyond it the layer keeps the unoccluded image's activations. ``cap >= 1`` is exact; a
    smaller cap does less work and is wrong by an amount that depends on the model and image —
    measure it against the exact map (``occlusion(..., method="incremental")``) before trusting
    it, e.g. with ``benchmarks/incremental.py --approx``.
    :func:`saliency_jax.occlude.flops.flop_report` with the same ``cap`` counts its FLOPs.

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating point (float32), finite.
        window, stride: as for :func:`saliency_jax.occlusion`.
        target: as for :func:`saliency_jax.occlusion`: an int, one int per image, ``"all"`` or
            ``None`` (each image's predicted class).
        cap: the fraction of each map's side a changed region may span, in ``(0, 1]``.
        fill: the constant (finite) an occluded pixel becomes.
        chunk_size: windows per batched step (``None`` or ``"auto"``: the incremental engine's
            default on the default backend, :func:`saliency_jax._compile.default_chunk_size`).

    Returns:
        float32 ``(H, W)`` for one image, ``(N, H, W)`` for a batch, with a class axis before
        ``H`` for ``target="all"``: the mean score drop of the windows covering each pixel.

    Raises:
        TypeError, ValueError: for a malformed argument, before the model is traced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import saliency_jax as sj
        >>> model = sj.get_model("small", width=0.25, fc=(8,))
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
        >>> image = jax.random.normal(jax.random.key(1), (128, 128, 3))
        >>> sj.capped_occlusion(model.apply, variables, image, window=32, stride=16, target=1, cap=0.5).shape
        (128, 128)
    """
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real):
        raise TypeError(f"`cap` (={cap!r}) must be a number in (0, 1]")
    if not 0 < cap <= 1:
        raise ValueError(f"`cap` (={cap!r}) must be a number in (0, 1]")
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"`fill` (={fill!r}) must be a number")
    if not math.isfinite(fill):
        raise ValueError(f"`fill` (={fill!r}) must be finite")
    options = opt.OcclusionOptions(window=window, stride=stride, fill=fill, chunk_size=chunk_size,
                                   method="incremental")
    got = opt.inputs(options, apply_fn, image)
    kind, targets = opt.targets(apply_fn, params, got.images, target)
    chunk = options.chunk_size if _validate.is_int(options.chunk_size) else default_chunk_size("incremental")
    fill_arr = jnp.asarray(fill, jnp.float32)
    run = jit_with_policy(_capped, (0, 5, 6, 7, 8), args=(params, got.images, targets))
    grid_key = (options.window_yx, options.stride_yx)
    heat = run(apply_fn, params, got.images, fill_arr, targets, grid_key, float(cap), chunk, kind)
    if kind != "all":
        heat = heat[:, 0]
    return heat if got.batched else heat[0]
