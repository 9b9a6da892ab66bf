"""Exact incremental occlusion (issue 6): maps equal full re-inference over a grid of models,
windows, strides, placements, scores, fills and targets; the geometry is proved necessary (a
region one row too small breaks the maps); FLOP counts; fallbacks; validation."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.model.architectures import get_model
from saliency_jax import _compile as occlude_compile
from saliency_jax.occlude import incremental as inc
from saliency_jax.occlude.flops import flop_report
from saliency_jax.occlude.capped import capped_occlusion
from saliency_jax.occlude import occlusion
from tests import reference
from tests.occlude.test_engine import assert_maps_equal, mlp_apply, mlp_params, rand_image

HI = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# Models: the shipped architecture, the ZF-style one, and one with awkward padding and pools
# ---------------------------------------------------------------------------------------------


class Awkward(nn.Module):
    """Asymmetric and explicit padding, a stride larger than its kernel, dilation, feature
    groups, an overlapping SAME max-pool, an average pool (a sum pool divided by a full-size
    count map), a full-size constant map added to the features, a VALID pool, a dense head."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (5, 4), strides=(2, 1), padding=((2, 1), (0, 3)), name="c1")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)
        x = nn.Conv(6, (3, 3), kernel_dilation=(2, 2), padding="SAME", feature_group_count=2, name="c2")(x)
        pos = self.param("pos", nn.initializers.normal(0.5), x.shape[1:])
        x = jnp.tanh(x + pos[None])
        x = nn.Conv(8, (2, 2), strides=(3, 3), padding="VALID", name="c3")(x)  # stride > kernel
        x = nn.max_pool(x, (2, 3), strides=(1, 2), padding="VALID")
        return nn.Dense(3, name="head")(x.reshape((x.shape[0], -1)))


