"""Test-only weights: random values of the right shapes without compiling the initialisers."""

import jax
import jax.numpy as jnp
import numpy as np

KEY = jax.random.key(0)


def np_init(init, x, seed=0):
    """Random weights of the right shapes without compiling the initialisers (fast on a busy CPU)."""
    rng = np.random.default_rng(seed)

    def leaf(s):
        fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10.0
        return jnp.asarray(rng.standard_normal(s.shape).astype(s.dtype) / np.sqrt(fan_in).astype(np.float32))

    return jax.tree_util.tree_map(leaf, jax.eval_shape(init, KEY, x))
