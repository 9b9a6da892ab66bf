"""One output-dtype rule for every map, and ``compute_dtype`` (the model run in e.g. bfloat16).

The rule (issue 14 item 6): maps are float32 whatever the image's floating dtype (float16,
bfloat16, float32), and float64 for a float64 image (which needs ``jax_enable_x64``).
``compute_dtype`` casts the model's inputs and floating parameters; the map is still
accumulated and returned under the rule. The references cast by hand, outside the library.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj

SHAPE = (8, 7, 3)
K = 4


def conv_params(seed=0):
    r = np.random.default_rng(seed)
    return {"w": r.normal(size=(3, 3, 3, 5)).astype(np.float32) * 0.5,
            "d": r.normal(size=(5, K)).astype(np.float32), "step": np.int32(7)}


def conv_apply(p, x):  # (B, H, W, 3) -> (B, K); ReLU for the backprop rules
    y = jax.lax.conv_general_dilated(x, p["w"].astype(x.dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y).mean(axis=(1, 2)) @ p["d"].astype(y.dtype)


def strict_apply(p, x):  # no casts: runs in whatever dtype params and inputs carry
    y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y).mean(axis=(1, 2)) @ p["d"]


def features(p, x):  # a callable layer for project_units
    return jax.lax.conv_general_dilated(x, p["w"].astype(x.dtype), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def image(dtype=np.float32, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, SHAPE), dtype)


METHODS = {
    "occlusion": lambda f, p, x, **kw: sj.occlusion(f, p, x, window=3, stride=2, target=1, **kw),
    "crop": lambda f, p, x, **kw: sj.occlusion(f, p, x, window=4, stride=3, target=1, mode="crop", **kw),
    "incremental": lambda f, p, x, **kw: sj.occlusion(f, p, x, window=3, stride=2, target=1, method="incremental",
                                                      **kw),
    "saliency_maps": lambda f, p, x, **kw: sj.saliency_maps(f, p, x, target=1, rule="gradient", **kw),
    "deconvnet": lambda f, p, x, **kw: sj.deconvnet(f, p, x, target=1, **kw),
    "guided_backprop": lambda f, p, x, **kw: sj.guided_backprop(f, p, x, target="all", **kw),
    "gradient": lambda f, p, x, **kw: sj.gradient(f, p, x, target=None, **kw),
    "project_units": lambda f, p, x, layer=features, **kw: sj.project_units(f, p, x, layer=layer, top_k=2,
                                                                          rule="gradient", **kw),
}


def maps_of(out):
    return (out.maps, out.values) if isinstance(out, sj.backprop.UnitProjections) else (out,)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("dtype", [pytest.param(jnp.float16, marks=pytest.mark.slow), jnp.bfloat16,
                                   pytest.param(jnp.float32, marks=pytest.mark.slow)])  # bfloat16 in the fast subset
def test_maps_are_float32_for_every_image_float_dtype(method, dtype):
    for m in maps_of(METHODS[method](conv_apply, conv_params(), image(dtype))):
        assert m.dtype == jnp.float32, (method, dtype, m.dtype)
        assert np.isfinite(np.asarray(m)).all()


@pytest.mark.parametrize("method", ["occlusion", "deconvnet", "project_units"])
def test_a_float64_image_gives_float64_maps_with_x64(method):
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype == np.float32 else a, conv_params())
        for m in maps_of(METHODS[method](conv_apply, p, image(np.float64))):
            assert m.dtype == jnp.float64, (method, m.dtype)


def by_hand(dtype):
    """``strict_apply`` on parameters and inputs cast by hand, its scores returned as float32."""
    def apply(p, x):
        cast = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, p)
        return strict_apply(cast, x.astype(dtype)).astype(jnp.float32)
    return apply


BY_HAND_BF16 = by_hand(jnp.bfloat16)  # module level: apply_fn keys the compilation cache


def features_by_hand(p, x):  # features on parameters and inputs cast to bfloat16 by hand
    cast = jax.tree.map(lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a, p)
    return features(cast, x.astype(jnp.bfloat16)).astype(jnp.float32)


SLOW_HERE = ("crop", "incremental", "saliency_maps")  # the same code paths as occlusion / gradient, several s each


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_HERE else m for m in METHODS])
def test_compute_dtype_runs_the_model_in_bfloat16_and_returns_float32(method):
    p, x = conv_params(), image()
    ours = maps_of(METHODS[method](strict_apply, p, x, compute_dtype=jnp.bfloat16))
    by_hand_layer = {"layer": features_by_hand} if method == "project_units" else {}
    ref = maps_of(METHODS[method](BY_HAND_BF16, p, x, **by_hand_layer))
    f32 = maps_of(METHODS[method](strict_apply, p, x))
    for a, b, c in zip(ours, ref, f32):
        assert a.dtype == jnp.float32
        scale = float(np.abs(np.asarray(c)).max())
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6 * scale)
        err = float(np.abs(np.asarray(a) - np.asarray(c)).max())
        assert 0 < err < 0.1 * scale, (method, err, scale)  # bfloat16 rounding: present, and small


def test_compute_dtype_reaches_the_model():
    def spy(p, x):  # NaN scores unless the model really runs in bfloat16 (integer leaves untouched)
        ok = x.dtype == jnp.bfloat16 and p["w"].dtype == jnp.bfloat16 and p["step"].dtype == jnp.int32
        return strict_apply(p, x) * (1.0 if ok else jnp.nan)

    heat = sj.occlusion(spy, conv_params(), image(), window=3, stride=2, target=0, compute_dtype="bfloat16")
    grad = sj.gradient(spy, conv_params(), image(), target=0, compute_dtype=jnp.bfloat16)
    assert np.isfinite(np.asarray(heat)).all() and np.isfinite(np.asarray(grad)).all()
    assert not np.isfinite(np.asarray(sj.gradient(spy, conv_params(), image(), target=0))).any()  # the spy bites


@pytest.mark.parametrize("bad", [jnp.int32, "int8", "nonsense", bool, 3])
@pytest.mark.parametrize("method", ["occlusion", "deconvnet", "project_units"])
def test_compute_dtype_is_validated(method, bad):
    with pytest.raises(TypeError, match="`compute_dtype`"):
        METHODS[method](strict_apply, conv_params(), image(), compute_dtype=bad)
