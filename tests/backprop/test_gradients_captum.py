"""Parity with Captum's IntegratedGradients, InputXGradient, NoiseTunnel, LayerGradCam and GuidedGradCam.

Always: against the maps recorded in ``tests/fixtures/captum_gradients.npz`` (regenerate with
``python -m tests.fixtures.record_captum_gradients``); no torch needed. With torch and captum
(marker ``peers``): the recorder reproduces the fixture, and our quadrature points equal Captum's
bit for bit.

Tolerance: ``atol = 1e-5 * max|Captum map|`` as in ``test_captum.py`` (measured: at most 1e-6 of
the max, the bilinear/nearest-upsampled Grad-CAM maps included); the completeness gap
(``return_delta``) to ``1e-5 * max|logit|``, since it is a difference of logits.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.backprop.grad_cam import grad_cam, guided_grad_cam
from saliency_jax.backprop.gradients import input_x_gradient, integrated_gradients, quadrature, smooth_grad
from tests.fixtures.captum_cases import build_model, init_weights, load
from tests.fixtures.peers import assert_logits, assert_recorded_with, needs_peers
from tests.fixtures.record_captum_gradients import IG_CASES, KIND, LAYER, MODEL, N_SAMPLES, NT_CASES, TARGETS

ATOL_PER_SCALE = 1e-5
OURS_NT = {"Saliency": "gradient", "GuidedBackprop": "guided_backprop"}


@pytest.fixture(scope="module")
def recorded():
    meta, arrays = load(KIND)
    model = build_model(MODEL)
    return meta, arrays, model, init_weights(model, MODEL)


def _assert_parity(ours, theirs):
    scale = np.abs(theirs).max()
    assert scale > 0 and np.ptp(theirs) > 0
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=ATOL_PER_SCALE * scale)


def test_fixture_was_recorded_on_these_cases(recorded):
    meta, arrays, model, variables = recorded
    assert_recorded_with(meta, MODEL, variables, targets=TARGETS, layer=LAYER, n_samples=N_SAMPLES,
                         ig_cases={k: list(v) for k, v in IG_CASES.items()},
                         nt_cases={k: list(v) for k, v in NT_CASES.items()})
    assert_logits(model.apply(variables, arrays["images"]), arrays["logits"])


@pytest.mark.parametrize("name", list(IG_CASES))
def test_integrated_gradients_and_delta_match_captum(recorded, name):
    _, arrays, model, variables = recorded
    method, n_steps, base = IG_CASES[name]
    baseline = 0.0 if base == "zero" else jnp.asarray(arrays["baselines"])
    maps, delta = integrated_gradients(model.apply, variables, jnp.asarray(arrays["images"]), target=TARGETS,
                                       baseline=baseline, n_steps=n_steps, method=method, return_delta=True,
                                       chunk_size=7)
    _assert_parity(maps, arrays[name])
    np.testing.assert_allclose(delta, arrays[name + "_delta"], rtol=0, atol=1e-5 * np.abs(arrays["logits"]).max())


def test_input_x_gradient_matches_captum(recorded):
    _, arrays, model, variables = recorded
    _assert_parity(input_x_gradient(model.apply, variables, jnp.asarray(arrays["images"]), target=TARGETS),
                   arrays["input_x_gradient"])


@pytest.mark.parametrize("name", list(NT_CASES))
def test_noise_tunnel_on_the_same_noise_matches_captum(recorded, name):
    _, arrays, model, variables = recorded
    method, kind = NT_CASES[name]
    ours = smooth_grad(OURS_NT[method], model.apply, variables, jnp.asarray(arrays["images"]), kind=kind,
                       noise=jnp.asarray(arrays["noise"]), target=TARGETS, chunk_size=3)
    _assert_parity(ours, arrays[name])


def test_the_three_smoothings_differ(recorded):
    a = recorded[1]
    for p, q in (("nt_smoothgrad", "nt_smoothgrad_sq"), ("nt_smoothgrad_sq", "nt_vargrad")):
        assert np.abs(a[p] - a[q]).max() > 100 * ATOL_PER_SCALE * np.abs(a[p]).max()


def test_layer_grad_cam_matches_captum(recorded):
    _, arrays, model, variables = recorded
    x = jnp.asarray(arrays["images"])
    _assert_parity(grad_cam(model.apply, variables, x, target=TARGETS, layer=LAYER, relu=False, upsample=False),
                   arrays["layer_grad_cam"])
    # relu + bilinear upsampling = Captum's LayerAttribution.interpolate(..., "bilinear")
    _assert_parity(grad_cam(model.apply, variables, x, target=TARGETS, layer=LAYER), arrays["grad_cam_upsampled"])


def test_guided_grad_cam_matches_captum(recorded):
    _, arrays, model, variables = recorded
    ours = guided_grad_cam(model.apply, variables, jnp.asarray(arrays["images"]), target=TARGETS, layer=LAYER)
    _assert_parity(ours, arrays["guided_grad_cam"])


@pytest.mark.peers
@needs_peers
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
@pytest.mark.parametrize("n", [2, 7, 50, 301])
def test_quadrature_equals_captums_bit_for_bit(method, n):
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    ours_a, ours_w = quadrature(method, n)
    np.testing.assert_array_equal(ours_a, np.float32(alphas(n)))
    np.testing.assert_array_equal(ours_w, np.float32(step_sizes(n)))


@pytest.mark.peers
@needs_peers
def test_recorder_reproduces_the_fixture(recorded):
    from tests.fixtures.record_captum_gradients import gradients_fixture

    meta, arrays, _, _ = recorded
    live_meta, live = gradients_fixture()
    assert {**live_meta, "versions": None} == {**meta, "versions": None}
    assert sorted(live) == sorted(arrays)
    for name in ("images", "baselines", "noise"):
        np.testing.assert_array_equal(live[name], arrays[name])
    for name in [*IG_CASES, *NT_CASES, "input_x_gradient", "layer_grad_cam", "grad_cam_upsampled", "guided_grad_cam"]:
        _assert_parity(live[name], arrays[name])
