"""Haiku: ``hk.nets.ResNet18`` through ``transform_with_state``, inference mode (moving statistics)."""

import functools

import jax
import jax.numpy as jnp
import pytest

from tests.clients.common import check_backprop, check_occlusion

hk = pytest.importorskip("haiku")

pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=None)
def _resnet18():
    def forward(x, is_training):
        return hk.nets.ResNet18(num_classes=10)(x, is_training=is_training)

    f = hk.transform_with_state(forward)
    x = jnp.zeros((1, 32, 32, 3))
    params, state = jax.jit(f.init, static_argnums=2)(jax.random.key(1), x, True)
    keys = iter(jax.random.split(jax.random.key(5), 1000))

    def moving(path, leaf):  # random moving statistics (init: mean 0, variance 0)
        where = jax.tree_util.keystr(path)
        if "average" not in where:
            return leaf
        u = jax.random.uniform(next(keys), leaf.shape)
        return 0.5 + u if "var_ema" in where else 0.2 * (u - 0.5)

    def logits(path, leaf):  # Haiku initialises the classifier to zero
        return jax.random.normal(next(keys), leaf.shape) * 0.1 if "logits" in jax.tree_util.keystr(path) else leaf

    state = jax.tree_util.tree_map_with_path(moving, state)
    params = jax.tree_util.tree_map_with_path(logits, params)

    def apply_fn(variables, x):
        return f.apply(variables[0], variables[1], None, x, False)[0]

    return apply_fn, (params, state), jax.random.normal(jax.random.key(2), (32, 32, 3))


def test_resnet18_incremental_and_rules(monkeypatch):
    apply_fn, variables, image = _resnet18()
    check_occlusion(apply_fn, variables, image, window=16, stride=16, target=4)
    # deconvnet only (guided meets residual networks in the Keras and linen tests; fewer compiles)
    check_backprop(apply_fn, variables, image, 4, monkeypatch, [(jax.nn, "relu", "relu")], rules=("deconvnet",))
