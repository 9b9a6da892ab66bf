"""with_rule on linen, NNX, remat, scan and plain-lax models; strictness; report; jit/vmap."""

import collections
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from saliency_jax import backprop
from saliency_jax import jaxpr as jx
from saliency_jax.model.architectures import get_model

from tests.weights import KEY, np_init


@functools.lru_cache(maxsize=None)
def _small(width=0.125, size=32, classes=3):
    model = get_model("small", num_classes=classes, width=width, fc=(8,))
    x = jax.random.normal(KEY, (2, size, size, 3))
    return model.apply, np_init(model.init, x[:1]), x


@functools.lru_cache(maxsize=None)
def _zf(size=64):
    model = get_model("zf", num_classes=4, width=1 / 16, fc=(8, 8))
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    return model.apply, np_init(model.init, x[:1]), x


class RematNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        block = nn.remat(lambda mdl, v: nn.relu(nn.Conv(4, (3, 3))(v)))
        x = block(self, x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.relu(nn.Conv(4, (3, 3))(x)), None


class ScanNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        x, _ = stack()(x, None)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.out = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        return self.out(x.reshape(x.shape[0], -1))


def _linen(module):
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    return module.apply, np_init(module.init, x[:1]), x


def _nnx():
    graphdef, state = nnx.split(NNXNet(nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    return (lambda s, v: nnx.merge(graphdef, s)(v)), state, x


def _lax_net():
    k1, k2 = jax.random.split(KEY)
    params = {"w": jax.random.normal(k1, (3, 3, 3, 5)), "d": jax.random.normal(k2, (5 * 4 * 4, 3))}

    def apply(p, x):
        y = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jax.jit(jax.nn.relu)(y)
        y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
        return y.reshape(y.shape[0], -1) @ p["d"]

    return apply, params, jax.random.normal(jax.random.key(2), (2, 8, 8, 3))


MODELS = {
    "small": _small,
    "zf": _zf,
    "remat": lambda: _linen(RematNet()),
    "scan": lambda: _linen(ScanNet()),
    "nnx": _nnx,
    "lax": _lax_net,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_rule_equals_jax_grad_and_forward_is_identical(name):
    apply, params, x = MODELS[name]()
    cot = jax.random.normal(jax.random.key(5), apply(params, x).shape)

    @jax.jit
    def run(params, x):
        y_ref, vjp_ref = jax.vjp(lambda v: apply(params, v), x)
        y, vjp = jax.vjp(lambda v: backprop.with_rule(apply, "gradient")(params, v), x)
        y_d = backprop.with_rule(apply, "deconvnet", data_argnums=1)(params, x)
        return y, y_ref, y_d, vjp(cot)[0], vjp_ref(cot)[0]

    y, y_ref, y_d, g, g_ref = run(params, x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    np.testing.assert_array_equal(np.asarray(y_d), np.asarray(y_ref))
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))
    assert np.abs(np.asarray(g_ref)).sum() > 0


@pytest.mark.parametrize("name, relus, pools", [("small", 6, 3), ("zf", 7, 3), ("remat", 1, 1), ("scan", 2, 1),
                                                ("nnx", 1, 1), ("lax", 1, 1)])
def test_report_finds_every_relu_and_pool(name, relus, pools):
    apply, params, x = MODELS[name]()
    rep = backprop.report(apply, params, x, data_argnums=1)
    assert (len(rep.relus), len(rep.pools)) == (relus, pools)
    assert rep.problems("deconvnet") == []
    assert "relu: " in str(rep)


def _scalar_fn(wrap):
    """sum(w * relu(x)) with the ReLU placed inside ``wrap`` (jit, remat, scan, cond)."""
    w = jnp.array([1.0, -2.0, 3.0, -4.0])

    def f(x):
        return jnp.sum(w * wrap(jax.nn.relu, x))

    return f


WRAPS = {
    "plain": lambda r, x: r(x),
    "jit": lambda r, x: jax.jit(lambda v: r(v))(x),
    "remat": lambda r, x: jax.checkpoint(r)(x),
    "scan": lambda r, x: lax.scan(lambda c, v: (c, r(v)), 0.0, x)[1],
    "cond": lambda r, x: lax.cond(x[0] < 100.0, r, lambda v: v * 0.0, x),
    "while": lambda r, x: lax.while_loop(lambda s: s[1] < 1, lambda s: (r(s[0]), s[1] + 1), (x, 0))[0],
}


@pytest.mark.parametrize("where", sorted(WRAPS))
def test_rules_reach_inside_nested_primitives(where):
    f = _scalar_fn(WRAPS[where])
    x = jnp.array([1.0, 1.0, -1.0, -1.0])
    # hand values: upstream signal w = [1, -2, 3, -4], relu input x
    expected = {"gradient": [1.0, -2.0, 0.0, 0.0], "deconvnet": [1.0, 0.0, 3.0, 0.0], "guided": [1.0, 0.0, 0.0, 0.0]}
    for rule, exp in expected.items():
        g = backprop.with_rule(f, rule)
        np.testing.assert_array_equal(np.asarray(g(x)), np.asarray(f(x)))
        if where == "while":  # while loops are not reverse-differentiable in JAX at all
            continue
        np.testing.assert_array_equal(np.asarray(jax.grad(g)(x)), exp, err_msg=f"{where}/{rule}")
    assert len(backprop.report(f, x).relus) == 1


def test_one_conv_layer_net_hand_derived_deconvnet_map():
    """x (4×4) → 2×2 conv (VALID) → ReLU → 3×3 max-pool → logit = w · pooled.

    Deconvnet: the logit's signal 1 becomes w at the pool, goes to the switch (the position
    p* of the largest conv output), is rectified (relu(w)), and is filtered with the
    transposed filter: the map is relu(w)·K placed at p*. The gradient instead needs the conv
    output at p* to be positive.
    """
    k = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)

    def apply(p, x):
        y = lax.conv_general_dilated(x, p["k"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = nn.max_pool(jax.nn.relu(y), (3, 3), strides=(1, 1))
        return y.reshape(x.shape[0], 1) * p["w"]

    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1, 2, 0] = 1.0  # conv output at (1, 1) (= k[0, 1]·1 = −2), at (0, 2)... choose the image so that:
    x = np.array([[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]], np.float32)[None, :, :, None]
    conv = np.array([[np.sum(x[0, i:i + 2, j:j + 2, 0] * k) for j in range(3)] for i in range(3)])
    p_star = np.unravel_index(np.argmax(conv), conv.shape)
    assert conv[p_star] > 0 and (conv == conv.max()).sum() == 1
    for w, rule in [(2.0, "deconvnet"), (-2.0, "deconvnet"), (2.0, "gradient"), (-2.0, "gradient")]:
        params = {"k": jnp.asarray(k)[:, :, None, None], "w": jnp.float32(w)}
        got = backprop.saliency_maps(apply, params, x[0], target=0, rule=rule)
        expected = np.zeros((4, 4), np.float32)
        scale = max(w, 0.0) if rule == "deconvnet" else w
        expected[p_star[0]:p_star[0] + 2, p_star[1]:p_star[1] + 2] = scale * k
        np.testing.assert_allclose(np.asarray(got)[..., 0], expected, rtol=0, atol=1e-6, err_msg=f"{rule} w={w}")
    # all conv outputs negative: the gradient is zero, the deconvnet map is not (relu(g) ignores x)
    params = {"k": -jnp.abs(jnp.asarray(k))[:, :, None, None], "w": jnp.float32(1.0)}
    xp = np.abs(x) + 0.1
    assert np.abs(np.asarray(backprop.gradient(apply, params, xp[0], target=0))).max() == 0.0
    assert np.abs(np.asarray(backprop.deconvnet(apply, params, xp[0], target=0))).max() > 0.0


def _uncovered(act):
    def f(x):
        return jnp.sum(act(jax.nn.relu(x) * 2.0 - 1.0))

    return f


@pytest.mark.parametrize("name, act", [
    ("tanh", jnp.tanh), ("logistic", jax.nn.sigmoid), ("GELU", jax.nn.gelu),
    ("leaky_relu", jax.nn.leaky_relu), ("select_n", lambda v: jnp.where(v > 0, v, 0.1 * v)),
    ("softplus", jax.nn.softplus), ("erf.*GELU", lambda v: jax.nn.gelu(v, approximate=False)),
    # named activations with covered pieces inside are reported by name: hard-swish is x·relu6(x+3)/6
    ("hard_silu", jax.nn.hard_swish), ("silu", jax.nn.silu), ("hard_sigmoid", jax.nn.hard_sigmoid),
])
def test_strict_refuses_uncovered_activations(name, act):
    f = _uncovered(act)
    x = jnp.array([0.5, -0.5, 2.0])
    for rule in ("deconvnet", "guided"):
        with pytest.raises(ValueError, match=rf"(?s)activations the ReLU rules do not cover.*{name}.*strict=False"):
            backprop.with_rule(f, rule)(x)
    # non-strict keeps the layer's ordinary backward pass; the gradient rule needs no checks
    jax.grad(backprop.with_rule(f, "deconvnet", strict=False))(x)
    np.testing.assert_array_equal(np.asarray(jax.grad(backprop.with_rule(f, "gradient"))(x)),
                                  np.asarray(jax.grad(f)(x)))


def test_strict_refuses_missing_relu_bare_max_and_unsupported_pools():
    x = jnp.ones((1, 6, 6, 1))
    with pytest.raises(ValueError, match="no ReLU was found"):
        backprop.with_rule(lambda v: jnp.sum(v * 2.0), "deconvnet")(x)
    bare = lambda v: jnp.sum(jnp.maximum(v, 0.0) * jnp.arange(-3.0, 3.0))  # noqa: E731
    xs = jnp.array([1.0, -1.0, 2.0, -3.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="bare_max=True"):
        backprop.with_rule(bare, "guided")(xs)
    relu = lambda v: jnp.sum(jax.nn.relu(v) * jnp.arange(-3.0, 3.0))  # noqa: E731
    np.testing.assert_array_equal(np.asarray(jax.grad(backprop.with_rule(bare, "deconvnet", bare_max=True))(xs)),
                                  np.asarray(jax.grad(backprop.with_rule(relu, "deconvnet"))(xs)))
    dilated = lambda v: jnp.sum(lax.reduce_window(jax.nn.relu(v), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1),  # noqa: E731
                                                  "VALID", window_dilation=(1, 2, 2, 1)))
    with pytest.raises(ValueError, match="max-pool configurations.*dilation"):
        backprop.with_rule(dilated, "deconvnet")(x)
    global_max = lambda v: jnp.sum(jnp.max(jax.nn.relu(v), axis=(1, 2)))  # noqa: E731
    with pytest.raises(ValueError, match="reduce_max"):
        backprop.with_rule(global_max, "deconvnet")(x)
    # weights may pass through anything: only values computed from the data are checked
    weighted = lambda p, v: jnp.sum(jax.nn.relu(v) * jnp.tanh(p))  # noqa: E731
    with pytest.raises(ValueError, match="tanh"):
        backprop.with_rule(weighted, "deconvnet")(jnp.ones(3), jnp.ones(3))
    backprop.with_rule(weighted, "deconvnet", data_argnums=1)(jnp.ones(3), jnp.ones(3))


def test_forward_mode_raises_a_clear_error():
    f = backprop.with_rule(lambda v: jnp.sum(jax.nn.relu(v)), "deconvnet")
    with pytest.raises(TypeError, match="forward-mode differentiation.*jax.vjp"):
        jax.jvp(f, (jnp.ones(3),), (jnp.ones(3),))


def test_argument_validation():
    with pytest.raises(ValueError, match=r"`rule` \(='lrp'\)"):
        backprop.with_rule(lambda v: v, "lrp")
    with pytest.raises(TypeError, match="`fn`"):
        backprop.with_rule(3, "deconvnet")
    with pytest.raises(TypeError, match="`strict`"):
        backprop.with_rule(lambda v: v, "deconvnet", strict="yes")
    with pytest.raises(TypeError, match="`data_argnums`"):
        backprop.with_rule(lambda v: v, "deconvnet", data_argnums="x")


@pytest.mark.slow
def test_jit_vmap_over_images_and_cotangents_agree():
    apply, params, x = _small(size=32)
    f = backprop.with_rule(apply, "guided", data_argnums=1)

    def per_image(v, c):
        return jax.vjp(lambda u: f(params, u[None])[0], v)[1](c)[0]

    per_image_jit = jax.jit(per_image)
    cots = jax.random.normal(jax.random.key(9), (2, 3))
    loop = np.stack([np.asarray(per_image_jit(x[i], cots[i])) for i in range(2)])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(per_image))(x, cots)), loop, rtol=1e-5, atol=1e-6)

    @jax.jit
    def many(v):  # one forward, the backward vmapped over cotangents
        _, vjp = jax.vjp(lambda u: f(params, u[None])[0], v)
        return jax.vmap(lambda c: vjp(c)[0])(jnp.eye(3))

    out = many(x[0])
    for k in range(3):
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(per_image_jit(x[0], jnp.eye(3)[k])),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_maps_are_not_additive():
    """The projection of a + b is not the sum of the projections, for deconvnet and guided.

    Only the gradient rule is linear in the signal. Keep this test: it stops anyone from
    "optimising" a map into a sum of other maps.
    """
    apply, params, x = _small(size=32)
    a, b = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, -1.0, 0.0])
    for rule, additive in (("deconvnet", False), ("guided", False), ("gradient", True)):
        f = backprop.with_rule(apply, rule, data_argnums=1)

        @jax.jit
        def maps(v):
            _, vjp = jax.vjp(lambda u: f(params, u[None])[0], v)
            return vjp(a + b)[0], vjp(a)[0] + vjp(b)[0]

        whole, parts = (np.asarray(m) for m in maps(x[0]))
        assert np.abs(whole).max() > 0
        assert np.allclose(whole, parts, rtol=1e-4, atol=1e-6) == additive, rule


