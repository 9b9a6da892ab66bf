"""Mask sets for the masked-evaluation core: what each masked copy of an image is.

Every method of the perturbation family (occlusion windows, feature ablation, Shapley values,
KernelSHAP, RISE) evaluates the model on masked copies ``x·(1 − m) + fill·m`` of an image, one
per mask ``m`` (``(H, W)``, ``1`` = the pixel is replaced by the fill). The engine
(:func:`saliency_jax.occlude.engine.evaluate_masks`) runs them in fixed-size chunks, sharded over
devices, and, where each mask's support has a bounding box, recomputes only the region it
changes (:mod:`saliency_jax.occlude.incremental`, the union-box rules of the windows). Windows
are the mask set of a :class:`~saliency_jax.occlude.windows.WindowGrid`; this module describes the
others, each as a *static* part (a hashable :class:`MaskSet`: kind, count, binary or soft, the
boxes) and a *traced* part (the arrays, so that new masks of the same shapes reuse the compiled
computation):

* ``"coalitions"``: ``off (P, F)`` bool and ``segments (N, H, W)`` int32: mask ``p`` of image
  ``n`` replaces the pixels whose segment is off, ``off[p][segments[n]]`` (binary);
* ``"cells"`` (RISE): ``cells (P, s, s)`` float32 (1 = keep) and ``shifts (P, 2)`` int32: the
  grid is upsampled bilinearly to ``(s + 1)·⌈H/s⌉`` and cropped at the shift; the mask is
  ``1 −`` that (soft);
* ``"explicit"``: ``masks (P, H, W)`` float32 in ``[0, 1]`` (soft), or bool (binary).

Masks are built per variant inside each chunk (never all ``P`` at once), so memory is bounded by
the chunk. Binary masks select with ``jnp.where`` (as the windows do); soft masks blend
arithmetically.

Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> from saliency_jax.occlude import masked
    >>> seg = np.array([[0, 0, 1], [0, 0, 1]])
    >>> spec, data = masked.coalition_masks(np.array([[True, False], [False, True]]), seg[None])
    >>> masked.mask_at(spec, data, 0, 1, (2, 3)).astype(int).tolist()   # image 0, mask 1: segment 1 off
    [[0, 0, 1], [0, 0, 1]]
    >>> masked.coalition_boxes([[True, False], [False, True]], seg[None])  # (y0, y1, x0, x1) per variant
    ((0, 2, 0, 2), (0, 2, 2, 3))
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.occlude.windows import WindowGrid

__all__ = ["KINDS", "MaskSet", "coalition_masks", "cell_masks", "explicit_masks", "mask_at", "blend",
           "explicit_boxes", "coalition_boxes", "box_grid", "rise_mask"]

KINDS = ("coalitions", "cells", "explicit")


@dataclasses.dataclass(frozen=True)
class MaskSet:
    """The static part of a mask set (hashable: part of the engine's compilation key).

    Attributes:
        kind: one of :data:`KINDS`.
        n_masks: ``P``, masks per image.
        soft: blend arithmetically (``x·(1 − m) + fill·m``) rather than select.
        cell: RISE's grid size ``s`` (``"cells"`` only, else 0).
        boxes: ``None`` (full re-inference only) or, per flat variant ``t = n·P + p``, the bounding
            box ``(y0, y1, x0, x1)`` of the mask's support (``y0 == y1``: an empty mask), for the
            incremental path.
    """

    kind: str
    n_masks: int
    soft: bool
    cell: int = 0
    boxes: tuple[tuple[int, int, int, int], ...] | None = None


def coalition_masks(off, segments) -> tuple[MaskSet, dict]:
    """``(spec, data)`` for masks that switch features off: ``off (P, F)`` bool, ``segments (N, H, W)`` int ids.

    Example:
        >>> coalition_masks(np.ones((3, 2), bool), np.zeros((1, 4, 4), int))[0].n_masks
        3
    """
    off = jnp.asarray(off, bool)
    return MaskSet("coalitions", int(off.shape[0]), False), {"off": off, "segments": jnp.asarray(segments, jnp.int32)}


def cell_masks(cells, shifts) -> tuple[MaskSet, dict]:
    """``(spec, data)`` for RISE's masks: ``cells (P, s, s)`` (1 = keep), ``shifts (P, 2)`` int in ``[0, ⌈H/s⌉)``.

    Example:
        >>> cell_masks(np.ones((5, 3, 3)), np.zeros((5, 2), int))[0].cell
        3
    """
    cells = jnp.asarray(cells, jnp.float32)
    return (MaskSet("cells", int(cells.shape[0]), True, cell=int(cells.shape[1])),
            {"cells": cells, "shifts": jnp.asarray(shifts, jnp.int32)})


def explicit_masks(masks) -> tuple[MaskSet, dict]:
    """``(spec, data)`` for explicit masks ``(P, H, W)``: bool (binary) or floating in ``[0, 1]`` (soft).

    Example:
        >>> explicit_masks(np.zeros((2, 4, 4), bool))[0].soft
        False
    """
    soft = not jnp.asarray(masks).dtype == jnp.bool_
    masks = jnp.asarray(masks, jnp.float32 if soft else bool)
    return MaskSet("explicit", int(masks.shape[0]), soft), {"masks": masks}


def _upsampled(cells, shift, cell: int, size):
    """One RISE mask (1 = keep): the ``(s, s)`` grid resized bilinearly (half-pixel centres) to
    ``(s + 1)·⌈H/s⌉ × (s + 1)·⌈W/s⌉`` and cropped to ``(H, W)`` at ``shift``."""
    h, w = size
    ch, cw = math.ceil(h / cell), math.ceil(w / cell)
    up = jax.image.resize(cells, ((cell + 1) * ch, (cell + 1) * cw), "linear", antialias=False)
    return jax.lax.dynamic_slice(up, (shift[0], shift[1]), (h, w))


def rise_mask(cells, shift, size) -> jax.Array:
    """RISE's mask ``(H, W)`` float32 (1 = keep) of one ``(s, s)`` grid at ``shift`` (see :func:`cell_masks`).

    Example:
        >>> rise_mask(jnp.ones((2, 2)), jnp.zeros(2, jnp.int32), (4, 4)).tolist()[0]
        [1.0, 1.0, 1.0, 1.0]
    """
    return _upsampled(jnp.asarray(cells, jnp.float32), jnp.asarray(shift, jnp.int32), int(np.shape(cells)[0]), size)



def mask_at(spec: MaskSet, data: dict, img, p, size) -> jax.Array:
    """Mask ``p`` of image ``img`` (int scalars, traced or not): ``(H, W)``, bool (binary) or
    float32 (soft); ``1``/``True`` = replaced by the fill."""
    if spec.kind == "coalitions":
        return data["off"][p][data["segments"][img]]
    if spec.kind == "cells":
        return 1.0 - _upsampled(data["cells"][p], data["shifts"][p], spec.cell, size)
    return data["masks"][p]


def blend(image, fill, mask, soft: bool):
    """``image·(1 − mask) + fill·mask`` over the channels (``mask`` ``(…, H, W)``); binary masks select."""
    if not soft:
        return jnp.where(mask[..., None], fill, image)
    m = mask[..., None].astype(image.dtype)
    return image * (1 - m) + fill.astype(image.dtype) * m


def explicit_boxes(masks) -> tuple[tuple[int, int, int, int], ...]:
    """The bounding box ``(y0, y1, x0, x1)`` of each mask's support (``m > 0``), for masks ``(P, H, W)``
    (numpy, concrete masks); ``(0, 0, 0, 0)`` for an empty mask.

    Example:
        >>> explicit_boxes(np.array([[[0, 0.5], [0, 0]]]))
        ((0, 1, 1, 2),)
    """
    return tuple(_box(np.asarray(m) > 0) for m in np.asarray(masks))


def _box(support: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def coalition_boxes(off, segments) -> tuple[tuple[int, int, int, int], ...]:
    """Bounding boxes of the masks ``off[p][segments[n]]``, per flat variant ``t = n·P + p``: the
    union of the boxes of the features switched off (numpy; concrete ``off``, ``segments``).

    Example:
        >>> coalition_boxes(np.array([[False, True]]), np.array([[[0, 1], [0, 0]]]))
        ((0, 1, 1, 2),)
    """
    off = np.asarray(off, bool)
    out = []
    for seg in np.asarray(segments):
        feat = np.asarray([_box(seg == f) for f in range(off.shape[1])], np.int64).reshape(-1, 4)  # (F, 4)
        on = off & (feat[:, 1] > feat[:, 0])[None]  # features off that cover pixels
        big = np.iinfo(np.int64).max
        y0 = np.where(on, feat[:, 0], big).min(1)
        y1 = np.where(on, feat[:, 1], 0).max(1)
        x0 = np.where(on, feat[:, 2], big).min(1)
        x1 = np.where(on, feat[:, 3], 0).max(1)
        empty = ~on.any(1)
        box = np.stack([y0, y1, x0, x1], 1)
        box[empty] = 0
        out.extend(tuple(int(v) for v in b) for b in box)
    return tuple(out)


def box_grid(box_list) -> WindowGrid:
    """The boxes as a :class:`~saliency_jax.occlude.windows.WindowGrid` whose variant ``t`` is
    ``(iy, ix) = (t, t)``: how the incremental engine reads a box per variant.

    Example:
        >>> box_grid(((0, 2, 1, 3),)).extents_x.tolist()
        [2]
    """
    b = np.asarray(box_list, np.int64).reshape(-1, 4)
    return WindowGrid(b[:, 0], b[:, 2], b[:, 1] - b[:, 0], b[:, 3] - b[:, 2])
