"""Flax NNX with BatchNorm (``nnx.split`` / ``nnx.merge``) and a Flax linen ResNet with ``batch_stats``."""

import functools

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import zoo
from tests.clients.common import check_backprop, check_occlusion


class NNXNet(nnx.Module):
    """conv → BatchNorm → ReLU → max-pool → conv → BatchNorm → ReLU → mean → linear (inference form)."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn2 = nnx.BatchNorm(16, use_running_average=True, rngs=rngs)
        self.head = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = flax.linen.max_pool(x, (2, 2), (2, 2))
        x = jax.nn.relu(self.bn2(self.conv2(x)))
        return self.head(jnp.mean(x, axis=(1, 2)))


@functools.lru_cache(maxsize=None)
def _nnx(size=24):
    model = NNXNet(nnx.Rngs(0))
    keys = iter(jax.random.split(jax.random.key(3), 8))
    for bn in (model.bn1, model.bn2):  # random running statistics and affine parameters
        n = (bn.num_features,)
        bn.mean.set_value(0.2 * jax.random.normal(next(keys), n))
        bn.var.set_value(0.5 + jax.random.uniform(next(keys), n))
        bn.scale.set_value(1.0 + 0.2 * jax.random.normal(next(keys), n))
        bn.bias.set_value(0.2 * jax.random.normal(next(keys), n))
    graphdef, state = nnx.split(model)

    def apply_fn(state, x):
        return nnx.merge(graphdef, state)(x)

    return apply_fn, state, jax.random.normal(jax.random.key(1), (size, size, 3))


@pytest.mark.slow
def test_nnx_batchnorm_incremental_and_rules(monkeypatch):
    apply_fn, state, image = _nnx()
    check_occlusion(apply_fn, state, image, window=8, stride=8, target=2)
    check_backprop(apply_fn, state, image, 2, monkeypatch, [(jax.nn, "relu", "relu")])


@pytest.mark.slow
def test_linen_resnet18_with_batch_stats(monkeypatch):
    apply_fn, variables = zoo.build("resnet18", 32, num_classes=10, seed=0)
    assert "batch_stats" in variables
    image = jax.random.normal(jax.random.key(1), (32, 32, 3))
    check_occlusion(apply_fn, variables, image, window=16, stride=16, target=7)
    # linen's nn.relu is looked up on flax.linen at call time: patch it there
    # (deconvnet here, guided on Keras' ResNet50: each rule meets a residual network; fewer compiles)
    maps = check_backprop(apply_fn, variables, image, 7, monkeypatch, [(flax.linen, "relu", "relu")],
                          rules=("deconvnet",))
    assert np.isfinite(maps["deconvnet"]).all()
