"""Real photographs that ship inside installed packages, read from their files (no download).

scikit-image bundles a few colour photographs in ``skimage/data`` (``astronaut``, ``chelsea``,
``coffee``, ``rocket``, ``motorcycle_left``, ``motorcycle_right``) and matplotlib bundles
``sample_data/grace_hopper.jpg``. :func:`sample_photos` reads whichever of them are installed,
straight from the package folders (found with ``importlib.util.find_spec``, so neither package is
imported); nothing is copied into this repository.

Example:
    >>> photos = sample_photos()
    >>> all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())
    True
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["PHOTOS", "photo_paths", "sample_photos"]

#: name -> (package, file inside the package), in the order :func:`sample_photos` returns them.
PHOTOS: dict[str, tuple[str, str]] = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def _package_dirs(package: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def photo_paths() -> dict[str, Path]:
    """The files of the bundled photos that are installed, ``{name: path}`` (see :data:`PHOTOS`).

    Example:
        >>> set(photo_paths()) <= set(PHOTOS)
        True
    """
    out = {}
    for name, (package, rel) in PHOTOS.items():
        for folder in _package_dirs(package):
            if (folder / rel).is_file():
                out[name] = folder / rel
                break
    return out


def sample_photos() -> dict[str, np.ndarray]:
    """The photographs bundled with the installed packages, at their own sizes.

    Returns:
        ``{name: (H, W, 3) uint8 RGB}`` in the order of :data:`PHOTOS`, for those installed
        (scikit-image's ``chelsea`` 300×451, ``coffee`` 400×600, ``astronaut`` 512×512,
        ``rocket`` 427×640, ``motorcycle_left`` / ``motorcycle_right`` 500×741; matplotlib's
        ``grace_hopper`` 600×512); empty when neither package is installed.

    Example:
        >>> photos = sample_photos()
        >>> "grace_hopper" in photos        # matplotlib is a dependency
        True
    """
    out = {}
    for name, path in photo_paths().items():
        with Image.open(path) as im:  # plain RGB PNG/JPEG files; no import of the model package's loaders
            out[name] = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    return out
