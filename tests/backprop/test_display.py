"""Display of backprop results (saliency_jax.backprop.display): map scaling and the "top 9" grids."""

import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax import backprop
from saliency_jax.backprop.display import normalize_map, top_grid


def test_top_grid_layout_by_hand():
    tiles = jnp.arange(4, dtype=jnp.float32).reshape(4, 1, 1, 1) + 1  # four 1×1 tiles 1..4
    grid = top_grid(tiles, rows=2, gap=1, fill=0.0)[..., 0]
    np.testing.assert_array_equal(np.asarray(grid), [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    nine = top_grid(jnp.ones((2, 9, 5, 4, 3)))
    assert nine.shape == (2, 17, 14, 3)
    with pytest.raises(ValueError, match=r"`rows` \(=0\)"):
        top_grid(tiles, rows=0)
    with pytest.raises(TypeError, match=r"`gap` \(=1.5\)"):
        top_grid(tiles, gap=1.5)


def test_normalize_map_by_hand():
    m = jnp.array([[[1.0, -4.0], [2.0, 0.0]]])  # (1, 2, 2): H=1, W=2, C=2
    signed = normalize_map(m, percentile=100.0)
    np.testing.assert_allclose(np.asarray(signed), [[[0.625, 0.0], [0.75, 0.5]]])
    heat = normalize_map(m, method="abs", percentile=100.0)
    np.testing.assert_allclose(np.asarray(heat), [[1.0, 0.5]])
    np.testing.assert_array_equal(np.asarray(normalize_map(jnp.zeros((2, 3, 3, 3)))), 0.5)
    with pytest.raises(ValueError, match="`method`"):
        normalize_map(m, method="log")


@pytest.mark.parametrize("method", ["signed", "abs"])
def test_normalize_map_on_the_host_equals_the_device_path(method):
    # A NumPy map is scaled with NumPy (the renderers' path, no device round trip per tile): same
    # values as the JAX path, which the by-hand test pins down; a percentile between pixels too.
    m = np.random.default_rng(0).normal(size=(2, 9, 7, 3)).astype(np.float32)
    for q in (99.5, 50.0, 100.0):
        host = normalize_map(m, method=method, percentile=q)
        assert isinstance(host, np.ndarray) and host.dtype == np.float32
        np.testing.assert_allclose(host, np.asarray(normalize_map(jnp.asarray(m), method=method, percentile=q)),
                                   rtol=1e-6, atol=1e-6)


def test_one_normalize_map_under_its_old_names():
    """Moved from app.render (display of backprop results belongs to backprop); the old names still work."""
    assert sj.render.normalize_map is normalize_map
    assert sj.render.NORMALIZATIONS == ("signed", "abs")
    assert backprop.top_grid is top_grid and backprop.normalize_map is normalize_map
