"""Pointing games: does the map's peak, or its positive mass, fall on the object?

* :func:`pointing_game` (Zhang et al. 2016, "Top-down neural attention by excitation backprop"):
  a hit when the map's maximum lies within ``tolerance`` pixels (Euclidean, between pixel
  centres) of a mask pixel. 15 px is the usual tolerance; ``tolerance=0`` is a strict mask hit.
* :func:`energy_pointing_game` (Wang et al. 2020, Score-CAM): the share of the map's positive
  mass that lies inside the mask.

Maps are ``(N, H, W)`` (used as they are, signed) or ``(N, H, W, C)`` (reduced to ``max_c |m|``);
NaN pixels rank lowest and carry no mass (:mod:`saliency_jax.metrics.checks`). Both functions
are pure and jit-able, one value per image.

Example:
    >>> import numpy as np
    >>> from saliency_jax.metrics import pointing
    >>> maps = np.zeros((1, 32, 32), np.float32); maps[0, 5, 5] = 1.0      # peak at (5, 5)
    >>> masks = np.zeros((1, 32, 32), bool); masks[0, 5, 15:20] = True      # 10 px to its right
    >>> pointing.pointing_game(maps, masks, tolerance=15).tolist()
    [1.0]
    >>> pointing.pointing_game(maps, masks, tolerance=5).tolist()
    [0.0]
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from saliency_jax.metrics.checks import check_maps_masks, relevance

__all__ = ["pointing_game", "energy_pointing_game", "peak", "DEFAULT_TOLERANCE"]

#: The usual pointing-game tolerance in pixels (Zhang et al. 2016).
DEFAULT_TOLERANCE = 15


def _check_tolerance(tolerance) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"`tolerance` (={tolerance!r}) must be a number of pixels (int or float)")
    if not tolerance >= 0 or tolerance == float("inf"):
        raise ValueError(f"`tolerance` (={tolerance!r}) must be a finite number of pixels >= 0")
    return float(tolerance)


def peak(maps) -> jax.Array:
    """The ``(row, col)`` of each map's maximum, int32 ``(N, 2)``: the **first** maximum in row-major order.

    Ties go to the first maximum (``numpy.argmax``'s rule; a constant map points at ``(0, 0)``);
    NaN pixels are never the peak unless the whole map is NaN (then ``(0, 0)``).

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` floating point.

    Example:
        >>> import numpy as np
        >>> m = np.array([[[np.nan, 2.0], [2.0, 1.0]]], np.float32)
        >>> peak(m).tolist()
        [[0, 1]]
    """
    rel = relevance(maps)
    n, _, w = rel.shape
    flat = jnp.argmax(rel.reshape(n, -1), axis=-1).astype(jnp.int32)
    return jnp.stack([flat // w, flat % w], axis=-1)


@jax.jit
def _pointing(maps, masks, tolerance):
    _, h, w = masks.shape
    at = peak(maps)
    rows = jnp.arange(h, dtype=jnp.float32)[None, :, None] - at[:, 0, None, None].astype(jnp.float32)
    cols = jnp.arange(w, dtype=jnp.float32)[None, None, :] - at[:, 1, None, None].astype(jnp.float32)
    near = rows * rows + cols * cols <= tolerance * tolerance  # (N, H, W): within tolerance of the peak
    hit = (near & masks).any(axis=(1, 2)).astype(jnp.float32)
    has_evidence = jnp.isfinite(relevance(maps)).reshape(masks.shape[0], -1).any(-1)
    return jnp.where(masks.any(axis=(1, 2)) & has_evidence, hit, jnp.nan)


def pointing_game(maps, masks, tolerance: float = DEFAULT_TOLERANCE) -> jax.Array:
    """Tolerant pointing game: 1.0 when the map's peak lies within ``tolerance`` px of the mask.

    The peak is the **first** maximum in row-major order (:func:`peak`). A hit means some mask
    pixel ``(i, j)`` has ``(i − r)² + (j − c)² <= tolerance²`` for the peak ``(r, c)``; this is
    exact (every mask pixel is checked; no approximate dilation). A constant map points at
    ``(0, 0)``.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` floating point (4-D: ``max_c |m|``).
        masks: ``(N, H, W)`` bool, the object.
        tolerance: pixels, ``>= 0`` (default 15; 0 = the peak must be on the mask).

    Returns:
        ``(N,) float32``: 1.0 hit, 0.0 miss, NaN where the mask is empty or the map all NaN.

    Example:
        >>> import numpy as np
        >>> maps = np.zeros((2, 8, 8), np.float32); maps[:, 0, 0] = 1.0
        >>> masks = np.zeros((2, 8, 8), bool); masks[0, 3, 4] = True       # 5 px from (0, 0); masks[1] empty
        >>> pointing_game(maps, masks, tolerance=5).tolist()
        [1.0, nan]
    """
    check_maps_masks(maps, masks)
    tol = _check_tolerance(tolerance)
    return _pointing(jnp.asarray(maps), jnp.asarray(masks), jnp.float32(tol))


@jax.jit
def _energy(maps, masks):
    rel = relevance(maps)
    pos = jnp.where(rel > 0, rel, 0.0)
    total = pos.sum(axis=(1, 2))
    inside = jnp.where(masks, pos, 0.0).sum(axis=(1, 2))
    ok = (total > 0) & masks.any(axis=(1, 2))
    return jnp.where(ok, inside / jnp.where(ok, total, 1.0), jnp.nan)


def energy_pointing_game(maps, masks) -> jax.Array:
    """Share of the map's positive mass inside the mask: ``Σ_mask max(m, 0) / Σ max(m, 0)``.

    Signed ``(N, H, W)`` maps count only their positive part (evidence *for* the class);
    ``(N, H, W, C)`` maps count ``max_c |m|`` (all of it is mass). NaN pixels count as no mass.
    A uniform map scores the mask's area fraction, the chance level.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` floating point.
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N,) float32`` in ``[0, 1]``; NaN where the map has no positive mass or the mask is empty.

    Example:
        >>> import numpy as np
        >>> maps = np.array([[[3.0, 1.0], [-5.0, np.nan]]], np.float32)
        >>> masks = np.array([[[True, False], [True, False]]])
        >>> energy_pointing_game(maps, masks).tolist()     # 3 of 3 + 1
        [0.75]
    """
    check_maps_masks(maps, masks)
    return _energy(jnp.asarray(maps), jnp.asarray(masks))

