"""Relevance rank and pixel AUC against brute-force loops (exact tie expectation; a pair count)."""

import numpy as np
import pytest

from saliency_jax.metrics import pixel_auc, relevance_rank
from tests.metrics import reference as ref


def _case(seed, n=5, h=9, w=11, c=None, levels=None):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    maps = rng.normal(size=shape)
    if levels:  # few distinct values: many ties
        maps = np.round(maps * levels) / levels
    maps = maps.astype(np.float32)
    maps[rng.uniform(size=shape) < 0.1] = np.nan
    masks = rng.uniform(size=(n, h, w)) < rng.uniform(0.1, 0.5, (n, 1, 1))
    masks[0] = False
    masks[1] = True
    return maps, masks


@pytest.mark.parametrize("c,levels", [(None, None), (None, 1), (3, 2)])
def test_relevance_rank_equals_brute_force(c, levels):
    for seed in range(3):
        maps, masks = _case(seed, c=c, levels=levels)
        got = np.asarray(relevance_rank(maps, masks))
        want = np.array([ref.relevance_rank(maps[k], masks[k]) for k in range(len(maps))])
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
        assert np.isnan(got[0]) and got[1] == 1.0


@pytest.mark.parametrize("c,levels", [(None, None), (None, 1), (3, 2)])
def test_pixel_auc_equals_pair_count(c, levels):
    for seed in range(3):
        maps, masks = _case(seed, c=c, levels=levels)
        got = np.asarray(pixel_auc(maps, masks))
        want = np.array([ref.pixel_auc(maps[k], masks[k]) for k in range(len(maps))])
        np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)
        assert np.isnan(got[0]) and np.isnan(got[1])  # empty and full masks
        assert np.isfinite(got[2:]).all()


def test_edge_cases_constant_map_scores_chance_and_perfect_map_scores_one():
    masks = np.zeros((2, 6, 6), bool)
    masks[:, 1:3, 2:5] = True
    const = np.ones((2, 6, 6), np.float32)
    assert np.asarray(relevance_rank(const, masks)) == pytest.approx([6 / 36] * 2)
    assert np.asarray(pixel_auc(const, masks)) == pytest.approx([0.5, 0.5])
    perfect = masks.astype(np.float32)
    perfect[1][~masks[1]] = np.nan  # NaN background still ranks below the object
    assert np.asarray(relevance_rank(perfect, masks)).tolist() == [1.0, 1.0]
    assert np.asarray(pixel_auc(perfect, masks)).tolist() == [1.0, 1.0]
    assert np.asarray(pixel_auc(-perfect[:1], masks[:1])).tolist() == [0.0]


def test_argument_checks():
    with pytest.raises(ValueError, match="`masks`"):
        pixel_auc(np.zeros((1, 3, 3), np.float32), np.zeros((2, 3, 3), bool))
    with pytest.raises(TypeError, match="`maps`"):
        relevance_rank(np.zeros((1, 3, 3), bool), np.zeros((1, 3, 3), bool))