def test_interpreter_keeps_outer_tracers_and_kwargs():
    w = jnp.array([2.0, -1.0])

    @jax.jit
    def outer(w, x):
        return jax.grad(backprop.with_rule(lambda v, scale=1.0: jnp.sum(jax.nn.relu(v) * w * scale),
                                           "deconvnet"))(x, scale=2.0)

    np.testing.assert_array_equal(np.asarray(outer(w, jnp.array([-1.0, 1.0]))), [4.0, 0.0])


# --------------------------------------------------------------------------------------------
# ReLU6 / clip-style activations and softmax heads


def _reference_relu6(rule, cap=6.0):
    """An independent ReLU6 (``cap=inf``: ReLU) with the documented rules, written by hand (not
    saliency_jax.backprop.rules)."""
    @jax.custom_vjp
    def relu6(x):
        return jnp.minimum(jnp.maximum(x, 0.0), cap)

    def fwd(x):
        return relu6(x), x

    def bwd(x, g):
        open_ = (x > 0) & (x < cap)
        if rule == "gradient":
            return (jnp.where(open_, g, 0.0),)
        if rule == "deconvnet":  # the forward activation is never read
            return (jnp.where(g > 0, g, 0.0),)
        return (jnp.where(open_ & (g > 0), g, 0.0),)  # guided

    relu6.defvjp(fwd, bwd)
    return relu6


