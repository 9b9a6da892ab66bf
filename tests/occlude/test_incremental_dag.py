"""Exact incremental occlusion through DAGs and layouts (issue 15, item 1).

Every map is checked against full re-inference (``method="full"``: the model run on each
occluded image), the independent reference. Models are small and random: a ResNet/Inception-
style DAG (zero padding, BatchNorm in inference form, 1×1 / 3×3 / depthwise branches and an
average pool concatenated along channels, a residual with a strided 1×1 shortcut, an identity
residual, max of two branches), an NCHW twin of an NHWC net (transpose at the input, channel
split and shuffle by reshape), negative and interior ``pad``, and squeeze-excitation (which
must go full, and ``flop_report`` must say why)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from saliency_jax.occlude import incremental as inc
from saliency_jax.occlude.flops import flop_report
from saliency_jax.occlude import occlusion
from tests.occlude.test_engine import assert_maps_equal, rand_image

HI = lax.Precision.HIGHEST


class Dag(nn.Module):
    """Zero padding, strided VALID conv, BatchNorm, an Inception block (1×1, 3×3, depthwise 3×3
    and a 3×3 average pool concatenated), a residual with a strided 1×1 shortcut, an identity
    residual mixed by max and mul, global mean, dense."""

    @nn.compact
    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (2, 1), (1, 2), (0, 0)))  # ZeroPadding2D, asymmetric
        x = nn.Conv(8, (3, 3), strides=2, padding="VALID", name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(x))
        a = nn.Conv(4, (1, 1), name="b1x1")(x)
        b = nn.Conv(4, (3, 3), padding=1, name="b3x3")(x)
        c = nn.Conv(8, (3, 3), padding=1, feature_group_count=8, name="depthwise")(x)
        d = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME")
        x = jnp.concatenate([a, b, c, d], axis=-1)  # 24 channels, three different regions
        y = nn.relu(nn.Conv(12, (3, 3), strides=2, padding=1, name="main1")(x))
        y = nn.Conv(12, (3, 3), padding=1, name="main2")(y)
        s = nn.Conv(12, (1, 1), strides=2, name="shortcut")(x)  # strided 1×1 shortcut
        x = nn.relu(y + s)
        z = nn.Conv(12, (3, 3), padding=1, name="identity")(x)
        x = jnp.maximum(x, z) * jnp.tanh(x) + z  # identity residuals of two regions
        return nn.Dense(3, kernel_init=nn.initializers.normal(10.0), name="head")(x.mean(axis=(1, 2)))


class SqueezeExcite(nn.Module):
    """A conv, a squeeze-excitation block (global mean → dense → sigmoid → multiplied back into
    the map), a conv, global mean, dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), padding=1, name="c1")(x))
        s = nn.sigmoid(nn.Dense(8, name="excite")(x.mean(axis=(1, 2))))
        x = x * s[:, None, None, :]
        x = nn.relu(nn.Conv(8, (3, 3), padding=1, name="c2")(x))
        return nn.Dense(2, kernel_init=nn.initializers.normal(10.0), name="head")(x.mean(axis=(1, 2)))


def _randomise_batch_stats(variables, seed=7):
    """BatchNorm statistics that really shift and scale (init gives mean 0, variance 1)."""
    if "batch_stats" not in variables:
        return variables
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), variables["batch_stats"])
    return {**variables, "batch_stats": stats}


@functools.lru_cache(maxsize=None)
def build(name):
    """(apply_fn, variables, image (H, W, C)) with random weights."""
    model, shape = {"dag": (Dag(), (30, 27, 3)), "se": (SqueezeExcite(), (16, 14, 2))}[name]
    image = rand_image(shape, seed=3)
    variables = _randomise_batch_stats(model.init(jax.random.key(0), jnp.asarray(image)[None]))
    return model.apply, variables, image


def maps(apply_fn, variables, image, **kw):
    kw = {"target": 1, **kw}
    full = occlusion(apply_fn, variables, image, method="full", **kw)
    incr = occlusion(apply_fn, variables, image, method="incremental", **kw)
    return np.asarray(full, np.float64), np.asarray(incr, np.float64)


