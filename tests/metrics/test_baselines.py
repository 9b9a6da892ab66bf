"""Baseline maps: random, centre prior, the Fleck et al. colour/edge filter; the blur they share."""

import jax
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from saliency_jax.metrics import centre_prior, colour_edge_saliency, gaussian_blur, random_map
from saliency_jax.metrics.baselines import blur_matrix


def test_gaussian_blur_equals_scipy_with_symmetric_edges():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 13, 3)).astype(np.float32)
    for sigma in (0.9, 2.0, 5.0):  # 5.0: taps reach past the image (15 > 9) and fold more than once
        want = np.stack([gaussian_filter(im, (sigma, sigma, 0), mode="reflect", truncate=3.0) for im in x])
        # scipy sizes the kernel as int(3 sigma + 0.5); ours as ceil(3 sigma): equal for these sigmas
        np.testing.assert_allclose(gaussian_blur(x, sigma), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gaussian_blur(x[..., 0], 2.0), gaussian_blur(x, 2.0)[..., 0], rtol=1e-6)
    assert blur_matrix(5, 1.0).sum(1) == pytest.approx(np.ones(5))


def test_random_map_is_uniform_and_keyed():
    a = random_map(jax.random.key(0), (4, 16, 16))
    b = random_map(jax.random.key(0), (4, 16, 16))
    c = random_map(jax.random.key(1), (4, 16, 16))
    assert a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.4 < float(a.mean()) < 0.6


def test_centre_prior_hand_values():
    m = np.asarray(centre_prior((2, 4, 6)))           # sigma = 1, centre (1.5, 2.5)
    assert m.shape == (2, 4, 6) and np.array_equal(m[0], m[1])
    assert m[0, 1, 2] == pytest.approx(np.exp(-(0.25 + 0.25) / 2))
    assert m[0, 0, 0] == pytest.approx(np.exp(-(1.5 ** 2 + 2.5 ** 2) / 2))
    assert np.unravel_index(np.argmax(m[0]), (4, 6)) == (1, 2)


def _reference_fleck(rgb255, sigma):
    """numpy + scipy, from the docstring's formulas."""
    log = 105.0 * np.log10(rgb255.astype(np.float64) + 1.0)
    i, rg, by = log[..., 1], log[..., 0] - log[..., 1], log[..., 2] - 0.5 * (log[..., 1] + log[..., 0])
    blur = lambda a: gaussian_filter(a, sigma, mode="reflect", truncate=3.0)  # noqa: E731
    crg, cby = blur(rg), blur(by)
    contrast = np.hypot(crg - crg.mean(), cby - cby.mean())
    texture = blur(np.abs(i - blur(i)))
    return contrast / contrast.mean() + texture / texture.mean()


def test_colour_edge_saliency_equals_the_formula_and_finds_a_coloured_patch():
    rng = np.random.default_rng(0)
    x = np.full((2, 24, 24, 3), 120.0) + rng.normal(0, 3, (2, 24, 24, 3))
    x[0, 8:14, 10:16] = (230.0, 40.0, 30.0)
    x[1, 2:6, 2:6] = (20.0, 200.0, 60.0)
    got = np.asarray(colour_edge_saliency(x.astype(np.float32), sigma=1.0))
    for k in range(2):
        np.testing.assert_allclose(got[k], _reference_fleck(np.clip(x[k], 0, 255), 1.0), rtol=1e-3, atol=1e-3)
    r, c = np.unravel_index(np.argmax(got[0]), (24, 24))
    assert 6 <= r <= 15 and 8 <= c <= 17
    # the same pixels in the shipped model's [-1, 1] range give the same map
    same = colour_edge_saliency((x / 127.5 - 1).astype(np.float32), value_range=(-1.0, 1.0), sigma=1.0)
    np.testing.assert_allclose(same, got, rtol=1e-4, atol=1e-4)


def test_colour_edge_saliency_of_a_flat_image_is_zero():
    assert float(np.abs(colour_edge_saliency(np.full((1, 8, 8, 3), 50.0, np.float32))).max()) == 0.0


def test_argument_checks():
    with pytest.raises(TypeError, match="`shape`"):
        centre_prior(8)
    with pytest.raises(ValueError, match="`shape`"):
        random_map(jax.random.key(0), (0, 4))
    with pytest.raises(ValueError, match="`sigma`"):
        gaussian_blur(np.zeros((1, 4, 4), np.float32), 0.0)
    with pytest.raises(ValueError, match=r"`images` \(shape=\(1, 4, 4, 1\)\)"):
        colour_edge_saliency(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(TypeError, match="`images`"):
        colour_edge_saliency(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="`value_range`"):
        colour_edge_saliency(np.zeros((1, 4, 4, 3), np.float32), value_range=(1.0, 0.0))
