"""The photos bundled with installed packages, read from their own files."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from saliency_jax.model import photos


def test_every_installed_photo_is_read_as_rgb_uint8_from_its_package_file():
    found = photos.sample_photos()
    paths = photos.photo_paths()
    assert list(found) == list(paths) and "grace_hopper" in found  # matplotlib is a dependency
    for name, image in found.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        with Image.open(paths[name]) as im:  # an independent read of the same file
            np.testing.assert_array_equal(image, np.asarray(im.convert("RGB")), err_msg=name)
    assert found["grace_hopper"].shape == (600, 512, 3)


def test_scikit_image_photos_when_installed():
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image is not installed")
    found = photos.sample_photos()
    assert {"chelsea", "coffee", "astronaut", "rocket", "motorcycle_left"} <= set(found)
    assert found["chelsea"].shape == (300, 451, 3) and found["coffee"].shape == (400, 600, 3)


def test_a_missing_package_is_left_out(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)
    assert set(photos.sample_photos()) == {"grace_hopper"}