def assert_close(incr, full):
    """Equal within float32 rounding, relative to the map's largest score (a map with content)."""
    scale = np.abs(full).max()
    assert np.isfinite(full).all() and scale > 1e-2
    np.testing.assert_allclose(incr, full, rtol=1e-4, atol=2e-5 * scale)


# ---------------------------------------------------------------------------------------------
# DAG: residuals of two regions, strided shortcut, concatenate, pad, BatchNorm, depthwise, avg pool
# ---------------------------------------------------------------------------------------------


def test_dag_is_incremental_up_to_the_global_mean(monkeypatch):
    """With every layer kept on its region, the only point where the DAG turns full is the
    global mean; the merges run on the union box (smaller than the map)."""
    monkeypatch.setattr(inc, "FULL_LAYER_FRACTION", 1.01)
    apply_fn, variables, image = build("dag")
    report = flop_report(apply_fn, variables, image.shape, window=5, stride=3)
    assert report.reasons == ("global reduction over spatial axes (reduce_sum)",)
    prims = [layer.primitive for layer in report.layers]
    assert prims.count("conv_general_dilated") == 8  # stem, 3 branches, main ×2, shortcut, identity
    assert "reduce_window_sum" in prims
    adds = [layer for layer in report.layers if layer.primitive == "add" and layer.full_shape[-1] == 12]
    assert adds[0].window_shape[1:3] < adds[0].full_shape[1:3]  # y + shortcut: on the union box
    assert report.ratio > 1.5


def test_dag_equals_full_reinference(monkeypatch):
    monkeypatch.setattr(inc, "FULL_LAYER_FRACTION", 1.01)  # every layer on its region
    apply_fn, variables, image = build("dag")
    full, incr = maps(apply_fn, variables, image, window=5, stride=3)
    assert_close(incr, full)


@pytest.mark.slow
def test_dag_with_the_default_full_layer_rule_equals_full():
    apply_fn, variables, image = build("dag")
    full, incr = maps(apply_fn, variables, image, window=(7, 4), stride=(4, 3), target=0)
    assert_close(incr, full)


