"""Window grid geometry for occlusion: origins, clipped extents, coverage, per-pixel accumulation.

Windows are placed independently along each spatial axis; the grid is their product.
Two placements are offered:

* ``"clip"`` (default, Captum's rule): origins ``0, s, 2s, …`` with ``ceil((D − w) / s) + 1``
  windows per axis; the last window may reach past the border and is clipped to it, so every
  pixel is covered at least once (given ``s <= w``).
* ``"valid"``: full windows only, origins ``0, s, …, floor((D − w) / s) · s``; pixels past the
  last full window are covered by no window.

The grid is static geometry computed with numpy at trace time; two traced steps use it and
live here too, so that every engine shares them: :func:`window_mask` (the pixels one window
covers, for a traced window index) and :func:`accumulate` (each pixel's mean or sum over the
windows covering it, counted by :func:`coverage`).

Example:
    >>> from saliency_jax.occlude.windows import window_grid
    >>> g = window_grid((10, 7), window=4, stride=3)
    >>> g.origins_y.tolist(), g.extents_y.tolist()
    ([0, 3, 6], [4, 4, 4])
    >>> g.origins_x.tolist(), g.extents_x.tolist()  # ceil((7 - 4) / 3) + 1 = 2 windows cover all 7 columns
    ([0, 3], [4, 4])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate

__all__ = ["PLACEMENTS", "COMBINES", "WindowGrid", "window_grid", "axis_masks", "coverage", "window_mask", "accumulate"]

PLACEMENTS = ("clip", "valid")
COMBINES = ("mean", "sum")


class WindowGrid(NamedTuple):
    """Origins and clipped extents of the windows along each axis (all ``int`` numpy arrays).

    Window ``(i, j)`` covers rows ``origins_y[i] : origins_y[i] + extents_y[i]`` and columns
    ``origins_x[j] : origins_x[j] + extents_x[j]``; windows are numbered row-major,
    ``p = i * len(origins_x) + j``.
    """

    origins_y: np.ndarray
    origins_x: np.ndarray
    extents_y: np.ndarray
    extents_x: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Number of windows along ``(rows, cols)``."""
        return (len(self.origins_y), len(self.origins_x))

    @property
    def size(self) -> int:
        """Total number of windows."""
        return len(self.origins_y) * len(self.origins_x)


def _axis(dim: int, window: int, stride: int, placement: str) -> tuple[np.ndarray, np.ndarray]:
    if placement == "clip":
        count = math.ceil((dim - window) / stride) + 1
    else:
        count = (dim - window) // stride + 1
    origins = np.arange(count, dtype=np.int64) * stride
    extents = np.minimum(window, dim - origins)
    return origins, extents


def window_grid(size, window, stride=None, placement: str = "clip") -> WindowGrid:
    """The grid of windows over an image of spatial ``size``.

    Args:
        size: ``(H, W)`` of the image.
        window: ``(h, w)`` or an int for both; ``1 <= h <= H``, ``1 <= w <= W``.
        stride: ``(sh, sw)`` or an int; ``1 <= s <= window`` along each axis (a larger stride
            would skip pixels). ``None`` means ``stride = window`` (no overlap).
        placement: ``"clip"`` (Captum's rule, last window clipped) or ``"valid"`` (full windows).

    Returns:
        A :class:`WindowGrid`.

    Raises:
        TypeError, ValueError: for a malformed or out-of-range argument, naming it.
    """
    height, width = _validate.pair("size", size)
    wy, wx = _validate.pair("window", window)
    sy, sx = (wy, wx) if stride is None else _validate.pair("stride", stride)
    if wy > height or wx > width:
        raise ValueError(f"`window` (={window!r}) must fit inside the image (H={height}, W={width})")
    if sy > wy or sx > wx:
        raise ValueError(
            f"`stride` (={stride!r}) must not exceed `window` (={window!r}) along either axis: "
            "pixels between windows would never be occluded"
        )
    _validate.choice("placement", placement, PLACEMENTS)
    oy, ey = _axis(height, wy, sy, placement)
    ox, ex = _axis(width, wx, sx, placement)
    return WindowGrid(oy, ox, ey, ex)


