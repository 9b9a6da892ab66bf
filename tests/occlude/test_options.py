"""The one options record of occlusion, its shared checks, the execution names and the paths kept
for names that moved (issue 19)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax._filters import blur_matrix
from saliency_jax.occlude import engine, flops, incremental, options, tune
from saliency_jax.occlude.capped import capped_occlusion
from saliency_jax.occlude.drill_down import DrillDown, drill_down_occlusion
from saliency_jax.occlude.options import OcclusionOptions
from tests.occlude.test_engine import mlp_apply, mlp_params, rand_image


def test_the_record_resolves_its_defaults_and_is_frozen():
    o = OcclusionOptions(window=(8, 6), stride=None, mode="crop", chunk_size=np.int64(4), devices=[None])
    assert (o.window, o.window_yx, o.stride, o.stride_yx) == ((8, 6), (8, 6), None, (8, 6))
    assert (o.score, o.blur_sigma, o.chunk_size, o.devices) == ("output", 1.5, 4, (None,))
    assert type(o.chunk_size) is int
    assert OcclusionOptions(window=1).blur_sigma == 0.5 and OcclusionOptions(window=4).score == "difference"
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.mode = "occlude"


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(method="incremental", mode="crop"), ValueError, "mode='occlude' only"),
    (dict(chunk_size="big"), ValueError, "`chunk_size` (='big') must be a positive int, 'auto' or None"),
    (dict(blur_sigma=0), ValueError, "`blur_sigma` (=0)"),
    (dict(devices=()), ValueError, "`devices` (=())"),
    (dict(compute_dtype="int8"), TypeError, "`compute_dtype`"),
    (dict(score="delta"), ValueError, "`score` (='delta')"),
])
def test_the_record_names_a_bad_option(kwargs, error, fragment):
    with pytest.raises(error) as info:
        OcclusionOptions(window=4, **kwargs)
    assert fragment in str(info.value)


SHAPE = (8, 6, 3)


@pytest.mark.parametrize("fill, error", [
    (np.zeros((2,), np.float32), ValueError),
    (np.array([0.0, np.nan, 0.0], np.float32), ValueError),
    (np.zeros((3,), np.complex64), TypeError),
])
def test_one_fill_check_for_every_entry_point(fill, error):
    """The same bad fill gets the same error from occlusion and drill-down (one check)."""
    params, image = mlp_params(SHAPE), rand_image(SHAPE)
    kw = dict(window=4, stride=2, target=0, fill=fill)
    raised = []
    for call in (lambda: sj.occlusion(mlp_apply, params, image, **kw),
                 lambda: drill_down_occlusion(mlp_apply, params, image, drill_down=DrillDown(coarse_stride=4), **kw)):
        with pytest.raises(error) as info:
            call()
        raised.append(str(info.value))
    assert raised[0] == raised[1] and "`fill`" in raised[0]


def test_one_chunk_check_for_every_entry_point():
    params, image = mlp_params(SHAPE), rand_image(SHAPE)
    kw = dict(window=4, stride=2, target=0, chunk_size=0)
    raised = set()
    for call in (lambda: sj.occlusion(mlp_apply, params, image, **kw),
                 lambda: drill_down_occlusion(mlp_apply, params, image, drill_down=DrillDown(coarse_stride=4), **kw),
                 lambda: capped_occlusion(mlp_apply, params, image, cap=1.0, **kw)):
        with pytest.raises(ValueError) as info:
            call()
        raised.add(str(info.value))
    assert raised == {"`chunk_size` (=0) must be >= 1"}


def test_the_auto_rule_is_the_plans_first_candidate():
    for ratio in (None, 0.5, options.AUTO_MIN_RATIO - 1e-9, options.AUTO_MIN_RATIO, 7.0):
        first = tune.auto_plan(ratio=ratio, full_flops=1e9, platform="cpu", chunk_size=None, measurable=False)[0][0]
        assert first == options.counted_choice(ratio) == ("incremental" if ratio and ratio >= 1.5 else "full")


def test_executions_and_the_deprecated_methods_alias():
    assert sj.EXECUTIONS == ("full", "incremental", "auto") and "EXECUTIONS" in sj.__all__
    assert "METHODS" not in sj.__all__
    for holder in (sj, sj.occlude, engine):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert holder.METHODS == sj.EXECUTIONS
            assert holder.METHODS == sj.EXECUTIONS  # every read warns, not only the first
        assert [w.category for w in caught] == [DeprecationWarning] * 2
        assert "EXECUTIONS" in str(caught[0].message)


def test_moved_names_are_served_from_their_old_paths():
    assert sj.incremental.capped_occlusion is sj.capped_occlusion is capped_occlusion
    assert incremental.flop_report is sj.flop_report is flops.flop_report
    assert incremental.FlopReport is flops.FlopReport and incremental.LayerCost is flops.LayerCost
    assert incremental.AUTO_MIN_RATIO == options.AUTO_MIN_RATIO
    assert engine.auto_decisions is tune.auto_decisions and engine.auto_plan is tune.auto_plan
    assert engine.tune_chunk_size is sj.tune_chunk_size is tune.tune_chunk_size
    with pytest.raises(AttributeError):
        incremental.no_such_name  # noqa: B018


@pytest.mark.parametrize("size, sigma", [(1, 0.5), (5, 0.3), (9, 1.0), (16, 2.5), (7, 6.0)])
def test_the_one_blur_matrix_is_a_symmetric_edge_gaussian(size, sigma):
    """Against an independent reference: numpy's symmetric padding and a direct convolution."""
    r = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = np.random.default_rng(0).normal(size=size)
    padded = np.pad(x, r, mode="symmetric")  # numpy folds pads wider than the axis back again
    ref = np.array([padded[i:i + 2 * r + 1] @ taps for i in range(size)])
    np.testing.assert_allclose(blur_matrix(size, sigma) @ x, ref, rtol=1e-5, atol=1e-6)
    assert sj.metrics.baselines.blur_matrix is blur_matrix
