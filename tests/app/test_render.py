"""Colour maps, overlays and panels against direct matplotlib / hand-computed values."""

import numpy as np
import pytest
from matplotlib import colormaps

from saliency_jax.app import render


def test_colorize_uses_matplotlib_and_ranges():
    heat = np.array([[0.0, 2.0], [4.0, np.nan]])
    rgb = render.colorize(heat)  # unsigned → jet over [0, 4]
    np.testing.assert_allclose(rgb[0, 1], colormaps["jet"](0.5)[:3], rtol=1e-6)
    np.testing.assert_allclose(rgb[1, 0], colormaps["jet"](1.0)[:3], rtol=1e-6)
    np.testing.assert_array_equal(rgb[1, 1], [0, 0, 0])  # NaN (no window) renders black
    signed = render.colorize(np.array([[-1.0, 0.0, 3.0]]))  # signed → RdBu_r, symmetric [-3, 3]
    np.testing.assert_allclose(signed[0, 1], colormaps["RdBu_r"](0.5)[:3], rtol=1e-6)
    np.testing.assert_allclose(signed[0, 0], colormaps["RdBu_r"](1 / 3)[:3], rtol=1e-6)
    fixed = render.colorize(np.array([[0.5]]), cmap="viridis", vmin=0.0, vmax=2.0)
    np.testing.assert_allclose(fixed[0, 0], colormaps["viridis"](0.25)[:3], rtol=1e-6)
    with pytest.raises(ValueError, match="`cmap` \\(='nope'\\)"):
        render.colorize(heat, cmap="nope")


def test_overlay_blends_by_alpha():
    image = np.full((2, 3, 3), 0.2, np.float32)
    heat = np.zeros((2, 3))
    out = render.overlay(image, heat, alpha=0.25, cmap="gray", vmin=0.0, vmax=1.0)  # gray(0) = black
    np.testing.assert_allclose(out, 0.75 * 0.2, rtol=1e-6)
    with pytest.raises(ValueError, match="`heat` \\(shape=\\(3, 3\\)\\)"):
        render.overlay(image, np.zeros((3, 3)))


def test_panel_layout():
    tiles = [np.zeros((4, 5, 3)), np.ones((4, 5, 3))]
    im = render.panel(tiles, ["a", "b"], scale=2, gap=3, caption_height=10)
    assert im.size == (2 * 10 + 3 * 3, 8 + 10 + 2 * 3)
    px = np.asarray(im)
    np.testing.assert_array_equal(px[3 + 10, 3], [0, 0, 0])  # first tile's top-left pixel
    np.testing.assert_array_equal(px[3 + 10, 3 + 10 + 3], [255, 255, 255])  # second tile's
