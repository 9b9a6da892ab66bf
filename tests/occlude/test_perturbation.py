"""The perturbation family against independent references.

* Captum ``FeatureAblation`` on the same ``feature_mask``: recorded in
  ``tests/fixtures/captum_perturbation.npz`` (``python -m tests.fixtures.record_captum_perturbation``),
  checked always; live when torch and captum are installed;
* exact Shapley values by brute force (every coalition, the textbook formula, in float64 numpy
  on the model's own outputs) for ``shapley_values``, and for ``shapley_sampling`` /
  ``kernel_shap`` where they enumerate; efficiency for the sampled methods at small ``n_samples``;
* RISE against its formula with explicit masks; feature ablation against the naive loop;
* incremental equal to full for compact segments; one trace per shape in fixed-size chunks;
* the bad inputs of issue 20.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.occlude import masked
from tests.fixtures import record_captum_perturbation as rec
from tests.fixtures.captum_cases import build_model, init_weights
from tests.fixtures.peers import needs_peers, port, record_captum, torch

H, W, C = 12, 10, 3


def conv_apply(p, x):
    """A tiny conv → relu → 2×2 max-pool → dense model, (B, 12, 10, 3) -> (B, 3)."""
    y = jax.lax.conv_general_dilated(x, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.nn.relu(y + p["b"][None, None, None])
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return y.reshape(y.shape[0], -1) @ p["d"]


def conv_params(seed=0):
    r = np.random.default_rng(seed)
    return {"k": jnp.asarray(r.normal(size=(3, 3, C, 4)) / 5, jnp.float32),
            "b": jnp.asarray(r.normal(size=(4,)) / 10, jnp.float32),
            "d": jnp.asarray(r.normal(size=(6 * 5 * 4, 3)) / 10, jnp.float32)}


@pytest.fixture(scope="module")
def setup():
    params = conv_params()
    images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, H, W, C)), jnp.float32)
    seg = sj.segments(np.zeros((H, W, C), np.float32), n=4, kind="grid")  # 2 × 2 compact blocks
    return params, images, seg


def brute_shapley(apply_fn, params, image, seg, target, baseline=0.0):
    """φ (F,) float64 by the textbook formula over every coalition, evaluating the model once per coalition."""
    f = int(seg.max()) + 1
    value = {}
    for s in itertools.product([0, 1], repeat=f):
        keep = np.asarray(s, bool)[seg][..., None]
        x = np.where(keep, np.asarray(image), baseline)[None].astype(np.float32)
        value[s] = float(np.asarray(apply_fn(params, jnp.asarray(x)))[0, target])
    phi = np.zeros(f)
    for i in range(f):
        for s, v in value.items():
            if s[i]:
                continue
            k = sum(s)
            with_i = tuple(1 if j == i else s[j] for j in range(f))
            phi[i] += math.factorial(k) * math.factorial(f - k - 1) / math.factorial(f) * (value[with_i] - v)
    return phi


def per_feature(m, seg):
    """The per-feature values of a map (every pixel of a feature holds its value; checked)."""
    f = int(seg.max()) + 1
    m = np.asarray(m)
    vals = np.array([m[seg == i][0] for i in range(f)])
    np.testing.assert_array_equal(m, vals[seg])
    return vals.astype(np.float64)


def test_shapley_values_equal_brute_force(setup):
    params, images, seg = setup
    ref = brute_shapley(conv_apply, params, images[0], seg, target=2, baseline=0.3)
    ours = per_feature(sj.shapley_values(conv_apply, params, images[0], seg, target=2, baseline=0.3), seg)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, n", [("shapley_sampling", 24), ("kernel_shap", 16)])
def test_enumerating_samplers_equal_exact(setup, name, n):
    params, images, seg = setup
    ref = brute_shapley(conv_apply, params, images[1], seg, target=0)
    ours = per_feature(getattr(sj, name)(conv_apply, params, images[1], seg, target=0, n_samples=n), seg)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, n", [("shapley_sampling", 1), ("shapley_sampling", 3), ("kernel_shap", 1),
                                     ("kernel_shap", 5)])
def test_sampled_methods_are_efficient(setup, name, n):
    params, images, _ = setup
    seg = sj.segments(np.zeros((H, W, C), np.float32), n=6, kind="grid")
    out = getattr(sj, name)(conv_apply, params, images, seg, target=[1, 2], n_samples=n, key=jax.random.key(3))
    logits = np.asarray(conv_apply(params, images), np.float64)
    empty = np.asarray(conv_apply(params, jnp.zeros_like(images)), np.float64)
    for i, t in enumerate([1, 2]):
        total = per_feature(out[i], seg).sum()
        np.testing.assert_allclose(total, logits[i, t] - empty[i, t], rtol=1e-4, atol=1e-5)


def test_feature_ablation_equals_naive_loop_and_target_forms(setup):
    params, images, seg = setup
    out = np.asarray(sj.feature_ablation(conv_apply, params, images, seg, target="all", baseline=0.2))
    assert out.shape == (2, 3, H, W)
    base = np.asarray(conv_apply(params, images))
    for f in range(4):
        x = jnp.where(jnp.asarray(seg == f)[None, :, :, None], 0.2, images)
        drop = base - np.asarray(conv_apply(params, x))  # (2, 3)
        np.testing.assert_allclose(out[:, :, seg == f], np.broadcast_to(drop[:, :, None], out[:, :, seg == f].shape),
                                   rtol=1e-5, atol=1e-6)
    pred = np.argmax(base, 1)
    got = np.asarray(sj.feature_ablation(conv_apply, params, images, seg, target=None, baseline=0.2))
    np.testing.assert_array_equal(got, out[np.arange(2), pred])
    one = np.asarray(sj.feature_ablation(conv_apply, params, images[0], seg, target=1, baseline=0.2))
    np.testing.assert_array_equal(one, out[0, 1])


def test_incremental_equals_full_for_compact_segments(setup):
    params, images, _ = setup
    seg = sj.segments(np.zeros((H, W, C), np.float32), n=12, kind="grid")
    full = sj.feature_ablation(conv_apply, params, images, seg, target="all", method="full")
    inc = sj.feature_ablation(conv_apply, params, images, seg, target="all", method="incremental")
    np.testing.assert_allclose(np.asarray(inc), np.asarray(full), rtol=1e-5, atol=1e-6)
    soft = jnp.asarray(np.random.default_rng(2).uniform(size=(3, H, W)) * (np.arange(W) < 3), jnp.float32)
    a = sj.evaluate_masks(conv_apply, params, images, soft, target=1, method="full")
    b = sj.evaluate_masks(conv_apply, params, images, soft, target=1, method="incremental")
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def test_soft_masks_blend_and_binary_select(setup):
    params, images, _ = setup
    m = jnp.asarray(np.random.default_rng(4).uniform(size=(2, H, W)), jnp.float32)
    got = sj.evaluate_masks(conv_apply, params, images[0], m, target=0, fill=0.5)
    want = conv_apply(params, images[0][None] * (1 - m[..., None]) + 0.5 * m[..., None])[:, 0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_rise_equals_its_formula(setup):
    params, images, _ = setup
    keep = jnp.asarray(np.random.default_rng(5).uniform(size=(7, H, W)), jnp.float32)
    heat = sj.rise(conv_apply, params, images[0], target=2, masks=keep, p=0.4, fill=0.1)
    scores = conv_apply(params, images[0][None] * keep[..., None] + 0.1 * (1 - keep[..., None]))[:, 2]
    want = np.einsum("i,iyx->yx", np.asarray(scores, np.float64), np.asarray(keep, np.float64)) / (7 * 0.4)
    np.testing.assert_allclose(np.asarray(heat), want, rtol=1e-5, atol=1e-6)


def test_rise_random_masks_follow_petsiuk(setup):
    params, images, _ = setup
    heat = sj.rise(conv_apply, params, images, target=[0, 1], n_masks=9, cell=3, key=jax.random.key(0))
    assert heat.shape == (2, H, W) and np.isfinite(np.asarray(heat)).all()
    m = np.asarray(masked.rise_mask(jnp.eye(3), jnp.asarray([1, 2]), (H, W)))
    assert m.shape == (H, W) and m.min() >= 0 and m.max() <= 1
    np.testing.assert_allclose(m[0, 0], np.asarray(jax.image.resize(jnp.eye(3), (16, 16), "linear"))[1, 2])


class Counting:
    def __init__(self):
        self.traces, self.calls = 0, []

    def __call__(self, p, x):
        self.traces += 1
        jax.debug.callback(lambda b: self.calls.append(int(b.shape[0])), x[:, 0, 0, 0])
        return conv_apply(p, x)

    def __hash__(self):
        return id(self)


def test_one_trace_per_shape_in_fixed_chunks(setup):
    params, images, _ = setup
    model = Counting()
    masks = jnp.asarray(np.random.default_rng(6).uniform(size=(11, H, W)), jnp.float32)
    sj.evaluate_masks(model, params, images, masks, target=0, chunk_size=4, method="full").block_until_ready()
    traces = model.traces
    assert sorted(model.calls) == sorted([4] * 6)  # 22 variants in 6 chunks of 4 (padded): all the same size
    model.calls.clear()
    sj.evaluate_masks(model, params, images, masks * 0.5, target=0, chunk_size=4, method="full").block_until_ready()
    assert model.traces == traces and len(model.calls) == 6  # new masks of the same shapes: no retrace


def test_captum_feature_ablation_fixture():
    spec = rec.PERTURBATION_MODEL
    data = np.load(rec.fixture_path(), allow_pickle=False)
    model = build_model(spec)
    variables = init_weights(model, spec)
    np.testing.assert_allclose(np.asarray(model.apply(variables, data["images"])), data["logits"],
                               atol=1e-5 * np.abs(data["logits"]).max())
    for name, case in rec.PERTURBATION_CASES.items():
        ours = sj.feature_ablation(model.apply, variables, data["images"], data[f"{name}_mask"],
                                   target=case["target"], baseline=case["baseline"])
        np.testing.assert_allclose(np.asarray(ours), data[name], rtol=1e-4, atol=2e-5 * np.abs(data["logits"]).max())


@needs_peers
def test_captum_feature_ablation_live():
    assert torch is not None and port is not None and record_captum is not None
    _, arrays = rec.record()
    data = np.load(rec.fixture_path(), allow_pickle=False)
    scale = np.abs(data["logits"]).max()  # score drops are differences of logits: rounding is relative to them
    for name in rec.PERTURBATION_CASES:
        np.testing.assert_allclose(arrays[name], data[name], rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("call, match", [
    (lambda a, p, x, s: sj.feature_ablation(a, p, x, s[:5]), "feature_mask"),
    (lambda a, p, x, s: sj.feature_ablation(a, p, x, s.astype(np.float32)), "feature_mask"),
    (lambda a, p, x, s: sj.feature_ablation(a, p, x, s - 1), "feature_mask"),
    (lambda a, p, x, s: sj.shapley_values(a, p, x, np.arange(H * W).reshape(H, W) % 17), "F=17"),
    (lambda a, p, x, s: sj.shapley_sampling(a, p, x, s, n_samples=0), "n_samples"),
    (lambda a, p, x, s: sj.kernel_shap(a, p, x, s, n_samples=0), "n_samples"),
    (lambda a, p, x, s: sj.rise(a, p, x, n_masks=0), "n_masks"),
    (lambda a, p, x, s: sj.rise(a, p, x, p=0.0), "`p`"),
    (lambda a, p, x, s: sj.rise(a, p, x, p=1.5), "`p`"),
    (lambda a, p, x, s: sj.rise(a, p, x, masks=jnp.ones((2, H, W + 1))), "masks"),
    (lambda a, p, x, s: sj.rise(a, p, x, masks=jnp.full((2, H, W), 1.5)), "masks"),
    (lambda a, p, x, s: sj.evaluate_masks(a, p, x, jnp.full((2, H, W), -0.1)), "masks"),
    (lambda a, p, x, s: sj.feature_ablation(a, p, x.at[0, 0, 0].set(jnp.nan), s), "image"),
    (lambda a, p, x, s: sj.rise(a, p, x.at[0, 0, 0].set(jnp.inf), n_masks=2), "image"),
    (lambda a, p, x, s: sj.segments(x, n=0), "`n`"),
])
def test_bad_input_named_before_tracing(setup, call, match):
    params, images, seg = setup
    model = Counting()
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, params, images[0], seg)
    assert model.traces == 0


def test_feature_mask_gaps_are_empty_features(setup):
    params, images, seg = setup
    gapped = np.where(seg == 3, 5, seg)  # ids 0, 1, 2, 5: features 3 and 4 have no pixels
    a = sj.feature_ablation(conv_apply, params, images[0], gapped, target=0)
    b = sj.feature_ablation(conv_apply, params, images[0], seg, target=0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_segments_slic_and_grid():
    img = np.zeros((16, 16, 3), np.float32)
    img[:, 8:] = 1.0
    grid = sj.segments(img, n=4, kind="grid")
    assert grid.dtype == np.int32 and sorted(np.unique(grid)) == [0, 1, 2, 3]
    slic = sj.segments(np.stack([img, img[:, ::-1]]), n=4, kind="auto")
    assert slic.shape == (2, 16, 16)
    for s in slic:  # consecutive ids, and no segment straddles the colour edge
        assert np.array_equal(np.unique(s), np.arange(s.max() + 1))
    assert not set(np.unique(slic[0][:, :8])) & set(np.unique(slic[0][:, 8:]))
