"""The ReLU rules and the switch max-pool against hand values, jax's default VJP and numpy loops."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from saliency_jax.backprop import rules

X = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
G = jnp.array([1.0, -1.0, 1.0, -1.0, 3.0])


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("gradient", [0.0, 0.0, 0.0, -1.0, 3.0]),  # g·[x>0]
        ("deconvnet", [1.0, 0.0, 1.0, 0.0, 3.0]),  # relu(g), x ignored
        ("guided", [0.0, 0.0, 0.0, 0.0, 3.0]),  # relu(g)·[x>0]
    ],
)
def test_relu_rules_hand_values(rule, expected):
    relu = rules.relu_rule(rule)
    y, vjp = jax.vjp(relu, X)
    np.testing.assert_array_equal(np.asarray(y), [0.0, 0.0, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(np.asarray(vjp(G)[0]), expected)


def test_gradient_rule_is_jax_grad_of_relu():
    x = jax.random.normal(jax.random.key(0), (100,))
    g = jax.random.normal(jax.random.key(1), (100,))
    ours = jax.vjp(rules.relu_rule("gradient"), x)[1](g)[0]
    ref = jax.vjp(jax.nn.relu, x)[1](g)[0]
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_rules_keep_dtype_and_forbid_forward_mode():
    y = rules.relu_rule("guided")(jnp.ones((2,), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(rules.relu_rule("deconvnet"), (X,), (X,))


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match=r"`rule` \(='lrp'\)"):
        rules.relu_rule("lrp")
    with pytest.raises(ValueError, match=r"`rule` \(='footprint'\)"):
        rules.check_rule(rules.FOOTPRINT)  # the saliency methods do not take the footprint rule
    assert rules.check_rule(rules.FOOTPRINT, footprint=True) == "footprint"


@pytest.mark.parametrize("rule, expected", [
    # x = [1, -1]: the first unit is open. A NaN signal must survive where the rule lets the
    # signal through (so a NaN score never turns into a clean-looking map) and vanish only
    # where the rule blocks it whatever the signal (a closed unit, as jax.grad of relu does).
    ("gradient", [np.nan, 0.0]),
    ("deconvnet", [np.nan, np.nan]),
    ("guided", [np.nan, 0.0]),
])
def test_relu_rules_propagate_nan_signals(rule, expected):
    vjp = jax.vjp(rules.relu_rule(rule), jnp.array([1.0, -1.0]))[1]
    np.testing.assert_array_equal(np.asarray(vjp(jnp.array([np.nan, np.nan]))[0]), expected)
    if rule == "gradient":  # the exact gradient: as jax.nn.relu's own
        ref = jax.vjp(jax.nn.relu, jnp.array([1.0, -1.0]))[1](jnp.array([np.nan, np.nan]))[0]
        np.testing.assert_array_equal(np.asarray(ref), expected)


# --------------------------------------------------------------------------------------------
# switch pool


def _numpy_switches(x, window, strides, padding):
    """Brute force: pad with -inf, loop over outputs, first maximum in row-major window order."""
    xp = np.pad(np.asarray(x, np.float64), padding, constant_values=-np.inf)
    out = [(p - w) // s + 1 for p, w, s in zip(xp.shape, window, strides)]
    y = np.empty(out)
    sw = np.empty(out, np.int64)
    for o in itertools.product(*[range(n) for n in out]):
        best, arg = -np.inf, 0
        for k, off in enumerate(itertools.product(*[range(w) for w in window])):
            v = xp[tuple(oi * s + fi for oi, s, fi in zip(o, strides, off))]
            if v > best:
                best, arg = v, k
        y[o], sw[o] = best, arg
    return y, sw


CONFIGS = [  # window, strides, padding (flax style, spatial dims only)
    ((3, 3), (2, 2), "SAME"),
    ((3, 3), (2, 2), "VALID"),
    ((2, 2), (2, 2), "VALID"),
    ((3, 3), (1, 1), "SAME"),
    ((3, 2), (2, 1), ((1, 2), (0, 1))),
]
# the first three compile the longest (several seconds each); the fast subset keeps the last two
SLOW_CONFIGS = [pytest.param(*c, marks=pytest.mark.slow) if i < 3 else c for i, c in enumerate(CONFIGS)]


def _inputs():
    key = jax.random.key(3)
    normal = jax.random.normal(key, (2, 9, 10, 3))
    ties = jax.random.randint(key, (2, 9, 10, 3), 0, 3).astype(jnp.float32)  # many equal maxima
    relu_zeros = jax.nn.relu(-jnp.abs(normal))  # all zero after a ReLU: every window is a tie
    return {"normal": normal, "ties": ties, "relu_zeros": relu_zeros, "negative": -jnp.abs(normal) - 1.0}


@pytest.mark.parametrize("window, strides, padding", SLOW_CONFIGS)
def test_switch_pool_equals_default_vjp(window, strides, padding):
    ref_fn = lambda v: nn.max_pool(v, window, strides=strides, padding=padding)  # noqa: E731
    pads = padding if isinstance(padding, str) else ((0, 0),) + tuple(padding) + ((0, 0),)
    ours_fn = lambda v: rules.max_pool_switched(v, (1,) + window + (1,), (1,) + strides + (1,), pads)  # noqa: E731

    @jax.jit
    def both(x, gs):
        y_ref, vjp_ref = jax.vjp(ref_fn, x)
        y, vjp = jax.vjp(ours_fn, x)
        # several backward passes from one forward pass: vmap over cotangents vs. one by one
        ours_many = jax.vmap(lambda c: vjp(c)[0])(gs)
        ref_each = [vjp_ref(gs[i])[0] for i in range(gs.shape[0])]
        return y, y_ref, ours_many, jnp.stack(ref_each)

    for kind, x in _inputs().items():
        out_shape = jax.eval_shape(ref_fn, x).shape
        gs = jax.random.normal(jax.random.key(7), (3,) + out_shape)
        y, y_ref, ours, ref = both(x, gs)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref), err_msg=kind)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref), err_msg=kind)
        assert np.abs(np.asarray(ref)).sum() > 0


@pytest.mark.parametrize("window, strides, padding", CONFIGS)
def test_switches_match_numpy_loop(window, strides, padding):
    x = _inputs()["ties"][0, ..., 0]
    pads = lax.padtype_to_pads(x.shape, window, strides, padding) if isinstance(padding, str) else padding
    y, sw = rules.pool_with_switches(x, window, strides, padding)
    y_np, sw_np = _numpy_switches(np.asarray(x), window, strides, [tuple(p) for p in pads])
    np.testing.assert_array_equal(np.asarray(y), y_np)
    np.testing.assert_array_equal(np.asarray(sw), sw_np)
    assert sw.dtype == jnp.int8


def test_unpool_overlapping_windows_by_hand():
    # windows [0:3] and [2:5]; both maxima sit at position 2, so their signals add up there
    x = jnp.array([[0.0, 1.0, 5.0, 1.0, 0.0]])
    y, sw = rules.pool_with_switches(x, (1, 3), (1, 2))
    np.testing.assert_array_equal(np.asarray(y), [[5.0, 5.0]])
    np.testing.assert_array_equal(np.asarray(sw), [[2, 0]])
    back = rules.unpool(jnp.array([[2.0, 3.0]]), sw, x.shape, (1, 3), (1, 2))
    np.testing.assert_array_equal(np.asarray(back), [[0.0, 0.0, 5.0, 0.0, 0.0]])


def test_switch_pool_residual_is_small():
    x = jax.random.normal(jax.random.key(0), (1, 16, 16, 8))
    f = lambda v: rules.max_pool_switched(v, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")  # noqa: E731
    res = jax.vjp(f, x)[1]
    leaves = [a for a in jax.tree_util.tree_leaves(res) if hasattr(a, "dtype")]
    # the residual is one int8 switch per output (7·7·8), not the float32 input (16·16·8·4 bytes)
    assert sum(a.size * a.dtype.itemsize for a in leaves) == 7 * 7 * 8


def test_pool_validation():
    with pytest.raises(TypeError, match="floating"):
        rules.max_pool_switched(jnp.ones((4, 4), jnp.int32), (2, 2), (2, 2))
    with pytest.raises(ValueError, match="window"):
        rules.max_pool_switched(jnp.ones((4, 4)), (5, 2), (1, 1))
    with pytest.raises(ValueError, match="padding"):
        rules.max_pool_switched(jnp.ones((4, 4)), (2, 2), (1, 1), "FULL")


def test_max_pool_spread_sends_the_signal_to_every_window_position():
    x = jnp.array([[0.0, 2.0, 2.0, 1.0, 0.0]])
    g = jnp.array([[2.0, -3.0]])  # windows [0, 3) and [2, 5): position 2 is in both
    y, vjp = jax.vjp(lambda v: rules.max_pool_spread(v, (1, 3), (1, 2)), x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(rules.max_pool_switched(x, (1, 3), (1, 2))))
    np.testing.assert_array_equal(np.asarray(vjp(g)[0]), [[2.0, 2.0, 5.0, 3.0, 3.0]])  # |g| summed per position
    with pytest.raises(TypeError):
        rules.max_pool_switched(x, (1, 3), (1, 2), _spread=True)  # no private keyword on the public function


# --------------------------------------------------------------------------------------------
# capped rectifiers (ReLU6, clip(x, 0, c))

XC = jnp.array([-2.0, 0.0, 0.5, 3.0, 6.0, 7.5])
GC = jnp.array([1.0, 1.0, -1.0, 2.0, 1.0, 1.0])


@pytest.mark.parametrize("rule, expected", [
    ("gradient", [0.0, 0.0, -1.0, 2.0, 0.0, 0.0]),  # g·[0<x<6]: jax.nn.relu6's own gradient
    ("deconvnet", [1.0, 1.0, 0.0, 2.0, 1.0, 1.0]),  # relu(g): neither bound masks
    ("guided", [0.0, 0.0, 0.0, 2.0, 0.0, 0.0]),  # relu(g)·[0<x<6]
    ("footprint", [1.0, 1.0, 1.0, 2.0, 1.0, 1.0]),  # |g|
])
def test_clip_rules_hand_values(rule, expected):
    y, vjp = jax.vjp(rules.clip_rule(rule, 6.0), XC)
    np.testing.assert_array_equal(np.asarray(y), [0.0, 0.0, 0.5, 3.0, 6.0, 6.0])
    np.testing.assert_array_equal(np.asarray(vjp(GC)[0]), expected)


def test_clip_gradient_rule_is_jax_grad_of_relu6_and_values_are_bit_identical():
    x = jnp.concatenate([jax.random.normal(jax.random.key(0), (200,)) * 5.0, jnp.array([0.0, 6.0])])
    g = jax.random.normal(jax.random.key(1), x.shape)
    y, vjp = jax.vjp(rules.clip_rule("gradient", 6), x)
    y_ref, vjp_ref = jax.vjp(jax.nn.relu6, x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    np.testing.assert_array_equal(np.asarray(vjp(g)[0]), np.asarray(vjp_ref(g)[0]))
    np.testing.assert_array_equal(np.asarray(rules.clip_rule("guided", 1.5)(x)), np.asarray(jnp.clip(x, 0.0, 1.5)))


def test_clip_rule_dtype_validation_and_infinite_cap():
    assert rules.clip_rule("guided", 6.0)(jnp.ones((2,), jnp.bfloat16)).dtype == jnp.bfloat16
    assert rules.clip_rule("guided", float("inf")) is rules.relu_rule("guided")
    with pytest.raises(ValueError, match=r"`upper` \(=0\.0\)"):
        rules.clip_rule("guided", 0.0)
    with pytest.raises(TypeError, match=r"`upper` \(='6x'\)"):
        rules.clip_rule("guided", "6x")
    with pytest.raises(ValueError, match=r"`rule` \(='lrp'\)"):
        rules.clip_rule("lrp", 6.0)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(rules.clip_rule("deconvnet", 6.0), (XC,), (XC,))
