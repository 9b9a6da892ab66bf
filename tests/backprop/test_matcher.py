"""The one equation matcher of the backprop flow (saliency_jax.backprop.matcher), case by case.

Each case is a small hand-written function; the expected record is read off the function as
written (what it computes, where its data input is, its cap), not from the matcher.
"""

import math

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from saliency_jax.backprop import matcher

X = jnp.ones((4, 4))


def _matches(f, *args):
    """The matcher's record of every top-level equation of ``f``, threading the bare-max outputs."""
    seen, out = set(), []
    for eqn in jax.make_jaxpr(f)(*args).jaxpr.eqns:
        m = matcher.match(eqn, seen)
        if m is not None and m.form == "bare_max":
            seen.add(eqn.outvars[0])
        out.append(m)
    return out


def _only(f, *args):
    found = [m for m in _matches(f, *args) if m is not None]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("f, form, operand, cap, bare", [
    (jax.nn.relu, "relu_call", 0, math.inf, False),
    (lambda x: jnp.maximum(x, 0.0), "bare_max", 0, math.inf, True),
    (lambda x: jnp.maximum(0.0, x), "bare_max", 1, math.inf, True),
    (jax.nn.relu6, "clip_call", 0, 6.0, False),
    (lambda x: jnp.clip(x, 0, 2.5), "clip_call", 0, 2.5, False),
    (jax.jit(lambda x: jnp.maximum(x, 0.0)), "clip_call", 0, math.inf, False),  # a jitted bare max: a ReLU, bare_max or not
])
def test_rectifiers_with_their_input_and_cap(f, form, operand, cap, bare):
    m = _only(f, X)
    assert (m.kind, m.form, m.operand, m.cap, m.bare) == ("rectifier", form, operand, cap, bare)


@pytest.mark.parametrize("f, form, cap", [(jax.nn.relu6, "clip_call", 6.0), (lambda x: jnp.clip(x, 0, 2.5), "clip_call", 2.5),
                                           (jax.nn.relu, "relu_call", math.inf)])
def test_rectifiers_in_bfloat16_keep_their_cap(f, form, cap):
    # compute_dtype=bfloat16 makes the clip's constants bf16 literals, which numpy does not count as numbers:
    # EfficientNet's ReLU6 was an uncovered activation under bf16 and strict deconvnet/guided refused the model
    m = _only(f, X.astype(jnp.bfloat16))
    assert (m.kind, m.form, m.operand, m.cap) == ("rectifier", form, 0, cap)


def test_capped_bare_max_needs_the_bare_max_before_it():
    ms = _matches(lambda x: jnp.minimum(3.0, jnp.maximum(x, 0.0)), X)
    assert [(m.form, m.operand, m.cap) for m in ms] == [("bare_max", 0, math.inf), ("capped_max", 1, 3.0)]
    # a min of anything else is an uncovered activation, not a cap
    assert [(m.kind, m.form) for m in _matches(lambda x: jnp.minimum(x, 3.0), X)] == [("activation", "min")]
    # a max against a non-zero constant is not a ReLU
    assert [(m.kind, m.form) for m in _matches(lambda x: jnp.maximum(x, 1.0), X)] == [("activation", "max")]


@pytest.mark.parametrize("f, name", [(jax.nn.silu, "silu"), (jax.nn.hard_swish, "hard_silu"),  # x·relu6(x+3)/6
                                     (jax.nn.hard_sigmoid, "hard_sigmoid")])
def test_named_activations_are_matched_whole_by_name(f, name):
    m = _only(f, X)
    assert (m.kind, m.form) == ("named", name)


def test_max_pools_supported_or_with_the_reason():
    x = jnp.ones((1, 6, 6, 2))
    same = _only(lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME"), x)
    assert (same.kind, same.pool) == ("pool", ((1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (0, 1), (0, 1), (0, 0))))
    dilated = _only(lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "VALID",
                                                window_dilation=(1, 2, 2, 1)), x)
    assert dilated.kind == "pool" and dilated.pool is None and "dilation" in dilated.detail
    global_max = _only(lambda v: jnp.max(v, axis=(1, 2)), x)
    assert (global_max.kind, global_max.form, global_max.pool) == ("pool", "reduce_max", None)


def test_custom_calls_uncovered_primitives_and_nothing():
    @jax.custom_jvp
    def scaled_relu(x):
        return jax.nn.relu(x) * 2.0

    scaled_relu.defjvp(lambda p, t: (scaled_relu(p[0]), t[0] * 2.0))
    assert (_only(scaled_relu, X).kind, _only(scaled_relu, X).form) == ("custom_call", "custom_jvp_call")
    tanh = _only(jnp.tanh, X)
    assert (tanh.kind, tanh.form) == ("activation", "tanh") and "GELU" in tanh.detail
    assert _matches(lambda x: x * 2.0 + 1.0, X) == [None, None]
