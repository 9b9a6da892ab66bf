"""Receptive-field-restricted backward passes (saliency_jax.backprop.receptive_field) against the full jax.vjp.

The reference is independent of the restriction: ``jax.vjp`` of ``with_rule(fn)`` with the unit's
signal placed into a full zero cotangent, i.e. every transposed convolution over the full maps.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from saliency_jax import backprop
from saliency_jax.backprop import receptive_field as field
from saliency_jax.model.architectures import get_model
from tests.weights import KEY, np_init

DN = ("NHWC", "HWIO", "NHWC")


@functools.lru_cache(maxsize=None)
def _model(name, size):
    width = {"small": 0.125, "zf": 1 / 16}[name]
    model = get_model(name, num_classes=3, width=width, fc=(8,))
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    return model.apply, np_init(model.init, x[:1]), x


def _lax_params():
    ks = jax.random.split(KEY, 5)
    return {
        "w1": jax.random.normal(ks[0], (4, 3, 3, 6)) / 6,  # 4×3 kernel, stride (2, 1), explicit padding
        "w2": jax.random.normal(ks[1], (3, 3, 3, 8)) / 6,  # feature groups 2, kernel dilation 2
        "w3": jax.random.normal(ks[2], (2, 2, 8, 5)) / 6,  # VALID, stride 2 (no overlap)
        "b3": jax.random.normal(ks[3], (5,)),
    }


def _lax_features(p, x):
    """Plain lax: asymmetric explicit padding, groups, dilation, a VALID pool, scaling and a bias."""
    y = lax.conv_general_dilated(x[None], p["w1"], (2, 1), ((2, 1), (0, 2)), dimension_numbers=DN)
    y = jax.nn.relu(y) * 0.5
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 3, 1), (1, 2, 1, 1), "VALID")
    y = lax.conv_general_dilated(y, p["w2"], (1, 1), "SAME", rhs_dilation=(2, 2), feature_group_count=2,
                                 dimension_numbers=DN)
    y = jax.nn.relu(y)
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = lax.conv_general_dilated(y, p["w3"], (2, 2), "VALID", dimension_numbers=DN)
    return (y + p["b3"].reshape(1, 1, 1, 5))[0]


class _Wrapped(nn.Module):
    """remat and scan around convolutions: the restriction does not enter them (ordinary VJP there)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), name="conv1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = nn.remat(lambda mdl, v: nn.relu(nn.Conv(4, (3, 3))(v)))(self, x)
        block = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)
        x, _ = block()(x, None)
        return nn.Conv(6, (3, 3), name="top")(x)


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.relu(nn.Conv(4, (3, 3))(x)), None


def _reference(fn, params, x, rule, switches, units, values, shape):
    ruled = backprop.with_rule(fn, rule, switches=switches, data_argnums=1)
    _, vjp = jax.vjp(lambda v: ruled(params, v), x)
    cots = jnp.zeros((len(units),) + shape).at[(jnp.arange(len(units)),) + tuple(units.T)].set(values)
    return jax.vmap(lambda c: vjp(c)[0])(cots)


def _restricted(fn, params, x, rule, switches, units, values):
    out, back = field.vjp(fn, params, x, rule=rule, switches=switches)
    return jax.vmap(lambda u, v: back(field.unit_seed(out, u, v)))(units, values)


