"""The faithfulness report: per-image values equal direct metric calls; files; the comparison; the command."""

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax import metrics
from saliency_jax.app import faithfulness as fa
from saliency_jax.app.commands import faithfulness as fa_cmd
from saliency_jax.model import data
from saliency_jax.model.checkpoint import LoadedModel

SIZE = 32


def _tiny_apply(params, x):
    """conv 3x3 (3 -> 4) + ReLU + max-pool 2 + global mean + dense (4 -> 2)."""
    h = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h)
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return h.mean(axis=(1, 2)) @ params["w"]


def _tiny_model():
    rng = np.random.default_rng(0)
    params = {"k": jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32)),
              "w": jnp.asarray(rng.normal(size=(4, 2)).astype(np.float32))}
    card = {"classes": ["ring", "cross"], "input_size": [SIZE, SIZE, 3]}
    return LoadedModel(module=None, params=params, apply_fn=_tiny_apply, card=card, path=Path("tiny"))


@pytest.mark.slow
def test_report_values_equal_the_metric_calls_and_files_are_written(tmp_path):
    model = _tiny_model()
    sanity = {"results": [{"model": "shipped", "images": 4, "rows": [
        {"randomised_down_to": "logits", **{f"{r}_{k}": 0.5 for r in ("gradient", "deconvnet", "guided")
                                            for k in ("abs", "signed")}}]}]}
    report = fa.faithfulness_report(model, n=3, steps=2, batch_size=2, out=tmp_path, sanity=sanity)
    gen = data.generate(3, split="test", seed=0, size=SIZE)
    x = jnp.asarray(data.preprocess(gen.images))
    t = jnp.asarray(gen.labels)
    masks = jnp.asarray(gen.masks)
    # centre and guided by hand, through the public metric functions
    centre = metrics.centre_prior((3, SIZE, SIZE))
    guided = fa.method_maps("guided", _tiny_apply, model.params, x, gen.images, t, gen.masks)
    for name, maps in (("centre", centre), ("guided", guided)):
        got = report["per_image"][name]
        np.testing.assert_allclose(got["pointing"], metrics.pointing_game(maps, masks), equal_nan=True)
        np.testing.assert_allclose(got["pixel_auc"], metrics.pixel_auc(maps, masks), rtol=1e-6)
        dele = metrics.deletion_curve(_tiny_apply, model.params, x, maps, t, steps=2, baseline=0.0)
        np.testing.assert_allclose(got["deletion_auc"], dele.auc, rtol=1e-5)
        ins = metrics.insertion_curve(_tiny_apply, model.params, x, maps, t, steps=2, blur_sigma=fa.INSERTION_SIGMA)
        np.testing.assert_allclose(got["insertion_auc"], ins.auc, rtol=1e-5)
        assert report["results"][name]["rank"]["mean"] == pytest.approx(
            float(np.nanmean(metrics.relevance_rank(maps, masks))), rel=1e-6)
    assert report["per_image"]["mask"]["rank"] == [1.0, 1.0, 1.0]  # the reference is a perfect localiser
    assert set(report["results"]) == set(fa.METHODS) | {"mask"}
    assert set(report["fails_to_beat"]) == set(fa.METHODS) - set(fa.BASELINES)
    written = json.loads((tmp_path / "faithfulness.json").read_text())
    assert written["results"]["centre"] == report["results"]["centre"]
    md = (tmp_path / "faithfulness.md").read_text()
    assert "| **occlusion-16** |" in md and "| random (baseline) |" in md and "cascading randomisation" in md
    assert (tmp_path / "faithfulness.curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files


def test_compare_to_baselines_paired_intervals():
    rng = np.random.default_rng(0)
    base = rng.uniform(size=50)
    per = {
        "good": {"pointing": base + 0.2, "deletion_auc": base - 0.2},
        "same": {"pointing": base + rng.normal(0, 0.01, 50), "deletion_auc": base.copy()},
        "b": {"pointing": base, "deletion_auc": base},
    }
    per["same"]["deletion_auc"][0] = np.nan  # skipped pairwise
    out = fa.compare_to_baselines(per, ["good", "same"], ["b", "absent"])
    assert out == {"good": {}, "same": {"pointing": ["b"], "deletion_auc": ["b"]}}
    worse = fa.compare_to_baselines({"m": {"deletion_auc": base + 0.1}, "b": {"deletion_auc": base}}, ["m"], ["b"])
    assert worse == {"m": {"deletion_auc": ["b"]}}  # lower is better for deletion


def test_rows_are_registry_methods_with_the_reports_options():
    rows = {r.label: r for r in fa.rows()}
    assert fa.METHODS == (*rows, "random", "centre", "colour-edge")
    assert rows["occlusion-16"].method == rows["occlusion-32"].method == "occlusion"
    assert rows["occlusion-32"].options == {"window": 32, "stride": fa.STRIDE, "fill": fa.FILL}
    assert rows["crop"].options == {"window": 32, "stride": fa.STRIDE}  # crop takes no fill
    assert rows["guided"].options == {}
    # a row's maps are the registered method's with those options, and the public function's
    model = _tiny_model()
    gen = data.generate(2, split="test", seed=0, size=SIZE)
    x, t = jnp.asarray(data.preprocess(gen.images)), jnp.asarray(gen.labels)
    got = fa.method_maps("occlusion-16", _tiny_apply, model.params, x, gen.images, t, gen.masks)
    want = sj.occlusion(_tiny_apply, model.params, x, window=16, stride=8, fill=0.0, target=t)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    rand = fa.method_maps("random", None, None, x, gen.images, None, None, seed=3)
    np.testing.assert_array_equal(np.asarray(rand), np.asarray(metrics.random_map(jax.random.key(3), (2, SIZE, SIZE))))


def test_argument_checks():
    with pytest.raises(ValueError, match="`methods`.*'saliency'"):
        fa.faithfulness_report(_tiny_model(), n=2, methods="saliency")
    with pytest.raises(ValueError, match=r"`n` \(=0\)"):
        fa.faithfulness_report(_tiny_model(), n=0)
    with pytest.raises(ValueError, match="`tolerance`"):
        fa.faithfulness_report(_tiny_model(), n=2, tolerance=-1)


@pytest.mark.slow
def test_cmd_through_argparse_on_the_shipped_model(tmp_path, capsys):
    parser = fa_cmd.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--n", "2", "--methods", "random,centre", "--steps", "2", "--out", str(tmp_path)])
    assert fa_cmd.cmd(args) == 0
    printed = capsys.readouterr().out
    assert "| random (baseline) |" in printed and "faithfulness.md" in printed
    report = json.loads((tmp_path / "faithfulness.json").read_text())
    assert report["methods"] == ["random", "centre"] and report["settings"]["n"] == 2
