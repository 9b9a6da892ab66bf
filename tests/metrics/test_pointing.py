"""Pointing games against brute-force loops; edge cases; argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.metrics import energy_pointing_game, peak, pointing_game
from tests.metrics import reference as ref


def _random_case(seed, n=6, h=20, w=23, c=None, nan_frac=0.1):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    maps = rng.normal(size=shape).astype(np.float32)
    maps[rng.uniform(size=shape) < nan_frac] = np.nan
    masks = np.zeros((n, h, w), bool)
    for k in range(n):  # a small blob, sometimes far from the peak
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        masks[k, y:y + 3, x:x + rng.integers(1, 4)] = True
    masks[0] = False  # one empty mask
    return maps, masks


@pytest.mark.parametrize("c", [None, 3])
@pytest.mark.parametrize("tolerance", [0, 3, 7.5, 15])
def test_pointing_game_equals_brute_force(c, tolerance):
    for seed in range(3):
        maps, masks = _random_case(seed, c=c)
        got = np.asarray(pointing_game(maps, masks, tolerance=tolerance))
        want = np.array([ref.pointing_game(maps[k], masks[k], tolerance) for k in range(len(maps))])
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32
        assert np.isnan(got[0])  # the empty mask


def test_pointing_game_is_not_trivially_all_hits():
    maps, masks = _random_case(0, n=40)
    got = np.asarray(pointing_game(maps, masks, tolerance=3))
    assert 0 < np.nanmean(got) < 1


def test_tolerance_boundary_is_inclusive_and_euclidean():
    maps = np.zeros((1, 40, 40), np.float32)
    maps[0, 10, 10] = 1.0
    masks = np.zeros((1, 40, 40), bool)
    masks[0, 19, 22] = True  # distance sqrt(81 + 144) = 15 exactly
    assert pointing_game(maps, masks, tolerance=15).tolist() == [1.0]
    assert pointing_game(maps, masks, tolerance=14.99).tolist() == [0.0]
    masks2 = np.zeros((1, 40, 40), bool)
    masks2[0, 21, 21] = True  # Chebyshev 11 but Euclidean 15.56 > 15
    assert pointing_game(maps, masks2, tolerance=15).tolist() == [0.0]


def test_edge_cases_constant_map_nan_pixels_and_ties():
    masks = np.zeros((3, 8, 8), bool)
    masks[:, 7, 7] = True
    maps = np.zeros((3, 8, 8), np.float32)          # 0: constant -> peak (0, 0)
    maps[1] = np.nan                                 # 1: all NaN -> NaN
    maps[2, 7, 7], maps[2, 0, 0] = 5.0, 5.0          # 2: tie -> the first maximum (0, 0)
    maps[2, 3:, 3:] = np.nan
    assert np.asarray(peak(maps))[[0, 2]].tolist() == [[0, 0], [0, 0]]
    out = np.asarray(pointing_game(maps, masks, tolerance=2))
    assert out[0] == 0.0 and np.isnan(out[1]) and out[2] == 0.0
    nan_top = np.full((1, 8, 8), np.nan, np.float32)
    nan_top[0, 7, 7] = -100.0                        # NaN ranks below every number, even a negative one
    assert pointing_game(nan_top, masks[:1], tolerance=0).tolist() == [1.0]


def test_energy_pointing_game_equals_brute_force():
    for c in (None, 2):
        maps, masks = _random_case(1, c=c)
        got = np.asarray(energy_pointing_game(maps, masks))
        want = np.array([ref.energy_pointing_game(maps[k], masks[k]) for k in range(len(maps))])
        np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
        assert np.isnan(got[0]) and np.isfinite(got[1:]).all()


def test_energy_edge_cases():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :] = True
    maps = np.stack([np.ones((4, 4)), -np.ones((4, 4)), np.full((4, 4), np.nan)]).astype(np.float32)
    out = np.asarray(energy_pointing_game(maps, masks))
    assert out[0] == pytest.approx(0.5)                 # constant map: the mask's area share
    assert np.isnan(out[1]) and np.isnan(out[2])        # no positive mass / all NaN


def test_jit_and_vmap_compose():
    maps, masks = _random_case(2)
    eager = np.asarray(pointing_game(maps, masks))
    jitted = np.asarray(jax.jit(lambda m, k: pointing_game(m, k))(jnp.asarray(maps), jnp.asarray(masks)))
    np.testing.assert_array_equal(eager, jitted)
    per = jax.vmap(lambda m, k: energy_pointing_game(m[None], k[None])[0])(jnp.asarray(maps), jnp.asarray(masks))
    np.testing.assert_allclose(per, energy_pointing_game(maps, masks), equal_nan=True, rtol=1e-6)


@pytest.mark.parametrize("fn", [pointing_game, energy_pointing_game])
def test_argument_checks_name_the_argument(fn):
    maps = np.zeros((2, 4, 4), np.float32)
    masks = np.zeros((2, 4, 4), bool)
    with pytest.raises(TypeError, match="`maps`.*int64"):
        fn(np.zeros((2, 4, 4), np.int64), masks)
    with pytest.raises(ValueError, match=r"`maps` \(shape=\(4, 4\)\)"):
        fn(np.zeros((4, 4), np.float32), masks)
    with pytest.raises(TypeError, match="`masks`.*float32"):
        fn(maps, np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"`masks` \(shape=\(2, 4, 5\)\)"):
        fn(maps, np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="`maps` contains infinite"):
        fn(np.full((2, 4, 4), np.inf, np.float32), masks)
    with pytest.raises(TypeError, match="`maps` must be an array"):
        fn([[0.0]], masks)


def test_tolerance_checks():
    maps, masks = np.zeros((1, 4, 4), np.float32), np.ones((1, 4, 4), bool)
    with pytest.raises(ValueError, match=r"`tolerance` \(=-1\)"):
        pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(ValueError, match="`tolerance`"):
        pointing_game(maps, masks, tolerance=float("nan"))
    with pytest.raises(TypeError, match=r"`tolerance` \(=True\)"):
        pointing_game(maps, masks, tolerance=True)
    with pytest.raises(TypeError, match="`tolerance`"):
        pointing_game(maps, masks, tolerance="15")
