"""Superpixels for the perturbation family: SLIC (scikit-image, an optional extra) or a regular grid.

:func:`segments` gives the ``feature_mask`` of :func:`saliency_jax.feature_ablation` and the
Shapley methods: integer ids ``0 … F − 1`` per pixel, consecutive. With scikit-image installed
(``pip install saliency-jax[segments]``) it runs SLIC (Achanta et al. 2012) on each image,
rescaled to ``[0, 1]``; without it, or with ``kind="grid"``, it cuts the image into a regular
grid of about ``n`` rectangles (rows and columns in proportion to the image's sides).

Example:
    >>> import numpy as np
    >>> from saliency_jax.occlude.segments import segments
    >>> seg = segments(np.zeros((8, 8, 3), np.float32), n=4, kind="grid")
    >>> seg.tolist()[0], int(seg.max()) + 1
    ([0, 0, 0, 0, 1, 1, 1, 1], 4)
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from saliency_jax import _validate

__all__ = ["KINDS", "segments", "grid_segments", "has_slic"]

KINDS = ("auto", "slic", "grid")


def has_slic() -> bool:
    """Whether scikit-image (the ``segments`` extra) is installed."""
    return importlib.util.find_spec("skimage") is not None


def grid_segments(size, n: int) -> np.ndarray:
    """A regular grid of about ``n`` rectangles over ``size = (H, W)``: int32 ``(H, W)``, ids row-major.

    Example:
        >>> grid_segments((2, 6), 3).tolist()
        [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]]
    """
    h, w = size
    rows = max(1, min(h, round(math.sqrt(n * h / w))))
    cols = max(1, min(w, math.ceil(n / rows)))
    ry = np.arange(h) * rows // h
    rx = np.arange(w) * cols // w
    return (ry[:, None] * cols + rx[None, :]).astype(np.int32)


def _slic(image: np.ndarray, n: int, compactness: float) -> np.ndarray:
    from skimage.segmentation import slic

    lo, hi = float(image.min()), float(image.max())
    unit = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    labels = slic(unit.astype(np.float64), n_segments=n, compactness=compactness, start_label=0,
                  channel_axis=-1, convert2lab=image.shape[-1] == 3)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


def segments(image, n: int = 50, *, kind: str = "auto", compactness: float = 10.0) -> np.ndarray:
    """Superpixel ids of ``image``: int32 ``(H, W)`` for ``(H, W, C)``, ``(N, H, W)`` for a batch.

    Args:
        image: ``(H, W, C)`` or ``(N, H, W, C)``, finite (any range: SLIC sees it rescaled to [0, 1]).
        n: about how many segments (``>= 1``); SLIC may return a few more or fewer.
        kind: ``"auto"`` (SLIC when scikit-image is installed, else the grid), ``"slic"`` or ``"grid"``.
        compactness: SLIC's balance of colour against space (higher: squarer segments).

    Returns:
        Consecutive ids ``0 … F − 1`` (numpy), per image.

    Raises:
        ValueError: a bad ``n``/``kind``, or ``kind="slic"`` without scikit-image.
    """
    images, batched = _validate.image(image)
    n = _validate.integer("n", n, lo=1)
    kind = _validate.choice("kind", kind, KINDS)
    if kind == "slic" and not has_slic():
        raise ValueError("`kind` (='slic') needs scikit-image: pip install 'saliency-jax[segments]' (or kind='grid')")
    use_slic = kind == "slic" or (kind == "auto" and has_slic())
    arr = np.asarray(images, np.float32)
    out = np.stack([_slic(x, n, compactness) if use_slic else grid_segments(x.shape[:2], n) for x in arr])
    return out if batched else out[0]
