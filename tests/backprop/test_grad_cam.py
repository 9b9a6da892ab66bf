"""Grad-CAM and guided Grad-CAM against a hand-written reference on a tiny linen model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.backprop import guided_backprop
from saliency_jax.backprop.grad_cam import grad_cam, guided_grad_cam, last_spatial_layer, upsample_map


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = nn.Conv(4, (3, 3), strides=2, name="conv")(x)  # (B, 8, 8, 4)
        return nn.Dense(3, name="fc")(jax.nn.relu(a).reshape(x.shape[0], -1))


MODEL = Tiny()
X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32))
PARAMS = MODEL.init(jax.random.key(0), X)


def features(p, x):
    return nn.Conv(4, (3, 3), strides=2).apply({"params": p["params"]["conv"]}, x)


def head(p, a):
    return nn.Dense(3).apply({"params": p["params"]["fc"]}, jax.nn.relu(a).reshape(a.shape[0], -1))


def reference(x, t):
    """Grad-CAM by hand: the gradient of head at the activation, averaged over space."""
    a = features(PARAMS, x[None])
    g = jax.grad(lambda v: head(PARAMS, v)[0, t])(a)
    return np.asarray(jnp.sum(g.mean(axis=(1, 2))[:, None, None, :] * a, axis=-1)[0])


def test_grad_cam_equals_the_hand_computation_by_name_pair_and_default_layer():
    expected = np.stack([reference(X[0], 2), reference(X[1], 0)])
    for layer in ("conv", (features, head), None):
        ours = grad_cam(MODEL.apply, PARAMS, X, target=[2, 0], layer=layer, relu=False, upsample=False)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert last_spatial_layer(MODEL.apply, PARAMS, X) == "conv"
    relu_up = grad_cam(MODEL.apply, PARAMS, X[0], target=2)
    np.testing.assert_allclose(relu_up, upsample_map(np.maximum(expected[0], 0), (16, 16)), rtol=1e-5, atol=1e-6)
    assert relu_up.shape == (16, 16) and (np.asarray(relu_up) >= 0).all()


def test_grad_cam_target_forms():
    every = grad_cam(MODEL.apply, PARAMS, X, target="all", relu=False, upsample=False)
    assert every.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(every[1, 2], reference(X[1], 2), rtol=1e-5, atol=1e-6)
    predicted = np.asarray(jnp.argmax(MODEL.apply(PARAMS, X), axis=-1))
    np.testing.assert_allclose(grad_cam(MODEL.apply, PARAMS, X, relu=False, upsample=False),
                               every[np.arange(2), predicted], rtol=1e-5, atol=1e-6)


def test_upsample_map_matches_the_torch_rules_by_hand():
    m = jnp.array([[1.0, 3.0], [5.0, 7.0]])
    # bilinear, half-pixel centres, edges clamped: rows/cols at 1/4 and 3/4 between the samples
    np.testing.assert_allclose(upsample_map(m, (4, 4))[0], [1.0, 1.5, 2.5, 3.0])
    np.testing.assert_allclose(upsample_map(m, (4, 4))[:, 0], [1.0, 2.0, 4.0, 5.0])
    # torch's legacy nearest: source floor(i * in / out)
    np.testing.assert_array_equal(upsample_map(jnp.arange(5.0)[None], (1, 7), "nearest")[0], [0, 0, 1, 2, 2, 3, 4])


def test_guided_grad_cam_is_guided_backprop_times_the_upsampled_cam():
    cam = np.maximum(np.stack([reference(X[0], 1), reference(X[1], 1)]), 0)
    up = np.asarray(upsample_map(cam, (16, 16), "nearest"))
    expected = np.asarray(guided_backprop(MODEL.apply, PARAMS, X, target=1)) * up[..., None]
    np.testing.assert_allclose(guided_grad_cam(MODEL.apply, PARAMS, X, target=1), expected, rtol=1e-5, atol=1e-7)
    assert guided_grad_cam(MODEL.apply, PARAMS, X[0], target=1, interpolate="bilinear").shape == (16, 16, 3)


@pytest.mark.parametrize("kw, match", [
    (dict(layer="conv9"), "layers seen"),
    (dict(layer="fc"), "spatial axes"),
    (dict(layer=features), "lone callable"),
    (dict(layer=(features,)), "pair"),
    (dict(relu=1), "relu"),
    (dict(upsample="yes"), "upsample"),
    (dict(target=5), "target"),
])
def test_bad_layers_and_flags_name_the_argument(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        grad_cam(MODEL.apply, PARAMS, X, **kw)


def test_no_spatial_layer_and_bad_input_are_refused():
    with pytest.raises(ValueError, match="layers seen"):
        grad_cam(lambda p, x: x.reshape(x.shape[0], -1)[:, :3], None, X)
    with pytest.raises(ValueError, match="image"):
        grad_cam(MODEL.apply, PARAMS, X.at[0, 0, 0, 0].set(jnp.nan), layer="conv")
    with pytest.raises(ValueError, match="interpolate"):
        guided_grad_cam(MODEL.apply, PARAMS, X, interpolate="bicubic")


def test_plain_jax_function_without_layer_takes_its_last_spatial_intermediate():
    """No linen submodule: ``layer=None`` cuts the jaxpr after its last (B, h, w, c) equation; the
    reference is the same model written as an explicit (features, head) pair."""
    def feats(p, x):
        h = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def head(p, h):
        return h.mean(axis=(1, 2)) @ p["w"]

    def plain(p, x):
        return head(p, feats(p, x))

    rng = np.random.default_rng(3)
    p = {"k": jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32)),
         "w": jnp.asarray(rng.normal(size=(4, 2)).astype(np.float32))}
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
    ours = grad_cam(plain, p, x, target=1, relu=False, upsample=False)
    ref = grad_cam(plain, p, x, target=1, relu=False, upsample=False, layer=(feats, head))
    assert ours.shape == (2, 4, 4)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
