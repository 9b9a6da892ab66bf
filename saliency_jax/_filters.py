"""Shared image filters: the separable Gaussian blur matrix and its symmetric edge rule.

One blur matrix serves the occlusion engine's ``fill="blur"`` and the metrics' blurred baselines
(:func:`saliency_jax.metrics.baselines.gaussian_blur`, the insertion metric's start image), so a
blur means the same thing wherever the library applies one.

Example:
    >>> from saliency_jax._filters import blur_matrix
    >>> blur_matrix(4, 0.5).sum(axis=1).round(6).tolist()
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["blur_matrix", "reflect"]


def reflect(index: np.ndarray, dim: int) -> np.ndarray:
    """Half-sample symmetric reflection (``…c b a | a b c … z | z y …``) of any integer index.

    What ``numpy.pad(mode="symmetric")`` does, for indices any distance outside ``0 … dim − 1``.

    Example:
        >>> reflect(np.arange(-3, 7), 4).tolist()
        [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]
    """
    period = np.mod(index, 2 * dim)
    return np.where(period < dim, period, 2 * dim - 1 - period)


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` float32 matrix of a 1-D Gaussian blur, truncated at 3σ, symmetric edges.

    Row ``i`` holds the weights of output pixel ``i``: taps at ``i − r … i + r`` (``r = ceil(3σ)``,
    at least 1) folded back into the image by :func:`reflect`; each row sums to 1. The weights
    are summed in float64, tap by tap in offset order, then cast to float32.

    Args:
        size: the length of the axis blurred (``>= 1``).
        sigma: the standard deviation in pixels (``> 0``; the callers check it).

    Example:
        >>> blur_matrix(3, 1.0).shape, blur_matrix(3, 1.0).dtype.name
        ((3, 3), 'float32')
    """
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((size, size), np.float64)
    rows = np.arange(size)
    for off, k in zip(offsets, kernel):
        np.add.at(matrix, (rows, reflect(rows + off, size)), k)
    return matrix.astype(np.float32)
