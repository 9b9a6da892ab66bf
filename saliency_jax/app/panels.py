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
from PIL import Image, ImageDraw

from saliency_jax import methods
from saliency_jax.app import render
from saliency_jax.app.settings import ExplainSettings

__all__ = ["PNG_OPTIONS", "TOP_K", "render_image", "top_k", "top_k_caption", "render_photo", "carry_back"]

#: How many classes the captions and sidecars of a many-class model list.
TOP_K = 5

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


def top_k(classes: Sequence[str], probs: np.ndarray, k: int = TOP_K) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, ``[(name, probability), …]``, most probable first (ties by index).

    Example:
        >>> top_k(["a", "b", "c"], np.array([0.2, 0.5, 0.3]), 2)
        [('b', 0.5), ('c', 0.3)]
    """
    order = np.argsort(-np.asarray(probs, np.float64), kind="stable")[:k]
    return [(classes[int(c)], float(probs[int(c)])) for c in order]


def top_k_caption(classes: Sequence[str], probs: np.ndarray, k: int = TOP_K, line_height: int = 14) -> Image.Image:
    """A white strip listing the top-``k`` classes with their probabilities, one per line.

    Example:
        >>> top_k_caption(["a", "b"], np.array([0.4, 0.6])).size[1]
        40
    """
    rows = top_k(classes, probs, k)
    width = 12 + 7 * max(len(f"{i + 1}. {c}: {p:.3f}") for i, (c, p) in enumerate(rows))
    im = Image.new("RGB", (max(width, 120), 6 + line_height * len(rows) + 6), "white")
    draw = ImageDraw.Draw(im)
    for i, (c, p) in enumerate(rows):
        draw.text((6, 6 + i * line_height), f"{i + 1}. {c}: {p:.3f}", fill="black")
    return im


def carry_back(m: np.ndarray, shape: Sequence[int], box: Sequence[int]) -> np.ndarray:
    """A map at the model's input size laid over the whole photo: resized (bilinear) to the crop
    ``box = (top, left, height, width)`` and placed there on a NaN canvas of ``shape = (h, w)``;
    an ``(H, W, C)`` map keeps its channels.

    Example:
        >>> out = carry_back(np.ones((4, 4), np.float32), (6, 10), (1, 3, 4, 4))
        >>> out.shape, int(np.isfinite(out).sum()), float(np.nanmax(out))
        ((6, 10), 16, 1.0)
    """
    top, left, bh, bw = (int(v) for v in box)
    m = np.asarray(m, np.float32)
    chans = [m] if m.ndim == 2 else [m[..., c] for c in range(m.shape[-1])]
    resized = [np.asarray(Image.fromarray(np.nan_to_num(c), mode="F").resize((bw, bh), Image.BILINEAR), np.float32)
               for c in chans]
    out = np.full(tuple(shape[:2]) + (() if m.ndim == 2 else (m.shape[-1],)), np.nan, np.float32)
    out[top:top + bh, left:left + bw] = resized[0] if m.ndim == 2 else np.stack(resized, -1)
    return out


def render_photo(photo: np.ndarray, box: Sequence[int], maps: dict, classes: Sequence[str], explained: int,
                 probs: np.ndarray, settings: ExplainSettings):
    """The maps of one explained class over the whole photo: photo (crop box outlined) | one tile per method.

    Each map is carried back through the crop and resize (:func:`carry_back`); heat and signed
    maps are coloured inside the box over the photo, rgb maps (normalised) replace the box; the
    photo outside the box is dimmed. The top-5 classes are listed under the tiles.

    Args:
        photo: ``(h, w, 3)`` floats in [0, 1], the whole photo (possibly shrunk).
        box: ``(top, left, height, width)``: where the model input lies in ``photo``.
        maps, classes, probs, settings: as for :func:`render_image` (one explained class).
        explained: the class index the maps explain.

    Returns:
        A ``PIL.Image``.
    """
    top, left, bh, bw = (int(v) for v in box)
    dim = (0.45 * np.asarray(photo, np.float32)).astype(np.float32)
    framed = np.array(photo, np.float32)
    framed[top:top + bh, [left, min(left + bw, framed.shape[1]) - 1]] = (1.0, 1.0, 0.0)
    framed[[top, min(top + bh, framed.shape[0]) - 1], left:left + bw] = (1.0, 1.0, 0.0)
    pred = int(np.argmax(probs))
    tiles, captions = [framed], [f"{classes[pred]}: P={probs[pred]:.2f}"]
    sl = (slice(top, top + bh), slice(left, left + bw))
    for method in settings.methods:
        kind = methods.get(method).kind
        m = carry_back(maps[method], photo.shape[:2], box)
        tile = dim.copy()
        if kind == "rgb":
            inside = np.asarray(render.normalize_map(maps[method]), np.float32)
            tile[sl] = np.asarray(Image.fromarray(render.to_uint8(inside)).resize((bw, bh), Image.BILINEAR),
                                  np.float32) / 255.0
        else:
            cmap = settings.signed_cmap if kind == "signed" else settings.cmap
            _, lo, hi = render.heat_range(maps[method], cmap=cmap)
            tile[sl] = render.overlay(np.asarray(photo, np.float32)[sl], m[sl], alpha=settings.alpha, cmap=cmap,
                                      vmin=lo, vmax=hi)
        tiles.append(tile)
        captions.append(_caption(method, classes[explained]))
    return render.stack([render.panel(tiles, captions, scale=1), top_k_caption(classes, probs)])