def _relu6_net(act):
    def f(p, x):  # x: (1, 8, 8, 2) → (1, 3); activations land on both sides of 0 and 6
        dn = ("NHWC", "HWIO", "NHWC")
        h = act(lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=dn) * 4.0)
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = act(lax.conv_general_dilated(h, p["k2"], (1, 1), "SAME", dimension_numbers=dn) * 4.0)
        return h.reshape(1, -1) @ p["w"]

    return f


RELU6_SPELLINGS = {
    "jax.nn.relu6": jax.nn.relu6,
    "jnp.clip": lambda v: jnp.clip(v, 0, 6),
    "min(max(x, 0), 6)": lambda v: jnp.minimum(jnp.maximum(v, 0.0), 6.0),
}


@pytest.mark.parametrize("spelling", list(RELU6_SPELLINGS))
def test_relu6_rules_equal_a_hand_written_custom_vjp_model(spelling):
    k = jax.random.split(jax.random.key(7), 4)
    p = {"k1": jax.random.normal(k[0], (3, 3, 2, 4)), "k2": jax.random.normal(k[1], (3, 3, 4, 4)),
         "w": jax.random.normal(k[2], (64, 3))}
    x = jax.random.normal(k[3], (1, 8, 8, 2))
    f = _relu6_net(RELU6_SPELLINGS[spelling])
    bare = spelling.startswith("min")
    g = jnp.array([[1.0, -2.0, 0.5]])
    pre = lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) * 4.0
    assert float(jnp.mean(pre > 6)) > 0.05 and float(jnp.mean(pre < 0)) > 0.05  # both bounds are exercised
    for rule in ("gradient", "deconvnet", "guided"):
        ours_y, ours_vjp = jax.vjp(backprop.with_rule(f, rule, bare_max=bare, data_argnums=1), p, x)
        ref_y, ref_vjp = jax.vjp(_relu6_net(_reference_relu6(rule)), p, x)
        np.testing.assert_array_equal(np.asarray(ours_y), np.asarray(ref_y))
        np.testing.assert_allclose(np.asarray(ours_vjp(g)[1]), np.asarray(ref_vjp(g)[1]), rtol=1e-5, atol=1e-5)
    # the upper bound matters: guided differs from a plain-ReLU guided map of the same net
    relu_ref = jax.vjp(_relu6_net(jax.nn.relu), p, x)
    assert not np.allclose(np.asarray(ours_vjp(g)[1]), np.asarray(relu_ref[1](g)[1]))
    r = backprop.report(f, p, x, bare_max=bare, data_argnums=1)
    assert len(r.clips) == 2 and r.problems("guided") == []
    if bare:  # without bare_max the bare form is refused, and says how to accept it
        with pytest.raises(ValueError, match="ReLU6"):
            backprop.with_rule(f, "guided", data_argnums=1)(p, x)


