"""``method="auto"``: the candidates per backend (pure policy, hand-checked), the measurement
on the first call for a shape (cached: counted), and maps equal to the reference paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.occlude import engine, flops, incremental, options, tune
from saliency_jax._compile import CHUNK_SIZES, default_chunk_size
from tests import reference
from tests.occlude.test_engine import CountingModel, assert_maps_equal, mlp_numpy, mlp_params, rand_image

HI = jax.lax.Precision.HIGHEST
CUT = options.AUTO_MIN_RATIO


@pytest.mark.parametrize(
    "ratio, flops, platform, chunk, measurable, expected",
    [
        # CPU: a clear FLOP ratio keeps the rule; nothing measured
        (3.0, 1e9, "cpu", None, True, [("incremental", 32, "policy")]),
        # CPU below the cut: both methods, and one window per call for a big enough model
        (1.2, 1e9, "cpu", None, True, [("full", 16, "policy"), ("incremental", 32, "policy"), ("full", 1, "policy"),
                                       ("full", 1, "xla"), ("full", 16, "xla")]),
        (1.2, 1e3, "cpu", None, True, [("full", 16, "policy"), ("incremental", 32, "policy")]),
        # nothing to save: full, its batch and compile options measured on the CPU only
        (1.0, 1e9, "cpu", None, True, [("full", 16, "policy"), ("full", 1, "policy"), ("full", 1, "xla"), ("full", 16, "xla")]),
        (1.0, 1e9, "cuda", None, True, [("full", 64, "policy")]),
        # a crop: no incremental; a chunk size given is kept
        (None, 1e9, "cpu", 8, True, [("full", 8, "policy")]),
        # accelerators measure both methods whatever the ratio says
        (3.0, 1e9, "cuda", None, True, [("incremental", 128, "policy"), ("full", 64, "policy")]),
        (1.2, 1e9, "tpu", 4, True, [("full", 4, "policy"), ("incremental", 4, "policy")]),
        # inside a caller's jit or over several devices: the rule alone
        (1.2, 1e9, "cuda", None, False, [("full", 64, "policy")]),
        (3.0, 1e9, "cpu", None, False, [("incremental", 32, "policy")]),
    ],
)
def test_auto_plan_per_backend(ratio, flops, platform, chunk, measurable, expected):
    plan = tune.auto_plan(ratio=ratio, full_flops=flops, platform=platform, chunk_size=chunk, measurable=measurable)
    assert plan == expected


def test_backend_chunk_defaults():
    assert default_chunk_size("full", "cpu") == engine.DEFAULT_CHUNK_SIZE == 16
    assert default_chunk_size("incremental", "cpu") == incremental.DEFAULT_CHUNK_SIZE
    assert default_chunk_size("full", "cuda") == CHUNK_SIZES["gpu"]["full"]
    assert default_chunk_size("incremental", "rocm") == CHUNK_SIZES["gpu"]["incremental"]
    with pytest.raises(ValueError, match="`method`"):
        default_chunk_size("auto", "cpu")


SHAPE = (16, 16, 3)


def band_params(seed=0):
    """A conv (changed region: a few rows) then two dense layers (full for every window)."""
    r = np.random.default_rng(seed)
    return {"w": r.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.3,
            "d1": r.normal(size=(16 * 16 * 8, 64)).astype(np.float32) * 0.02,
            "d2": r.normal(size=(64, 4)).astype(np.float32) * 0.3}


class BandModel(CountingModel):
    """Counts its traces; counted-FLOP ratio between 1 and AUTO_MIN_RATIO at window 4."""

    def __call__(self, p, x):
        self.traces += 1
        y = jax.nn.relu(jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", precision=HI,
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
        h = jax.nn.relu(jnp.dot(y.reshape(y.shape[0], -1), p["d1"], precision=HI))
        return jnp.dot(h, p["d2"], precision=HI)


def test_measured_auto_runs_once_per_shape_and_equals_full():
    model = BandModel()
    params, image = band_params(), rand_image(SHAPE)
    ratio = flops.flop_report(model, params, SHAPE, window=4, stride=2).ratio
    assert 1.0 < ratio < CUT, ratio  # the premise: the CPU measures both methods
    kw = dict(window=4, stride=2, target=1)
    before = len(sj.occlude.tune.auto_decisions())
    heat = sj.occlusion(model, params, image, **kw)
    decisions = tune.auto_decisions()[before:]
    assert len(decisions) == 1
    d = decisions[0]
    assert {(m, c, k) for m, c, k, _ in d.seconds_per_window} == {("full", 16, "policy"), ("incremental", 32, "policy")}
    assert (d.method, d.chunk_size, d.compiler) in {("full", 16, "policy"), ("incremental", 32, "policy")}
    assert all(t > 0 for *_, t in d.seconds_per_window)
    traces = model.traces

    # same shape, new weights and pixels: no measurement, no trace
    params2, image2 = band_params(seed=3), rand_image(SHAPE, seed=4)
    again = sj.occlusion(model, params2, image2, **kw)
    assert len(tune.auto_decisions()) == before + 1
    assert model.traces == traces
    full = sj.occlusion(model, params2, image2, method="full", **kw)
    inc = sj.occlusion(model, params2, image2, method="incremental", **kw)
    assert_maps_equal(again, full, rtol=1e-5, atol=1e-5)
    assert_maps_equal(again, inc, rtol=1e-5, atol=1e-5)
    assert not np.allclose(heat, again)

    # another shape: measured once more; inside a caller's jit: never measured
    sj.occlusion(model, params, rand_image((18, 16, 3))[:16, :16], window=4, stride=4, target=1)
    assert len(tune.auto_decisions()) == before + 2
    jax.jit(lambda p, x: sj.occlusion(model, p, x, window=4, stride=3, target=1))(params, image)
    assert len(tune.auto_decisions()) == before + 2


def test_naive_batch_is_a_candidate_for_big_models(monkeypatch):
    """With the FLOP threshold at 0, a plain MLP (nothing for incremental to save) measures its
    default chunk against one window per call, each under both compile options; the map is the
    brute-force one whichever wins."""
    monkeypatch.setattr(tune, "MEASURE_MIN_FLOPS", 0)
    timed = []

    def last_is_fastest(run, items, repeats=3):  # runs each candidate; the last one measured wins
        jax.block_until_ready(run())
        timed.append(items)
        return 1.0 / len(timed)

    monkeypatch.setattr(tune, "seconds_per_item", last_is_fastest)
    shape = (9, 8, 3)
    model = CountingModel()
    params, image = mlp_params(shape), rand_image(shape)
    before = len(tune.auto_decisions())
    heat = sj.occlusion(model, params, image, window=3, stride=2, target=2)
    (d,) = tune.auto_decisions()[before:]
    assert {(m, c, k) for m, c, k, _ in d.seconds_per_window} == {(m, c, k) for m in ["full"] for c in (16, 1)
                                                                   for k in ("policy", "xla")}
    assert (d.method, d.chunk_size, d.compiler) == d.seconds_per_window[-1][:3] == ("full", 16, "xla")
    assert timed == [16] * 4  # all 16 windows (4 × 4 grid) per timed sample, for every candidate
    ref = reference.occlusion_map(mlp_numpy(params), image, window=(3, 3), stride=(2, 2), target=2)
    assert_maps_equal(heat, ref)
