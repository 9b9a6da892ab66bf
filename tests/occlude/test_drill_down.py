"""APPROXIMATE adaptive drill-down (issue 13 item 4): exact with fraction 1; on a model where one
region matters the refined region is that one and the map equals brute force there; the record's
counts against a brute-force count; counted model calls; jit; argument errors."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.occlude import occlusion
from saliency_jax.occlude.drill_down import DrillDown, DrillDownRecord, drill_down_occlusion, theoretical_speedup
from tests import reference
from tests.occlude.test_engine import CountingModel, assert_maps_equal, mlp_params, rand_image


class TinyConv(nn.Module):
    """conv 3×3 SAME → ReLU → 2×2 max-pool → conv 3×3 → ReLU → dense: the incremental engine's
    regions are non-trivial."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _tiny(shape):
    model = TinyConv()
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    single = jax.jit(lambda x: model.apply(variables, x[None])[0])
    f_np = lambda x: np.asarray(single(jnp.asarray(x, jnp.float32)), np.float64)  # noqa: E731
    return model.apply, variables, f_np


def _region_model(boxes):
    """Class k = the sum of the pixels inside box k = (y0, y1, x0, x1): nothing else matters."""

    def f(p, x):
        return jnp.stack([x[:, y0:y1, x0:x1, :].sum(axis=(1, 2, 3)) for (y0, y1, x0, x1) in boxes], axis=1)

    def f_np(x):
        return np.asarray([x[y0:y1, x0:x1].sum() for (y0, y1, x0, x1) in boxes], np.float64)

    return f, f_np


def _origins(dim, window, stride, placement):
    return reference.origins(dim, window, stride, placement)


def _brute_refined(selected, size, window, stride, placement):
    """Pixels all of whose covering fine windows are selected (one window at a time)."""
    h, w = size
    oys, oxs = _origins(h, window[0], stride[0], placement), _origins(w, window[1], stride[1], placement)
    covered, total = np.zeros((h, w), int), np.zeros((h, w), int)
    for i, oy in enumerate(oys):
        for j, ox in enumerate(oxs):
            total[oy : oy + window[0], ox : ox + window[1]] += 1
            covered[oy : oy + window[0], ox : ox + window[1]] += int(selected[i, j])
    return (covered == total) & (total > 0)


# ---------------------------------------------------------------------------------------------
# fraction = 1: every fine window is scored, the map is exact
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method, combine, placement", [("full", "mean", "clip"), ("incremental", "mean", "clip"),
                                                        ("incremental", "sum", "valid")])
