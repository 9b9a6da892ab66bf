"""What every metric does first: check maps and masks, reduce channels, rank NaN lowest.

**Maps.** ``(N, H, W)`` maps are used as they are (signed: occlusion, crop, any score map).
``(N, H, W, C)`` maps (deconvnet, guided backprop, gradients) are reduced to one relevance per
pixel by the **maximum over channels of the absolute value**, ``max_c |m|`` — Simonyan et al.
(2014)'s rule for gradient maps and the one ``render.normalize_map(..., "abs")`` and the demo
use. Reduce another way yourself (``m.sum(-1)`` for a signed map) and pass ``(N, H, W)``.

**NaN pixels** (occlusion with ``placement="valid"`` leaves pixels that no window covers NaN)
carry no evidence: every metric ranks them **below every number** (as ``-inf``), gives them no
mass, and never picks one as a peak unless the whole map is NaN. Infinite values are refused.

**Masks** are ``(N, H, W)`` bool, the same ``N, H, W`` as the maps.

Checks run at the Python boundary, before tracing (values only where concrete), and raise
``TypeError``/``ValueError`` naming the argument, the value received and what is accepted.

Example:
    >>> import numpy as np
    >>> from saliency_jax.metrics.checks import relevance
    >>> m = np.array([[[[1.0, -3.0], [np.nan, np.nan]]]], np.float32)   # (1, 1, 2, 2): N, H, W, C
    >>> relevance(m).tolist()
    [[[3.0, -inf]]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate

__all__ = ["check_maps", "check_masks", "check_maps_masks", "relevance"]


def check_maps(maps, name: str = "maps") -> tuple[int, ...]:
    """The shape of ``maps`` if it is a float array ``(N, H, W)`` or ``(N, H, W, C)`` without ±inf."""
    if not hasattr(maps, "shape") or not hasattr(maps, "dtype"):
        raise TypeError(f"`{name}` must be an array (N, H, W) or (N, H, W, C), got {type(maps).__name__}")
    if not jnp.issubdtype(maps.dtype, jnp.floating):
        raise TypeError(f"`{name}` (dtype={maps.dtype}) must be a floating-point array (float32)")
    if maps.ndim not in (3, 4):
        raise ValueError(f"`{name}` (shape={tuple(maps.shape)}) must have rank 3 (N, H, W) or 4 (N, H, W, C)")
    if 0 in maps.shape:
        raise ValueError(f"`{name}` (shape={tuple(maps.shape)}) must not have an empty axis")
    if _validate.is_concrete(maps) and np.isinf(np.asarray(maps)).any():
        raise ValueError(f"`{name}` contains infinite values; only finite numbers and NaN (no evidence) are accepted")
    return tuple(maps.shape)


def check_masks(masks, shape: tuple[int, int, int], name: str = "masks") -> None:
    """Refuse ``masks`` unless it is a bool array of shape ``shape`` ``(N, H, W)``."""
    if not hasattr(masks, "shape") or not hasattr(masks, "dtype"):
        raise TypeError(f"`{name}` must be a bool array (N, H, W), got {type(masks).__name__}")
    if masks.dtype != jnp.bool_:
        raise TypeError(f"`{name}` (dtype={masks.dtype}) must be a bool array (N, H, W); compare it with 0 first")
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(f"`{name}` (shape={tuple(masks.shape)}) must have the maps' shape (N, H, W) = {tuple(shape)}")


def check_maps_masks(maps, masks) -> None:
    """Both checks above: ``maps`` ``(N, H, W[, C])`` float, ``masks`` ``(N, H, W)`` bool."""
    shape = check_maps(maps)
    check_masks(masks, shape[:3])


def relevance(maps) -> jax.Array:
    """One relevance per pixel, float32 ``(N, H, W)``: ``max_c |m|`` for 4-D maps, NaN as ``-inf``.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` floating point (not checked here; see
            :func:`check_maps`).

    Returns:
        ``(N, H, W) float32``.
    """
    m = jnp.asarray(maps).astype(jnp.float32)
    if m.ndim == 4:
        m = jnp.abs(m)
    m = jnp.where(jnp.isnan(m), -jnp.inf, m)
    return m.max(axis=-1) if m.ndim == 4 else m
