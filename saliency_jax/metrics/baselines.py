"""Floors for the faithfulness table: maps that know nothing about the model.

A saliency method earns its keep only by beating these, scored by the same metric code:

* :func:`random_map` — uniform noise: what chance scores on each metric;
* :func:`centre_prior` — a Gaussian bump in the image centre: objects are often central, and a
  metric that rewards this prior rewards no explanation;
* :func:`colour_edge_saliency` — a hand-built, model-free filter after the colour-space
  filtering of Fleck, Forsyth & Bregler (1996), "Finding naked people": it marks pixels whose
  colour differs from the image's mean colour and pixels with strong local texture/edges — what
  a skin filter of the 1990s looked at, before any learning.

Also :func:`gaussian_blur`, the separable blur with symmetric edges used here and by the
insertion metric's blurred start image.

Example:
    >>> import jax
    >>> from saliency_jax.metrics import baselines
    >>> baselines.random_map(jax.random.key(0), (2, 8, 8)).shape, baselines.centre_prior((8, 8)).shape
    ((2, 8, 8), (8, 8))
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax._filters import blur_matrix  # re-exported: the one blur matrix, shared with occlusion

__all__ = ["random_map", "centre_prior", "colour_edge_saliency", "gaussian_blur", "blur_matrix"]


def _check_shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3) or not all(_validate.is_int(s) for s in shape):
        raise TypeError(f"`shape` (={shape!r}) must be a tuple of ints (H, W) or (N, H, W)")
    if min(shape) < 1:
        raise ValueError(f"`shape` (={tuple(shape)!r}) must have every axis >= 1")
    return tuple(int(s) for s in shape)


def _check_sigma(name: str, sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"`{name}` (={sigma!r}) must be a number of pixels")
    if not 0 < sigma < float("inf"):
        raise ValueError(f"`{name}` (={sigma!r}) must be a finite number of pixels > 0")
    return float(sigma)


def random_map(key: jax.Array, shape) -> jax.Array:
    """Uniform random relevance in ``[0, 1)``, float32 of ``shape`` ``(H, W)`` or ``(N, H, W)``.

    Args:
        key: a ``jax.random`` key.
        shape: ``(H, W)`` or ``(N, H, W)``.

    Example:
        >>> import jax
        >>> m = random_map(jax.random.key(1), (3, 4, 5))
        >>> m.shape, m.dtype, bool((m >= 0).all() and (m < 1).all())
        ((3, 4, 5), dtype('float32'), True)
    """
    return jax.random.uniform(key, _check_shape(shape), jnp.float32)


def centre_prior(shape) -> jax.Array:
    """A centred Gaussian ``exp(−d² / 2σ²)``, ``σ = min(H, W) / 4``, float32 of ``shape``.

    ``d`` is the distance from the image centre ``((H − 1)/2, (W − 1)/2)``; the same map for
    every image of an ``(N, H, W)`` shape. Its peak is the centre pixel (for even sizes, the
    first of the central pixels in row-major order).

    Args:
        shape: ``(H, W)`` or ``(N, H, W)``.

    Example:
        >>> m = centre_prior((5, 5))
        >>> float(m[2, 2]), bool(m[0, 0] < m[1, 1] < m[2, 2])
        (1.0, True)
    """
    shape = _check_shape(shape)
    h, w = shape[-2:]
    sigma = min(h, w) / 4.0
    y = (np.arange(h) - (h - 1) / 2.0)[:, None]
    x = (np.arange(w) - (w - 1) / 2.0)[None, :]
    prior = np.exp(-(y * y + x * x) / (2 * sigma * sigma)).astype(np.float32)
    return jnp.broadcast_to(jnp.asarray(prior), shape)


def gaussian_blur(images, sigma: float) -> jax.Array:
    """Gaussian blur of ``(N, H, W, C)`` or ``(N, H, W)`` float images over ``H`` and ``W``.

    Separable, truncated at 3σ, symmetric edges (:func:`blur_matrix`); pure and jit-able in
    ``images`` (``sigma`` is a Python number).

    Args:
        images: ``(N, H, W, C)`` or ``(N, H, W)`` floating point.
        sigma: the standard deviation in pixels (``> 0``).

    Returns:
        float32, the shape of ``images``.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((1, 9, 9), np.float32); x[0, 4, 4] = 1.0
        >>> b = gaussian_blur(x, 1.0)
        >>> round(float(b.sum()), 5), bool(b[0, 4, 4] < 1)
        (1.0, True)
    """
    sigma = _check_sigma("sigma", sigma)
    x = jnp.asarray(images).astype(jnp.float32)
    if x.ndim not in (3, 4):
        raise ValueError(f"`images` (shape={tuple(x.shape)}) must have rank 3 (N, H, W) or 4 (N, H, W, C)")
    bh = jnp.asarray(blur_matrix(x.shape[1], sigma))
    bw = jnp.asarray(blur_matrix(x.shape[2], sigma))
    if x.ndim == 3:
        return jnp.einsum("ij,njk,lk->nil", bh, x, bw)
    return jnp.einsum("ij,njkc,lk->nilc", bh, x, bw)


_FLAT = 1e-3  # a contrast/texture term with a smaller mean is flat (float rounding, not structure)


def _log_opponent(rgb):
    """Fleck et al.'s log-opponent channels from RGB in 0..255: intensity, R−G, B−(G+R)/2."""
    log = 105.0 * jnp.log10(rgb + 1.0)
    r, g, b = log[..., 0], log[..., 1], log[..., 2]
    return g, r - g, b - 0.5 * (g + r)


