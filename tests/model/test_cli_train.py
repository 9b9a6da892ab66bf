"""`saliency-jax train` and `saliency-jax evaluate`: the thin CLI over the library."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

from saliency_jax.model import checkpoint as ck
from saliency_jax.model import data
from saliency_jax.app.cli import build_parser, main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    argv = ["train", "--config", "smoke", "--workdir", str(root / "run"), "--out", str(root / "model"),
            "--no-progress", "--test-size", "12"]
    assert main(argv) == 0
    return root, argv


@pytest.mark.slow
def test_train_writes_a_complete_checkpoint(trained):
    root, argv = trained
    path = root / "model"
    card = ck.read_card(path)
    assert card["training"]["command"] == "saliency-jax " + " ".join(argv)
    assert card["training"]["config"]["epochs"] == 1 and card["data"]["source"] == "generated"
    assert card["classes"] == ["ring", "cross"]
    # metrics per epoch travel with the checkpoint
    lines = (path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    # the card's test metrics are those of the loaded model on the held-out split
    model = ck.load(path)
    held = data.generate(12, split="test", seed=0)
    logits = np.asarray(jax.jit(model.apply_fn)(model.params, data.preprocess(held.images)))
    correct = int((logits.argmax(1) == held.labels).sum())
    assert card["metrics"]["test"]["correct"] == correct == card["metrics"]["heldout_check"]["correct"]
    assert card["metrics"]["test"]["n"] == 12
    cm = np.zeros((2, 2), int)
    for t, p in zip(held.labels, logits.argmax(1)):
        cm[t, p] += 1
    assert card["metrics"]["test"]["confusion_matrix"] == cm.tolist()
    for name in ("roc.png", "pr.png", "confusion.png", "metrics.json"):
        assert (path / "evaluation" / name).is_file()


@pytest.mark.slow
def test_evaluate_writes_plots_and_json(trained, tmp_path, capsys):
    root, _ = trained
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(root / "model"), "--out", str(out), "--n", "10", "--start", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model = ck.load(root / "model")
    held = data.generate(10, split="test", seed=0, start=3)
    logits = np.asarray(model.apply_fn(model.params, data.preprocess(held.images)))
    assert metrics["n"] == 10 and metrics["correct"] == int((logits.argmax(1) == held.labels).sum())
    assert metrics["evaluated_on"]["start"] == 3
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["average_precision"] <= 1.0
    for name in ("roc.png", "pr.png", "confusion.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_train_and_evaluate_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("ring", "cross"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            mode = ("RGB", "L", "RGBA")[i % 3]
            arr = rng.integers(0, 256, (30 + 7 * i, 50, 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "cross" / "bad.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="bad.jpg"):
        code = main(["train", "--config", "smoke", "--data", str(tmp_path / "imgs"), "--workdir", str(tmp_path / "run"),
                     "--no-progress"])
    assert code == 0
    card = ck.read_card(tmp_path / "run" / "model")
    assert card["data"]["source"] == "image-folder"
    assert card["classes"] == ["cross", "ring"]  # subfolders in sorted order
    assert card["data"]["skipped"][0][0].endswith("bad.jpg")
    assert card["metrics"]["test"]["n"] == card["data"]["val"]["n"] == 2  # round(6 * 0.2) = 1 per class
    # evaluating on a folder with other classes is refused with a clear message
    (tmp_path / "other" / "x").mkdir(parents=True)
    (tmp_path / "other" / "y").mkdir(parents=True)
    for c in ("x", "y"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "other" / c / "a.png")
    code = main(["evaluate", "--checkpoint", str(tmp_path / "run" / "model"), "--data", str(tmp_path / "other"),
                 "--out", str(tmp_path / "ev")])
    assert code == 2


def test_bad_input_is_reported_not_raised(tmp_path, capsys):
    assert main(["train", "--config", "smoke", "--epochs", "0", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "`epochs` (=0)" in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "e")]) == 2
    assert "nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--config", "huge"])


def test_parser_has_one_function_per_subcommand():
    parser = build_parser()
    train_args = parser.parse_args(["train"])
    eval_args = parser.parse_args(["evaluate"])
    assert train_args.func.__module__.endswith(".train") and eval_args.func.__module__.endswith(".evaluate")
    assert eval_args.checkpoint is None and eval_args.n == 2000