def _border_units(shape):
    h, w, c = shape
    rows = sorted({0, 1, h // 2, h - 2, h - 1} & set(range(h)))
    cols = sorted({0, 1, w // 2, w - 1} & set(range(w)))
    return np.array([(r, q, (r + q) % c) for r in rows for q in cols], np.int32)


def _cases():
    return [
        ("small", "conv5", 32), ("small", "conv2", 32), ("zf", "conv5", 64), ("zf", "conv3", 48),
        ("zf", "conv1", 40), ("lax", None, 29), ("wrapped", None, 20),
    ]


def _setup(name, layer, size):
    if name == "lax":
        x = jax.random.normal(jax.random.key(3), (size, size + 2, 3))
        return _lax_features, _lax_params(), x
    if name == "wrapped":
        module = _Wrapped()
        x = jax.random.normal(jax.random.key(4), (size, size, 3))
        return (lambda p, v: module.apply(p, v[None])[0]), np_init(module.init, x[None]), x
    apply, params, xs = _model(name, size)
    features = backprop.layer_features(apply, layer)
    return (lambda p, v: features(p, v[None])[0]), params, xs[0]


# the combinations that take over ~4 s (compiling both passes); the fast subset runs the others
# The fast subset (-m "not slow") checks every model once, the rules rotating over them; the
# full run checks every model under every rule.
_FAST = {("small", "conv5", "deconvnet"), ("small", "conv2", "guided"), ("zf", "conv5", "gradient"),
         ("zf", "conv3", "deconvnet"), ("zf", "conv1", "guided"), ("lax", None, "guided"),
         ("wrapped", None, "guided")}


def _case_params():
    return [pytest.param(case, rule, id=f"{case[0]}-{case[1]}-{case[2]}-{rule}",
                         marks=[] if (case[0], case[1], rule) in _FAST else [pytest.mark.slow])
            for case in _cases() for rule in backprop.RULES]


@pytest.mark.parametrize("case, rule", _case_params())
def test_restricted_projection_equals_full_vjp_at_every_border(case, rule):
    fn, params, x = _setup(*case)
    shape = jax.eval_shape(fn, params, x).shape
    units = _border_units(shape)
    act = fn(params, x)
    values = act[tuple(units.T)] + 1.0  # any signal value, also negative activations
    for switches in ((True, False) if rule == "deconvnet" else (True,)):
        ref = np.asarray(jax.jit(_reference, static_argnums=(0, 3, 4, 7))(
            fn, params, x, rule, switches, jnp.asarray(units), values, shape))
        got = np.asarray(jax.jit(_restricted, static_argnums=(0, 3, 4))(
            fn, params, x, rule, switches, jnp.asarray(units), values))
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
        # where no signal arrives (outside the receptive field, rectified paths) both are exactly zero
        assert (got[ref == 0] == 0).all()


@pytest.mark.slow
def test_full_cotangents_and_dense_layers_fall_back_to_the_ordinary_vjp():
    apply, params, xs = _model("small", 32)
    x = xs[0]
    logits = lambda p, v: apply(p, v[None])[0]  # noqa: E731
    out, back = field.vjp(logits, params, x, rule="guided")
    ruled = backprop.with_rule(logits, "guided", data_argnums=1)
    _, vjp = jax.vjp(lambda v: ruled(params, v), x)
    for k in range(3):
        cot = jnp.eye(3)[k] * 2.0
        np.testing.assert_allclose(np.asarray(back(cot)), np.asarray(vjp(cot)[0]), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(back(field.unit_seed(out, jnp.array([k]), 2.0))),
                                   np.asarray(vjp(cot)[0]), rtol=1e-5, atol=1e-7)


def test_project_units_restricted_equals_unrestricted_with_jit_and_image_batches():
    apply, params, x = _model("zf", 64)
    kw = dict(layer="conv5", top_k=7, rule="deconvnet")
    full = backprop.project_units(apply, params, x, receptive_field=False, **kw)
    rf = backprop.project_units(apply, params, x, receptive_field=True, **kw)
    np.testing.assert_array_equal(np.asarray(rf.units), np.asarray(full.units))
    np.testing.assert_array_equal(np.asarray(rf.values), np.asarray(full.values))
    scale = np.abs(np.asarray(full.maps)).max()
    np.testing.assert_allclose(np.asarray(rf.maps), np.asarray(full.maps), rtol=1e-5, atol=1e-6 * scale)
    jitted = jax.jit(lambda p, v: backprop.project_units(apply, p, v, **kw).maps)(params, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(rf.maps), rtol=1e-5, atol=1e-6 * scale)
    per_image = jax.vmap(lambda v: backprop.project_units(apply, params, v, **kw).maps)(x)
    np.testing.assert_allclose(np.asarray(per_image), np.asarray(rf.maps), rtol=1e-5, atol=1e-6 * scale)
    with pytest.raises(TypeError, match="`receptive_field`"):
        backprop.project_units(apply, params, x, receptive_field="yes", **kw)


def test_the_backward_convolutions_really_shrink():
    """Count the elements the backward convolutions produce: a conv5 unit of the ZF layout reads a
    small part of each lower map, so the restricted pass produces far fewer."""
    apply, params, x = _model("zf", 224)

    def produced(receptive_field):
        jaxpr = jax.make_jaxpr(lambda v: backprop.project_units(
            apply, params, v, layer="conv5", top_k=1, receptive_field=receptive_field).maps)(x[0])
        sizes = []
        from saliency_jax import jaxpr as jx
        jx.walk(jaxpr, lambda e, f, p: sizes.append(int(np.prod(e.outvars[0].aval.shape)))
                if e.primitive.name == "conv_general_dilated" else None)
        return sum(sizes[5:])  # the first five are the forward pass, identical in both

    full, restricted = produced(False), produced(True)
    assert restricted * 2 < full, (restricted, full)


def test_strict_mode_and_rules_carry_over():
    w = jnp.ones((3, 3, 1, 1))
    f = lambda x: jnp.tanh(lax.conv_general_dilated(x[None], w, (1, 1), "SAME", dimension_numbers=DN)[0])  # noqa: E731
    with pytest.raises(ValueError, match="strict"):
        field.vjp(f, jnp.ones((5, 5, 1)), rule="deconvnet")
    out, back = field.vjp(f, jnp.ones((5, 5, 1)), rule="gradient")
    ref = jax.vjp(f, jnp.ones((5, 5, 1)))[1](jnp.zeros((5, 5, 1)).at[2, 2, 0].set(1.0))[0]
    np.testing.assert_allclose(np.asarray(back(field.unit_seed(out, jnp.array([2, 2, 0]), 1.0))),
                               np.asarray(ref), rtol=1e-6)


@pytest.mark.parametrize("kernel,strides,padding,layout", [
    ((7, 7), (2, 2), "SAME", ("NHWC", "HWIO", "NHWC")),
    ((5, 3), (2, 3), ((2, 0), (1, 3)), ("NHWC", "HWIO", "NHWC")),
    ((1, 2), (2, 3), "VALID", ("NCHW", "OIHW", "NCHW")),  # kernels smaller than the stride
    pytest.param((3, 3), (3, 1), ((4, 4), (0, 0)), ("NHWC", "OIHW", "NCHW"),  # padding beyond any window
                 marks=pytest.mark.slow),
])
def test_subpixel_transpose_equals_the_linear_transpose(kernel, strides, padding, layout):
    lhs_spec, rhs_spec, _ = layout
    x_shape = {"NHWC": (2, 17, 14, 3), "NCHW": (2, 3, 17, 14)}[lhs_spec]
    w_shape = {"HWIO": kernel + (3, 5), "OIHW": (5, 3) + kernel}[rhs_spec]
    w = jax.random.normal(KEY, w_shape)
    conv = lambda x: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=layout)  # noqa: E731
    x = jnp.zeros(x_shape)
    g = jax.random.normal(jax.random.key(5), jax.eval_shape(conv, x).shape)
    ref = jax.linear_transpose(conv, jax.ShapeDtypeStruct(x_shape, jnp.float32))(g)[0]
    # the backward pass of a full (not restricted) signal through one convolution is the sub-pixel
    # transpose with the convolution's own padding
    got = field.vjp(conv, x, rule="gradient")[1](g)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_top_activations_projections_equal_the_full_backward_pass():
    apply, params, _ = _model("zf", 64)
    images = jax.random.normal(jax.random.key(6), (4, 64, 64, 3))
    res = backprop.top_activations(apply, params, images, "conv3", [1, 2], k=2, batch_size=2, rule="guided")
    for f in range(2):
        for r in range(2):
            ref = backprop.project_units(apply, params, images[int(res.image_index[f, r])], layer="conv3",
                                         units=np.asarray(res.units[f, r])[None], rule="guided",
                                         receptive_field=False)
            scale = np.abs(np.asarray(ref.maps)).max()
            assert scale > 0
            np.testing.assert_allclose(np.asarray(res.projections[f, r]), np.asarray(ref.maps[0]),
                                       rtol=1e-5, atol=1e-6 * scale)


def test_bad_arguments_name_themselves():
    x = jnp.ones((4, 4, 1))
    with pytest.raises(TypeError, match="`fn`"):
        field.vjp(3, x)
    with pytest.raises(TypeError, match="`switches`"):
        field.vjp(jax.nn.relu, x, switches=1)
    with pytest.raises(ValueError, match="`rule`"):
        field.vjp(jax.nn.relu, x, rule="lrp")
    with pytest.raises(ValueError, match="`fn`"):
        field.vjp(lambda v: (jax.nn.relu(v), v), x, rule="gradient")


def _relu6_features(p, x):
    """Two SAME convolutions, each through ReLU6 written as ``jnp.clip`` (a call the rules replace
    whole), with a max pool between: ``(B, 12, 12, 2) -> (B, 6, 6, 4)``."""
    dn = ("NHWC", "HWIO", "NHWC")
    h = jnp.clip(lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=dn) * 4.0, 0, 6)
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return jnp.clip(lax.conv_general_dilated(h, p["k2"], (1, 1), "SAME", dimension_numbers=dn) * 0.1, 0, 6)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_relu6_unit_projections_restricted_equal_the_full_rewrite(rule):
    # The restricted backward pass gives a clip(x, 0, c) call the same ReLU6 rule as with_rule
    # (whose rule is checked against a hand-written custom-VJP model in test_rewrite); before, it
    # entered the call's body and back-propagated the plain gradient there.
    k = jax.random.split(jax.random.key(3), 3)
    p = {"k1": jax.random.normal(k[0], (3, 3, 2, 4)), "k2": jax.random.normal(k[1], (3, 3, 4, 4))}
    x = jax.random.normal(k[2], (2, 12, 12, 2))
    apply = lambda p, v: _relu6_features(p, v).mean(axis=(1, 2))  # noqa: E731
    kw = dict(layer=_relu6_features, top_k=5, rule=rule)
    full = backprop.project_units(apply, p, x, receptive_field=False, **kw)
    rf = backprop.project_units(apply, p, x, receptive_field=True, **kw)
    np.testing.assert_array_equal(np.asarray(rf.units), np.asarray(full.units))
    scale = np.abs(np.asarray(full.maps)).max()
    np.testing.assert_allclose(np.asarray(rf.maps), np.asarray(full.maps), rtol=1e-5, atol=1e-6 * scale)
    plain = backprop.project_units(apply, p, x, receptive_field=False, **{**kw, "rule": "gradient"})
    assert np.abs(np.asarray(full.maps)).max() > 0 and float(full.values.max()) < 6  # top units unsaturated
    assert not np.allclose(np.asarray(full.maps), np.asarray(plain.maps))  # the rule matters here


@pytest.mark.parametrize("case", ["capped bare max", "footprint pools"])
def test_restricted_pass_replaces_what_with_rule_replaces(case):
    """The recorder classifies through with_rule's own handler: a bare ``min(max(x, 0), c)`` with
    ``bare_max=True`` gets the capped rule on ``x`` (not ReLU then min's VJP), and the footprint
    rule spreads its pools (not unpools through switches)."""
    w = jax.random.normal(jax.random.key(0), (3, 3, 1, 2)) * 3

    def conv(x):
        return lax.conv_general_dilated(x[None], w, (1, 1), "SAME", dimension_numbers=DN)[0]

    if case == "capped bare max":
        f, rules, kw = (lambda x: jnp.minimum(jnp.maximum(conv(x), 0.0), 1.0)), ("gradient", "deconvnet", "guided"), \
            {"bare_max": True}
    else:
        f, rules, kw = (lambda x: lax.reduce_window(jax.nn.relu(conv(x)), -jnp.inf, lax.max, (2, 2, 1), (1, 1, 1),
                                                    "VALID")), ("footprint",), {"strict": False}
    x = jax.random.normal(jax.random.key(1), (6, 6, 1))
    for rule in rules:
        out, back = field.vjp(f, x, rule=rule, **kw)
        seed = jnp.zeros(out.shape).at[2, 2, 0].set(1.0)
        ref = jax.vjp(backprop.with_rule(f, rule, **kw), x)[1](seed)[0]
        if rule in ("deconvnet", "footprint"):  # (the unit is saturated: no gradient passes its cap)
            assert np.abs(np.asarray(ref)).sum() > 0
        np.testing.assert_allclose(np.asarray(back(field.unit_seed(out, jnp.array([2, 2, 0]), 1.0))),
                                   np.asarray(ref), rtol=1e-5, atol=1e-6, err_msg=rule)


def test_the_elementwise_inputs_are_fenced_under_jit_and_the_values_do_not_change(monkeypatch):
    """vjp passes what its ReLU steps read in the backward pass through a conditional (so XLA
    materialises it instead of re-fusing its producer into every backward consumer); the
    cotangents equal those without the fence, and eager (concrete) calls are left alone."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
    net = lambda v: jax.nn.relu(jax.lax.conv_general_dilated(v, w, (1, 1), "SAME",  # noqa: E731
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))

    def back(v, c):
        return field.vjp(net, v, rule="gradient")[1](c)

    fenced = jax.jit(back)
    hlo = fenced.lower(x, g).as_text()
    assert "stablehlo.case" in hlo or "conditional" in hlo
    got = np.asarray(fenced(x, g))
    monkeypatch.setattr(field, "FENCE", False)
    plain = jax.jit(lambda v, c: back(v, c))
    assert "stablehlo.case" not in plain.lower(x, g).as_text()
    np.testing.assert_array_equal(got, np.asarray(plain(x, g)))
    np.testing.assert_array_equal(got, np.asarray(jax.vjp(net, x)[1](g)[0]))
