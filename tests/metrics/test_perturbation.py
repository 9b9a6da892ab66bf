"""Deletion / insertion curves against a loop over images and steps; one trace per shape; checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.metrics import deletion_curve, insertion_curve, pixel_ranks

H, W, C, K = 6, 5, 2, 3


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(H * W * C, K)).astype(np.float32)),
            "b": jnp.asarray(rng.normal(size=(K,)).astype(np.float32))}


def _apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"][None]


def _np_model(params, x):
    return x.reshape(-1) @ np.asarray(params["w"], np.float64) + np.asarray(params["b"], np.float64)


def _reference(params, images, maps, target, steps, base, insert, softmax):
    """One image, one step at a time, from the definition."""
    n = len(images)
    curves = np.zeros((n, steps + 1))
    targets = []
    for i in range(n):
        rel = maps[i] if maps[i].ndim == 2 else np.abs(maps[i]).max(-1)
        rel = np.where(np.isnan(rel), -np.inf, rel).ravel()
        order = sorted(range(H * W), key=lambda p: (-rel[p], p))  # most relevant first, ties row-major
        full = _np_model(params, images[i])
        t = int(np.argmax(full)) if target is None else int(target[i])
        targets.append(t)
        for k in range(steps + 1):
            chosen = np.zeros(H * W, bool)
            chosen[order[: (k * H * W) // steps]] = True
            chosen = chosen.reshape(H, W, 1)
            x = np.where(chosen, images[i], base[i]) if insert else np.where(chosen, base[i], images[i])
            out = _np_model(params, x)
            if softmax:
                out = np.exp(out - out.max()) / np.exp(out - out.max()).sum()
            curves[i, k] = out[t]
    fr = (np.arange(steps + 1) * H * W // steps) / (H * W)
    aucs = np.array([np.sum((c[1:] + c[:-1]) / 2 * np.diff(fr)) for c in curves])
    return fr, curves, aucs, np.array(targets)


def _data(n=3, seed=1, channels=False):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, H, W, C)).astype(np.float32)
    maps = rng.normal(size=(n, H, W, C) if channels else (n, H, W)).astype(np.float32)
    maps = np.round(maps)  # ties
    maps[0, 0, :3] = np.nan
    return images, maps


@pytest.mark.parametrize("insert", [False, True])
@pytest.mark.parametrize("steps,chunk", [(7, 4), (30, 16)])
def test_curves_equal_the_step_by_step_loop(insert, steps, chunk):
    params = _model()
    images, maps = _data(channels=insert)
    fn = insertion_curve if insert else deletion_curve
    base = np.zeros_like(images) + 0.25
    for target, softmax in [(None, True), ([2, 0, 1], False)]:
        got = fn(_apply, params, images, maps, target=target, steps=steps, baseline=0.25,
                 score="softmax" if softmax else "output", chunk_size=chunk)
        fr, curves, aucs, targets = _reference(params, images, maps, target, steps, base, insert, softmax)
        np.testing.assert_allclose(got.fractions, fr, rtol=1e-6)
        np.testing.assert_allclose(got.scores, curves, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(got.auc, aucs, rtol=2e-4, atol=2e-5)
        assert got.targets.tolist() == targets.tolist()
        assert got.scores.dtype == jnp.float32


def test_baselines_blur_mean_and_arrays():
    params = _model()
    images, maps = _data()
    mean = images.mean(axis=(1, 2), keepdims=True) + np.zeros_like(images)
    a = deletion_curve(_apply, params, images, maps, 0, steps=5, baseline="mean")
    b = deletion_curve(_apply, params, images, maps, 0, steps=5, baseline=jnp.asarray(mean))
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    from scipy.ndimage import gaussian_filter  # symmetric edges ('reflect'), truncated at 3 sigma
    blurred = np.stack([gaussian_filter(im, sigma=(1.5, 1.5, 0), mode="reflect", truncate=3.0) for im in images])
    c = insertion_curve(_apply, params, images, maps, 1, steps=5, blur_sigma=1.5)
    d = insertion_curve(_apply, params, images, maps, 1, steps=5, baseline=blurred.astype(np.float32))
    np.testing.assert_allclose(c.scores, d.scores, rtol=1e-4, atol=1e-6)
    e = deletion_curve(_apply, params, images, maps, 1, steps=5, baseline=np.array([0.5, -0.5], np.float32))
    assert e.scores.shape == (3, 6)


def test_endpoints_are_the_image_and_the_baseline():
    params = _model()
    images, maps = _data()
    full = np.asarray(_apply(params, jnp.asarray(images)))[np.arange(3), [0, 1, 2]]
    empty = np.asarray(_apply(params, jnp.zeros_like(images)))[np.arange(3), [0, 1, 2]]
    d = deletion_curve(_apply, params, images, maps, [0, 1, 2], steps=3, score="output")
    i = insertion_curve(_apply, params, images, maps, [0, 1, 2], steps=3, score="output", baseline=0.0)
    np.testing.assert_allclose(d.scores[:, 0], full, rtol=1e-5)
    np.testing.assert_allclose(d.scores[:, -1], empty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i.scores[:, -1], full, rtol=1e-5)
    np.testing.assert_allclose(i.scores[:, 0], empty, rtol=1e-5, atol=1e-6)


def test_constant_map_deletes_in_row_major_order_and_nan_last():
    maps = np.ones((1, 2, 3), np.float32)
    assert np.asarray(pixel_ranks(maps)).tolist() == [[[0, 1, 2], [3, 4, 5]]]
    maps[0, 0, 0] = np.nan
    assert np.asarray(pixel_ranks(maps)).tolist() == [[[5, 0, 1], [2, 3, 4]]]


def test_one_trace_per_shape_and_fixed_chunks():
    seen = []

    def counted(params, x):
        seen.append(x.shape[0])  # runs once per trace, not per call
        return _apply(params, x)

    images, maps = _data(n=3)
    first = deletion_curve(counted, _model(0), images, maps, steps=6, chunk_size=4)
    traces = len(seen)
    images2, maps2 = _data(n=3, seed=5)
    second = deletion_curve(counted, _model(1), images2, maps2, steps=6, chunk_size=4)
    assert len(seen) == traces  # new weights, pixels and maps: no retrace
    assert not np.allclose(first.scores, second.scores)
    # 3 images x 7 steps = 21 variants -> 6 chunks of 4 (3 padded): the model only ever sees batches of 4,
    # apart from the abstract shape check of the whole batch.
    assert set(seen) <= {4, 3} and seen.count(4) == 1
    deletion_curve(counted, _model(0), images, maps, steps=6, chunk_size=4, baseline="mean")
    assert seen.count(4) == 1  # the baseline is data, not a new trace


def test_jit_composes():
    params = _model()
    images, maps = _data()
    eager = deletion_curve(_apply, params, images, maps, 0, steps=4)
    jitted = jax.jit(lambda p, x, m: deletion_curve(_apply, p, x, m, 0, steps=4))(params, jnp.asarray(images),
                                                                                   jnp.asarray(maps))
    np.testing.assert_allclose(eager.auc, jitted.auc, rtol=1e-6)


def test_argument_checks():
    params = _model()
    images, maps = _data()
    with pytest.raises(ValueError, match=r"`steps` \(=0\)"):
        deletion_curve(_apply, params, images, maps, steps=0)
    with pytest.raises(ValueError, match=r"`steps` \(=31\)"):
        deletion_curve(_apply, params, images, maps, steps=31)
    with pytest.raises(ValueError, match="`maps`.*must match"):
        deletion_curve(_apply, params, images, maps[:2])
    with pytest.raises(ValueError, match="`images`.*batch"):
        deletion_curve(_apply, params, images[0], maps[:1])
    with pytest.raises(ValueError, match="`score`"):
        insertion_curve(_apply, params, images, maps, score="logit")
    with pytest.raises(ValueError, match="`target`"):
        insertion_curve(_apply, params, images, maps, target="all")
    with pytest.raises(ValueError, match="`target`"):
        insertion_curve(_apply, params, images, maps, target=3)
    with pytest.raises(ValueError, match="`baseline`"):
        deletion_curve(_apply, params, images, maps, baseline="zero")
    with pytest.raises(ValueError, match=r"`baseline` \(shape=\(3,\)\)"):
        deletion_curve(_apply, params, images, maps, baseline=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="`blur_sigma`"):
        insertion_curve(_apply, params, images, maps, blur_sigma=0)
    with pytest.raises(TypeError, match="`chunk_size`"):
        insertion_curve(_apply, params, images, maps, chunk_size=2.0)
    with pytest.raises(TypeError, match="`apply_fn`"):
        insertion_curve(None, params, images, maps)