def _head_net(head):
    def f(p, x):  # x: (N, 4) → (N, 3)
        return head(jax.nn.relu(x @ p["w1"]) @ p["w2"])

    return f


def _head_params():
    k1, k2, k3 = jax.random.split(jax.random.key(11), 3)
    return {"w1": jax.random.normal(k1, (4, 6)), "w2": jax.random.normal(k2, (6, 3))}, jax.random.normal(k3, (2, 4))


@pytest.mark.parametrize("head", ["softmax", "log_softmax"])
def test_softmax_heads_are_accepted_and_keep_their_exact_gradient(head):
    p, x = _head_params()
    fn = getattr(jax.nn, head)
    f = _head_net(fn)
    g = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for rule in ("deconvnet", "guided"):
        relu = _reference_relu6(rule, cap=np.inf)
        ours = jax.vjp(backprop.with_rule(f, rule, data_argnums=1), p, x)[1](g)[1]
        ref = jax.vjp(lambda q, v, relu=relu: fn(relu(v @ q["w1"]) @ q["w2"]), p, x)[1](g)[1]
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5, atol=1e-6)
    # nested in jit and followed by a selection (what sj.guided_backprop does with one image)
    wrapped = lambda q, v: jax.jit(f)(q, v[None])[0]  # noqa: E731
    r = backprop.report(wrapped, p, x[0], data_argnums=1)
    assert r.problems("guided") == [] and [f_.kind for f_ in r.findings if f_.kind == "head"]
    assert "head: " in str(r)
    m = backprop.guided_backprop(lambda q, v: f(q, v.reshape(v.shape[0], -1)), p, x.reshape(2, 1, 4, 1), target=2)
    assert m.shape == (2, 1, 4, 1) and np.isfinite(np.asarray(m)).all()


