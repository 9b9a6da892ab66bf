"""Equinox: a channels-first (NCHW inside, OIHW kernels) CNN through ``eqx.partition`` / ``eqx.combine``.

The saliency functions take NHWC images; the model transposes them at its input, as users wrap
PyTorch-style models.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from tests.clients.common import check_backprop, check_occlusion

eqx = pytest.importorskip("equinox")


class CNN(eqx.Module):
    """conv(3→8, 3×3) → ReLU → max-pool 2 → conv(8→16, 3×3, stride 2) → ReLU → linear."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    pool: eqx.nn.MaxPool2d
    head: eqx.nn.Linear

    def __init__(self, size: int, classes: int, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(3, 8, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(8, 16, 3, stride=2, padding=1, key=k2)
        self.pool = eqx.nn.MaxPool2d(2, 2)
        self.head = eqx.nn.Linear(16 * (size // 4) ** 2, classes, key=k3)

    def __call__(self, x):  # x: (C, H, W)
        x = self.pool(jax.nn.relu(self.conv1(x)))
        x = jax.nn.relu(self.conv2(x))
        return self.head(x.reshape(-1))


@functools.lru_cache(maxsize=None)
def _model(size=24):
    model = CNN(size, 5, jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)

    def apply_fn(params, x):  # (N, H, W, 3) → (N, 5)
        return jax.vmap(eqx.combine(params, static))(jnp.transpose(x, (0, 3, 1, 2)))

    return apply_fn, params, jax.random.normal(jax.random.key(1), (size, size, 3))


@pytest.mark.slow
def test_nchw_cnn_incremental_and_rules(monkeypatch):
    apply_fn, params, image = _model()
    assert params.conv1.weight.shape == (8, 3, 3, 3)  # OIHW
    check_occlusion(apply_fn, params, image, window=8, stride=8, target=1)
    check_backprop(apply_fn, params, image, 1, monkeypatch, [(jax.nn, "relu", "relu")])
