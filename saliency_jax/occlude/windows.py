"""Window grid geometry for occlusion: origins, clipped extents, coverage.

Windows are placed independently along each spatial axis; the grid is their product.
Two placements are offered:

* ``"clip"`` (default, Captum's rule): origins ``0, s, 2s, …`` with ``ceil((D − w) / s) + 1``
  windows per axis; the last window may reach past the border and is clipped to it, so every
  pixel is covered at least once (given ``s <= w``).
* ``"valid"``: full windows only, origins ``0, s, …, floor((D − w) / s) · s``; pixels past the
  last full window are covered by no window.

Everything here is static geometry computed with numpy at trace time.

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
import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["PLACEMENTS", "WindowGrid", "as_pair", "window_grid", "coverage"]

PLACEMENTS = ("clip", "valid")


def as_pair(name: str, value) -> tuple[int, int]:
    """Return ``value`` as a ``(rows, cols)`` pair of positive ints; an int means both.

    Raises:
        TypeError: ``value`` is not an int or a pair of ints.
        ValueError: an entry is not positive.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"`{name}` (={value!r}) must be an int or a pair of ints (rows, cols)")
    if min(pair) <= 0:
        raise ValueError(f"`{name}` (={value!r}) must be positive along both axes")
    return pair


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
    height, width = as_pair("size", size)
    wy, wx = as_pair("window", window)
    sy, sx = (wy, wx) if stride is None else as_pair("stride", stride)
    if wy > height or wx > width:
        raise ValueError(f"`window` (={window!r}) must fit inside the image (H={height}, W={width})")
    if sy > wy or sx > wx:
        raise ValueError(
            f"`stride` (={stride!r}) must not exceed `window` (={window!r}) along either axis: "
            "pixels between windows would never be occluded"
        )
    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` (={placement!r}) must be one of {PLACEMENTS}")
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
    """How many windows cover each pixel: ``(H, W) int64`` (zero only with ``placement="valid"``)."""
    rows, cols = axis_masks(grid, size)
    return np.outer(rows.sum(0), cols.sum(0))
