"""The demo end to end on the shipped checkpoint: files, sizes, raw maps equal the library calls."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import saliency_jax as sj
from saliency_jax.model import checkpoint, data
from saliency_jax import metrics
from saliency_jax.app.demo import run_demo, summary_line
from tests.metrics import reference


@pytest.mark.slow
def test_demo_writes_maps_panels_and_gallery(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, n=2, window=32, stride=16, methods="occlusion,crop,deconvnet,grad_cam")
    model = checkpoint.load()
    gen = data.generate(2, split="test", seed=0, size=model.input_size[0])
    x = jnp.asarray(data.preprocess(gen.images))
    pred = np.asarray(model.apply_fn(model.params, x)).argmax(-1)
    expected = {
        "occlusion": sj.occlusion(model.apply_fn, model.params, x, window=32, stride=16, target=pred),
        "crop": sj.occlusion(model.apply_fn, model.params, x, window=32, stride=16, target=pred, mode="crop"),
        "deconvnet": sj.deconvnet(model.apply_fn, model.params, x, target=pred),
        "grad_cam": sj.attribute("grad_cam", model.apply_fn, model.params, x, target=pred),
    }
    page = (out / "index.html").read_text()
    for k in range(2):
        name = f"test_{k:03d}"
        for method, maps in expected.items():
            raw = np.load(out / f"{name}_{method}.npy")
            assert raw.dtype == np.float32
            np.testing.assert_allclose(raw, np.asarray(maps[k]), rtol=1e-5, atol=1e-6)
        with Image.open(out / f"{name}.png") as im:
            im.load()
            assert im.size[0] > 5 * 128 and im.size[1] > 128  # the image and four maps side by side
        side = json.loads((out / f"{name}.json").read_text())
        assert side["prediction"] == model.classes[int(pred[k])]
        assert side["label"] == model.classes[int(gen.labels[k])]
        assert f'src="{name}.png"' in page
    assert summary["images"][0]["settings"]["window"] == 32
    assert set(summary["pointing_game_rate"]) == {"occlusion", "crop", "deconvnet", "grad_cam"}
    # "peak on the object" is the tolerant pointing game (15 px), against the brute-force reference
    for method, maps in expected.items():
        hits = [reference.pointing_game(np.asarray(maps[k]), gen.masks[k], 15) for k in range(2)]
        assert [r["pointing_game"][method] for r in summary["images"]] == [h == 1.0 for h in hits]
        assert summary["pointing_game_rate"][method] == np.mean(hits)
        assert summary["pointing_game_rate"][method] >= summary["peak_on_object_rate"][method]  # tolerance only adds
    line = summary_line(summary)
    assert line.startswith("2 images, accuracy ") and "pointing game (15 px tolerance): occlusion " in line
    assert summary["pointing_game_rate"] == {
        m: float(np.nanmean(metrics.pointing_game(expected[m], jnp.asarray(gen.masks)))) for m in expected}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))  # atomic writes leave no temp files
