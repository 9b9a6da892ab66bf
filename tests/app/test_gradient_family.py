"""The gradient family in the folder job, its ``--option`` mechanism and the spurious-cue audit.

References are the library functions called directly on the same model input (the folder job
must add nothing but the options it was given) and the audit's own statistics recomputed from
the maps.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import saliency_jax as sj
from saliency_jax.app import audit as audit_lib
from saliency_jax.app import cli
from saliency_jax.app.settings import ExplainSettings, check_options, parse_option
from saliency_jax.model import data


def test_options_parse_as_json_and_are_checked_against_the_registry():
    assert parse_option("integrated_gradients.baseline=blur") == ("integrated_gradients", "baseline", "blur")
    assert parse_option("integrated_gradients.baseline=0.5") == ("integrated_gradients", "baseline", 0.5)
    assert parse_option("grad_cam.layer=conv5") == ("grad_cam", "layer", "conv5")
    assert parse_option("smoothgrad.relative=true") == ("smoothgrad", "relative", True)
    run = ("integrated_gradients", "smoothgrad")
    assert check_options({"smoothgrad": {"n_samples": 4}}, run) == (("smoothgrad", "n_samples", 4),)
    with pytest.raises(ValueError, match=r"'n_step' is not an option of method 'integrated_gradients'.*n_steps"):
        check_options(["integrated_gradients.n_step=4"], run)
    with pytest.raises(ValueError, match="not among the run's methods"):
        check_options(["grad_cam.relu=false"], run)
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        check_options(["n_steps=4"], run)
    with pytest.raises(ValueError, match="given twice"):
        check_options(["smoothgrad.n_samples=4", "smoothgrad.n_samples=5"], run)
    with pytest.raises(ValueError, match="--window"):
        check_options(["occlusion.window=8"], ("occlusion",))
    # no options: the sidecar's settings read as before (no "options" key)
    assert "options" not in ExplainSettings.request(methods="gradient").as_dict()
    assert ExplainSettings.request(methods=run, options=["smoothgrad.kind=vargrad"]).as_dict()["options"] == {
        "smoothgrad": {"kind": "vargrad"}}


def test_cli_bad_option_is_exit_2_naming_the_method_and_its_options(tmp_path, capsys):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    status = cli.main(["explain", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--no-progress",
                       "--methods", "integrated_gradients", "--option", "integrated_gradients.steps=4"])
    err = capsys.readouterr().err
    assert status == 2 and "integrated_gradients" in err and "n_steps" in err
    assert not (tmp_path / "out").exists()


def test_folder_job_runs_the_gradient_family_with_its_options(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = ["explain", str(tmp_path / "a.png"), "--out", str(out), "--no-progress", "--formats", "npy",
            "--methods", "integrated_gradients,smoothgrad,grad_cam,guided_grad_cam,input_x_gradient",
            "--target", "1", "--option", "integrated_gradients.n_steps=4", "--option",
            "integrated_gradients.method=riemann_trapezoid", "--option", "smoothgrad.n_samples=3",
            "--option", "smoothgrad.kind=vargrad", "--option", "grad_cam.relu=false"]
    assert cli.main(argv) == 0
    model = sj.load()
    x = jnp.asarray(data.preprocess(pixels[None]))
    expected = {
        "integrated_gradients": sj.integrated_gradients(model.apply_fn, model.params, x, target=1, n_steps=4,
                                                        method="riemann_trapezoid"),
        "smoothgrad": sj.smooth_grad("gradient", model.apply_fn, model.params, x, target=1, n_samples=3,
                                     kind="vargrad"),
        "grad_cam": sj.grad_cam(model.apply_fn, model.params, x, target=1, relu=False),
        "guided_grad_cam": sj.guided_grad_cam(model.apply_fn, model.params, x, target=1),
        "input_x_gradient": sj.input_x_gradient(model.apply_fn, model.params, x, target=1),
    }
    for name, ref in expected.items():
        got = np.load(out / f"a.png.{name}.npy")
        assert got.shape == ref.shape[1:], name
        np.testing.assert_allclose(got, np.asarray(ref)[0], rtol=1e-5, atol=1e-6 * np.abs(ref).max(), err_msg=name)
    assert (np.load(out / "a.png.grad_cam.npy") < 0).any()  # relu=false reached the method
    side = json.loads((out / "a.png.json").read_text())
    assert side["settings"]["options"]["integrated_gradients"] == {"method": "riemann_trapezoid", "n_steps": 4}
    capsys.readouterr()
    assert cli.main(argv) == 0 and "1 already done" in capsys.readouterr().out  # same options: skipped
    argv[argv.index("integrated_gradients.n_steps=4")] = "integrated_gradients.n_steps=5"
    assert cli.main(argv) == 0 and "1 explained" in capsys.readouterr().out  # other options: redone


@pytest.mark.slow
def test_audit_reports_the_cue_ratio_for_the_gradient_family(tmp_path):
    methods = ("integrated_gradients", "smoothgrad", "grad_cam", "guided_grad_cam", "input_x_gradient")
    r = audit_lib.audit(n=8, n_maps=3, out=None, methods=",".join(methods), window=64, stride=32, panels=0,
                        n_boot=50, batch_size=3, check_methods="grad_cam")
    for m in methods:
        energy = r["maps"]["methods"][m]["cue"]["energy"]
        cue, clean = np.asarray(r["maps"]["per_image"][m]["cue"]["cue"]["energy"], float), np.asarray(
            r["maps"]["per_image"][m]["clean"]["cue"]["energy"], float)
        ok = np.isfinite(cue) & np.isfinite(clean)
        assert energy["n"] == ok.sum() > 0, m
        assert energy["ratio"] == pytest.approx(cue[ok].mean() / clean[ok].mean()), m
        lo, hi = energy["ratio_ci"]
        assert lo <= hi, m