def test_fraction_one_equals_exact_occlusion(method, combine, placement):
    shape = (20, 18, 2)
    apply_fn, variables, f_np = _tiny(shape)
    images = np.stack([rand_image(shape, seed=1), rand_image(shape, seed=2)])
    targets = [2, 0]
    heat, rec = drill_down_occlusion(apply_fn, variables, images, window=(6, 5), stride=(2, 3), target=targets,
                                     combine=combine, placement=placement, method=method, fill=0.3,
                                     drill_down=DrillDown(coarse_stride=(5, 4), fraction=1.0))
    assert rec.method == method and heat.shape == (2, 20, 18)
    for i, t in enumerate(targets):
        ref = reference.occlusion_map(f_np, images[i], window=(6, 5), stride=(2, 3), target=t, combine=combine,
                                      placement=placement, fill=0.3)
        assert_maps_equal(heat[i], ref, rtol=1e-4, atol=1e-5)
        assert bool(np.asarray(rec.selected[i]).all())
        np.testing.assert_array_equal(np.asarray(rec.refined[i]), ~np.isnan(ref))
    exact = occlusion(apply_fn, variables, images, window=(6, 5), stride=(2, 3), target=jnp.asarray(targets),
                      combine=combine, placement=placement, fill=0.3, method="full")
    assert_maps_equal(heat, np.asarray(exact, np.float64), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# One region matters: it is the one refined, and the map there is exact
# ---------------------------------------------------------------------------------------------


def test_the_region_that_matters_is_refined_and_exact_there():
    size = (32, 30)
    boxes = [(9, 14, 19, 23), (20, 27, 3, 9)]  # class 0 looks at one box, class 1 at another
    f, f_np = _region_model(boxes)
    images = np.stack([rand_image((*size, 1), seed=3), rand_image((*size, 1), seed=4)]) + 0.5  # positive pixels
    window, stride = (4, 4), (2, 2)
    heat, rec = drill_down_occlusion(f, None, images, window=4, stride=2, target=jnp.asarray([0, 1]),
                                     drill_down=DrillDown(coarse_stride=4, fraction=0.15), method="full")
    oys, oxs = _origins(size[0], 4, 2, "clip"), _origins(size[1], 4, 2, "clip")
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        ref = reference.occlusion_map(f_np, images[i], window=window, stride=stride, target=i)
        # every fine window overlapping the box (the only windows with a non-zero score) was scored ...
        overlaps = np.array([[oy < y1 and oy + 4 > y0 and ox < x1 and ox + 4 > x0 for ox in oxs] for oy in oys])
        selected = np.asarray(rec.selected[i])
        assert overlaps.sum() <= rec.fine_windows and selected[overlaps].all()
        # ... so every pixel of the box is refined, and the map equals brute force wherever refined
        refined = np.asarray(rec.refined[i])
        assert refined[y0:y1, x0:x1].all()
        np.testing.assert_allclose(np.asarray(heat[i])[refined], ref[refined], rtol=1e-5, atol=1e-5)
        # the other image's box is not this image's business: its pixels are not all refined
        oy0, oy1, ox0, ox1 = boxes[1 - i]
        assert not refined[oy0:oy1, ox0:ox1].all()
        # the peak of the map is inside the box, where the exact map has it
        peak = np.unravel_index(np.argmax(np.asarray(heat[i])), size)
        assert y0 <= peak[0] < y1 and x0 <= peak[1] < x1


# ---------------------------------------------------------------------------------------------
# The record against a brute-force count, and the model calls actually made
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, window, stride, coarse, fraction, placement", [
    ((16, 16), (4, 4), (2, 2), (4, 4), 0.25, "clip"),
    ((17, 13), (5, 4), (1, 2), (3, 4), 0.4, "clip"),
    ((17, 13), (5, 4), (2, 1), (5, 3), 0.15, "valid"),
])
def test_record_counts_match_a_brute_force_count(size, window, stride, coarse, fraction, placement):
    shape = (*size, 2)
    params, image = mlp_params(shape), rand_image(shape)
    from tests.occlude.test_engine import mlp_apply

    heat, rec = drill_down_occlusion(mlp_apply, params, image, window=window, stride=stride, target=1,
                                     placement=placement, method="full",
                                     drill_down=DrillDown(coarse_stride=coarse, fraction=fraction))
    n_coarse = len(_origins(size[0], window[0], coarse[0], placement)) * len(
        _origins(size[1], window[1], coarse[1], placement))
    n_fine = len(_origins(size[0], window[0], stride[0], placement)) * len(
        _origins(size[1], window[1], stride[1], placement))
    k = math.ceil(fraction * n_fine)
    assert isinstance(rec, DrillDownRecord)
    assert (rec.coarse_windows, rec.fine_grid_windows, rec.fine_windows) == (n_coarse, n_fine, k)
    assert int(np.asarray(rec.selected).sum()) == k
    refined = _brute_refined(np.asarray(rec.selected), size, window, stride, placement)
    np.testing.assert_array_equal(np.asarray(rec.refined), refined)
    assert float(rec.refined_share) == pytest.approx(refined.mean())
    s1, s2 = coarse[0] * coarse[1], stride[0] * stride[1]
    assert rec.theoretical_speedup == pytest.approx(s1 / (s2 + fraction * s1))
    assert rec.window_speedup == pytest.approx(n_fine / (n_coarse + k))
    assert heat.shape == size


def test_counted_model_calls():
    shape = (16, 16, 2)
    model = CountingModel()
    # coarse stride 4: 4 × 4 = 16 windows; fine stride 2: 7 × 7 = 49, ceil(0.25 · 49) = 13 scored;
    # chunks of at most 16 → one unoccluded forward (1 row), one coarse chunk of 16, one fine chunk of 13.
    drill_down_occlusion(model, mlp_params(shape), rand_image(shape), window=4, stride=2, target=0, chunk_size=16,
                         method="full", drill_down=DrillDown(coarse_stride=4, fraction=0.25))
    assert sorted(model.calls) == [1, 13, 16]


def test_theoretical_speedup_is_kryptons_formula():
    assert theoretical_speedup(16, 4, 0.25) == pytest.approx(256 / (16 + 64))  # 3.2
    assert theoretical_speedup((8, 4), (2, 2), 1.0) == pytest.approx(32 / 36)


def test_composes_with_jit():
    shape = (12, 12, 2)
    params, image = mlp_params(shape), rand_image(shape)
    from tests.occlude.test_engine import mlp_apply

    kw = dict(window=4, stride=2, target=0, method="full", drill_down=DrillDown(coarse_stride=4, fraction=0.5))
    eager, rec = drill_down_occlusion(mlp_apply, params, image, **kw)
    jitted, rec_j = jax.jit(lambda p, x: drill_down_occlusion(mlp_apply, p, x, **kw))(params, image)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(rec_j.refined), np.asarray(rec.refined))
    assert rec_j.fine_windows == rec.fine_windows


