"""export: the model card of a run and train_and_export on data without a held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saliency_jax.model import checkpoint as ck
from saliency_jax.model import data
from saliency_jax.model import export
from saliency_jax.model import train as tr
from saliency_jax.model.architectures import get_model, model_config


def test_make_card_records_the_run():
    config = tr.get_config("smoke", fc=(8,), width=0.25, augment=False)
    module = get_model("small", num_classes=3, fc=(8,), width=0.25)
    history = ({"epoch": 1, "val_accuracy": 0.5},)
    run = tr.TrainResult(module, None, config, ("a", "b", "c"), {"source": "image-folder"}, history, Path("w"), 12.34)
    card = export.make_card(run, command="saliency-jax train --data d")
    assert card["name"] == "small-image-folder"
    assert card["architecture"] == model_config("small", num_classes=3, fc=(8,), width=0.25)
    assert card["classes"] == ["a", "b", "c"] and card["input_size"] == [128, 128, 3]
    assert card["preprocessing"] == data.PREPROCESSING and card["preprocessing"] is not data.PREPROCESSING
    t = card["training"]
    assert t["command"] == "saliency-jax train --data d" and t["augmentation"] == "none"
    assert t["config"] == config.to_dict() and t["epochs_completed"] == 1 and t["wall_seconds_last_call"] == 12.3
    assert card["metrics"]["final_val"] == history[0]


@pytest.mark.slow
def test_an_image_folder_without_validation_images_exports_without_metrics(tmp_path):
    for cls in ("x", "y"):  # one image per class: no validation split
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(np.full((20, 20, 3), 40 if cls == "x" else 200, np.uint8)).save(tmp_path / "imgs" / cls / "0.png")
    config = tr.get_config("smoke", fc=(8,), width=0.25, batch_size=2)
    path, metrics = export.train_and_export(config, tmp_path / "run", tmp_path / "model",
                                            data_dir=tmp_path / "imgs", progress=False)
    assert metrics is None
    card = ck.read_card(path)
    assert "test" not in card["metrics"] and "heldout_check" not in card["metrics"]
    assert not (path / "evaluation").exists()
    assert card["data"]["val"]["n"] == 0 and ck.load(path).classes == ("x", "y")


def test_test_size_is_checked_before_training(tmp_path):
    with pytest.raises(ValueError, match="`test_size` \\(=0\\)"):
        export.train_and_export(tr.get_config("smoke"), tmp_path / "run", tmp_path / "m", test_size=0)
    assert not (tmp_path / "run").exists()
