"""Occlusion engine against brute-force references, hand-computed maps, and its own promises
(one trace per shape, chunking invariance, jit/vmap composition, validation)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.occlude import occlusion
from tests import reference

HI = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# A small nonlinear model with a numpy twin (so the reference never touches JAX)
# ---------------------------------------------------------------------------------------------


def mlp_params(shape, k=3, hidden=7, seed=0):
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    return {
        "w1": rng.normal(size=(d, hidden)).astype(np.float32) / np.sqrt(d),
        "b1": rng.normal(size=(hidden,)).astype(np.float32) * 0.1,
        "w2": rng.normal(size=(hidden, k)).astype(np.float32),
    }


def mlp_apply(p, x):
    h = jax.nn.relu(jnp.dot(x.reshape(x.shape[0], -1), p["w1"], precision=HI) + p["b1"][None])
    return jnp.dot(h, p["w2"], precision=HI)


def mlp_numpy(p):
    w1, b1, w2 = (np.asarray(p[k], np.float64) for k in ("w1", "b1", "w2"))
    return lambda x: np.maximum(x.reshape(-1) @ w1 + b1, 0) @ w2


def rand_image(shape, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, size=shape).astype(np.float32)


def assert_maps_equal(ours, ref, rtol=2e-5, atol=2e-5):
    ours = np.asarray(ours, np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    scale = np.nanmax(np.abs(ref)) if np.isfinite(ref).any() else 1.0
    np.testing.assert_allclose(np.nan_to_num(ours), np.nan_to_num(ref), rtol=rtol, atol=atol * max(scale, 1.0))


# ---------------------------------------------------------------------------------------------
# Hand-computed maps
# ---------------------------------------------------------------------------------------------


def linear_fn(p, x):  # f(x) = x0 + 2 x1 + 3 x2 on a 1×3×1 image
    return jnp.einsum("bhwc,hwc->b", x, p)[:, None]


LINEAR_W = jnp.asarray([1.0, 2.0, 3.0]).reshape(1, 3, 1)
ONES = jnp.ones((1, 3, 1))


@pytest.mark.parametrize(
    "stride, combine, placement, expected",
    [
        # windows [0,1] and [1,2]: drops 1+2=3 and 2+3=5; pixel 1 is covered by both
        (1, "mean", "clip", [3.0, 4.0, 5.0]),
        (1, "sum", "clip", [3.0, 8.0, 5.0]),
        # Captum's rule: ceil((3-2)/2)+1 = 2 windows, [0,1] and the clipped [2]: drops 3 and 3
        (2, "mean", "clip", [3.0, 3.0, 3.0]),
        # full windows only: pixel 2 is covered by none
        (2, "mean", "valid", [3.0, 3.0, np.nan]),
    ],
)
def test_hand_computed_map(stride, combine, placement, expected):
    heat = occlusion(
        linear_fn, LINEAR_W, ONES, window=(1, 2), stride=(1, stride), target=0, combine=combine, placement=placement
    )
    np.testing.assert_array_equal(np.asarray(heat)[0], np.asarray(expected, np.float32))


def test_hand_computed_output_score_and_fill():
    # fill 0.5: occluded outputs are 6 - 0.5*(1+2) = 4.5 and 6 - 0.5*(2+3) = 3.5
    heat = occlusion(linear_fn, LINEAR_W, ONES, window=(1, 2), stride=1, target=0, fill=0.5, score="output")
    np.testing.assert_array_equal(np.asarray(heat)[0], [4.5, 4.0, 3.5])


def test_hand_computed_crop():
    # Crops of [1, 1, 1] resized back are all ones → f = 6 everywhere; [0, 5, 10] is not constant:
    # window [0,1] = [0, 5] → resized to 3 px with half-pixel centres: [0, 2.5, 5] → f = 0+5+15 = 20
    # window [1,2] = [5, 10] → [5, 7.5, 10] → f = 5 + 15 + 30 = 50; pixel 1 is in both: 35
    img = jnp.asarray([0.0, 5.0, 10.0]).reshape(1, 3, 1)
    heat = occlusion(linear_fn, LINEAR_W, img, window=(1, 2), stride=1, target=0, mode="crop")
    np.testing.assert_allclose(np.asarray(heat)[0], [20.0, 35.0, 50.0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The grid against the brute-force reference
# ---------------------------------------------------------------------------------------------

GEOMETRIES = [
    # (H, W, C), window, stride: H != W, C in {1, 3}, dividing and non-dividing, non-square
    ((9, 7, 3), (3, 3), (3, 3)),
    ((10, 7, 1), (4, 3), (3, 2)),
    ((8, 11, 3), (5, 2), (2, 2)),
    ((7, 9, 1), (7, 4), (1, 3)),
]


def _fills(shape):
    h, w, c = shape
    rng = np.random.default_rng(7)
    return [
        0.0,
        0.3,
        rng.uniform(size=(c,)).astype(np.float32),
        "mean",
        "blur",
        rng.uniform(size=(h, w, c)).astype(np.float32),
    ]


CASES = []
for g, geom in enumerate(GEOMETRIES):
    # ~1.5 s a case (two compilations): the fast subset keeps the non-dividing geometry, CI runs all
    marks = () if g == 1 else (pytest.mark.slow,)
    for fill_index, placement in itertools.product(range(6), ("clip", "valid")):
        CASES.append(pytest.param(geom, "occlude", fill_index, placement, marks=marks))
    for placement in ("clip", "valid"):
        CASES.append(pytest.param(geom, "crop", None, placement, marks=marks))


@pytest.mark.parametrize("geom, mode, fill_index, placement", CASES)
def test_matches_brute_force(geom, mode, fill_index, placement):
    shape, window, stride = geom
    params = mlp_params(shape)
    f_np = mlp_numpy(params)
    image = rand_image(shape)
    fill = None if fill_index is None else _fills(shape)[fill_index]
    for score, combine in (("difference", "mean"), ("output", "sum")):
        ours = occlusion(
            mlp_apply, params, image, window=window, stride=stride, target=2, mode=mode,
            fill=fill, score=score, combine=combine, placement=placement, chunk_size=5,
        )
        ref = reference.occlusion_map(
            f_np, image, window=window, stride=stride, target=2, mode=mode,
            fill=0.0 if fill is None else fill, score=score, combine=combine, placement=placement,
        )
        assert_maps_equal(ours, ref)


def test_blur_sigma_is_honoured():
    shape = (12, 10, 3)
    params, image = mlp_params(shape), rand_image(shape)
    ours = occlusion(mlp_apply, params, image, window=4, stride=2, target=0, fill="blur", blur_sigma=2.5)
    ref = reference.occlusion_map(mlp_numpy(params), image, window=(4, 4), stride=(2, 2), target=0, fill="blur", blur_sigma=2.5)
    assert_maps_equal(ours, ref)
    other = occlusion(mlp_apply, params, image, window=4, stride=2, target=0, fill="blur", blur_sigma=0.7)
    assert not np.allclose(ours, other)


@pytest.mark.parametrize("mode", ["occlude", "crop"])
def test_target_forms_on_a_batch(mode):
    shape = (9, 8, 3)
    params = mlp_params(shape, k=4)
    f_np = mlp_numpy(params)
    images = np.stack([rand_image(shape, seed=s) for s in range(3)])
    kw = dict(window=(3, 4), stride=(2, 3), mode=mode, fill=None if mode == "crop" else "mean")
    ref_fill = dict(fill=0.0 if mode == "crop" else "mean")
    kw_ref = dict(window=(3, 4), stride=(2, 3), mode=mode, **ref_fill)

    single_int = occlusion(mlp_apply, params, images, target=1, **kw)
    per_image = occlusion(mlp_apply, params, images, target=[3, 0, 2], **kw)
    every = occlusion(mlp_apply, params, images, target="all", **kw)
    predicted = occlusion(mlp_apply, params, images, target=None, **kw)
    assert single_int.shape == (3, 9, 8) and every.shape == (3, 4, 9, 8) and every.dtype == jnp.float32
    for n in range(3):
        ref_all = reference.occlusion_map(f_np, images[n], target="all", **kw_ref)
        assert_maps_equal(every[n], ref_all)
        assert_maps_equal(single_int[n], ref_all[1])
        assert_maps_equal(per_image[n], ref_all[[3, 0, 2][n]])
        assert_maps_equal(predicted[n], ref_all[int(np.argmax(f_np(images[n].astype(np.float64))))])


@pytest.mark.slow
def test_flax_convnet_matches_brute_force():
    model = sj.get_model("small", num_classes=3, width=0.25, fc=(8,))
    image = rand_image((40, 36, 3))
    variables = model.init(jax.random.key(0), jnp.asarray(image)[None])
    f_single = jax.jit(lambda x: model.apply(variables, x[None])[0])
    f_np = lambda x: np.asarray(f_single(jnp.asarray(x, jnp.float32)), np.float64)  # noqa: E731
    ours = occlusion(model.apply, variables, image, window=(12, 10), stride=(7, 6), target=1, fill="mean")
    ref = reference.occlusion_map(f_np, image, window=(12, 10), stride=(7, 6), target=1, fill="mean")
    assert_maps_equal(ours, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Execution: traces, model calls, chunks, weights, jit / vmap
# ---------------------------------------------------------------------------------------------


class CountingModel:
    """mlp_apply that counts its traces (Python calls) and its runtime calls (rows seen)."""

    def __init__(self):
        self.traces = 0
        self.calls = []

    def __call__(self, p, x):
        self.traces += 1
        jax.debug.callback(lambda b: self.calls.append(int(b.shape[0])), x[:, 0, 0, 0])
        return mlp_apply(p, x)

    def __hash__(self):
        return id(self)


def test_one_trace_per_shape_and_counted_model_calls():
    shape = (10, 9, 3)
    model = CountingModel()
    params, image = mlp_params(shape), rand_image(shape)
    # grid: ceil((10-4)/2)+1 = 4 rows × ceil((9-4)/2)+1 = 4 cols = 16 windows; chunks of at most 5
    # → 4 chunks of 4 (padding spread evenly: none needed), plus one unoccluded forward.
    kw = dict(window=4, stride=2, chunk_size=5, method="full")
    heat = occlusion(model, params, image, target=0, **kw).block_until_ready()
    traces_first = model.traces
    assert traces_first <= 3  # output-shape check, unoccluded forward, the chunk body — once each
    assert sorted(model.calls) == [1, 4, 4, 4, 4]

    model.calls.clear()
    params2 = mlp_params(shape, seed=5)
    heat2 = occlusion(model, params2, rand_image(shape, seed=9), target=2, **kw)
    assert model.traces == traces_first, "new weights, pixels or target must not retrace"
    assert sorted(model.calls) == [1, 4, 4, 4, 4]
    ref2 = reference.occlusion_map(mlp_numpy(params2), rand_image(shape, seed=9), window=(4, 4), stride=(2, 2), target=2)
    assert_maps_equal(heat2, ref2)
    assert not np.allclose(heat, heat2)

    occlusion(model, params, rand_image((11, 9, 3))[:10], target=0, **kw)
    assert model.traces == traces_first  # same shapes again (a fresh array)
    # method="auto" (the default) also analyses the program once; then it too never retraces
    occlusion(model, params, image, window=4, stride=2, target=0)
    traces_auto = model.traces
    occlusion(model, params2, rand_image(shape, seed=3), window=4, stride=2, target=1)
    assert model.traces == traces_auto
    model.calls.clear()
    # 6 × 3 = 18 windows in chunks of at most 5 → 4 chunks of 5 (2 padded variants)
    occlusion(model, params, image, window=(5, 3), stride=(1, 3), target=0, chunk_size=5, score="output", method="full")
    assert sorted(model.calls) == [5, 5, 5, 5]


@pytest.mark.slow
def test_chunk_size_does_not_change_the_map():
    shape = (11, 13, 3)
    params, image = mlp_params(shape), rand_image(shape)
    maps = [
        np.asarray(occlusion(mlp_apply, params, image, window=(4, 5), stride=(3, 2), target=1, chunk_size=c))
        for c in (1, 3, 7, 64, 1000)
    ]
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], rtol=1e-6, atol=1e-6)


def test_auto_chunk_size_is_measured_once_and_changes_nothing():
    model = CountingModel()
    shape = (9, 8, 3)
    params, image = mlp_params(shape), rand_image(shape)
    best = sj.tune_chunk_size(model, params, shape, candidates=(1, 3, 6), repeats=1)
    assert best in (1, 3, 6)
    traces = model.traces
    assert sj.tune_chunk_size(model, params, shape, candidates=(1, 3, 6), repeats=1) == best
    assert model.traces == traces  # cached: nothing compiled or run again
    auto = occlusion(mlp_apply, params, image, window=3, stride=2, target=1, chunk_size="auto")
    fixed = occlusion(mlp_apply, params, image, window=3, stride=2, target=1, chunk_size=2)
    np.testing.assert_allclose(auto, fixed, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="candidates"):
        sj.tune_chunk_size(model, params, shape, candidates=(0,))


@pytest.mark.slow
def test_composes_with_jit_and_vmap():
    shape = (9, 10, 3)
    params = mlp_params(shape)
    images = jnp.stack([rand_image(shape, seed=s) for s in range(3)])
    kw = dict(window=4, stride=3, target=1, fill="blur")
    eager = occlusion(mlp_apply, params, images, **kw)
    jitted = jax.jit(lambda p, x: occlusion(mlp_apply, p, x, **kw))(params, images)
    vmapped = jax.vmap(lambda x: occlusion(mlp_apply, params, x, **kw))(images)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-6, atol=1e-6)
    # target traced under jit: one int per image, given as an array
    per = jax.jit(lambda t: occlusion(mlp_apply, params, images, window=4, stride=3, fill="blur", target=t))(
        jnp.asarray([0, 1, 2])
    )
    np.testing.assert_allclose(per[1], eager[1], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Validation: clear errors before tracing
# ---------------------------------------------------------------------------------------------

IMG = rand_image((8, 6, 3))
P = mlp_params((8, 6, 3))


class Unhashable:
    """A callable model that cannot key the compilation cache."""

    __hash__ = None

    def __call__(self, p, x):
        return mlp_apply(p, x)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(image=IMG[..., 0]), ValueError, "`image` (shape=(8, 6))"),
        (dict(image=(IMG * 255).astype(np.uint8)), TypeError, "`image` (dtype=uint8)"),
        (dict(image=np.where(IMG > 0.5, np.nan, IMG).astype(np.float32)), ValueError, "non-finite"),
        (dict(image=[[1.0]]), TypeError, "`image` must be an array"),
        (dict(window=9), ValueError, "`window` (=9) must fit inside the image (H=8, W=6)"),
        (dict(window=0), ValueError, "`window` (=0) must be >= 1 along both axes"),
        (dict(window=(2, 2, 2)), TypeError, "`window`"),
        (dict(window=2.5), TypeError, "`window` (=2.5)"),
        (dict(stride=0), ValueError, "`stride` (=0) must be >= 1 along both axes"),
        (dict(window=3, stride=4), ValueError, "`stride` (=4) must not exceed `window` (=3)"),
        (dict(mode="slide"), ValueError, "`mode` (='slide') must be one of ('occlude', 'crop')"),
        (dict(score="delta"), ValueError, "`score` (='delta')"),
        (dict(combine="max"), ValueError, "`combine` (='max')"),
        (dict(placement="same"), ValueError, "`placement` (='same')"),
        (dict(fill="noise"), ValueError, "`fill` (='noise')"),
        (dict(fill=np.zeros((2,), np.float32)), ValueError, "`fill` (shape=(2,))"),
        (dict(fill=np.zeros((8, 6, 3), np.float32), mode="crop"), ValueError, "no effect with mode='crop'"),
        (dict(fill=np.array([0.0, np.inf, 0.0], np.float32)), ValueError, "`fill` contains non-finite"),
        (dict(fill=True), TypeError, "`fill` (=True)"),
        (dict(target=3), ValueError, ("`target` (=3) must be", "each in [0, 3)")),
        (dict(target=-1), ValueError, ("`target` (=-1) must be", "each in [0, 3)")),
        (dict(target=[0, 1]), ValueError, ("`target` (=[0, 1], shape=(2,))", "shape (1,)")),
        (dict(target=True), TypeError, "`target` (=True)"),
        (dict(target=1.5), TypeError, "`target` (=1.5)"),
        (dict(target="every"), ValueError, "`target` (='every')"),
        (dict(chunk_size=0), ValueError, "`chunk_size` (=0) must be >= 1"),
        (dict(chunk_size="fast"), ValueError, "`chunk_size` (='fast') must be a positive int, 'auto' or None"),
        (dict(chunk_size=2.0), TypeError, "`chunk_size` (=2.0) must be an int"),
        (dict(method="fast"), ValueError, "`method` (='fast') must be one of ('full', 'incremental', 'auto')"),
        (dict(blur_sigma=-1.0, fill="blur"), ValueError, "`blur_sigma` (=-1.0)"),
        (dict(apply_fn=lambda p, x: mlp_apply(p, x)[:, 0]), ValueError, "returned shape (1,)"),
        (dict(apply_fn=lambda p, x: mlp_apply(p, x)[None]), ValueError, "returned shape (1, 1, 3)"),
        (dict(apply_fn="model"), TypeError, "`apply_fn` (='model') must be callable"),
        (dict(apply_fn=Unhashable()), TypeError, "must be hashable"),
        (dict(devices=()), ValueError, "`devices` (=()) must name at least one device"),
    ],
)
def test_bad_input_is_rejected_before_tracing(kwargs, error, fragment):
    traced = []

    def watched(p, x):
        traced.append(1)
        return mlp_apply(p, x)

    args = dict(apply_fn=watched, params=P, image=IMG, window=4, stride=2, target=0)
    args.update(kwargs)
    with pytest.raises(error) as info:
        occlusion(args.pop("apply_fn"), args.pop("params"), args.pop("image"), **args)
    for part in (fragment,) if isinstance(fragment, str) else fragment:
        assert part in str(info.value)
    if "apply_fn" not in kwargs and "target" not in kwargs:
        assert traced == [], "the model must not be traced before the arguments are validated"