def _shifted_branches(p, x):
    """Two 3×3 convolutions of the image whose changed regions are shifted against each other
    (padding (2, 0) against (0, 2) along both axes), added, then a global mean: (B, 16, 16, 2) -> (B, 4)."""
    def conv(w, pad):
        return lax.conv_general_dilated(x, w, (1, 1), (pad, pad), dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return jnp.tanh(conv(p["a"], (2, 0)) + conv(p["b"], (0, 2))).mean(axis=(1, 2))


def test_a_merge_runs_on_the_bounding_box_of_its_operands_regions():
    """Krypton's merge, through flop_report (public) and the map: a window [o, o + 4) changes the
    outputs [o, o + 6) of the first branch and [o − 2, o + 4) of the second (clipped at the
    border: 6 rows at most each); their sum changes [o − 2, o + 6): 8 rows and columns, more than
    either operand's region, so a merge on one operand's region alone fails both checks."""
    k = jax.random.split(jax.random.key(3), 2)
    params = {"a": jax.random.normal(k[0], (3, 3, 2, 4)) * 0.4, "b": jax.random.normal(k[1], (3, 3, 2, 4)) * 0.4}
    report = flop_report(_shifted_branches, params, (16, 16, 2), window=4, stride=4)
    convs = [layer.window_shape for layer in report.layers if layer.primitive == "conv_general_dilated"]
    assert convs == [(1, 6, 6, 4), (1, 6, 6, 4)]
    (add,) = [layer for layer in report.layers if layer.primitive == "add"]
    assert add.window_shape == (1, 8, 8, 4) and add.full_shape == (1, 16, 16, 4)
    full, incr = maps(_shifted_branches, params, rand_image((16, 16, 2), seed=5), window=4, stride=4, target=1)
    assert_close(incr, full)


# ---------------------------------------------------------------------------------------------
# Layouts: NCHW with a transpose at the input, channel split and shuffle, against the NHWC twin
# ---------------------------------------------------------------------------------------------


def _twin_params(seed=0):
    k = jax.random.split(jax.random.key(seed), 6)
    return {
        "w1": jax.random.normal(k[0], (3, 3, 3, 8)) * 0.4, "b1": jax.random.normal(k[1], (8,)) * 0.1,
        "w2": jax.random.normal(k[2], (3, 3, 4, 8)) * 0.3, "b2": jax.random.normal(k[3], (8,)) * 0.1,
        "wd": jax.random.normal(k[4], (8, 3)) * 0.5, "g": jax.random.uniform(k[5], (8,), minval=0.5, maxval=1.5),
    }


def _shuffle_nhwc(x):  # ShuffleNet channel shuffle, 2 groups
    n, h, w, c = x.shape
    return x.reshape(n, h, w, 2, c // 2).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)


def nhwc_net(p, x):
    dn = ("NHWC", "HWIO", "NHWC")
    x = lax.conv_general_dilated(x, p["w1"], (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn, precision=HI)
    x = jax.nn.relu(x * p["g"][None, None, None] + p["b1"][None, None, None])
    x = _shuffle_nhwc(x)
    x = lax.conv_general_dilated(x, p["w2"], (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2,
                                 precision=HI) + p["b2"][None, None, None]
    x = jax.nn.relu(x).mean(axis=(1, 2))
    return jnp.dot(x, p["wd"], precision=HI)


def nchw_net(p, x):
    """The same network written NCHW (OIHW kernels), as Equinox and PyTorch ports do."""
    dn = ("NCHW", "OIHW", "NCHW")
    x = jnp.transpose(x, (0, 3, 1, 2))
    w1, w2 = jnp.transpose(p["w1"], (3, 2, 0, 1)), jnp.transpose(p["w2"], (3, 2, 0, 1))
    x = lax.conv_general_dilated(x, w1, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn, precision=HI)
    x = jax.nn.relu(x * p["g"][None, :, None, None] + p["b1"][None, :, None, None])
    n, c, h, w = x.shape
    x = x.reshape(n, 2, c // 2, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)  # channel shuffle
    x = lax.conv_general_dilated(x, w2, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2,
                                 precision=HI) + p["b2"][None, :, None, None]
    x = jax.nn.relu(x).mean(axis=(2, 3))
    return jnp.dot(x, p["wd"], precision=HI)


def test_nchw_model_gets_the_flop_ratio_of_its_nhwc_twin():
    params, shape = _twin_params(), (32, 28, 3)
    image = jnp.asarray(rand_image(shape, seed=4))[None]
    np.testing.assert_allclose(nchw_net(params, image), nhwc_net(params, image), rtol=1e-5, atol=1e-6)
    kw = dict(window=8, stride=4)
    a = flop_report(nhwc_net, params, shape, **kw)
    b = flop_report(nchw_net, params, shape, **kw)
    assert a.full_flops == b.full_flops and a.incremental_flops == b.incremental_flops
    assert a.ratio > 1.5 and b.reasons == a.reasons == ("global reduction over spatial axes (reduce_sum)",)


@pytest.mark.slow
def test_nchw_model_equals_full_and_its_twin():
    params, image = _twin_params(), rand_image((32, 28, 3), seed=4)
    full, incr = maps(nchw_net, params, image, window=8, stride=4)
    assert_close(incr, full)
    twin = occlusion(nhwc_net, params, image, window=8, stride=4, target=1, method="incremental")
    assert_maps_equal(incr, np.asarray(twin, np.float64), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# pad: zero padding, negative (cropping) and interior padding
# ---------------------------------------------------------------------------------------------


def padded_features(w, x):
    dn = ("NHWC", "HWIO", "NHWC")
    x = lax.pad(x, 0.0, ((0, 0, 0), (3, -2, 0), (-1, 2, 1), (1, 0, 0)))  # crop, spread, an extra channel
    x = lax.conv_general_dilated(x, w, (1, 2), "VALID", dimension_numbers=dn, precision=HI)
    x = lax.pad(jnp.tanh(x), -0.5, ((0, 0, 0), (1, 1, 0), (1, 1, 0), (0, 0, 0)))  # padding with a non-zero value
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def padded_net(p, x):
    x = padded_features(p["w"], x)
    return jnp.dot(x.reshape(x.shape[0], -1), p["d"], precision=HI)


@pytest.mark.slow
def test_pad_negative_and_interior_equals_full():
    shape = (19, 13, 2)
    k1, k2 = jax.random.split(jax.random.key(2))
    w = jax.random.normal(k1, (3, 4, 3, 5)) * 0.5
    feat = int(np.prod(jax.eval_shape(padded_features, w, jax.ShapeDtypeStruct((1, *shape), jnp.float32)).shape))
    params = {"w": w, "d": jax.random.normal(k2, (feat, 2))}
    report = flop_report(padded_net, params, shape, window=3, stride=2)
    assert [layer.primitive for layer in report.layers][:2] == ["conv_general_dilated", "tanh"]
    assert report.reasons == ("reshape merges or splits a spatial axis (flatten)",)
    full, incr = maps(padded_net, params, rand_image(shape, seed=8), window=3, stride=2)
    assert_close(incr, full)


# ---------------------------------------------------------------------------------------------
# What goes full, and flop_report's reasons
# ---------------------------------------------------------------------------------------------


def test_squeeze_excitation_goes_full_and_the_report_says_so():
    apply_fn, variables, image = build("se")
    report = flop_report(apply_fn, variables, image.shape, window=4, stride=2)
    squeeze, excite = report.reasons
    assert squeeze == "global reduction over spatial axes (reduce_sum)"
    assert excite.startswith("combines the changed region with a value computed in full since reduce_sum #")
    mul = [layer for layer in report.full_layers if layer.reason == excite]
    assert [layer.primitive for layer in mul] == ["mul"] and mul[0].full_shape == (1, 16, 14, 8)
    c2 = [layer for layer in report.full_layers if layer.primitive == "conv_general_dilated"]
    assert len(c2) == 1 and c2[0].reason.startswith("after mul #")  # the conv after the block: full
    assert [layer.primitive for layer in report.layers] == ["conv_general_dilated", "add", "max"]  # c1, bias, relu
    assert "full" in report.table() and excite in report.table()


@pytest.mark.slow
def test_squeeze_excitation_equals_full():
    apply_fn, variables, image = build("se")
    full, incr = maps(apply_fn, variables, image, window=4, stride=2)
    assert_close(incr, full)


def test_flop_report_names_why_each_region_went_full():
    def net(p, x):
        x = jax.nn.relu(lax.conv_general_dilated(x, p, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        y = jnp.cumsum(x, axis=1)  # mixes rows: not a region operation
        return x.reshape(1, -1).sum(axis=1, keepdims=True) + y.sum()

    w = jnp.ones((3, 3, 1, 2))
    report = flop_report(net, w, (10, 10, 1), window=2, stride=2)
    assert set(report.reasons) == {"unsupported primitive: cumsum", "reshape merges or splits a spatial axis (flatten)"}
    wide = flop_report(net, w, (10, 10, 1), window=9, stride=1)  # a 9×9 window changes 100 % of the conv
    conv = wide.full_layers[0]
    assert conv.primitive == "conv_general_dilated" and conv.window_flops == conv.full_flops
    assert conv.reason == "changed region 10×10 covers 100% of the 10×10 layer (>= FULL_LAYER_FRACTION 0.8)"
    assert wide.ratio == 1.0 and report.ratio > 1.0
    # the arithmetic adds up: full = incremental + what the regions save
    saved = sum(layer.full_flops - layer.window_flops for layer in report.layers)
    assert report.incremental_flops == report.full_flops - saved
    assert all(layer.window_flops == layer.full_flops for layer in report.full_layers)
