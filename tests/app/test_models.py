"""``--model package.module:function``: a factory's model runs the folder job (Keras 3 on the JAX
backend, the README's example), and every bad ``--model`` / ``--target`` is one line, exit 2,
nothing written."""

import json
import os
import sys
import textwrap

os.environ.setdefault("KERAS_BACKEND", "jax")  # as tests/clients/conftest.py: keras on the JAX backend

import jax
import numpy as np
import pytest
from PIL import Image

import saliency_jax as sj
from saliency_jax.app import cli, models

# The README's Keras 3 example, with a tiny model in place of keras.applications.MobileNetV2(weights="imagenet").
KERAS_FACTORY = textwrap.dedent('''
    import os
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported
    import keras
    import numpy as np
    from types import SimpleNamespace
    from PIL import Image

    SIZE = 32

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])

    def make():
        model = build()
        params = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])

        def apply_fn(params, x):  # (N, SIZE, SIZE, 3) float32 -> logits (N, 3)
            return model.stateless_call(params[0], params[1], x, training=False)[0]

        def preprocess(image):  # (h, w, 3) uint8 RGB at its own size -> (SIZE, SIZE, 3) float32 in [-1, 1]
            x = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
            return x / 127.5 - 1.0

        return SimpleNamespace(apply_fn=apply_fn, params=params, classes=["cat", "dog", "bird"],
                               preprocess=preprocess)
''')


@pytest.fixture
def factories(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "sj_keras_factory.py").write_text(KERAS_FACTORY)
    (pkg / "sj_broken_import.py").write_text("raise RuntimeError('no GPU here')\n")
    (pkg / "sj_bad_factories.py").write_text(textwrap.dedent('''
        def raises():
            raise OSError("weights not found")

        def incomplete():
            return object()
    '''))
    monkeypatch.syspath_prepend(str(pkg))
    for name in ("sj_keras_factory", "sj_broken_import", "sj_bad_factories"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return pkg


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(d / "wide.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(d / "alpha.png")
    return d


def test_a_keras_factory_runs_the_folder_job_and_its_maps_are_the_library_calls(factories, photos, tmp_path):
    pytest.importorskip("keras")
    with jax.numpy_rank_promotion("allow"):  # Keras broadcasts biases by rank (the suite raises on it)
        out = tmp_path / "out"
        code = cli.main(["explain", str(photos), "--out", str(out), "--model", "sj_keras_factory:make", "--methods",
                         "occlusion,gradient", "--window", "16", "--stride", "8", "--no-progress"])
        assert code == 0
        import sj_keras_factory

        m = sj_keras_factory.make()
        for name in ("wide.png", "alpha.png"):
            side = json.loads((out / f"{name}.json").read_text())
            x = m.preprocess(sj.data.load_image(photos / name))
            logits = np.asarray(m.apply_fn(m.params, x[None]))[0]
            target = int(logits.argmax())
            assert side["prediction"]["index"] == target and side["model"]["path"] == "sj_keras_factory:make"
            np.testing.assert_allclose([side["prediction"]["logits"][c] for c in m.classes], logits, rtol=1e-5, atol=1e-6)
            ref = np.asarray(sj.occlusion(m.apply_fn, m.params, x, window=16, stride=8, target=target))
            np.testing.assert_allclose(np.load(out / f"{name}.occlusion.npy"), ref, rtol=1e-5, atol=1e-6)
            grad = np.asarray(sj.gradient(m.apply_fn, m.params, x, target=target))
            np.testing.assert_allclose(np.load(out / f"{name}.gradient.npy"), grad, rtol=1e-5, atol=1e-7)
            assert [t["class"] for t in side["prediction"]["top5"]] == [m.classes[i] for i in np.argsort(-logits)]


@pytest.mark.parametrize("spec, message", [
    ("sj_broken_import:make", "failed to import: RuntimeError: no GPU here"),
    ("sj_bad_factories:nope", "has no function 'nope'"),
    ("sj_bad_factories:raises", "the factory raised OSError: weights not found"),
    ("sj_bad_factories:incomplete", "without ['apply_fn', 'params', 'classes', 'preprocess']"),
])


def test_a_bad_factory_is_one_line_exit_2_and_nothing_written(factories, photos, tmp_path, capsys, spec, message):
    out = tmp_path / "out"
    code = cli.main(["explain", str(photos), "--out", str(out), "--model", spec, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match="`model`"):
        models.load_model(spec)


def test_a_target_not_among_the_classes_is_one_line_exit_2_and_nothing_written(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["explain", str(photos), "--out", str(out), "--target", "tabby", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "`target` (='tabby')" in err, err
    assert not out.exists()


def test_a_many_class_target_error_names_a_few_classes_not_all():
    from saliency_jax.app.settings import check_target

    with pytest.raises(ValueError, match=r"the model's 1000 classes \(e.g. \('c0', 'c1', 'c2'\)\)") as info:
        check_target("tabby", [f"c{i}" for i in range(1000)])
    assert "c999" not in str(info.value)
