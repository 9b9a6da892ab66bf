"""Brute-force references for tests only: one window at a time, plain numpy and PIL, float64.

Nothing here is shared with the package: grid, variants, blur, resize and accumulation are
written again, the slow and obvious way.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def origins(dim: int, window: int, stride: int, placement: str) -> list[int]:
    if placement == "clip":  # Captum: ceil((D - w) / s) + 1 windows, the last one clipped
        return [k * stride for k in range(math.ceil((dim - window) / stride) + 1)]
    return list(range(0, dim - window + 1, stride))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, radius ceil(3σ) (at least 1), normalised, numpy 'symmetric' padding."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    h, w, _ = image.shape
    rows = sum(taps[k] * padded[k : k + h] for k in range(2 * radius + 1))
    return sum(taps[k] * rows[:, k : k + w] for k in range(2 * radius + 1))


def resize_bilinear(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's bilinear resize, channel by channel, on float32 ('F' mode) images."""
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., c], np.float32), mode="F").resize((width, height), Image.BILINEAR))
        for c in range(crop.shape[-1])
    ]
    return np.stack(chans, axis=-1).astype(np.float64)


def occlusion_map(
    f,
    image: np.ndarray,
    *,
    window,
    stride,
    target,
    mode="occlude",
    fill=0.0,
    score=None,
    combine="mean",
    placement="clip",
    blur_sigma=None,
) -> np.ndarray:
    """Occlusion map of ONE image ``(H, W, C)`` for ``f: (H, W, C) float64 -> (K,)``.

    ``target`` is an int, or "all" (returns ``(K, H, W)``). ``fill`` as in the package.
    """
    h, w, c = image.shape
    wy, wx = window
    sy, sx = stride
    score = score or ("difference" if mode == "occlude" else "output")
    x = image.astype(np.float64)
    base = np.asarray(f(x), np.float64)
    if isinstance(fill, str) and fill == "mean":
        fill_img = np.broadcast_to(x.mean(axis=(0, 1)), x.shape)
    elif isinstance(fill, str) and fill == "blur":
        fill_img = gaussian_blur(x, blur_sigma if blur_sigma is not None else max(min(wy, wx) / 4, 0.5))
    else:
        fill_img = np.broadcast_to(np.asarray(fill, np.float64), x.shape)
    classes = list(range(base.shape[0])) if target == "all" else [target]
    total = np.zeros((len(classes), h, w))
    count = np.zeros((h, w))
    for oy in origins(h, wy, sy, placement):
        for ox in origins(w, wx, sx, placement):
            if mode == "occlude":
                variant = x.copy()
                variant[oy : oy + wy, ox : ox + wx] = fill_img[oy : oy + wy, ox : ox + wx]
            else:
                variant = resize_bilinear(x[oy : oy + wy, ox : ox + wx], h, w)
            out = np.asarray(f(variant), np.float64)
            for k, cls in enumerate(classes):
                s = out[cls] if score == "output" else base[cls] - out[cls]
                total[k, oy : oy + wy, ox : ox + wx] += s
            count[oy : oy + wy, ox : ox + wx] += 1
    if combine == "mean":
        total = total / np.maximum(count, 1)
    total[:, count == 0] = np.nan
    return total if target == "all" else total[0]