@pytest.mark.parametrize("name, fn", [
    ("softmax mid-network", lambda h: jax.nn.softmax(h) @ jnp.ones((3, 3))),
    ("log of a softmax", lambda h: jnp.log(jax.nn.softmax(h))),
    ("unnormalised exp", lambda h: jnp.exp(h - lax.stop_gradient(jnp.max(h, axis=-1, keepdims=True)))),
    ("max not under stop_gradient", lambda h: jnp.exp(h - jnp.max(h, axis=-1, keepdims=True))),
])
def test_strict_still_refuses_what_is_not_a_softmax_head(name, fn):
    p, x = _head_params()
    with pytest.raises(ValueError, match="activations the ReLU rules do not cover"):
        backprop.with_rule(_head_net(fn), "guided", data_argnums=1)(p, x)


# --------------------------------------------------------------------------------------------
# report() lists exactly what with_rule rewrites (both classify through backprop.matcher)


class _Recording(backprop.RuleHandler):
    """with_rule's handler, noting every equation it does not leave to the interpreter (replaced by a
    rule, a named activation bound whole, a custom-derivative call evaluated inline)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.taken: dict = {}

    def __call__(self, eqn, invals):
        out = super().__call__(eqn, invals)
        if out is not None:
            self.taken[id(eqn)] = (jx.label(eqn), tuple(eqn.outvars[0].aval.shape))
        return out


def _custom_jvp_net():
    @jax.custom_jvp
    def block(x):  # a custom-derivative function holding a ReLU: inlined
        return jax.nn.relu(x) * 2.0

    block.defjvp(lambda p, t: (block(p[0]), t[0] * 2.0))
    k1, k2 = jax.random.split(jax.random.key(3))
    return (lambda p, x: block(x @ p["w"]) @ p["v"]), {"w": jax.random.normal(k1, (4, 5)),
                                                        "v": jax.random.normal(k2, (5, 3))}, jnp.ones((2, 4))


def _relu6_case(spelling):
    k = jax.random.split(jax.random.key(7), 3)
    p = {"k1": jax.random.normal(k[0], (3, 3, 2, 4)), "k2": jax.random.normal(k[1], (3, 3, 4, 4)),
         "w": jax.random.normal(k[2], (64, 3))}
    return lambda: (_relu6_net(RELU6_SPELLINGS[spelling]), p, jnp.ones((1, 8, 8, 2)))


AGREEMENT_CASES = {
    **MODELS,
    **{f"relu6 {s}": _relu6_case(s) for s in RELU6_SPELLINGS},
    **{f"head {h}": (lambda h=h: (_head_net(getattr(jax.nn, h)), *_head_params())) for h in ("softmax", "log_softmax")},
    "custom_jvp": _custom_jvp_net,
    "hard_swish": lambda: (lambda p, x: jnp.sum(jax.nn.hard_swish(jax.nn.relu(x) * p)), jnp.ones(3), jnp.ones(3)),
}


@pytest.mark.parametrize("name, bare_max", [(n, False) for n in sorted(AGREEMENT_CASES)]
                         + [(f"relu6 {s}", True) for s in RELU6_SPELLINGS])  # bare_max only changes these
def test_report_lists_exactly_what_with_rule_rewrites(name, bare_max):
    apply, params, x = AGREEMENT_CASES[name]()
    rep = backprop.report(apply, params, x, bare_max=bare_max)
    listed = collections.Counter((f.primitive, f.shape) for f in rep.findings
                                 if f.kind in ("relu", "clip", "pool", "inlined")
                                 or (f.kind == "uncovered" and f.detail == "a named activation"))
    handler = _Recording("guided", bare_max=bare_max)
    traced = jx.trace(apply, params, x)
    jax.eval_shape(lambda p, v: traced.call(p, v, handler=handler), params, x)
    assert collections.Counter(handler.taken.values()) == listed
    assert listed  # every case holds something the rules act on
