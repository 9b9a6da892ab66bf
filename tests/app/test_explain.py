"""`saliency-jax explain` end to end on generated image files, against the library calls.

Covers: outputs exist and decode at the right size, raw maps equal `sj.occlusion` /
`sj.saliency_maps` on `sj.to_model_input(path)`, corrupt and non-image files reported and
skipped with a non-zero exit, reruns skip finished images (no model call), `--force` and
changed settings or bytes redo them, an interrupted run leaves no partial file and resumes,
outputs never overwrite inputs, argument errors before any image is read.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import saliency_jax as sj
from saliency_jax._io import OutputBusyError, folder_lock
from saliency_jax.app import cli, inputs, maps, worker
from saliency_jax.app.explain import explain_paths
from saliency_jax.app.inputs import find_images
from saliency_jax.model import data

W, S = 32, 16  # small grid (49 windows) keeps the suite quick
ARGS = ["--window", str(W), "--stride", str(S), "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def model():
    return sj.load()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """6 readable images (one grey, one large, two in a subfolder), a truncated PNG, a text file
    named .jpg and a .txt note."""
    root = tmp_path_factory.mktemp("images")
    gen = sj.generate(6, split="test", seed=3)
    (root / "sub").mkdir()
    for i, im in enumerate(gen.images):
        name = root / ("sub" if i >= 4 else "") / f"img{i}.png"
        if i == 1:
            Image.fromarray(im).convert("L").save(name)  # grayscale file
        elif i == 2:
            Image.fromarray(im).resize((300, 200), Image.BICUBIC).save(root / "img2.jpg", quality=95)
            continue
        else:
            Image.fromarray(im).save(name)
    good = (root / "img0.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 3])
    (root / "fake.jpg").write_text("this is not an image")
    (root / "notes.txt").write_text("ignored")
    return root


GOOD = ["img0.png", "img1.png", "img2.jpg", "img3.png", "sub/img4.png", "sub/img5.png"]


def _digests(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_explain_cli_writes_maps_equal_to_the_library(folder, model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["explain", str(folder), "--out", str(out), *ARGS])
    cap = capsys.readouterr()
    assert rc == 1  # two unreadable files
    assert "6 explained, 0 already done, 2 failed" in cap.out
    assert "broken.png" in cap.err and "truncated" in cap.err
    assert "fake.jpg" in cap.err and "cannot identify image" in cap.err
    assert "notes.txt" not in cap.err

    x = jnp.stack([jnp.asarray(sj.to_model_input(folder / n)) for n in GOOD])
    pred = np.asarray(model.apply_fn(model.params, x)).argmax(-1)
    expected = {
        "occlusion": sj.occlusion(model.apply_fn, model.params, x, window=W, stride=S, target=pred, method="full"),
        "crop": sj.occlusion(model.apply_fn, model.params, x, window=W, stride=S, target=pred, mode="crop"),
        "deconvnet": sj.deconvnet(model.apply_fn, model.params, x, target=pred),
    }
    page = (out / "index.html").read_text()
    for k, name in enumerate(GOOD):
        side = json.loads((out / f"{name}.json").read_text())
        assert side["prediction"]["class"] == model.classes[pred[k]]
        assert side["explained"] == [model.classes[pred[k]]]
        for method, want in expected.items():
            raw = np.load(out / f"{name}.{method}.npy")
            assert raw.dtype == np.float32 and raw.shape == want.shape[1:]
            np.testing.assert_allclose(raw, np.asarray(want[k]), rtol=1e-5, atol=1e-5)
            with Image.open(out / f"{name}.{method}.png") as im:
                im.load()
                assert im.size[0] == 128 + 2 * 6 and im.size[1] >= 128
        with Image.open(out / f"{name}.panel.png") as im:
            im.load()
            assert im.size == (4 * 2 * 128 + 5 * 6, 2 * 128 + 16 + 2 * 6)  # image | crop | occlusion | deconvnet
        assert f"{name}.panel.png" in page
    assert json.loads((out / "img2.jpg.json").read_text())["input"]["size"] == [200, 300]  # original, resized
    assert not [p for p in out.rglob(".*")]  # atomic writes leave no temporary files


@pytest.mark.slow
def test_rerun_skips_finished_images_and_force_or_changes_redo_them(folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    first = explain_paths([folder], out, window=W, stride=S, batch_size=4, progress=False, log=lambda s: None)
    assert len(first.done) == 6 and len(first.failed) == 2 and first.ignored == (str(folder / "notes.txt"),)

    calls = []
    real = maps.compute_maps
    monkeypatch.setattr(maps, "compute_maps", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = explain_paths([folder], out, window=W, stride=S, batch_size=4, progress=False, log=lambda s: None)
    assert again.done == () and len(again.skipped) == 6 and calls == []

    forced = explain_paths([folder], out, window=W, stride=S, batch_size=4, force=True, progress=False, log=lambda s: None)
    assert len(forced.done) == 6 and len(calls) == 2  # two batches of four (the second padded)

    other = explain_paths([folder], out, window=W, stride=8, batch_size=4, progress=False, log=lambda s: None)
    assert len(other.done) == 6  # another stride: another result

    # a changed input is redone; the others are not
    src = folder / "sub" / "img5.png"
    work = tmp_path / "copy"
    work.mkdir()
    for n in ("img0.png", "img3.png"):
        (work / n).write_bytes((folder / n).read_bytes())
    explain_paths([work], out / "w", window=W, stride=S, progress=False)
    (work / "img3.png").write_bytes(src.read_bytes())
    changed = explain_paths([work], out / "w", window=W, stride=S, progress=False)
    assert changed.done == (str(work / "img3.png"),) and changed.skipped == (str(work / "img0.png"),)


@pytest.mark.slow
def test_interrupted_run_leaves_no_partial_file_and_resumes(folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    real = worker.atomic_write

    def interrupting(path, writer):
        if Path(path).name == "img3.png.panel.png":  # half-way through the fourth image's files
            def half(tmp):
                writer(tmp)
                raise KeyboardInterrupt
            return real(path, half)
        return real(path, writer)

    monkeypatch.setattr(worker, "atomic_write", interrupting)
    rc = cli.main(["explain", str(folder), "--out", str(out), *ARGS])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert not [p for p in out.rglob(".*")]  # the temporary file was removed
    assert not (out / "img3.png.panel.png").exists() and not (out / "img3.png.json").exists()
    for n in ("img0.png", "img1.png", "img2.jpg"):  # finished before the interruption
        assert (out / f"{n}.json").exists()

    monkeypatch.setattr(worker, "atomic_write", real)
    resumed = explain_paths([folder], out, window=W, stride=S, batch_size=4, progress=False, log=lambda s: None)
    assert sorted(resumed.skipped) == sorted(str(folder / n) for n in ("img0.png", "img1.png", "img2.jpg"))
    assert sorted(resumed.done) == sorted(str(folder / n) for n in ("img3.png", "sub/img4.png", "sub/img5.png"))


@pytest.mark.slow
def test_sigint_to_a_real_process_leaves_complete_files_only(folder, tmp_path):
    """The command line in its own process (``python -m saliency_jax``), interrupted by SIGINT
    after its first image; the rerun (``python -m saliency_jax.app.cli``, the same parser) resumes."""
    src = tmp_path / "many"
    src.mkdir()
    for i in range(12):
        (src / f"im{i:02d}.png").write_bytes((folder / "img0.png").read_bytes())
    out = tmp_path / "out"
    args = ["explain", str(src), "--out", str(out), "--window", str(W), "--stride", str(S), "--batch-size", "1",
            "--no-progress"]
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "saliency_jax", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    while not list(out.glob("*.json")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err.decode()
    assert not [p for p in out.rglob(".*")]
    for p in out.glob("*.npy"):
        np.load(p)  # every file present is complete
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            im.load()
    finished = {p.name[: -len(".json")] for p in out.glob("*.json")}
    assert 1 <= len(finished) < 12
    rc = subprocess.run([sys.executable, "-m", "saliency_jax.app.cli", *args], capture_output=True, env=env,
                        timeout=600)
    assert rc.returncode == 0 and f"{12 - len(finished)} explained, {len(finished)} already done" in rc.stdout.decode()


@pytest.mark.slow  # runs the model (compiles every method)
def test_outputs_never_overwrite_inputs(folder, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for n in ("img0.png", "img3.png"):
        (work / n).write_bytes((folder / n).read_bytes())
    before = _digests(work)
    out = work / "heatmaps"  # output folder inside the input folder
    explain_paths([work], out, window=W, stride=S, progress=False)
    again = explain_paths([work], out, window=W, stride=S, progress=False)
    assert len(again.skipped) == 2 and again.done == () and again.ignored == ()  # outputs are not read as inputs
    assert {p: d for p, d in _digests(work).items() if out not in p.parents} == before

    # an input named like an output of another input
    clash = work / "img0.png.panel.png"
    clash.write_bytes((folder / "img3.png").read_bytes())
    digest = hashlib.sha256(clash.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="would overwrite an input"):
        explain_paths([work / "img0.png", clash], work, window=W, stride=S, progress=False)
    assert hashlib.sha256(clash.read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_all_classes_a_named_class_and_every_method(folder, model, tmp_path):
    paths = [folder / "img0.png", folder / "img3.png"]
    x = jnp.stack([jnp.asarray(sj.to_model_input(p)) for p in paths])
    r = explain_paths(paths, tmp_path / "all", methods="occlusion,guided,gradient", target="all", window=W,
                      stride=S, fill="mean", formats="npy", progress=False)
    assert len(r.done) == 2 and not list((tmp_path / "all").glob("*.png"))
    occ = sj.occlusion(model.apply_fn, model.params, x, window=W, stride=S, target="all", fill="mean", method="full")
    guided = sj.guided_backprop(model.apply_fn, model.params, x, target="all")
    grad = sj.gradient(model.apply_fn, model.params, x, target="all")
    for k, p in enumerate(paths):
        base = tmp_path / "all" / p.name
        np.testing.assert_allclose(np.load(f"{base}.occlusion.npy"), occ[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.load(f"{base}.guided.npy"), guided[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.load(f"{base}.gradient.npy"), grad[k], rtol=1e-5, atol=1e-6)

    r = explain_paths(paths, tmp_path / "cross", methods=["crop"], target="cross", window=W, stride=S,
                      colorbar=True, progress=False)
    crop = sj.occlusion(model.apply_fn, model.params, x, window=W, stride=S, target=1, mode="crop")
    for k, p in enumerate(paths):
        np.testing.assert_allclose(np.load(tmp_path / "cross" / f"{p.name}.crop.npy"), crop[k], rtol=1e-5, atol=1e-5)
        assert json.loads((tmp_path / "cross" / f"{p.name}.json").read_text())["explained"] == ["cross"]


def test_several_arguments_get_distinct_output_names(folder, tmp_path):
    a, b = tmp_path / "a" / "same", tmp_path / "b" / "same"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "x.png").write_bytes((folder / "img0.png").read_bytes())
    inputs, _ = find_images([a, b, folder / "img3.png"])
    assert [rel for _, rel in inputs] == ["same/x.png", "same-2/x.png", "img3.png"]
    inputs, _ = find_images([a / "x.png", b / "x.png", b])
    assert [rel for _, rel in inputs] == ["x.png", "x-2.png"]  # b/x.png is the same file as the second


@pytest.mark.slow  # runs the model (compiles every method)
def test_progress_line_counts_images(folder, tmp_path, capsys):
    explain_paths([folder / "img0.png", folder / "img3.png"], tmp_path / "p", methods="occlusion", window=W,
                  stride=S, batch_size=1, progress=True)
    err = capsys.readouterr().err
    assert "1/2 images" in err and "2/2 images" in err and "img/s" in err and "ETA" in err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": "occlusion,saliency"}, "`methods`"),
        ({"formats": "png,gif"}, "`formats`"),
        ({"fill": "white"}, "`fill`"),
        ({"batch_size": 0}, "`batch_size`"),
        ({"alpha": 1.5}, "`alpha`"),
        ({"cmap": "no-such-map"}, "`cmap`"),
        ({"window": 200}, "`window`"),
        ({"window": 16, "stride": 32}, "`stride`"),
        ({"target": "dog"}, "`target`"),
        ({"target": 2}, "`target`"),
        ({"engine": "spark"}, "`engine`"),
        ({"workers": 2}, "`workers`.*engine='ray' only"),
        ({"engine": "ray", "workers": 0}, "`workers`"),
        ({"engine": "ray", "gpus_per_worker": -1}, "`gpus_per_worker`"),
    ],
)
def test_bad_arguments_raise_before_any_image_is_read(kwargs, match, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load_resized", lambda *a: pytest.fail("an image was read"))
    with pytest.raises(ValueError, match=match):
        explain_paths([folder], tmp_path / "o", progress=False, **kwargs)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 200}, {"window": (0, 3)}, {"window": "wide"}, {"window": [3, True]}, {"window": 16, "stride": 32},
     {"window": (32, 16), "stride": (8, 0)}],
)
def test_bad_window_or_stride_gets_the_error_sj_occlusion_gives(kwargs, model, folder, tmp_path):
    x = np.zeros((1, *model.input_size[:2], 3), np.float32)  # the size explain resizes every file to
    with pytest.raises((TypeError, ValueError)) as expected:
        sj.occlusion(model.apply_fn, model.params, x, target=0, **kwargs)
    with pytest.raises(expected.type) as got:
        explain_paths([folder], tmp_path / "o", model=model, progress=False, **kwargs)
    assert str(got.value) == str(expected.value)
    assert not (tmp_path / "o").exists()


def test_a_second_run_into_a_busy_output_folder_is_refused_before_reading(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "load_resized", lambda *a: pytest.fail("an image was read"))
    monkeypatch.setattr(inputs, "sha256_file", lambda *a: pytest.fail("an image was hashed"))
    with folder_lock(tmp_path / "o"):  # what a running explain_paths holds
        with pytest.raises(OutputBusyError, match="another saliency-jax run is writing to"):
            explain_paths([folder], tmp_path / "o", progress=False)
        assert cli.main(["explain", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "another saliency-jax run" in capsys.readouterr().err
    assert not list((tmp_path / "o").iterdir())  # nothing written; the lock file goes with the lock


def test_missing_path_and_explicit_non_image(folder, tmp_path, capsys):
    assert cli.main(["explain", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    r = explain_paths([folder / "notes.txt"], tmp_path / "o", window=W, stride=S, progress=False, log=lambda s: None)
    assert r.done == () and r.failed[0][0] == str(folder / "notes.txt") and "cannot identify" in r.failed[0][1]


def test_images_beyond_the_decompression_bomb_limit_are_reported(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 128 // 4)  # a 128×128 file is now "too large"
    r = explain_paths([folder / "img0.png"], tmp_path / "o", window=W, stride=S, progress=False, log=lambda s: None)
    assert r.done == () and "too large" in r.failed[0][1]


def test_cli_window_and_stride_syntax(capsys):
    args = cli.build_parser().parse_args(["explain", "x", "--window", "48x32", "--stride", "8"])
    assert args.window == (48, 32) and args.stride == 8 and args.methods == "crop,occlusion,deconvnet"
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["explain", "x", "--window", "wide"])
    assert exit_info.value.code == 2 and "'wide' is not an int or HxW" in capsys.readouterr().err


# --------------------------------------------------------------------------- hostile folders and disks (issue 14)


def _small_folder(root: Path, source: Path, names=("a.png", "b.png", "c.png")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / n).write_bytes((source / "img0.png").read_bytes() if n != "b.png" else (source / "img3.png").read_bytes())
    return root


def _no_model_call(monkeypatch):
    monkeypatch.setattr(maps, "compute_maps", lambda *a, **k: pytest.fail("the model ran"))
    monkeypatch.setattr(data, "load_resized", lambda *a: pytest.fail("an image was read"))


def test_an_input_inside_the_output_folder_is_refused_in_every_form(folder, tmp_path, monkeypatch, capsys):
    """Issue 14, item 1: ``explain in/ --out in/`` reported "0 explained" and exit 0 for work not
    done, while ``explain in/a.png --out in/`` explained the file. Both (and an output folder
    above an input folder) are now refused with exit 2, before the model runs."""
    work = _small_folder(tmp_path / "in", folder)
    (work / "sub").mkdir()
    (work / "sub" / "d.png").write_bytes((folder / "img0.png").read_bytes())
    before = _digests(work)
    _no_model_call(monkeypatch)
    for paths in ([work], [work / "a.png"], [work / "sub"], [work / "sub" / "d.png", folder / "img3.png"]):
        with pytest.raises(ValueError, match=r"`out` .* holds the input"):
            explain_paths(paths, work, progress=False)
        assert cli.main(["explain", *map(str, paths), "--out", str(work), "--no-progress"]) == 2
        cap = capsys.readouterr()
        assert "holds the input" in cap.err and "explained" not in cap.out
    assert _digests(work) == before  # nothing written


def _refuse_mkstemp_in(monkeypatch, folder: Path, code: int):
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(code, os.strerror(code))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_an_unwritable_output_folder_is_refused_before_the_model_runs(folder, tmp_path, monkeypatch, capsys):
    """Issue 14, item 2: a read-only output folder surfaced as a raw OSError after the model had run."""
    import errno

    from saliency_jax._io import OutputNotWritableError

    out = tmp_path / "o"
    out.mkdir()
    _no_model_call(monkeypatch)
    _refuse_mkstemp_in(monkeypatch, out, errno.EROFS)
    with pytest.raises(OutputNotWritableError) as err:
        explain_paths([folder / "img0.png"], out, progress=False)
    assert err.value.errno == errno.EROFS and err.value.filename == str(out)
    assert cli.main(["explain", str(folder / "img0.png"), "--out", str(out), "--no-progress"]) == 2
    msg = capsys.readouterr().err
    assert f"output folder {str(out)!r} is not writable" in msg and "EROFS" in msg and "Traceback" not in msg
    assert not list(out.iterdir())  # the lock file went with the refusal


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_a_folder_without_write_permission_is_refused(folder, tmp_path, monkeypatch):
    from saliency_jax._io import OutputNotWritableError

    out = tmp_path / "ro"
    out.mkdir()
    _no_model_call(monkeypatch)
    out.chmod(0o555)
    try:
        with pytest.raises(OutputNotWritableError, match="not writable"):
            explain_paths([folder / "img0.png"], out, progress=False)
        with pytest.raises(OutputNotWritableError, match="not writable"):
            explain_paths([folder / "img0.png"], out / "new", progress=False)  # cannot even be created
    finally:
        out.chmod(0o755)


def _check_all_or_nothing(out: Path) -> set:
    """Every output file belongs to an image whose sidecar lists it; returns the finished names."""
    sidecars = {p: json.loads(p.read_text()) for p in out.rglob("*.json") if p.name != "summary.json"}
    listed = {p.parent / f for p, side in sidecars.items() for f in side["files"].values()}
    assert all(f.is_file() for f in listed)
    outputs = {p for p in out.rglob("*") if p.is_file() and p.suffix in (".npy", ".png")}
    assert outputs == listed, f"outputs without a sidecar: {sorted(map(str, outputs - listed))}"
    assert not [p for p in out.rglob(".*") if p.name != ".saliency-jax.lock"]  # no temporary files
    return {side["input"]["name"] for side in sidecars.values()}


@pytest.mark.slow  # runs the model once per image
def test_a_write_error_mid_run_stops_it_names_the_file_and_keeps_finished_images(folder, tmp_path, monkeypatch,
                                                                                  capsys):
    """Issue 14, item 2: a full disk mid-run gave a raw OSError and left .npy files without a
    sidecar. Now: OutputWriteError naming the file and errno, exit 3 (not 1), the image's partial
    outputs removed, the images before it complete, the images after it not started."""
    import errno

    from saliency_jax._io import OutputWriteError

    work = _small_folder(tmp_path / "in", folder)
    out = tmp_path / "out"
    real = worker.atomic_write

    def full_disk(path, writer):
        if Path(path).name == "b.png.panel.png":
            def short(tmp):
                writer(tmp)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(path, short)
        return real(path, writer)

    monkeypatch.setattr(worker, "atomic_write", full_disk)
    args = dict(methods="occlusion", window=64, stride=64, batch_size=1, progress=False)
    with pytest.raises(OutputWriteError) as err:
        explain_paths([work], out, **args)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(out / "b.png.panel.png")
    assert isinstance(err.value, OSError)
    assert _check_all_or_nothing(out) == {"a.png"}  # b's npy and png removed, c never started

    rc = cli.main(["explain", str(work), "--out", str(out), "--methods", "occlusion", "--window", "64", "--stride",
                   "64", "--batch-size", "1", "--no-progress"])
    msg = capsys.readouterr().err
    assert rc == 3 and "b.png.panel.png" in msg and "ENOSPC" in msg and "No space left" in msg, msg
    assert "Traceback" not in msg
    monkeypatch.setattr(worker, "atomic_write", real)
    rerun = explain_paths([work], out, **args)  # goes on from where it stopped
    assert rerun.skipped == (str(work / "a.png"),) and len(rerun.done) == 2
    assert _check_all_or_nothing(out) == {"a.png", "b.png", "c.png"}


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 512 KiB tmpfs (root only; skipped where mount is not allowed)."""
    import subprocess

    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow  # runs the model once per image
