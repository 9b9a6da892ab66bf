"""A user's image folder as a dataset: ``root/<class>/<image>``, read, fitted and split.

:func:`load_image_folder` reads a folder of any image sizes and modes through
:func:`saliency_jax.model.image_input.load_resized` (the one loader: decode to RGB, then fit to
the input size as the model's preprocessing says) and splits it into train and validation
deterministically.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name, colour in (("dark", 20), ("bright", 230)):
    ...     (root / name).mkdir()
    ...     for k in range(3):
    ...         Image.new("L", (40, 30), colour + k).save(root / name / f"{k}.png")
    >>> d = load_image_folder(root, input_size=(16, 16), val_fraction=0.34)
    >>> d.classes, d.train_images.shape, d.val_labels.tolist()
    (('bright', 'dark'), (4, 16, 16, 3), [0, 1])
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from saliency_jax import _validate
from saliency_jax.model.image_input import IMAGE_EXTENSIONS, as_preprocessing, load_resized

__all__ = ["ImageFolderData", "load_image_folder"]


@dataclasses.dataclass(frozen=True)
class ImageFolderData:
    """A user's image folder, read and split.

    Attributes:
        train_images: ``(N_train, H, W, 3) uint8``; ``train_labels`` ``(N_train,) int32``.
        val_images: ``(N_val, H, W, 3) uint8``; ``val_labels`` ``(N_val,) int32``.
        classes: class names (the subfolder names, sorted).
        train_paths / val_paths: the files, in array order.
        skipped: ``(path, reason)`` for every file that could not be read.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    classes: tuple[str, ...]
    train_paths: tuple[str, ...]
    val_paths: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def _split_indices(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0.0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _class_files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    """The image files under one class folder (recursively), sorted; hidden files left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


def _read_class(files: list[Path], size: tuple[int, int], policy, skipped: list) -> tuple[list[np.ndarray], list[str]]:
    """Read and resize ``files``; each unreadable one is warned about and appended to ``skipped``."""
    images, paths = [], []
    for p in files:
        try:
            images.append(load_resized(p, size, policy)[0])
            paths.append(str(p))
        except (ValueError, OSError) as err:
            warnings.warn(f"skipping unreadable image {str(p)!r}: {err}", stacklevel=3)
            skipped.append((str(p), str(err)))
    return images, paths


def _stack(images: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    return np.stack(images).astype(np.uint8) if images else np.zeros((0, *size, 3), np.uint8)


def load_image_folder(
    root: str | os.PathLike,
    *,
    input_size: Sequence[int] = (128, 128),
    val_fraction: float = 0.2,
    seed: int = 0,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    preprocessing=None,
) -> ImageFolderData:
    """Read ``root/<class>/<file>`` images and split them into train and validation.

    Classes are the subfolders of ``root`` in sorted order. Files are sorted by name within a
    class and a fraction ``val_fraction`` of each class (at least one image when the class
    has two or more) goes to validation, chosen by a permutation seeded by ``(seed, class)``:
    the same folder and seed always give the same split. Every image is read by
    :func:`load_resized` and stored as uint8. Files that cannot be read are reported with a
    warning naming the path and skipped.

    Args:
        root: the folder.
        input_size: ``(height, width)`` of the model input.
        val_fraction: in ``[0, 1)``.
        seed: the split seed.
        extensions: file suffixes read (case-insensitive); other files are ignored.
        preprocessing: how images are fitted to ``input_size`` (a model card's record or a
            :class:`~saliency_jax.model.image_input.Preprocessing`; ``None``: the shipped
            models', a bilinear stretch).

    Returns:
        An :class:`ImageFolderData`.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: fewer than two class folders, a class without readable images, or bad
            arguments.
    """
    size = _validate.pair("input_size", input_size)
    policy = as_preprocessing(preprocessing)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"`val_fraction` (={val_fraction!r}) must be a number in [0, 1)")
    _validate.integer("seed", seed, lo=0)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`root` (={str(root)!r}) is not a directory")
    exts = tuple(e.lower() for e in extensions)
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(classes) < 2:
        raise ValueError(
            f"`root` (={str(root)!r}) must hold one subfolder per class, at least two; found {list(classes)}"
        )
    parts = {"train": ([], [], []), "val": ([], [], [])}  # images, labels, paths
    skipped: list[tuple[str, str]] = []
    for label, name in enumerate(classes):
        images, paths = _read_class(_class_files(root / name, exts), size, policy, skipped)
        if not images:
            raise ValueError(f"class folder {str(root / name)!r} holds no readable image with suffix in {exts}")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), label]))
        tr, va = _split_indices(len(images), float(val_fraction), rng)
        for part, idx in (("train", tr), ("val", va)):
            parts[part][0].extend(images[i] for i in idx)
            parts[part][1].extend([label] * len(idx))
            parts[part][2].extend(paths[i] for i in idx)
    return ImageFolderData(
        train_images=_stack(parts["train"][0], size),
        train_labels=np.asarray(parts["train"][1], np.int32),
        val_images=_stack(parts["val"][0], size),
        val_labels=np.asarray(parts["val"][1], np.int32),
        classes=classes,
        train_paths=tuple(parts["train"][2]),
        val_paths=tuple(parts["val"][2]),
        skipped=tuple(skipped),
    )