def colour_edge_saliency(images, *, value_range=(0.0, 255.0), sigma: float = 2.0) -> jax.Array:
    """Model-free colour/edge-contrast saliency after Fleck, Forsyth & Bregler (1996).

    The paper's skin filter works in a log-opponent colour space, ``I = L(G)``,
    ``Rg = L(R) − L(G)``, ``By = L(B) − (L(G) + L(R)) / 2`` with ``L(x) = 105 log10(x + 1)``
    (RGB in 0..255; the paper adds a little noise to ``x``, omitted here: the map is
    deterministic), and measures **texture amplitude** as the smoothed absolute difference
    between the intensity and its smoothed version. We keep those two ideas and drop the
    skin-specific hue/saturation thresholds:

    * colour contrast ``c = ‖(Rg, By)_σ − mean(Rg, By)‖`` — how far each (smoothed) pixel's
      chroma lies from the image's mean chroma;
    * edge/texture amplitude ``t = (|I − I_σ|)_σ`` — ``_σ`` a Gaussian blur of scale ``sigma``
      (the paper uses median filters; a Gaussian keeps this pure ``jnp`` and differentiable);

    and return ``c / mean(c) + t / mean(t)`` (each term scale-free; a term whose mean is below
    1e-3 — float rounding on a flat image, in log-opponent units of 0..253 — contributes zero).
    No learned weights, no model: a floor for the methods.

    Args:
        images: ``(N, H, W, 3)`` floating point RGB.
        value_range: the ``(black, white)`` values of ``images`` (``(0, 255)`` for raw pixels,
            ``(-1, 1)`` for the shipped model's preprocessed input); mapped to 0..255.
        sigma: smoothing scale in pixels (``> 0``).

    Returns:
        ``(N, H, W) float32``, ``>= 0``.

    Example:
        >>> import numpy as np
        >>> x = np.full((1, 16, 16, 3), 128.0, np.float32); x[0, 6:10, 6:10] = (250.0, 20.0, 20.0)
        >>> s = colour_edge_saliency(x)
        >>> s.shape, bool(s[0, 8, 8] > s[0, 0, 0])
        ((1, 16, 16), True)
    """
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(f"`images` must be an array (N, H, W, 3), got {type(images).__name__}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"`images` (dtype={images.dtype}) must be floating point RGB")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` (shape={tuple(images.shape)}) must be (N, H, W, 3) RGB")
    ok_range = (isinstance(value_range, (tuple, list)) and len(value_range) == 2
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value_range))
    if not ok_range or not value_range[0] < value_range[1]:
        raise ValueError(f"`value_range` (={value_range!r}) must be a pair of numbers (black, white), black < white")
    sigma = _check_sigma("sigma", sigma)
    return _colour_edge(jnp.asarray(images, jnp.float32), float(value_range[0]), float(value_range[1]), sigma)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _colour_edge(images, lo: float, hi: float, sigma: float):
    rgb = jnp.clip((images - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
    intensity, rg, by = _log_opponent(rgb)
    chroma = gaussian_blur(jnp.stack([rg, by], axis=-1), sigma)
    centred = chroma - chroma.mean(axis=(1, 2), keepdims=True)
    contrast = jnp.sqrt((centred * centred).sum(-1))
    texture = gaussian_blur(jnp.abs(intensity - gaussian_blur(intensity, sigma)), sigma)

    def scale_free(t):
        mean = t.mean(axis=(1, 2), keepdims=True)
        flat = mean < _FLAT
        return jnp.where(flat, 0.0, t / jnp.where(flat, 1.0, mean))

    return scale_free(contrast) + scale_free(texture)