class Residual(nn.Module):
    """A residual add of two regions of different sizes (computed in full from there)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="c1")(x))
        y = nn.relu(nn.Conv(4, (3, 3), name="c2")(x))
        x = nn.max_pool(x + y, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(4, (3, 3), name="c3")(x))
        return nn.Dense(2, name="head")(x.mean(axis=(1, 2)))


@functools.lru_cache(maxsize=None)
def build(name):
    """(apply_fn, variables, image (H, W, C)) with random weights."""
    if name == "small":
        model, shape = get_model("small", width=0.25, fc=(16,)), (128, 128, 3)
    elif name == "zf":
        model, shape = get_model("zf", width=0.08, fc=(16,), num_classes=3), (96, 96, 3)
    elif name == "awkward":
        model, shape = Awkward(), (41, 37, 2)
    elif name == "residual":
        model, shape = Residual(), (20, 18, 3)
    else:
        raise KeyError(name)
    image = rand_image(shape, seed=3)
    variables = model.init(jax.random.key(0), jnp.asarray(image)[None])
    return model.apply, variables, image


def both(name, **kw):
    apply_fn, variables, image = build(name)
    full = occlusion(apply_fn, variables, image, method="full", **kw)
    incr = occlusion(apply_fn, variables, image, method="incremental", **kw)
    return np.asarray(full, np.float64), np.asarray(incr, np.float64)


def assert_close(incr, full):
    assert np.isfinite(full).any() and np.nanmax(np.abs(full)) > 1e-4  # a map with content
    assert_maps_equal(incr, full, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Exactness against the full engine
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, window, stride, placement, score",
    [
        pytest.param("small", 32, 8, "clip", "difference", marks=pytest.mark.slow),
        pytest.param("small", 24, 10, "clip", "output", marks=pytest.mark.slow),  # last window clipped at the border
        pytest.param("small", (16, 40), (12, 20), "valid", "difference", marks=pytest.mark.slow),
        pytest.param("small", 9, 9, "clip", "difference", marks=pytest.mark.slow),  # 15 rows: last window of 2 pixels
        pytest.param("zf", 16, 4, "clip", "difference", marks=pytest.mark.slow),
        ("zf", (40, 24), (13, 24), "clip", "output"),
        pytest.param("awkward", 7, 3, "clip", "difference", marks=pytest.mark.slow),
        ("awkward", (5, 11), (4, 6), "valid", "output"),
        ("awkward", 1, 1, "clip", "difference"),  # one-pixel windows
        pytest.param("residual", 4, 3, "clip", "difference", marks=pytest.mark.slow),
    ],
)
def test_incremental_equals_full(name, window, stride, placement, score):
    full, incr = both(name, window=window, stride=stride, placement=placement, score=score, target=1)
    assert_close(incr, full)


@pytest.mark.parametrize("fill", [0.5, *(pytest.param(f, marks=pytest.mark.slow) for f in ("mean", "blur", "baseline"))])
def test_fills_targets_and_batches(fill):
    apply_fn, variables, image = build("awkward")
    images = np.stack([image, rand_image(image.shape, seed=11)])
    if fill == "baseline":
        fill = rand_image(image.shape, seed=5)
    kw = dict(window=(6, 5), stride=(4, 3), fill=fill, target=[2, 0], chunk_size=7)  # last chunk padded
    full = occlusion(apply_fn, variables, images, method="full", **kw)
    incr = occlusion(apply_fn, variables, images, method="incremental", **kw)
    assert_close(np.asarray(incr, np.float64), np.asarray(full, np.float64))
    every_full = occlusion(apply_fn, variables, images, method="full", **{**kw, "target": "all"})
    every = occlusion(apply_fn, variables, images, method="incremental", **{**kw, "target": "all"})
    assert every.shape == (2, 3, *image.shape[:2])
    assert_close(np.asarray(every, np.float64), np.asarray(every_full, np.float64))


def test_matches_brute_force_reference():
    apply_fn, variables, image = build("awkward")
    f = lambda x: np.asarray(apply_fn(variables, jnp.asarray(x, jnp.float32)[None]))[0]  # noqa: E731
    ref = reference.occlusion_map(f, image, window=(6, 8), stride=(5, 3), target=0, fill=0.25, combine="sum")
    ours = occlusion(apply_fn, variables, image, window=(6, 8), stride=(5, 3), target=0, fill=0.25, combine="sum",
                     method="incremental")
    assert_maps_equal(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.0, 1.01])
def test_every_layer_full_or_every_layer_incremental(monkeypatch, fraction):
    """The per-layer choice changes only the cost: all-full and never-full give the same map."""
    monkeypatch.setattr(inc, "FULL_LAYER_FRACTION", fraction)
    full, incr = both("zf", window=24, stride=12, target=0, chunk_size=5)
    assert_close(incr, full)


@pytest.mark.slow
def test_a_region_one_row_too_small_breaks_the_map(monkeypatch):
    """The tests can fail: shrink every changed output region by one row and the map differs.

    Reaches the private ``_Axis`` on purpose: no public seam can inject a wrong region into the
    engine (that is the point of the engine). The region sizes themselves are checked through a
    public seam, against hand arithmetic, by ``test_flop_report_counts_the_changed_regions``."""
    through = inc._Axis.through

    def shrunk(self, out_dim, k_eff, stride, pad_lo, cap=None):
        ax = through(self, out_dim, k_eff, stride, pad_lo, cap)
        return inc._Axis.of(ax.dim, ax.lo, np.maximum(ax.lo, ax.hi - 1))

    monkeypatch.setattr(inc._Axis, "through", shrunk)
    full, incr = both("small", window=16, stride=16, target=1)
    assert np.nanmax(np.abs(incr - full)) > 1e-3


def test_composes_with_jit_and_vmap():
    apply_fn, variables, image = build("awkward")
    kw = dict(window=5, stride=4, target=1, method="incremental")
    eager = occlusion(apply_fn, variables, image, **kw)
    jitted = jax.jit(lambda v, x: occlusion(apply_fn, v, x, **kw))(variables, image)
    images = jnp.stack([image, image[::-1]])
    vmapped = jax.vmap(lambda x: occlusion(apply_fn, variables, x, **kw))(images)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped[0], eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped[1], occlusion(apply_fn, variables, image[::-1], **kw), rtol=1e-5, atol=1e-6)


def test_model_without_spatial_layers_falls_back_to_full():
    shape = (6, 5, 2)
    params, image = mlp_params(shape), rand_image(shape)
    kw = dict(window=2, stride=1, target=1)
    full = occlusion(mlp_apply, params, image, method="full", **kw)
    np.testing.assert_allclose(occlusion(mlp_apply, params, image, method="incremental", **kw), full, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(occlusion(mlp_apply, params, image, method="auto", **kw), full, rtol=1e-6, atol=1e-6)
    report = flop_report(mlp_apply, params, shape, window=2, stride=1)
    assert report.full_flops == report.incremental_flops > 0 and report.layers == ()


# ---------------------------------------------------------------------------------------------
# FLOP counting and the automatic choice
# ---------------------------------------------------------------------------------------------


def test_flop_report_counts_the_changed_regions():
    apply_fn, variables, image = build("small")
    report = flop_report(apply_fn, variables, image.shape, window=32, stride=8)
    first = report.layers[0]
    # conv1: 5×5 stride 2, SAME padding (1, 2) on 128 → 64 rows; a 32-row window changes
    # outputs [floor((a + 1 − 5) / 2) + 1, floor((a + 31 + 1) / 2)] → 18 rows at most.
    assert first.primitive == "conv_general_dilated"
    assert first.full_shape == (1, 64, 64, 8) and first.window_shape == (1, 18, 18, 8)
    c1 = variables["params"]["conv1"]["kernel"].shape  # (5, 5, 3, 8)
    assert first.full_flops == 2 * 64 * 64 * 8 * c1[0] * c1[1] * c1[2]
    assert first.window_flops == 2 * 18 * 18 * 8 * c1[0] * c1[1] * c1[2]
    assert report.incremental_flops == report.full_flops - sum(l.full_flops - l.window_flops for l in report.layers)
    assert 2.0 < report.ratio < 20.0 and 0 < report.saved_fraction < 1
    # a bigger window saves less
    assert flop_report(apply_fn, variables, image.shape, window=96, stride=8).ratio < report.ratio


def test_auto_picks_incremental_when_cheaper(monkeypatch):
    apply_fn, variables, image = build("small")
    calls = []
    original = inc.prepare
    monkeypatch.setattr(inc, "prepare", lambda *a, **k: calls.append(1) or original(*a, **k))
    kw = dict(window=32, stride=16, target=0)
    auto = occlusion(apply_fn, variables, image, method="auto", **kw)
    assert calls, "auto should have chosen the incremental path for a convnet"
    full = occlusion(apply_fn, variables, image, method="full", **kw)
    assert_close(np.asarray(auto, np.float64), np.asarray(full, np.float64))
    calls.clear()
    occlusion(apply_fn, variables, image, method="auto", mode="crop", window=64, stride=64, target=0)
    assert not calls  # crop changes every pixel: full re-inference


# ---------------------------------------------------------------------------------------------
# APPROXIMATE: capped projective field
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_capped_projective_field_is_exact_at_one_and_cheaper_and_wrong_below():
    apply_fn, variables, image = build("small")
    kw = dict(window=16, stride=8, target=1)
    exact = np.asarray(occlusion(apply_fn, variables, image, method="full", **kw), np.float64)
    uncapped = np.asarray(capped_occlusion(apply_fn, variables, image, cap=1.0, **kw), np.float64)
    assert_close(uncapped, exact)
    capped = np.asarray(capped_occlusion(apply_fn, variables, image, cap=0.3, **kw), np.float64)
    error = np.abs(capped - exact).max() / np.abs(exact).max()
    assert 1e-3 < error  # an approximation, and the test says so
    ratio_exact = flop_report(apply_fn, variables, image.shape, window=16, stride=8).ratio
    ratio_capped = flop_report(apply_fn, variables, image.shape, window=16, stride=8, cap=0.3).ratio
    assert ratio_capped > ratio_exact


@pytest.mark.slow
def test_capped_batches_and_every_target_form_at_cap_one_equal_full():
    """A batch, one target per image, "all" and the predicted class: at cap 1 each is the exact map."""
    apply_fn, variables, image = build("awkward")
    images = np.stack([image, rand_image(image.shape, seed=11)])
    kw = dict(window=(6, 5), stride=(4, 3), fill=0.25)
    every = np.asarray(occlusion(apply_fn, variables, images, method="full", target="all", **kw), np.float64)
    predicted = np.argmax(np.asarray(apply_fn(variables, jnp.asarray(images))), axis=-1)
    for target, expected in [
        ("all", every),
        ([2, 0], every[[0, 1], [2, 0]]),
        (1, every[:, 1]),
        (None, every[[0, 1], predicted]),
    ]:
        capped = capped_occlusion(apply_fn, variables, images, target=target, cap=1.0, chunk_size=7, **kw)
        assert capped.shape == expected.shape and capped.dtype == jnp.float32
        assert_close(np.asarray(capped, np.float64), expected)
    single = capped_occlusion(apply_fn, variables, images[1], target=0, cap=1.0, **kw)
    assert_close(np.asarray(single, np.float64), every[1, 0])


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(cap=0), ValueError, "`cap` (=0) must be a number in (0, 1]"),
        (dict(cap=1.5), ValueError, "`cap` (=1.5) must be a number in (0, 1]"),
        (dict(cap="half"), TypeError, "`cap` (='half') must be a number in (0, 1]"),
        (dict(cap=True), TypeError, "`cap` (=True) must be a number in (0, 1]"),
        (dict(fill="mean"), TypeError, "`fill` (='mean') must be a number"),
        (dict(fill=float("nan")), ValueError, "`fill` (=nan) must be finite"),
        (dict(chunk_size=0), ValueError, "`chunk_size` (=0) must be >= 1"),
        (dict(window=(4, 40)), ValueError, "`window` (=(4, 40)) must fit inside the image (H=20, W=18)"),
        (dict(stride=5), ValueError, "`stride` (=5) must not exceed `window` (=4)"),
        (dict(target=2), ValueError, "each in [0, 2)"),
    ],
)
def test_capped_rejects_bad_arguments(kwargs, error, fragment):
    apply_fn, variables, image = build("residual")
    args = {**dict(window=4, stride=4, target=0, cap=0.5), **kwargs}
    with pytest.raises(error) as info:
        capped_occlusion(apply_fn, variables, image, **args)
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(method="fast"), ValueError, "`method` (='fast')"),
        (dict(method=None), ValueError, "`method` (=None)"),
        (dict(method="incremental", mode="crop"), ValueError, "mode='occlude' only"),
    ],
)
def test_bad_method_is_rejected(kwargs, error, fragment):
    apply_fn, variables, image = build("residual")
    with pytest.raises(error) as info:
        occlusion(apply_fn, variables, image, window=4, stride=4, target=0, **kwargs)
    assert fragment in str(info.value)


def _model_forward(p, x):  # module level: jit_with_policy caches per function
    return get_model("small", width=0.25, fc=(8,)).apply(p, x)


@pytest.mark.slow
def test_engine_compile_options_turn_off_ynnpack_and_respect_xla_flags(monkeypatch):
    """On the CPU one device compiles with XLA's own convolutions (no YNNPACK fusion in the HLO),
    several devices and a caller's jit keep jaxlib's defaults, the map is the same either way,
    and a user's own XLA_FLAGS setting wins."""
    options = occlude_compile.cpu_compiler_options()
    if jax.default_backend() != "cpu" or not options:
        pytest.skip("jaxlib without the YNNPACK option, or not a CPU backend")
    model = get_model("small", width=0.25, fc=(8,))
    image = rand_image((32, 32, 3))
    params = model.init(jax.random.key(0), image[None])
    policy = functools.partial(occlude_compile.jit_with_policy, _model_forward, args=(params, image))
    one, many = policy(n_devices=1), policy(n_devices=2)
    plain = jax.jit(_model_forward)
    assert "__ynn_fusion" not in one.lower(params, image[None]).compile().as_text()
    assert many is policy(n_devices=4) is not one
    assert many.lower(params, image[None]).compile().as_text() == plain.lower(params, image[None]).compile().as_text()
    traced = []
    jax.jit(lambda p: traced.append(occlude_compile.jit_with_policy(_model_forward, args=p)) or 0)(params)
    assert traced == [many]  # inside a caller's jit: the caller's compilation decides
    kw = dict(window=8, stride=4, target=0, method="incremental")
    heat = occlusion(model.apply, params, image, **kw)  # one device: compiled with the options
    inside_jit = jax.jit(lambda p, x: occlusion(model.apply, p, x, **kw))(params, image)  # jaxlib's defaults
    np.testing.assert_allclose(inside_jit, heat, rtol=1e-5, atol=1e-6)
    occlude_compile.cpu_compiler_options.cache_clear()
    try:
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
        assert occlude_compile.cpu_compiler_options() == {}
    finally:
        occlude_compile.cpu_compiler_options.cache_clear()