# ---------------------------------------------------------------------------------------------
# Argument errors, before anything is traced
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(fraction=0.0), ValueError, "`fraction` (=0.0)"),
    (dict(fraction=1.5), ValueError, "`fraction` (=1.5)"),
    (dict(fraction=float("nan")), ValueError, "`fraction`"),
    (dict(fraction="half"), TypeError, "`fraction` (='half')"),
    (dict(fraction=True), TypeError, "`fraction` (=True)"),
    (dict(coarse_stride=0), ValueError, "`coarse_stride` (=0)"),
    (dict(coarse_stride=2.5), TypeError, "`coarse_stride` (=2.5)"),
])
def test_drill_down_settings_are_validated(kwargs, error, fragment):
    with pytest.raises(error) as info:
        DrillDown(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(drill_down=None), TypeError, "`drill_down` (=None)"),
    (dict(drill_down=DrillDown(coarse_stride=1)), ValueError, "`drill_down.coarse_stride` (=1)"),
    (dict(drill_down=DrillDown(coarse_stride=(4, 6))), ValueError, "between `stride`"),
    (dict(target="all"), ValueError, "`target` (='all')"),
    (dict(target=7), ValueError, "`target` (=7)"),
    (dict(mode="crop"), ValueError, "`mode` (='crop')"),
    (dict(score="output"), ValueError, "`score` (='output')"),
    (dict(fill="blur"), ValueError, "fill='blur'"),
    (dict(fill="median"), ValueError, "`fill` (='median')"),
    (dict(fill=np.zeros((3,))), ValueError, "`fill` (shape=(3,))"),
    (dict(method="fast"), ValueError, "`method` (='fast')"),
    (dict(combine="max"), ValueError, "`combine` (='max')"),
    (dict(chunk_size=0), ValueError, "`chunk_size` (=0)"),
    (dict(chunk_size="big"), ValueError, "`chunk_size` (='big')"),
    (dict(window=20), ValueError, "`window` (=20)"),
    (dict(stride=5), ValueError, "`stride` (=5)"),
    (dict(devices=()), ValueError, "`devices` (=())"),
])
def test_bad_arguments_are_rejected_naming_them(kwargs, error, fragment):
    calls = []

    def f(p, x):
        calls.append(1)
        return x.sum(axis=(1, 2))  # (B, 2)

    args = dict(window=4, stride=2, target=0, drill_down=DrillDown(coarse_stride=4, fraction=0.5))
    args.update(kwargs)
    with pytest.raises(error) as info:
        drill_down_occlusion(f, None, rand_image((12, 12, 2)), **args)
    assert fragment in str(info.value)


def test_bfloat16_inputs_run_in_bfloat16_and_give_a_float32_map():
    # what sj.occlusion(..., compute_dtype=jnp.bfloat16, drill_down=...) hands over: image and params cast
    shape = (12, 12, 2)
    from tests.occlude.test_engine import mlp_apply

    params, image = mlp_params(shape), rand_image(shape)
    kw = dict(window=4, stride=2, target=0, method="full", drill_down=DrillDown(coarse_stride=4, fraction=1.0))
    seen = []

    def f(p, x):
        seen.append(x.dtype)
        return mlp_apply(p, x)

    low = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    heat, _ = drill_down_occlusion(f, low, jnp.asarray(image, jnp.bfloat16), fill=0.25, **kw)
    assert heat.dtype == jnp.float32 and set(seen) == {jnp.dtype(jnp.bfloat16)}
    ref = reference.occlusion_map(lambda x: np.asarray(mlp_apply(params, jnp.asarray(x, jnp.float32)[None])[0],
                                                       np.float64), image, window=(4, 4), stride=(2, 2), target=0,
                                  fill=0.25)
    np.testing.assert_allclose(np.asarray(heat), ref, atol=0.05 * np.abs(ref).max())  # bf16: ~3 significant digits


def test_sj_occlusion_with_drill_down_is_the_drill_down_and_casts_compute_dtype():
    # sj.occlusion(..., drill_down=) returns (map, record) from drill_down_occlusion; with
    # compute_dtype the model sees bf16 (image and params cast by the call) and the map stays f32.
    import saliency_jax as sj
    from tests.occlude.test_engine import mlp_apply

    shape = (12, 12, 2)
    params, image = mlp_params(shape), rand_image(shape)
    kw = dict(window=4, stride=2, target=0, method="full", fill=0.25, drill_down=DrillDown(coarse_stride=4, fraction=0.5))
    heat, record = sj.occlusion(mlp_apply, params, image, **kw)
    want, want_record = drill_down_occlusion(mlp_apply, params, image, **kw)
    np.testing.assert_array_equal(np.asarray(heat), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(record.selected), np.asarray(want_record.selected))
    seen = []

    def f(p, x):
        seen.append((x.dtype, jax.tree.leaves(p)[0].dtype))
        return mlp_apply(p, x)

    low, _ = sj.occlusion(f, params, image, compute_dtype=jnp.bfloat16, **kw)
    by_hand, _ = drill_down_occlusion(f, jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params),
                                      jnp.asarray(image, jnp.bfloat16), **kw)
    assert low.dtype == jnp.float32 and (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.bfloat16)) in seen
    np.testing.assert_array_equal(np.asarray(low), np.asarray(by_hand))  # bf16 differs from f32 here:
    assert np.abs(np.asarray(low) - np.asarray(heat)).max() > 0            # the cast did happen
    with pytest.raises(TypeError, match="`drill_down`"):
        sj.occlusion(mlp_apply, params, image, window=4, drill_down=(4, 0.5))
