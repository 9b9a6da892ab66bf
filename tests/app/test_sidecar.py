"""The sidecar and its rule for "done", and the gallery page, without running a model."""

import dataclasses
import json

import numpy as np
import pytest

from saliency_jax.app import gallery, sidecar
from saliency_jax.app.settings import ExplainSettings

SETTINGS = ExplainSettings(("crop", "deconvnet"), (32, 32), (8, 8), 0.0, "predicted", ("png", "npy"),
                           "jet", "RdBu_r", 0.5, False)
MODEL = {"path": "/models/m", "weights_sha256": "ab" * 32}


def _info(**changes):
    fields = {"settings": SETTINGS, "model": MODEL, "input_size": (128, 128), "classes": ("circle", "cross")}
    return sidecar.RunInfo(**{**fields, **changes})


def _finished(tmp_path, info, digest="d" * 64):
    """An image whose outputs and sidecar exist, as the folder job leaves it."""
    files = sidecar.output_names("sub/a.png", info.settings)
    for f in files.values():
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"x")
    maps = {"crop": np.array([[0.0, 2.0]], np.float32), "deconvnet": np.full((1, 2, 3), -1.0, np.float32)}
    side = info.sidecar(path=tmp_path / "in.png", name="sub/a.png", sha256=digest, size=(20, 30),
                        logits=np.array([1.0, 3.0], np.float32), probs=np.array([0.1, 0.9], np.float32),
                        explained=[1], maps=maps, files=files)
    path = sidecar.sidecar_path(tmp_path, "sub/a.png")
    sidecar.write_sidecar(path, side)
    return path, files


def test_output_names_follow_methods_and_formats():
    assert sidecar.output_names("a/b.jpg", SETTINGS) == {
        "crop.png": "a/b.jpg.crop.png", "crop.npy": "a/b.jpg.crop.npy",
        "deconvnet.png": "a/b.jpg.deconvnet.png", "deconvnet.npy": "a/b.jpg.deconvnet.npy",
        "panel": "a/b.jpg.panel.png",
    }
    npy_only = dataclasses.replace(SETTINGS, formats=("npy",))
    assert sidecar.output_names("x.png", npy_only) == {"crop.npy": "x.png.crop.npy", "deconvnet.npy": "x.png.deconvnet.npy"}
    assert sidecar.sidecar_path("out", "a/b.jpg").as_posix() == "out/a/b.jpg.json"


def test_sidecar_contents(tmp_path):
    path, files = _finished(tmp_path, _info())
    side = json.loads(path.read_text())
    assert list(side) == ["version", "settings_key", "input", "model", "settings", "prediction", "explained",
                          "maps", "files"]
    assert side["input"] == {"path": str((tmp_path / "in.png").resolve()), "name": "sub/a.png", "sha256": "d" * 64,
                             "size": [20, 30]}
    assert side["model"] == {**MODEL, "input_size": [128, 128], "classes": ["circle", "cross"]}
    assert side["settings"]["window"] == [32, 32] and side["settings"]["methods"] == ["crop", "deconvnet"]
    assert side["prediction"]["class"] == "cross" and side["prediction"]["index"] == 1
    assert side["prediction"]["logits"] == {"circle": 1.0, "cross": 3.0}
    assert side["explained"] == ["cross"]
    assert side["maps"] == {"crop": {"shape": [1, 2], "min": 0.0, "max": 2.0},
                            "deconvnet": {"shape": [1, 2, 3], "min": -1.0, "max": -1.0}}
    assert side["files"] == {k: v.split("/")[-1] for k, v in files.items()}  # relative to the sidecar's folder


def test_the_key_changes_with_settings_weights_and_input_size():
    keys = {
        _info().key,
        _info(settings=dataclasses.replace(SETTINGS, stride=(8, 4))).key,
        _info(settings=dataclasses.replace(SETTINGS, cmap="viridis")).key,
        _info(model={**MODEL, "weights_sha256": "cd" * 32}).key,
        _info(input_size=(64, 64)).key,
    }
    assert len(keys) == 5
    assert _info(model={**MODEL, "path": "/elsewhere"}).key == _info().key  # the weights count, not where they lie


def test_done_needs_the_same_key_and_bytes_and_every_file(tmp_path):
    info = _info()
    path, files = _finished(tmp_path, info)
    assert sidecar.is_done(path, info.key, "d" * 64)
    assert not sidecar.is_done(path, _info(input_size=(64, 64)).key, "d" * 64)  # other settings
    assert not sidecar.is_done(path, info.key, "e" * 64)  # other input bytes
    (tmp_path / files["deconvnet.png"]).unlink()
    assert not sidecar.is_done(path, info.key, "d" * 64)  # an output is missing
    path.write_text("{ truncated")
    assert not sidecar.is_done(path, info.key, "d" * 64) and sidecar.read_sidecar(path) is None
    assert not sidecar.is_done(tmp_path / "none.json", info.key, "d" * 64)


def test_gallery_escapes_every_text_and_writes_atomically(tmp_path):
    figures = [gallery.Figure('a"b.png', "<a>", "a & b: P=0.50"), gallery.Figure("c.png", "c", "c")]
    gallery.write_gallery(tmp_path / "index.html", "demo", "Model: <m>.", figures, separator="\n")
    page = (tmp_path / "index.html").read_text()
    assert page.startswith("<!doctype html>") and "<title>saliency_jax demo</title>" in page
    assert "<p>Model: &lt;m&gt;.</p>" in page
    assert ('<figure><img src="a&quot;b.png" alt="&lt;a&gt;"><figcaption>a &amp; b: P=0.50</figcaption></figure>\n'
            '<figure><img src="c.png"') in page
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left
    assert "</figure><figure>" in gallery.page("explain", "2 images.", figures)  # no separator by default


@pytest.mark.parametrize("bad", [[], "text", {"settings_key": "k", "input": [], "files": {}},
                                 {"settings_key": "k", "input": {"sha256": "d"}, "files": 3},
                                 {"settings_key": "k", "input": {"sha256": "d"}, "files": {"a": 3}}])
def test_a_damaged_sidecar_means_not_done(tmp_path, bad):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(bad))
    assert not sidecar.is_done(path, "k", "d")
    path.write_text(json.dumps({"settings_key": "k", "input": {"sha256": "d"}, "files": {}}))
    assert sidecar.is_done(path, "k", "d")  # the same checks pass on a well-formed sidecar
