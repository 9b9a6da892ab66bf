"""The method registry: every entry equals its own public function, errors name what is wrong,
and a method added by one function plus one `register` reaches the folder job."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import saliency_jax as sj
from saliency_jax import methods
from saliency_jax.app import cli, faithfulness

W, S = 32, 16  # 7 x 7 windows on the shipped 128 x 128 model keep this quick
CHUNK = 16  # with method="full" and a given chunk size nothing is timed or tuned (quick, and no timing decides)


@pytest.fixture(scope="module")
def model():
    return sj.load()


@pytest.fixture(scope="module")
def batch(model):
    gen = sj.generate(2, split="test", seed=5)
    return jnp.asarray(sj.data.preprocess(gen.images)), jnp.asarray([0, 1], jnp.int32)


def _public(name, model, x, t):
    """Each registered method's own public function, called as its documentation shows."""
    a, p = model.apply_fn, model.params
    return {
        "crop": lambda: sj.occlusion(a, p, x, window=W, stride=S, target=t, mode="crop", chunk_size=CHUNK,
                                     method="full"),
        "occlusion": lambda: sj.occlusion(a, p, x, window=W, stride=S, target=t, fill=0.0, chunk_size=CHUNK,
                                          method="full"),
        "deconvnet": lambda: sj.deconvnet(a, p, x, target=t),
        "guided": lambda: sj.guided_backprop(a, p, x, target=t),
        "gradient": lambda: sj.gradient(a, p, x, target=t),
        "integrated_gradients": lambda: sj.integrated_gradients(a, p, x, target=t, n_steps=4),
        "input_x_gradient": lambda: sj.input_x_gradient(a, p, x, target=t),
        "smoothgrad": lambda: sj.smooth_grad("gradient", a, p, x, target=t, n_samples=3, key=jax.random.key(0)),
        "grad_cam": lambda: sj.grad_cam(a, p, x, target=t),
        "guided_grad_cam": lambda: sj.guided_grad_cam(a, p, x, target=t),
        "feature_ablation": lambda: sj.feature_ablation(a, p, x, sj.segments(x, n=4), target=t, method="full"),
        "shapley_values": lambda: sj.shapley_values(a, p, x, sj.segments(x, n=4, kind="grid"), target=t, method="full"),
        "shapley_sampling": lambda: sj.shapley_sampling(a, p, x, sj.segments(x, n=4), target=t, n_samples=2,
                                                        method="full"),
        "kernel_shap": lambda: sj.kernel_shap(a, p, x, sj.segments(x, n=4), target=t, n_samples=8, method="full"),
        "rise": lambda: sj.rise(a, p, x, target=t, n_masks=8),
    }[name]()


#: Small settings of the costly options, given alike to sj.attribute and to the public function.
SMALL = {"integrated_gradients": {"n_steps": 4}, "smoothgrad": {"n_samples": 3},
         "feature_ablation": {"segments": 4, "method": "full"}, "shapley_values": {"segments": 4, "method": "full"},
         "shapley_sampling": {"segments": 4, "n_samples": 2, "method": "full"},
         "kernel_shap": {"segments": 4, "n_samples": 8, "method": "full"}, "rise": {"n_masks": 8}}
BUILTIN = ("crop", "occlusion", "deconvnet", "guided", "gradient", "integrated_gradients", "input_x_gradient",
           "smoothgrad", "grad_cam", "guided_grad_cam", "feature_ablation", "shapley_values", "shapley_sampling",
           "kernel_shap", "rise")


