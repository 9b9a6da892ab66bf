"""Display of backprop results: map normalisation and Zeiler & Fergus's "top 9" figure blocks.

Zeiler & Fergus (2014) show their projections without saying how they were scaled. We
choose, and document, two normalisations (:func:`normalize_map`); both are per map, robust to
a few extreme pixels, and send an all-zero map to a constant image instead of dividing by zero:

* ``"signed"`` (for deconvnet / guided / gradient maps shown as images, the paper's look):
  ``0.5 + 0.5 · m / s`` clipped to ``[0, 1]``, where ``s`` is the ``percentile``-th percentile
  of ``|m|`` over the whole map (all pixels and channels). Zero is mid-grey, the sign and the
  colour of the signal are kept, and one scale is shared by the channels so hues are not
  distorted.
* ``"abs"`` (a heat map, as in Simonyan et al.'s saliency maps): ``max_c |m|`` divided by
  the ``percentile``-th percentile of that ``(H, W)`` map, clipped to ``[0, 1]``.

:func:`top_grid` lays tiles out as grids and :func:`top_figure` draws the figure block of each
feature map of a :class:`~saliency_jax.backprop.methods.TopActivations`. Everything here is
array in, array out (``jax.numpy``); colour maps, overlays and files are
:mod:`saliency_jax.app.render`'s.

Example:
    >>> import jax.numpy as jnp
    >>> top_grid(normalize_map(jnp.ones((4, 5, 5, 3))), rows=2).shape
    (11, 11, 3)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax.backprop.methods import TopActivations

__all__ = ["NORMALIZATIONS", "normalize_map", "top_grid", "top_figure"]

NORMALIZATIONS: tuple[str, ...] = ("signed", "abs")


def normalize_map(m, *, method: str = "signed", percentile: float = 99.5, eps: float = 1e-12):
    """Scale saliency maps to ``[0, 1]`` for display.

    Args:
        m: ``(..., H, W, C)`` maps (any leading axes; each ``(H, W, C)`` map is scaled alone),
            floating dtype.
        method: ``"signed"`` → ``(..., H, W, C)`` with zero at 0.5; ``"abs"`` → ``(..., H, W)``
            channel-wise maximum of ``|m|``.
        percentile: the percentile of ``|m|`` mapped to full scale (``100`` = the maximum).
        eps: floor for the scale (an all-zero map renders as 0.5 / 0).

    Returns:
        float32 array in ``[0, 1]``: a NumPy array for a NumPy input (computed on the host, as
        renderers want it: no device round trip per tile), else a JAX array.

    Example:
        >>> import jax.numpy as jnp
        >>> normalize_map(jnp.array([[[-2.0], [1.0]]]), percentile=100.0)[..., 0]
        Array([[0.  , 0.75]], dtype=float32)
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"`method` (={method!r}) must be one of {NORMALIZATIONS}")
    if not isinstance(percentile, (int, float)) or not 0.0 < percentile <= 100.0:
        raise ValueError(f"`percentile` (={percentile!r}) must be a number in (0, 100]")
    xp = np if isinstance(m, np.ndarray) else jnp
    m = xp.asarray(m)
    if m.ndim < 3:
        raise ValueError(f"`m` (shape {m.shape}) must be (..., H, W, C)")
    if not jnp.issubdtype(m.dtype, jnp.floating):
        raise TypeError(f"`m` (dtype {m.dtype}) must have a floating dtype")
    m = m.astype(np.float32)
    if method == "abs":
        a = xp.max(xp.abs(m), axis=-1)  # (..., H, W)
        s = xp.percentile(a.reshape(a.shape[:-2] + (-1,)), percentile, axis=-1)
        s = xp.maximum(s, np.float32(eps)).astype(np.float32)
        return xp.clip(a / s[..., None, None], 0.0, 1.0).astype(np.float32)
    s = xp.percentile(xp.abs(m).reshape(m.shape[:-3] + (-1,)), percentile, axis=-1)
    s = xp.maximum(s, np.float32(eps)).astype(np.float32)
    return xp.clip(0.5 + 0.5 * m / s[..., None, None, None], 0.0, 1.0).astype(np.float32)


def top_grid(tiles, rows: int = 3, gap: int = 1, fill: float = 1.0):
    """Lay out ``(..., k, h, w, C)`` tiles as ``rows``-row grids ``(..., R·h + (R-1)·gap, Q·w + …, C)``.

    With ``k = 9`` and ``rows = 3`` this is the 3 × 3 block of one feature map in Zeiler &
    Fergus's Fig. 2 (tiles in reading order, strongest first; missing cells get ``fill``).
    Apply :func:`normalize_map` to projections first.

    Example:
        >>> import jax.numpy as jnp
        >>> top_grid(jnp.ones((9, 4, 4, 3))).shape
        (14, 14, 3)
    """
    tiles = jnp.asarray(tiles)
    if tiles.ndim < 4:
        raise ValueError(f"`tiles` (shape {tiles.shape}) must be (..., k, h, w, C)")
    rows = _validate.integer("rows", rows, lo=1)
    gap = _validate.integer("gap", gap, lo=0)
    *lead, k, h, w, c = tiles.shape
    cols = -(-k // rows)
    pad = rows * cols - k
    if pad:
        filler = jnp.full((*lead, pad, h, w, c), fill, tiles.dtype)
        tiles = jnp.concatenate([tiles, filler], axis=-4)
    cells = jnp.pad(tiles, [(0, 0)] * (len(lead) + 1) + [(0, gap), (0, gap), (0, 0)], constant_values=fill)
    cells = cells.reshape(*lead, rows, cols, h + gap, w + gap, c)
    nl = len(lead)
    perm = tuple(range(nl)) + (nl, nl + 2, nl + 1, nl + 3, nl + 4)
    grid = cells.transpose(perm).reshape(*lead, rows * (h + gap), cols * (w + gap), c)
    return grid[..., : rows * (h + gap) - gap, : cols * (w + gap) - gap, :]


def top_figure(top: TopActivations, rows: int = 3, gap: int = 2, percentile: float = 99.5):
    """Zeiler & Fergus's figure block per feature map: projections (left) beside image patches (right).

    Args:
        top: from :func:`saliency_jax.backprop.top_activations`.
        rows: grid rows (3 for the paper's 3 × 3 blocks of the top 9).
        gap: pixels between tiles and between the two grids (filled with 1.0, white).
        percentile: display scaling of each projection patch (see :func:`normalize_map`,
            ``"signed"``).

    Returns:
        ``(F, R·rh + (R−1)·gap, 2·(Q·rw + (Q−1)·gap) + gap, C)`` float32 in ``[0, 1]`` for display
        (image patches are shown as they are; give images in ``[0, 1]``).
    """
    proj = normalize_map(top.projection_patches, method="signed", percentile=percentile)
    left = top_grid(proj, rows=rows, gap=gap)
    right = top_grid(top.patches.astype(jnp.float32), rows=rows, gap=gap)
    sep = jnp.ones(left.shape[:-2] + (gap, left.shape[-1]), jnp.float32)
    return jnp.concatenate([left, sep, right], axis=-2)
