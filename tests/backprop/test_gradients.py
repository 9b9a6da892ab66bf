"""Integrated gradients, input × gradient and smooth_grad against brute-force references on tiny models.

The references call ``jax.grad`` point by point (no chunks, no scan); the quadratures themselves
are checked against Captum's in ``test_gradients_captum.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.backprop import gradient
from saliency_jax.backprop.gradients import (blur_baseline, input_x_gradient, integrated_gradients, quadrature,
                                             smooth_grad)

K = 3
RNG = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(RNG.normal(size=(3, 3, 2, 4)).astype(np.float32) / 4),
          "v": jnp.asarray(RNG.normal(size=(8 * 8 * 4, K)).astype(np.float32) / 8)}
X = jnp.asarray(RNG.normal(size=(2, 8, 8, 2)).astype(np.float32))


def smooth(p, x):
    """A smooth (tanh) conv net: (B, 8, 8, 2) -> (B, 3)."""
    a = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(a).reshape(x.shape[0], -1) @ p["v"]


def relu_net(p, x):
    a = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(a).reshape(x.shape[0], -1) @ p["v"]


def _grad(fn, xi, t):
    return jax.grad(lambda v: fn(PARAMS, v[None])[0, t])(xi)


def reference_ig(fn, x, b, t, method, n):
    alphas, weights = quadrature(method, n)
    total = sum(float(w) * _grad(fn, b + float(a) * (x - b), t) for a, w in zip(alphas, weights))
    return total * (x - b)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_ig_matches_the_point_by_point_reference(method):
    b = jnp.asarray(RNG.normal(size=(8, 8, 2)).astype(np.float32))
    ours = integrated_gradients(smooth, PARAMS, X, target=[1, 2], baseline=b, n_steps=5, method=method)
    for i, t in enumerate([1, 2]):
        np.testing.assert_allclose(ours[i], reference_ig(smooth, X[i], b, t, method, 5), rtol=1e-5, atol=1e-6)


def test_a_float64_image_is_integrated_in_float64():
    """The sums, the image, the baseline and the Gauss–Legendre points stay float64 (they were float32,
    which left a float64 map 1e-7 from float64 integrated gradients)."""
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), PARAMS)
        x, b = jnp.asarray(X, jnp.float64), 0.3 * jnp.asarray(X[::-1], jnp.float64)
        ours = integrated_gradients(smooth, p64, x, target=[1, 2], baseline=b, n_steps=7)
        assert ours.dtype == jnp.float64
        nodes, weights = np.polynomial.legendre.leggauss(7)
        for i, t in enumerate([1, 2]):
            grad = jax.grad(lambda v, t=t: smooth(p64, v[None])[0, t])
            ref = sum(0.5 * w * np.asarray(grad(b[i] + 0.5 * (1 + a) * (x[i] - b[i])))
                      for a, w in zip(nodes, weights)) * np.asarray(x[i] - b[i])
            np.testing.assert_allclose(np.asarray(ours[i]), ref, rtol=1e-11, atol=1e-13)


def test_completeness_gap_shrinks_with_n_steps_and_delta_is_that_gap():
    f = lambda v: smooth(PARAMS, v)  # noqa: E731
    b = 0.3 * X[::-1]
    expected = f(X)[:, 0] - f(b)[:, 0]
    gaps = []
    for n in (2, 8, 64):
        maps, delta = integrated_gradients(smooth, PARAMS, X, target=0, baseline=b, n_steps=n,
                                           method="riemann_middle", return_delta=True)
        gap = np.asarray(maps.sum(axis=(1, 2, 3)) - expected)
        np.testing.assert_allclose(delta, gap, rtol=1e-4, atol=1e-5)
        gaps.append(np.abs(gap).max())
    assert gaps[0] > 1e-3 and gaps[2] < gaps[1] < gaps[0] and gaps[2] < 1e-3 * np.abs(expected).max()
    maps, delta = integrated_gradients(smooth, PARAMS, X, target=0, baseline=b, return_delta=True)
    assert np.abs(delta).max() < 1e-4 * np.abs(expected).max()  # Gauss-Legendre, 50 points


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_ig_does_not_depend_on_the_chunk(chunk):
    kw = dict(target="all", baseline=0.5, n_steps=9)
    np.testing.assert_allclose(integrated_gradients(relu_net, PARAMS, X, chunk_size=chunk, **kw),
                               integrated_gradients(relu_net, PARAMS, X, **kw), rtol=1e-5, atol=1e-6)


def test_ig_target_forms():
    every = integrated_gradients(smooth, PARAMS, X, target="all", n_steps=4)
    assert every.shape == (2, K, 8, 8, 2)
    per_image = integrated_gradients(smooth, PARAMS, X, target=np.array([2, 0]), n_steps=4)
    np.testing.assert_allclose(per_image, every[np.arange(2), [2, 0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(integrated_gradients(smooth, PARAMS, X, target=1, n_steps=4), every[:, 1],
                               rtol=1e-5, atol=1e-6)
    predicted = np.asarray(jnp.argmax(smooth(PARAMS, X), axis=-1))
    np.testing.assert_allclose(integrated_gradients(smooth, PARAMS, X, n_steps=4), every[np.arange(2), predicted],
                               rtol=1e-5, atol=1e-6)
    one = integrated_gradients(smooth, PARAMS, X[1], target=2, n_steps=4)
    np.testing.assert_allclose(one, every[1, 2], rtol=1e-5, atol=1e-6)
    _, delta = integrated_gradients(smooth, PARAMS, X, target="all", n_steps=4, return_delta=True)
    assert delta.shape == (2, K)


def test_several_baselines_average_their_attributions_and_blur_is_a_blurred_copy():
    bs = jnp.asarray(RNG.normal(size=(3, 8, 8, 2)).astype(np.float32))
    ours, delta = integrated_gradients(smooth, PARAMS, X, target=1, baselines=bs, n_steps=6, return_delta=True)
    each = [integrated_gradients(smooth, PARAMS, X, target=1, baseline=b, n_steps=6) for b in bs]
    np.testing.assert_allclose(ours, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    f = smooth(PARAMS, X)[:, 1] - jnp.mean(jnp.stack([smooth(PARAMS, jnp.broadcast_to(b, X.shape))[:, 1] for b in bs]), 0)
    np.testing.assert_allclose(delta, ours.sum(axis=(1, 2, 3)) - f, rtol=1e-4, atol=1e-5)
    blurred = blur_baseline(X, 1.5)
    assert np.abs(blurred - X).max() > 0.1 and np.abs(blurred.mean() - X.mean()) < 0.05
    np.testing.assert_allclose(integrated_gradients(smooth, PARAMS, X, target=1, baseline=("blur", 1.5), n_steps=4),
                               integrated_gradients(smooth, PARAMS, X, target=1, baseline=blurred, n_steps=4),
                               rtol=1e-5, atol=1e-6)


def test_ig_traces_the_model_a_fixed_number_of_times_whatever_n_steps():
    counts = []
    for n in (5, 60):
        calls = []

        def counted(p, x):
            calls.append(x.shape)
            return smooth(p, x)

        integrated_gradients(counted, PARAMS, X, target=0, n_steps=n, chunk_size=4)
        traced = len(calls)
        integrated_gradients(counted, PARAMS, X + 1, target=1, n_steps=n, chunk_size=4)  # same shapes: no retrace
        assert len(calls) == traced
        counts.append(traced)
        assert all(s[0] in (1, 2, 4) for s in calls), calls  # batches: the chunk (4), the images (2), one (1)
    assert counts[0] == counts[1]


def test_ig_working_set_does_not_grow_with_n_steps():
    def temp_bytes(n):
        run = jax.jit(lambda x: integrated_gradients(relu_net, PARAMS, x, target=0, n_steps=n, chunk_size=4))
        analysis = run.lower(X).compile().memory_analysis()
        if analysis is None:
            pytest.skip("no compiled memory analysis on this backend")
        return analysis.temp_size_in_bytes

    small, large = temp_bytes(50), temp_bytes(500)
    assert small > 0 and large <= small * 1.05 + 4096, (small, large)


def test_input_x_gradient_is_the_gradient_times_the_image():
    np.testing.assert_allclose(input_x_gradient(relu_net, PARAMS, X, target=[0, 1]),
                               gradient(relu_net, PARAMS, X, target=[0, 1]) * X, rtol=1e-6)
    every = input_x_gradient(relu_net, PARAMS, X[0], target="all")
    np.testing.assert_allclose(every, gradient(relu_net, PARAMS, X[0], target="all") * X[0][None], rtol=1e-6)


def test_smooth_grad_matches_the_noisy_copies_by_hand():
    noise = jnp.asarray(RNG.normal(size=(2, 5, 8, 8, 2)).astype(np.float32))
    maps = np.stack([[_grad(smooth, X[i] + noise[i, s], 2) for s in range(5)] for i in range(2)])
    mean, sq = maps.mean(1), (maps ** 2).mean(1)
    for kind, expected in (("smoothgrad", mean), ("smoothgrad_sq", sq), ("vargrad", sq - mean ** 2)):
        for chunk in (1, 3):
            ours = smooth_grad("gradient", smooth, PARAMS, X, kind=kind, noise=noise, target=2, chunk_size=chunk)
            np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


def test_smooth_grad_noise_is_keyed_scaled_and_chunk_free():
    kw = dict(target=0, n_samples=6, key=jax.random.key(3))
    a = smooth_grad("guided_backprop", relu_net, PARAMS, X, chunk_size=1, **kw)
    np.testing.assert_allclose(a, smooth_grad("guided", relu_net, PARAMS, X, chunk_size=4, **kw), rtol=1e-5, atol=1e-7)
    assert np.abs(a - smooth_grad("guided", relu_net, PARAMS, X, target=0, n_samples=6, key=jax.random.key(4))).max() > 0
    # relative (default) vs absolute stdev: the same draws, scaled by each image's range
    spread = float(X[0].max() - X[0].min())
    rel = smooth_grad("gradient", smooth, PARAMS, X[0], kind="vargrad", stdev=0.1, **kw)
    absolute = smooth_grad("gradient", smooth, PARAMS, X[0], kind="vargrad", stdev=0.1 * spread, relative=False, **kw)
    np.testing.assert_allclose(rel, absolute, rtol=1e-4, atol=1e-7)
    assert (np.asarray(rel) >= -1e-7).all() and np.asarray(rel).max() > 0
    zero = smooth_grad("gradient", smooth, PARAMS, X[0], kind="vargrad", stdev=0.0, **kw)
    np.testing.assert_allclose(zero, 0.0, atol=1e-7)  # no noise: every copy's map is the same


def test_smooth_grad_wraps_integrated_gradients_and_callables():
    noise = jnp.asarray(RNG.normal(size=(2, 8, 8, 2)).astype(np.float32))
    ours = smooth_grad("integrated_gradients", smooth, PARAMS, X[0], noise=noise, target=1, n_steps=4,
                       method="riemann_trapezoid")
    by_hand = np.mean([integrated_gradients(smooth, PARAMS, X[0] + e, target=1, n_steps=4, method="riemann_trapezoid")
                       for e in noise], axis=0)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5, atol=1e-6)
    every = smooth_grad(input_x_gradient, smooth, PARAMS, X, noise=noise, target="all")
    assert every.shape == (2, K, 8, 8, 2)


@pytest.mark.parametrize("call, match", [
    (lambda f: integrated_gradients(f, PARAMS, X, n_steps=0), "n_steps"),
    (lambda f: integrated_gradients(f, PARAMS, X, n_steps=1, method="riemann_left"), "n_steps"),
    (lambda f: integrated_gradients(f, PARAMS, X, method="simpson"), "method"),
    (lambda f: integrated_gradients(f, PARAMS, X, chunk_size=0), "chunk_size"),
    (lambda f: integrated_gradients(f, PARAMS, X, return_delta=1), "return_delta"),
    (lambda f: integrated_gradients(f, PARAMS, X.at[0, 0, 0, 0].set(jnp.nan)), "image"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X, kind="smoothgrad2"), "kind"),
    (lambda f: smooth_grad("saliency", f, PARAMS, X), "method"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X, stdev=-0.1), "stdev"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X, n_samples=0), "n_samples"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X, noise=jnp.zeros((3, 8, 8))), "noise"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X, noise=jnp.full((3, 8, 8, 2), jnp.inf)), "noise"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X, noise=jnp.zeros((3, 8, 8, 2)), n_samples=4), "n_samples"),
    (lambda f: smooth_grad("gradient", f, PARAMS, X.at[1, 0, 0, 0].set(jnp.inf)), "image"),
])
def test_bad_arguments_are_refused_before_the_model_is_traced(call, match):
    calls = []

    def counted(p, x):
        calls.append(1)
        return smooth(p, x)

    with pytest.raises((TypeError, ValueError), match=match):
        call(counted)
    assert not calls


@pytest.mark.parametrize("kw, match", [
    (dict(baseline=jnp.zeros((8, 7, 2))), "baseline"),
    (dict(baseline=jnp.zeros((3, 8, 8, 2))), "baselines="),
    (dict(baseline=jnp.full((8, 8, 2), jnp.nan)), "baseline"),
    (dict(baseline="mean"), "baseline"),
    (dict(baseline=("blur", -1.0)), "baseline"),
    (dict(baselines=jnp.zeros((8, 8, 2))), "baselines"),
    (dict(baselines=jnp.zeros((2, 8, 8, 2)), baseline=0.5), "exclude"),
    (dict(target=3), "target"),
])
def test_bad_baselines_and_targets_name_the_argument(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        integrated_gradients(smooth, PARAMS, X, **kw)
