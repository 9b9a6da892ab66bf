"""Rendering: colour maps, overlays and panels for saliency maps.

The display normalisation of backprop maps (:func:`normalize_map`, ``"signed"`` or ``"abs"``)
lives with the maps it scales, in :mod:`saliency_jax.backprop.display`, and is re-exported here
as ``sj.render.normalize_map``. The maps of one figure are normalised independently (each map's
own scale), since their magnitudes differ by orders of magnitude between layers and units;
compare magnitudes with the raw maps, not the rendered ones.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from saliency_jax._plotting import check_cmap
from saliency_jax.backprop.display import NORMALIZATIONS, normalize_map

__all__ = ["normalize_map", "NORMALIZATIONS", "heat_range", "colorize", "overlay", "panel", "stack", "to_uint8",
           "from_uint8"]


def to_uint8(image) -> np.ndarray:
    """``(H, W, 3)`` or ``(H, W)`` floats in ``[0, 1]`` → ``uint8`` (rounded, clipped)."""
    return np.round(np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def from_uint8(pixels) -> np.ndarray:
    """``uint8`` pixels (any shape) → ``float32`` in ``[0, 1]``, for display (the image under an overlay).

    Display only: what the *model* sees goes through the model's own preprocessing
    (:func:`saliency_jax.model.data.preprocess`).

    Example:
        >>> from_uint8(np.array([0, 51, 255], np.uint8)).tolist()
        [0.0, 0.20000000298023224, 1.0]
    """
    return np.asarray(pixels).astype(np.float32) / 255.0


def heat_range(heat, *, cmap: str | None = None, vmin: float | None = None, vmax: float | None = None):
    """The colour map and value range :func:`colorize` uses for ``heat`` (for a colour bar).

    Args:
        heat: ``(H, W)`` floats; NaN pixels are ignored.
        cmap, vmin, vmax: as for :func:`colorize`.

    Returns:
        ``(cmap, vmin, vmax)``: ``cmap`` defaults to ``"jet"``, or ``"RdBu_r"`` when the map
        has both signs; the range defaults to ``[min, max]``, or ``[-a, a]`` with
        ``a = max |heat|`` for a signed map.

    Example:
        >>> heat_range(np.array([[-1.0, 2.0]]))
        ('RdBu_r', -2.0, 2.0)
    """
    heat = np.asarray(heat, np.float64)
    if heat.ndim != 2:
        raise ValueError(f"`heat` (shape={heat.shape}) must be (H, W)")
    finite = heat[np.isfinite(heat)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    signed = lo < 0.0 < hi
    if cmap is None:
        cmap = "RdBu_r" if signed else "jet"
    check_cmap("cmap", cmap)
    if vmin is None and vmax is None and signed:
        a = max(abs(lo), abs(hi))
        lo, hi = -a, a
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    return cmap, lo, hi


def colorize(heat, *, cmap: str | None = None, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Colour a heat map with a matplotlib colour map.

    NaN pixels (covered by no occlusion window) render black.

    Args:
        heat: ``(H, W)`` floats.
        cmap: a matplotlib colour-map name. Default ``"jet"`` (the original figures), or
            ``"RdBu_r"`` when the map has both signs (zero in the middle).
        vmin, vmax: the value range mapped to the colour map's ends. Default: ``[min, max]``,
            or ``[-a, a]`` with ``a = max |heat|`` for a signed map (see :func:`heat_range`).

    Returns:
        ``(H, W, 3) float32`` RGB in ``[0, 1]``.

    Example:
        >>> colorize(np.array([[0.0, 1.0]])).shape
        (1, 2, 3)
    """
    from matplotlib import colormaps

    cmap, lo, hi = heat_range(heat, cmap=cmap, vmin=vmin, vmax=vmax)
    heat = np.asarray(heat, np.float64)
    scaled = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    rgb = colormaps[cmap](np.clip(np.nan_to_num(scaled), 0.0, 1.0))[..., :3]
    rgb[~np.isfinite(heat)] = 0.0
    return rgb.astype(np.float32)


