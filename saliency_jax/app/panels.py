"""One image's figures: a tile per method and the panel image | tiles, captioned.

A method's map is drawn by its kind (:data:`saliency_jax.methods.KINDS`): ``"heat"`` and
``"signed"`` maps (crop, occlusion) are colour overlays on the resized image, through
``settings.cmap`` and ``settings.signed_cmap``; ``"rgb"`` maps (deconvnet, guided, gradient)
are shown through :func:`saliency_jax.app.render.normalize_map`. With several
explained classes a method's image and the panel stack one row per class.

Example:
    >>> import numpy as np
    >>> from saliency_jax.app.settings import ExplainSettings
    >>> s = ExplainSettings(("occlusion", "deconvnet"), (4, 4), (2, 2), 0.0, "predicted", ("png",),
    ...                     "jet", "RdBu_r", 0.5, False)
    >>> maps = {"occlusion": np.ones((8, 8), np.float32), "deconvnet": np.zeros((8, 8, 3), np.float32)}
    >>> panel, tiles = render_image(np.zeros((8, 8, 3)), maps, ["a", "b"], [1], np.array([0.2, 0.8]), s)
    >>> panel.size, sorted(tiles)
    ((72, 44), ['deconvnet', 'occlusion'])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from saliency_jax import methods
from saliency_jax.app import render
from saliency_jax.app.settings import ExplainSettings

__all__ = ["PNG_OPTIONS", "render_image"]

#: How the folder job saves PNGs: zlib level 1 is several times faster to encode than Pillow's
#: default level 6, for ~15 % more bytes (timed on one panel while writing this, not a recorded
#: benchmark).
PNG_OPTIONS = {"format": "PNG", "compress_level": 1}


def _caption(method: str, cls: str) -> str:
    return methods.get(method).caption(cls)


def _tile(method: str, display: np.ndarray, m: np.ndarray, settings: ExplainSettings):
    """A rendered tile ``(H, W, 3)`` in [0, 1] and its colour bar (or None)."""
    kind = methods.get(method).kind
    if kind != "rgb":
        cmap = settings.signed_cmap if kind == "signed" else settings.cmap
        rng = render.heat_range(m, cmap=cmap)
        return render.overlay(display, m, alpha=settings.alpha, cmap=cmap, vmin=rng[1], vmax=rng[2]), rng
    return np.asarray(render.normalize_map(m)), None


def render_image(display: np.ndarray, maps: dict, classes: Sequence[str], explained: Sequence[int],
                 probs: np.ndarray, settings: ExplainSettings, title: str | None = None):
    """Panel and per-method tiles for one image.

    Args:
        display: ``(H, W, 3)`` floats in [0, 1], the resized image.
        maps: ``{method: map}``: ``(H, W)`` heat and signed maps, ``(H, W, C)`` rgb maps; with several
            explained classes, each map has a leading class axis ``(K, …)``.
        classes: class names.
        explained: the class indices the maps explain (one, or all).
        probs: ``(K,)`` softmax probabilities of the image.
        settings: the methods (in panel order), colour maps, overlay weight and colour bars.
        title: the image tile's caption (default: the predicted class and its probability).

    Returns:
        ``(panel PIL image, {method: PIL image})``; a method's image stacks one tile per
        explained class.
    """
    rows, per_method = [], {m: [] for m in settings.methods}
    pred = int(np.argmax(probs))
    for j, c in enumerate(explained):
        cls = classes[c]
        tiles, captions, bars = [display], [(title or f"{classes[pred]}: P={probs[pred]:.2f}") if j == 0 else f"class {cls}"], [None]
        for method in settings.methods:
            m = maps[method] if len(explained) == 1 else maps[method][c]
            tile, bar = _tile(method, display, m, settings)
            tiles.append(tile)
            captions.append(_caption(method, cls))
            bars.append(bar if settings.colorbar else None)
            per_method[method].append(
                render.panel([tile], [_caption(method, cls)], bars=[bars[-1]], scale=1)
            )
        rows.append(render.panel(tiles, captions, bars=bars if settings.colorbar else None))
    return render.stack(rows), {m: render.stack(ims) for m, ims in per_method.items()}