def test_the_registry_holds_the_builtin_methods():
    # A method added to the package needs its public-function reference in `_public` above.
    assert methods.names() == BUILTIN
    assert methods.names(default=True) == ("crop", "occlusion", "deconvnet")
    assert {n: methods.get(n).kind for n in BUILTIN} == {
        "crop": "heat", "occlusion": "signed", "deconvnet": "rgb", "guided": "rgb", "gradient": "rgb",
        "integrated_gradients": "rgb", "input_x_gradient": "rgb", "smoothgrad": "rgb", "grad_cam": "heat",
        "guided_grad_cam": "rgb", "feature_ablation": "signed", "shapley_values": "signed",
        "shapley_sampling": "signed", "kernel_shap": "signed", "rise": "heat"}
    assert methods.names(exactness="stochastic") == ("smoothgrad", "shapley_sampling", "kernel_shap", "rise")
    assert tuple(methods.BASELINES) == ("random", "centre", "colour-edge")


@pytest.mark.parametrize("name", BUILTIN)
def test_attribute_equals_the_methods_public_function_bit_for_bit(name, model, batch):
    x, t = batch
    opts = {"window": W, "stride": S, "chunk_size": CHUNK, "method": "full"} if "window" in methods.get(name).options else {}
    if "fill" in methods.get(name).options:
        opts["fill"] = 0.0
    opts.update(SMALL.get(name, {}))
    got = np.asarray(sj.attribute(name, model.apply_fn, model.params, x, target=t, **opts))
    want = np.asarray(_public(name, model, x, t))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _tiny(params, x):
    """Two scores per image: a weighted sum of the pixels and its negative (any map is cheap)."""
    s = (x * params[None]).sum((1, 2, 3))
    return jnp.stack([s, -s], -1)


def test_windowed_defaults_are_a_quarter_of_the_side_and_of_the_window():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 24, 3)), jnp.float32)
    params = jnp.asarray(rng.normal(size=(16, 24, 3)), jnp.float32)
    # no window: a quarter of the shorter side (4), stride a quarter of that (1)
    np.testing.assert_array_equal(np.asarray(sj.attribute("occlusion", _tiny, params, x, target=0, chunk_size=64)),
                                  np.asarray(sj.occlusion(_tiny, params, x, window=4, stride=1, target=0,
                                                          chunk_size=64)))
    # a (h, w) window without a stride: a quarter of each side
    np.testing.assert_array_equal(
        np.asarray(sj.attribute("crop", _tiny, params, x, target=1, window=(8, 12), chunk_size=64)),
        np.asarray(sj.occlusion(_tiny, params, x, window=(8, 12), stride=(2, 3), target=1, mode="crop", chunk_size=64)))
    assert methods.default_window((128, 128)) == 32 and methods.default_stride(32) == (8, 8)


def test_unknown_names_and_options_raise_the_documented_errors():
    x = jnp.ones((8, 8, 3))
    with pytest.raises(ValueError, match=r"`method` \(='saliency'\) must be one of \('crop', 'occlusion'"):
        sj.attribute("saliency", _tiny, jnp.ones((8, 8, 3)), x)
    with pytest.raises(ValueError, match=r"`method` \(=3\)"):
        methods.get(3)
    with pytest.raises(TypeError, match=r"`windw` is not an option of method 'occlusion'"):
        sj.attribute("occlusion", _tiny, jnp.ones((8, 8, 3)), x, windw=4)
    with pytest.raises(TypeError, match=r"`fill` is not an option of method 'crop'"):
        sj.attribute("crop", _tiny, jnp.ones((8, 8, 3)), x, fill=0.0)
    with pytest.raises(TypeError, match=r"`window` is not an option of method 'gradient'"):
        sj.attribute("gradient", _tiny, jnp.ones((8, 8, 3)), x, window=4)
    with pytest.raises(ValueError, match=r"`baseline` \(='noise'\) must be one of \('random', 'centre'"):
        methods.baseline_map("noise", np.zeros((1, 8, 8, 3), np.uint8))