def overlay(image, heat, *, alpha: float = 0.5, **colorize_kwargs) -> np.ndarray:
    """Blend a coloured heat map onto an image: ``(1 − alpha)·image + alpha·colour``.

    Args:
        image: ``(H, W, 3)`` RGB floats in ``[0, 1]`` (or ``(H, W, 1)`` grey).
        heat: ``(H, W)`` map.
        alpha: the heat map's weight in ``[0, 1]``.
        **colorize_kwargs: ``cmap``, ``vmin``, ``vmax`` for :func:`colorize`.

    Returns:
        ``(H, W, 3) float32`` in ``[0, 1]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` (={alpha!r}) must lie in [0, 1]")
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"`image` (shape={image.shape}) must be (H, W, 3) or (H, W, 1)")
    if image.shape[:2] != np.shape(heat):
        raise ValueError(f"`heat` (shape={np.shape(heat)}) must match the image's (H, W) = {image.shape[:2]}")
    colour = colorize(heat, **colorize_kwargs)
    return ((1.0 - alpha) * np.broadcast_to(image, colour.shape) + alpha * colour).astype(np.float32)


def _bar_row(cmap: str, width: int, height: int) -> np.ndarray:
    from matplotlib import colormaps

    ramp = np.linspace(0.0, 1.0, width)
    return np.broadcast_to(colormaps[cmap](ramp)[None, :, :3], (height, width, 3))


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def panel(tiles, captions, *, bars=None, scale: int = 2, gap: int = 6, caption_height: int = 16,
          bar_height: int = 8) -> Image.Image:
    """Side-by-side tiles with a caption above each, as in the original write-up's figures.

    Args:
        tiles: a sequence of ``(H, W, 3)`` floats in ``[0, 1]``, all the same size.
        captions: one string per tile.
        bars: optional colour bars, one entry per tile: ``(cmap, vmin, vmax)`` (e.g. from
            :func:`heat_range`) draws that colour map under the tile with its end values;
            ``None`` draws nothing under that tile.
        scale: integer upscaling of each tile (nearest neighbour, so pixels stay visible).
        gap: pixels between tiles.
        caption_height: pixels reserved above the tiles for the captions.
        bar_height: height of a colour bar in pixels (its labels take ``caption_height`` more).

    Returns:
        A ``PIL.Image`` in RGB mode.

    Example:
        >>> t = np.zeros((4, 4, 3))
        >>> panel([t, t], ["a", "b"], scale=1).size
        (26, 32)
    """
    if len(tiles) != len(captions) or not tiles:
        raise ValueError(f"`tiles` ({len(tiles)}) and `captions` ({len(captions)}) must be non-empty and of equal length")
    if bars is not None and len(bars) != len(tiles):
        raise ValueError(f"`bars` ({len(bars)}) must give one entry (or None) per tile ({len(tiles)})")
    h, w = np.shape(tiles[0])[:2]
    extra = 0 if bars is None or all(b is None for b in bars) else bar_height + caption_height + gap
    width = len(tiles) * w * scale + (len(tiles) + 1) * gap
    canvas = Image.new("RGB", (width, h * scale + caption_height + 2 * gap + extra), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (tile, caption) in enumerate(zip(tiles, captions)):
        if np.shape(tile)[:2] != (h, w):
            raise ValueError(f"tile {k} has shape {np.shape(tile)}, the first tile {(h, w)}")
        x = gap + k * (w * scale + gap)
        im = Image.fromarray(to_uint8(tile)).resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(im, (x, gap + caption_height))
        draw.text((x, gap), caption, fill="black")
        if extra and bars[k] is not None:
            cmap, lo, hi = bars[k]
            y = 2 * gap + caption_height + h * scale
            canvas.paste(Image.fromarray(to_uint8(_bar_row(cmap, w * scale, bar_height))), (x, y))
            draw.text((x, y + bar_height + 1), _fmt(lo), fill="black")
            right = _fmt(hi)
            draw.text((x + w * scale - draw.textlength(right), y + bar_height + 1), right, fill="black")
    return canvas


def stack(images, *, gap: int = 0) -> Image.Image:
    """Stack ``PIL`` images vertically (left-aligned, white background), e.g. one panel per class."""
    if not images:
        raise ValueError("`images` must not be empty")
    width = max(im.size[0] for im in images)
    height = sum(im.size[1] for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.size[1] + gap
    return canvas