def _axis_masks(origins: np.ndarray, extents: np.ndarray, dim: int) -> np.ndarray:
    pos = np.arange(dim)
    return (pos >= origins[:, None]) & (pos < (origins + extents)[:, None])


def axis_masks(grid: WindowGrid, size) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(n_rows, H)`` and ``(n_cols, W)``: which pixels each window row/column covers.

    The mask of window ``(i, j)`` is the outer product ``rows[i][:, None] & cols[j][None, :]``.
    """
    height, width = size
    return _axis_masks(grid.origins_y, grid.extents_y, height), _axis_masks(grid.origins_x, grid.extents_x, width)


def coverage(grid: WindowGrid, size) -> np.ndarray:
    """How many windows cover each pixel: ``(H, W) int64`` (zero only with ``placement="valid"``).

    Example:
        >>> from saliency_jax.occlude.windows import coverage, window_grid
        >>> coverage(window_grid((1, 5), window=(1, 3), stride=(1, 2)), (1, 5)).tolist()
        [[1, 1, 2, 1, 1]]
    """
    rows, cols = axis_masks(grid, size)
    return np.outer(rows.sum(0), cols.sum(0))


def window_mask(grid: WindowGrid, iy, ix, rows, cols) -> jax.Array:
    """Which of the pixels ``rows × cols`` window ``(iy, ix)`` covers: bool ``(len(rows), len(cols))``.

    Args:
        grid: the window grid.
        iy, ix: the window's row and column in the grid (int scalars, traced or not).
        rows, cols: int pixel positions ``(R,)`` and ``(C,)`` (e.g. ``arange(H)``), traced or not.
    """
    oy, ey = jnp.asarray(grid.origins_y, jnp.int32)[iy], jnp.asarray(grid.extents_y, jnp.int32)[iy]
    ox, ex = jnp.asarray(grid.origins_x, jnp.int32)[ix], jnp.asarray(grid.extents_x, jnp.int32)[ix]
    return ((rows >= oy) & (rows < oy + ey))[:, None] & ((cols >= ox) & (cols < ox + ex))[None, :]


def accumulate(scores: jax.Array, grid: WindowGrid, size, combine: str = "mean") -> jax.Array:
    """Each pixel's mean (or sum) of the scores of the windows covering it.

    Args:
        scores: ``(N, n_rows, n_cols, K)`` float32: one score per image, window and class.
        grid: the window grid (``grid.shape == (n_rows, n_cols)``).
        size: ``(H, W)`` of the image.
        combine: ``"mean"`` over the covering windows (Captum, xaitk) or ``"sum"`` (PAIR, xplique).

    Returns:
        float32 ``(N, K, H, W)``; NaN where no window covers the pixel (``placement="valid"``).

    Example:
        >>> import jax.numpy as jnp
        >>> from saliency_jax.occlude.windows import accumulate, window_grid
        >>> grid = window_grid((1, 3), window=(1, 2), stride=1)          # windows [0, 1] and [1, 2]
        >>> accumulate(jnp.asarray([3.0, 5.0]).reshape(1, 1, 2, 1), grid, (1, 3))[0, 0].tolist()
        [[3.0, 4.0, 5.0]]
    """
    _validate.choice("combine", combine, COMBINES)
    rows, cols = axis_masks(grid, size)
    total = jnp.einsum(
        "iy,nijk,jx->nkyx",
        jnp.asarray(rows, jnp.float32),
        scores,
        jnp.asarray(cols, jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )
    count = coverage(grid, size)[None, None]  # (1, 1, H, W)
    if combine == "mean":
        total = total / jnp.asarray(np.maximum(count, 1), jnp.float32)
    return jnp.where(jnp.asarray(count > 0), total, jnp.nan)