def test_register_refuses_duplicates_and_malformed_methods():
    fn = methods.get("gradient").fn
    with pytest.raises(ValueError, match=r"`method.name` \(='gradient'\) is already registered"):
        methods.register(methods.Method("gradient", "rgb", fn, {}, "exact", "again"))
    with pytest.raises(ValueError, match=r"`method.name` \(='random'\) is already registered"):
        methods.register(methods.Method("random", "heat", fn, {}, "exact", "a baseline's name"))
    with pytest.raises(TypeError, match=r"`method` \(='gradient'\) must be a saliency_jax.methods.Method"):
        methods.register("gradient")
    with pytest.raises(ValueError, match=r"`kind` \(='map'\) must be one of \('heat', 'signed', 'rgb'\)"):
        methods.Method("m", "map", fn, {}, "exact", "")
    with pytest.raises(ValueError, match=r"`exactness` \(='roughly'\)"):
        methods.Method("m", "rgb", fn, {}, "roughly", "")
    with pytest.raises(ValueError, match=r"`name` \(='a,b'\)"):
        methods.Method("a,b", "rgb", fn, {}, "exact", "")
    with pytest.raises(TypeError, match=r"`fn` \(=None\) must be callable"):
        methods.Method("m", "rgb", None, {}, "exact", "")
    assert methods.names() == BUILTIN  # nothing was added


# ------------------------------------------------------------------ one function + one register


def grad_times_input(apply_fn, params, image, target=None, *, compute_dtype=None):
    """The gradient times the input, summed over channels: ``(…, H, W)``, signed."""
    g = sj.gradient(apply_fn, params, image, target=target, compute_dtype=compute_dtype)
    return (g * image).sum(-1)


@pytest.fixture
def mine():
    """``grad-x-input`` registered for one test, removed afterwards."""
    method = methods.register(methods.Method("grad-x-input", "signed", grad_times_input, {"compute_dtype": None},
                                             "exact", "the gradient times the input", shows="grad x input({cls})"))
    yield method
    del methods.REGISTRY[method.name]


def test_a_method_added_by_one_function_and_one_register_reaches_the_folder_job(mine, model, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    gen = sj.generate(2, split="test", seed=7)
    paths = [folder / f"img{i}.png" for i in range(2)]
    for p, im in zip(paths, gen.images):
        Image.fromarray(im).save(p)
    out = tmp_path / "out"
    assert cli.main(["explain", str(folder), "--out", str(out), "--methods", "grad-x-input", "--no-progress"]) == 0

    x = jnp.stack([jnp.asarray(sj.to_model_input(p)) for p in paths])
    pred = np.asarray(model.apply_fn(model.params, x)).argmax(-1)
    want = np.asarray(grad_times_input(model.apply_fn, model.params, x, target=jnp.asarray(pred, jnp.int32)))
    for k, p in enumerate(paths):
        got = np.load(out / f"{p.name}.grad-x-input.npy")
        assert got.shape == (128, 128) and got.dtype == np.float32
        np.testing.assert_allclose(got, want[k], rtol=1e-5, atol=1e-7)
        side = json.loads((out / f"{p.name}.json").read_text())
        assert side["settings"]["methods"] == ["grad-x-input"]
        with Image.open(out / f"{p.name}.grad-x-input.png") as im:  # drawn as a signed map: an overlay
            assert im.size[0] >= 128
    # the generic entry and the faithfulness report know it too
    np.testing.assert_array_equal(np.asarray(sj.attribute("grad-x-input", model.apply_fn, model.params, x, target=1)),
                                  np.asarray(grad_times_input(model.apply_fn, model.params, x, target=1)))
    assert "grad-x-input" in [r.label for r in faithfulness.rows()]
    order = methods.report_order(methods.names())  # signed maps first, then heat, then rgb
    signed = [n for n in order if methods.get(n).kind == "signed"]
    assert order[:len(signed)] == tuple(signed) and "grad-x-input" in signed


def test_an_unregistered_method_is_refused_by_the_folder_job(tmp_path, capsys):
    assert cli.main(["explain", str(tmp_path), "--out", str(tmp_path / "o"), "--methods", "grad-x-input"]) == 2
    assert "`methods`" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_the_folder_job_default_is_the_registry_default():
    args = cli.build_parser(["explain", "x"]).parse_args(["explain", "x"])
    assert args.methods == ",".join(methods.names(default=True))
