"""The preprocessing record (what a model card's ``preprocessing`` states), against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from saliency_jax.model import image_input
from saliency_jax.model.image_input import DEFAULT_PREPROCESSING, Preprocessing


def test_the_shipped_record_round_trips_and_states_minus_one_one():
    record = image_input.PREPROCESSING
    assert record["range"] == [-1.0, 1.0] and record["scale"] == 255.0
    assert Preprocessing.from_record(record) == DEFAULT_PREPROCESSING
    pixels = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3)
    np.testing.assert_array_equal(DEFAULT_PREPROCESSING(pixels),  # float32, as the shipped models were trained
                                  (pixels.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5))


def test_per_channel_mean_and_std_against_float64():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    p = Preprocessing(mean=mean, std=std)
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(p(images), (images / 255.0 - np.array(mean)) / np.array(std), rtol=1e-6, atol=1e-5)
    lo, hi = p.range
    np.testing.assert_allclose(lo, -np.array(mean) / np.array(std), rtol=1e-6)
    assert "range" not in p.record()  # not one range for every channel
    assert Preprocessing.from_record(p.record()) == p


def test_resize_shorter_side_and_centre_crop_as_torchvision_does():
    # Resize(20) then CenterCrop(16) of a 50 x 30 (w x h) image: the shorter side becomes 20,
    # the longer int(20 * 50 / 30) = 33; the crop starts at round((33 - 16) / 2) and round((20 - 16) / 2).
    arr = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    p = Preprocessing(shorter_side=20, crop="centre")
    got = p.fit(Image.fromarray(arr), (16, 16))
    resized = np.asarray(Image.fromarray(arr).resize((33, 20), Image.BILINEAR))
    np.testing.assert_array_equal(got, resized[2:18, 8:24])
    tall = np.asarray(p.fit(Image.fromarray(arr.transpose(1, 0, 2).copy()), (16, 16)))
    assert tall.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="shorter_side"):
        p.fit(Image.fromarray(arr), (24, 24))


def test_records_are_checked():
    with pytest.raises(ValueError, match="shorter_side.*crop"):
        Preprocessing(shorter_side=256)
    with pytest.raises(ValueError, match="std"):
        Preprocessing(std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="mean"):
        Preprocessing(mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="filter"):
        Preprocessing.from_record({"resize": {"filter": "cubic-ish"}})
    with pytest.raises(ValueError, match="range"):
        Preprocessing.from_record({"mean": [0.0] * 3, "std": [1.0] * 3, "range": [-1, 1]})
    with pytest.raises(ValueError, match="resize.*unknown"):
        Preprocessing.from_record({"resize": {"size": 256}})
    with pytest.raises(TypeError, match="preprocessing"):
        image_input.as_preprocessing("imagenet")


def test_a_record_of_prose_reads_as_the_policy_of_its_time():
    legacy = {"resize": "whole image to the input size, PIL bilinear, aspect ratio not kept",
              "scale": "(uint8 / 255 - mean) / std, float32: [0, 255] -> [-1, 1]", "mean": [0.5] * 3, "std": [0.5] * 3}
    assert Preprocessing.from_record(legacy) == DEFAULT_PREPROCESSING
    assert Preprocessing.from_record({}) == DEFAULT_PREPROCESSING


def test_to_model_input_and_load_resized_follow_the_record(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    p = Preprocessing(shorter_side=20, crop="centre", mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    fitted = np.asarray(Image.fromarray(arr).resize((33, 20), Image.BILINEAR))[2:18, 8:24]
    image, original = image_input.load_resized(tmp_path / "x.png", (16, 16), p.record())
    np.testing.assert_array_equal(image, fitted)
    assert original == (30, 50)
    ref = (fitted / 255.0 - np.array(p.mean)) / np.array(p.std)
    np.testing.assert_allclose(image_input.to_model_input(tmp_path / "x.png", (16, 16), p), ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(image_input.to_model_input(arr, (16, 16), p), ref, rtol=1e-6, atol=1e-5)


def test_to_unit_is_the_display_scale():
    np.testing.assert_array_equal(image_input.to_unit(np.array([0, 255, 51], np.uint8)),
                                  np.array([0, 255, 51], np.float32) / np.float32(255))
    with pytest.raises(TypeError, match="uint8"):
        image_input.to_unit(np.zeros(3, np.float32))