def test_a_really_full_disk_stops_the_run_with_exit_3_and_no_orphan_files(folder, tmp_path, tiny_tmpfs, capsys):
    work = _small_folder(tmp_path / "in", folder, names=[f"{k}.png" for k in "abcdefgh"])
    rc = cli.main(["explain", str(work), "--out", str(tiny_tmpfs), "--methods", "occlusion", "--window",
                   "64", "--stride", "64", "--batch-size", "1", "--no-progress"])
    msg = capsys.readouterr().err
    assert rc == 3 and "cannot write" in msg and str(tiny_tmpfs) in msg, msg
    finished = _check_all_or_nothing(tiny_tmpfs)
    assert 1 <= len(finished) < 8
    for name in finished:
        np.load(tiny_tmpfs / f"{name}.occlusion.npy")


@pytest.mark.slow  # runs the model
def test_summary_records_every_input_and_npy_only_renders_nothing(folder, tmp_path, monkeypatch):
    """Issue 11 (run summary) and issue 13 item 5 (``formats="npy"`` renders no PNG; each input
    hashed once per run)."""
    from saliency_jax.app import panels

    work = _small_folder(tmp_path / "in", folder, names=["a.png", "b.png"])
    (work / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    monkeypatch.setattr(panels, "render_image", lambda *a, **k: pytest.fail("rendered a PNG"))
    hashed = []
    real_hash = inputs.sha256_file
    monkeypatch.setattr(inputs, "sha256_file", lambda p: hashed.append(Path(p).name) or real_hash(p))
    args = dict(methods="occlusion", window=64, stride=64, formats="npy", progress=False, log=lambda s: None)
    first = explain_paths([work], out, **args)
    assert sorted(hashed) == ["a.png", "b.png", "bad.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "local" and summary["counts"] == {"inputs": 3, "done": 2, "skipped": 0, "failed": 1,
                                                                  "ignored": 0}
    side_a = json.loads((out / "a.png.json").read_text())
    assert summary["settings_key"] == side_a["settings_key"]
    by_name = {e["name"]: e for e in summary["inputs"]}
    assert [e["name"] for e in summary["inputs"]] == ["a.png", "b.png", "bad.png"]
    assert by_name["a.png"] == {"path": str(work / "a.png"), "name": "a.png", "status": "done", "reason": None,
                                "sidecar": "a.png.json"}
    assert by_name["bad.png"]["status"] == "failed" and by_name["bad.png"]["sidecar"] is None
    assert by_name["bad.png"]["reason"] == dict(first.failed)[str(work / "bad.png")]
    assert not list(out.glob("*.png")) and not (out / "index.html").exists()

    hashed.clear()
    explain_paths([work], out, **args)
    assert sorted(hashed) == ["a.png", "b.png", "bad.png"]  # once each, also when checking "done"
    statuses = [e["status"] for e in json.loads((out / "summary.json").read_text())["inputs"]]
    assert statuses == ["skipped", "skipped", "failed"]
