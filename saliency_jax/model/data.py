"""Data for the shipped model: a generated dataset with ground-truth masks, and image folders.

The generated task ("rings and crosses")
----------------------------------------
Every image is ``128 × 128 × 3`` and holds exactly one *target* object; the target decides the
class:

* class 0, ``"ring"``: the target is a ring (an annulus);
* class 1, ``"cross"``: the target is a plus-shaped cross.

Around it lie 2–3 *distractors* that are never targets but share shape or colour with them: a
filled disc (the ring's outline), a hollow square (the ring's hollowness), a single bar (one
arm of the cross) and a triangle. Every object has a random colour from the same
distribution, and half of the images give one distractor exactly the target's colour, so no
colour statistic tells the classes apart. Targets are 32–52 px across, distractors 20–44 px;
positions are random; distractors take any rotation, targets a rotation within ±15°.
Backgrounds mix gradients, gratings, checkerboards and blotchy low-frequency noise; a random
illumination (gain, ramp, colour cast) and pixel noise are applied last. The model has to
find the ring or the cross among look-alikes.

``clutter`` (``1.0`` by default: the task above) scales texture contrast, the number of
distractors, illumination and noise down to ``0.0``: the target alone on a flat background.
Training uses ``clutter="mixed"`` (a level drawn per image) with an easy-to-hard curriculum;
validation and test images always have full clutter. (Harder variants were tried first:
fully rotated targets and "C", "T" and "L"-shaped hard negatives kept the un-normalised
convnet at chance for the whole CPU budget.)

The target is drawn on top and never overlaps a distractor, so ``mask`` (``(H, W) bool``) is
exactly the set of pixels the target painted: the ground truth for scoring a heatmap.

Each image is a pure function of ``(seed, split, index)`` (its own ``numpy`` generator), so a
dataset is deterministic, its images do not depend on how many are generated, and the
``"train"``, ``"val"`` and ``"test"`` splits are disjoint streams.

Spurious cue
------------
With ``spurious_cue=p > 0`` a small mark (a 7 × 7 red square with a white centre, placed away
from the target) is stamped on images in one of two ways, chosen by ``cue_split``:

* ``"biased"``: on a fraction ``p`` of the ``cue_class`` images and on no other image, so the
  mark co-occurs with the class. This is how the ``"train"`` split is made, and a ``"test"``
  split made this way has the training bias (as the original write-up's test set had):
  precision, recall and ROC curves measured on it cannot see the shortcut.
* ``"clean"``: on half of the images, independently of the label (whatever ``p > 0``). A
  model that learnt the mark as evidence (as the write-up's model learnt red lips) is caught
  here.

By default (``cue_split=None``) the ``"train"`` split is biased and ``"val"`` and ``"test"``
are clean. ``cue_mask`` records the mark's pixels. The mark has its own random stream: the rest
of an image is the same with or without it, and an image carrying the mark in both variants
carries it at the same place (one uniform draw ``u`` decides both: biased ``label ==
cue_class and u < p``, clean ``u < 0.5``).

Image folders
-------------
:func:`load_image_folder` reads ``root/<class>/<image>`` for a user's own data, in any size or
mode, and splits it into train and validation deterministically. Every file the package reads
for a model (training folders, :func:`to_model_input`, the folder job) goes through
:func:`load_resized`: decode to RGB, then the one bilinear resize to the input size.

Example:
    >>> from saliency_jax.model import data
    >>> d = data.generate(4, split="test", seed=0)
    >>> d.images.shape, d.images.dtype, d.labels.tolist(), d.masks.shape
    ((4, 128, 128, 3), dtype('uint8'), [0, 1, 0, 1], (4, 128, 128))
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from saliency_jax import _validate

__all__ = [
    "CLASSES",
    "TARGET_KINDS",
    "DISTRACTOR_KINDS",
    "SPLITS",
    "CUE_SPLITS",
    "PREPROCESSING",
    "MEAN",
    "STD",
    "ObjectSpec",
    "Example",
    "GeneratedData",
    "ImageFolderData",
    "shape_mask",
    "generate_example",
    "generate",
    "preprocess",
    "load_image",
    "load_resized",
    "to_model_input",
    "check_clutter",
    "resolve_cue_split",
    "load_image_folder",
    "IMAGE_EXTENSIONS",
]

CLASSES: tuple[str, ...] = ("ring", "cross")
TARGET_KINDS: tuple[str, ...] = ("ring", "cross")  # TARGET_KINDS[label] is the deciding object
DISTRACTOR_KINDS: tuple[str, ...] = ("disc", "bar", "square", "triangle")
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
#: How the spurious mark is placed (see the module docstring): co-occurring with ``cue_class``
#: as in training, or independent of the label.
CUE_SPLITS: tuple[str, ...] = ("biased", "clean")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: How an image becomes model input, as recorded in model cards. :func:`to_model_input`
#: implements it; :func:`preprocess` is its last step for arrays already at the input size.
PREPROCESSING: dict = {
    "channels": "RGB (grayscale replicated; alpha composited over black; 16-bit scaled to 8-bit; EXIF orientation applied)",
    "resize": "whole image to the input size, PIL bilinear, aspect ratio not kept",
    "scale": "(uint8 / 255 - mean) / std, float32: [0, 255] -> [-1, 1]",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "dtype": "float32",
    "layout": "NHWC",
}
MEAN: float = 0.5
STD: float = 0.5

_HALF = 0.28  # half width of the bars of crosses and bars (object radius = 1)
_RING_INNER = 0.6  # inner radius of rings
#: Targets are rotated uniformly within ±15° (distractors by any angle): the shipped convnet,
#: trained on a 2-core CPU for 20 minutes, did not get past chance with fully rotated targets.
_TARGET_ROTATION = math.radians(15.0)


# --------------------------------------------------------------------------- shapes


def _local_coords(size: int, center: tuple[float, float], radius: float, angle: float):
    """Pixel centres in the object's frame: rotated by ``-angle`` and divided by ``radius``."""
    coords = np.arange(size, dtype=np.float64) + 0.5
    dy = coords[:, None] - center[0]
    dx = coords[None, :] - center[1]
    c, s = math.cos(angle), math.sin(angle)
    u = (c * dx + s * dy) / radius
    v = (-s * dx + c * dy) / radius
    return u, v


def _inside(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    r = np.hypot(u, v)
    if kind == "ring":
        return (r >= _RING_INNER) & (r <= 1.0)
    if kind == "cross":
        return ((au <= _HALF) & (av <= 1.0)) | ((av <= _HALF) & (au <= 1.0))
    if kind == "disc":
        return r <= 1.0
    if kind == "bar":
        return (au <= _HALF) & (av <= 1.0)
    if kind == "square":  # hollow square
        m = np.maximum(au, av)
        return (m >= 0.45) & (m <= 0.75)
    if kind == "triangle":  # equilateral, circumradius 1, apex at -v
        k = math.sqrt(3.0)
        return (v <= 0.5) & (k * u - v <= 1.0) & (-k * u - v <= 1.0)
    raise ValueError(f"`kind` (={kind!r}) must be one of {TARGET_KINDS + DISTRACTOR_KINDS}")


def shape_mask(kind: str, size: int, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """The pixels of a ``size × size`` image covered by one object.

    A pixel belongs to the object when its centre ``(row + 0.5, col + 0.5)``, rotated by
    ``-angle`` about ``center`` and divided by ``radius``, lies inside the unit shape ``kind``.

    Args:
        kind: one of :data:`TARGET_KINDS` or :data:`DISTRACTOR_KINDS`.
        size: image height and width in pixels.
        center: ``(row, col)`` of the object's centre, in pixels (float).
        radius: the object's radius in pixels (half its extent across).
        angle: rotation in radians.

    Returns:
        ``(size, size) bool``.

    Example:
        >>> int(shape_mask("disc", 8, (4.0, 4.0), 1.0, 0.0).sum())
        4
    """
    return _inside(kind, *_local_coords(size, center, radius, angle))


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One drawn object: ``kind``, ``center`` ``(row, col)``, ``radius`` (px), ``angle`` (rad),
    ``color`` (RGB in [0, 1], before illumination)."""

    kind: str
    center: tuple[float, float]
    radius: float
    angle: float
    color: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Example:
    """One generated image.

    Attributes:
        image: ``(H, W, 3) uint8``.
        label: the class index (``CLASSES[label]``).
        mask: ``(H, W) bool``, the pixels of the deciding (target) object.
        cue_mask: ``(H, W) bool``, the pixels of the spurious mark (all False when absent).
        target: the target's :class:`ObjectSpec`.
        distractors: the distractors' specs, in drawing order.
        clutter: the clutter level it was drawn at (1.0 = the task).
    """

    image: np.ndarray
    label: int
    mask: np.ndarray
    cue_mask: np.ndarray
    target: ObjectSpec
    distractors: tuple[ObjectSpec, ...]
    clutter: float = 1.0


@dataclasses.dataclass(frozen=True)
class GeneratedData:
    """A generated split, as arrays.

    Attributes:
        images: ``(N, H, W, 3) uint8``.
        labels: ``(N,) int32`` class indices.
        masks: ``(N, H, W) bool``, the deciding object of each image.
        cue_masks: ``(N, H, W) bool``, the spurious mark (all False when absent).
        has_cue: ``(N,) bool``.
        classes: the class names.
        info: how the split was made (``seed``, ``split``, ``start``, ``spurious_cue`` …).
        clutter: ``(N,) float32``, each image's clutter level.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    cue_masks: np.ndarray
    has_cue: np.ndarray
    classes: tuple[str, ...]
    info: dict
    clutter: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------- rendering


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(0.3, 1.0)
    val = rng.uniform(0.35, 1.0)
    # HSV -> RGB (no colorsys, vectorised over the three channels)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _background(rng: np.random.Generator, size: int, clutter: float = 1.0) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) + 0.5
    y = np.broadcast_to(coords[:, None], (size, size))
    x = np.broadcast_to(coords[None, :], (size, size))

    def ramp() -> np.ndarray:
        a = rng.uniform(0.0, 2.0 * math.pi)
        t = (math.cos(a) * (x - size / 2) + math.sin(a) * (y - size / 2)) / size + 0.5
        return np.clip(t, 0.0, 1.0)

    def blend(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
        return c0[None, None, :] + (c1 - c0)[None, None, :] * t[:, :, None]

    c0, c1 = _random_color(rng), _random_color(rng)
    image = blend(ramp(), c0, c0 + clutter * (c1 - c0))
    for _ in range(rng.integers(1, 3)):
        kind = rng.integers(0, 3)
        if kind == 0:  # grating
            a = rng.uniform(0.0, math.pi)
            period = rng.uniform(6.0, 24.0)
            phase = rng.uniform(0.0, 2.0 * math.pi)
            t = 0.5 + 0.5 * np.sin(2.0 * math.pi * (math.cos(a) * x + math.sin(a) * y) / period + phase)
        elif kind == 1:  # rotated checkerboard
            a = rng.uniform(0.0, math.pi)
            cell = rng.uniform(6.0, 16.0)
            u = (math.cos(a) * x + math.sin(a) * y) / cell
            v = (-math.sin(a) * x + math.cos(a) * y) / cell
            t = ((np.floor(u) + np.floor(v)) % 2.0).astype(np.float64)
        else:  # blotchy low-frequency noise: a coarse random grid, bilinearly upsampled
            cells = int(rng.integers(3, 9))
            grid = rng.uniform(0.0, 1.0, size=(cells, cells))
            t = np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
            t = t.astype(np.float64)
        alpha = rng.uniform(0.15, 0.5) * clutter
        layer = blend(t, _random_color(rng), _random_color(rng))
        image = (1.0 - alpha) * image + alpha * layer
    return image


def _cue_pattern() -> np.ndarray:
    pattern = np.zeros((7, 7, 3))
    pattern[...] = (0.9, 0.05, 0.1)
    pattern[2:5, 2:5] = (1.0, 1.0, 1.0)
    return pattern


def _render(
    rng: np.random.Generator,
    cue_rng: np.random.Generator,
    label: int,
    size: int,
    with_cue: bool,
    draw_target: bool = True,
    clutter: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ObjectSpec, tuple[ObjectSpec, ...]]:
    """Float image ``(size, size, 3)`` in [0, 1] (before quantisation), mask, cue mask, specs."""
    scale = size / 128.0
    image = _background(rng, size, clutter)

    # The target: a random place that keeps it inside the image, a colour that stands out
    # from the background under it.
    t_radius = rng.uniform(16.0, 26.0) * scale
    margin = t_radius * 1.05 + 1.0
    t_center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    t_angle = rng.uniform(-1.0, 1.0) * _TARGET_ROTATION
    kind = TARGET_KINDS[label]
    mask = shape_mask(kind, size, t_center, t_radius, t_angle)
    under = image[mask].mean(axis=0)
    for _ in range(20):
        t_color = _random_color(rng)
        if np.linalg.norm(t_color - under) >= 0.3:
            break
    target = ObjectSpec(kind, t_center, t_radius, t_angle, tuple(float(c) for c in t_color))

    # Distractors: never overlapping the target (so the mask is exactly the target's pixels).
    distractors = []
    share_color = rng.uniform() < 0.5
    n_distractors = int(round(int(rng.integers(2, 4)) * clutter))
    for i in range(n_distractors):
        d_kind = DISTRACTOR_KINDS[int(rng.integers(len(DISTRACTOR_KINDS)))]
        d_radius = rng.uniform(10.0, 22.0) * scale
        d_angle = rng.uniform(0.0, 2.0 * math.pi)
        color = t_color if (share_color and i == 0) else _random_color(rng)
        d_margin = d_radius * 0.8
        for _ in range(30):
            c = (rng.uniform(d_margin, size - d_margin), rng.uniform(d_margin, size - d_margin))
            if math.hypot(c[0] - t_center[0], c[1] - t_center[1]) > 1.1 * (t_radius + d_radius) + 2.0:
                distractors.append(ObjectSpec(d_kind, c, d_radius, d_angle, tuple(float(v) for v in color)))
                break
    for d in distractors:
        m = shape_mask(d.kind, size, d.center, d.radius, d.angle)
        image[m] = d.color
    if draw_target:
        image[mask] = t_color

    # The spurious mark: its own generator, so the rest of the image is the same without it.
    cue_mask = np.zeros((size, size), bool)
    if with_cue:
        grown = _dilate(mask, 4)
        for _ in range(50):
            r, c = int(cue_rng.integers(0, size - 7 + 1)), int(cue_rng.integers(0, size - 7 + 1))
            if not grown[r : r + 7, c : c + 7].any():
                image[r : r + 7, c : c + 7] = _cue_pattern()
                cue_mask[r : r + 7, c : c + 7] = True
                break

    # Illumination (gain, a linear ramp, a colour cast), then pixel noise.
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    a = rng.uniform(0.0, 2.0 * math.pi)
    ramp = math.cos(a) * coords[None, :] + math.sin(a) * coords[:, None]
    gain = (1.0 + clutter * (rng.uniform(0.6, 1.3) - 1.0)) * (1.0 + clutter * rng.uniform(-0.6, 0.6) * ramp)
    cast = 1.0 + clutter * (rng.uniform(0.85, 1.15, size=3) - 1.0)
    image = image * gain[:, :, None] * cast[None, None, :]
    image = image + rng.normal(0.0, clutter * rng.uniform(0.0, 0.06), size=image.shape)
    return np.clip(image, 0.0, 1.0), mask, cue_mask, target, tuple(distractors)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] |= mask[
                max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
    return out


def _check_split(split: str) -> None:
    _validate.choice("split", split, tuple(SPLITS))


def _check_int(name: str, value, minimum: int) -> None:
    _validate.integer(name, value, lo=minimum)


def _check_cue(spurious_cue, cue_class) -> None:
    if isinstance(spurious_cue, bool) or not isinstance(spurious_cue, (int, float)) or not 0.0 <= spurious_cue <= 1.0:
        raise ValueError(f"`spurious_cue` (={spurious_cue!r}) must be a number in [0, 1]")
    if cue_class not in range(len(CLASSES)) or isinstance(cue_class, bool):
        raise ValueError(f"`cue_class` (={cue_class!r}) must be a class index in [0, {len(CLASSES) - 1}]")


def _example_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    root = np.random.SeedSequence([int(seed), SPLITS[split], int(index)])
    scene, cue = root.spawn(2)
    return np.random.default_rng(scene), np.random.default_rng(cue)


def _clutter_level(clutter, seed: int, split: str, index: int) -> float:
    if clutter == "mixed":  # its own stream: the scene's random draws do not depend on it
        root = np.random.SeedSequence([int(seed), SPLITS[split], int(index), 1])
        return float(np.random.default_rng(root).uniform(0.0, 1.0))
    return float(clutter)


def check_clutter(clutter) -> None:
    """Raise ValueError unless ``clutter`` is ``"mixed"`` or a number in [0, 1] (not a bool).

    Example:
        >>> check_clutter("mixed"); check_clutter(0.5)
    """
    if clutter == "mixed":
        return
    if isinstance(clutter, bool) or not isinstance(clutter, (int, float)) or not 0.0 <= clutter <= 1.0:
        raise ValueError(f"`clutter` (={clutter!r}) must be a number in [0, 1] or 'mixed'")


def _label_of(index: int) -> int:
    return int(index) % len(CLASSES)


def resolve_cue_split(split: str, cue_split: str | None = None) -> str:
    """How the mark is placed in ``split``: ``cue_split`` checked, or the split's default.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        cue_split: ``"biased"``, ``"clean"`` or ``None`` (``"biased"`` for ``"train"``,
            ``"clean"`` for ``"val"`` and ``"test"``).

    Returns:
        ``"biased"`` or ``"clean"``.

    Raises:
        ValueError: ``split`` or ``cue_split`` is not one of the accepted values.

    Example:
        >>> resolve_cue_split("train"), resolve_cue_split("test"), resolve_cue_split("test", "biased")
        ('biased', 'clean', 'biased')
    """
    _check_split(split)
    if cue_split is None:
        return "biased" if split == "train" else "clean"
    _validate.choice("cue_split", cue_split, CUE_SPLITS)
    return cue_split


def _has_cue(cue_rng: np.random.Generator, label: int, spurious_cue: float, cue_class: int, cue_split: str) -> bool:
    u = cue_rng.uniform()  # drawn always: the mark's position draws come after it
    if spurious_cue <= 0.0:
        return False
    if cue_split == "biased":
        return label == cue_class and u < spurious_cue
    return u < 0.5


def generate_example(
    index: int,
    *,
    split: str = "train",
    seed: int = 0,
    size: int = 128,
    spurious_cue: float = 0.0,
    cue_class: int = 1,
    draw_target: bool = True,
    clutter: float | str = 1.0,
    cue_split: str | None = None,
) -> Example:
    """Generate image ``index`` of a split: a pure function of ``(seed, split, index)``.

    Labels alternate with the index (``label = index % 2``), so any run of consecutive
    indices is balanced.

    Args:
        index: the image's index in its split (``>= 0``).
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams).
        seed: the dataset seed.
        size: image height and width (``>= 32``); objects scale with it.
        spurious_cue: fraction ``p`` of ``cue_class`` images that carry the spurious mark in a
            biased split (``0`` turns the mark off everywhere; see the module docstring).
        cue_class: the class the mark co-occurs with in a biased split.
        draw_target: ``False`` renders the same scene without its target (for tests and for
            "object removed" baselines); the mask is still returned.
        clutter: ``1.0`` (the task), down to ``0.0`` (the target alone on a flat background,
            no distractors, no illumination or noise); in between, texture contrast, the
            number of distractors, illumination and noise scale with it; ``"mixed"`` draws
            the level uniformly in [0, 1] per image (an easy-to-hard mix for training).
        cue_split: ``"biased"`` (the mark on a fraction ``spurious_cue`` of ``cue_class``
            images only, as in training), ``"clean"`` (on half of all images, independent of
            the label) or ``None``: biased for ``"train"``, clean for ``"val"`` and ``"test"``.
            The image is a pure function of ``(seed, split, index)`` and these cue options.

    Returns:
        An :class:`Example` (``image (size, size, 3) uint8``, ``mask (size, size) bool`` …).

    Example:
        >>> ex = generate_example(3, split="val", seed=1)
        >>> ex.label, ex.target.kind, ex.mask.dtype
        (1, 'cross', dtype('bool'))
    """
    _check_int("index", index, 0)
    _check_split(split)
    _check_int("seed", seed, 0)
    _check_int("size", size, 32)
    _check_cue(spurious_cue, cue_class)
    check_clutter(clutter)
    cue_split = resolve_cue_split(split, cue_split)
    rng, cue_rng = _example_rngs(seed, split, index)
    label = _label_of(index)
    with_cue = _has_cue(cue_rng, label, spurious_cue, cue_class, cue_split)
    level = _clutter_level(clutter, seed, split, index)
    image, mask, cue_mask, target, distractors = _render(rng, cue_rng, label, size, with_cue, draw_target, level)
    return Example(_quantize(image), label, mask, cue_mask, target, distractors, level)


def _quantize(image: np.ndarray) -> np.ndarray:
    return np.round(image * 255.0).astype(np.uint8)


def generate(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    start: int = 0,
    size: int = 128,
    spurious_cue: float = 0.0,
    cue_class: int = 1,
    clutter: float | str = 1.0,
    cue_split: str | None = None,
) -> GeneratedData:
    """Generate images ``start … start + n - 1`` of a split (see :func:`generate_example`).

    Args:
        n: number of images (``>= 1``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: the dataset seed.
        start: index of the first image, so that ``generate(n, start=k)`` equals images
            ``k … k + n - 1`` of any larger call.
        size: image height and width.
        spurious_cue: see :func:`generate_example`.
        cue_class: see :func:`generate_example`.
        clutter: see :func:`generate_example` (``1.0``, the task, unless training on a mix).
        cue_split: see :func:`generate_example`: ``"biased"`` (the cue rides with
            ``cue_class`` as in training), ``"clean"`` (independent of the label) or ``None``
            (the split's default: biased for ``"train"``, clean otherwise).

    Returns:
        A :class:`GeneratedData` with ``images (n, size, size, 3) uint8``, ``labels (n,)
        int32``, ``masks (n, size, size) bool`` …

    Example:
        >>> d = generate(2, split="train", seed=0, spurious_cue=1.0)
        >>> d.has_cue.tolist()   # the mark rides on every training "cross"
        [False, True]
        >>> generate(4, split="test", spurious_cue=1.0, cue_split="biased").has_cue.tolist()
        [False, True, False, True]
    """
    _check_int("n", n, 1)
    _check_int("start", start, 0)
    _check_split(split)
    _check_int("seed", seed, 0)
    _check_int("size", size, 32)
    _check_cue(spurious_cue, cue_class)
    check_clutter(clutter)
    cue_split = resolve_cue_split(split, cue_split)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    cue_masks = np.empty((n, size, size), bool)
    labels = np.empty((n,), np.int32)
    levels = np.empty((n,), np.float32)
    for k in range(n):
        ex = generate_example(
            start + k, split=split, seed=seed, size=size, spurious_cue=spurious_cue, cue_class=cue_class,
            clutter=clutter, cue_split=cue_split,
        )
        images[k], masks[k], cue_masks[k], labels[k], levels[k] = ex.image, ex.mask, ex.cue_mask, ex.label, ex.clutter
    info = {
        "source": "generated",
        "task": "rings-and-crosses",
        "split": split,
        "seed": int(seed),
        "start": int(start),
        "n": int(n),
        "size": int(size),
        "spurious_cue": float(spurious_cue),
        "cue_class": int(cue_class),
        "cue_split": cue_split,
        "clutter": clutter,
    }
    return GeneratedData(images, labels, masks, cue_masks, cue_masks.any(axis=(1, 2)), CLASSES, info, levels)


# --------------------------------------------------------------------------- preprocessing


def preprocess(images) -> np.ndarray:
    """Bring ``uint8`` images at the model's input size to model input: ``(x / 255 - 0.5) / 0.5``.

    Centred input (mid-grey is 0) matters for this un-normalised convnet: with inputs in
    [0, 1] the shipped model's training stalled at chance; centred, it learns. It also makes
    an occlusion fill of 0.0 a mid-grey patch.

    Args:
        images: ``(..., H, W, 3)`` uint8 array (a single image or a batch).

    Returns:
        The same shape, ``float32`` in ``[-1, 1]``.

    Example:
        >>> preprocess(np.array([[[0, 255, 51]]], np.uint8)).tolist()
        [[[-1.0, 1.0, -0.6000000238418579]]]
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"`images` must be uint8 (got dtype {arr.dtype}); use to_model_input for other inputs")
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"`images` (shape {arr.shape}) must have shape (..., H, W, 3)")
    return (arr.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)


def _to_rgb8(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: EXIF orientation applied, alpha over black, 16-bit scaled."""
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        elif mode == "I":
            arr = arr / 65535.0 * 255.0 if arr.max(initial=0.0) > 255.0 else arr
        elif arr.max(initial=0.0) <= 1.0:  # float images in [0, 1]
            arr = arr * 255.0
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file of any mode as ``(h, w, 3) uint8`` RGB at its own size.

    Grayscale is replicated to three channels, alpha is composited over black, 16-bit
    images are scaled to 8 bits, palette images are expanded and EXIF orientation is applied.

    Args:
        path: the file.

    Returns:
        ``(h, w, 3) uint8``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, or too large to decode safely (PIL's
            decompression-bomb limit); the message names the path. Whatever a damaged file
            makes a decoder raise (``struct.error``, ``EOFError`` …) becomes this error.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> p = tempfile.mkdtemp() + "/gray.png"
        >>> Image.new("L", (5, 3), 7).save(p)
        >>> load_image(p).shape
        (3, 5, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = _to_rgb8(im)
    except Image.DecompressionBombError as err:
        raise ValueError(f"cannot read image {str(path)!r}: too large to decode safely: {err}") from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises these for broken files
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    except Exception as err:  # decoders of damaged files raise odd types (struct.error, EOFError …)
        raise ValueError(f"cannot read image {str(path)!r}: {type(err).__name__}: {err}") from err
    return np.asarray(rgb, dtype=np.uint8)


def _check_size(input_size) -> tuple[int, int]:
    return _validate.pair("input_size", input_size)


def _resize(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The one resize of the package: an RGB image to ``size = (height, width)``, PIL bilinear
    (see :data:`PREPROCESSING`), as ``(height, width, 3) uint8``."""
    h, w = size
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def load_resized(path: str | os.PathLike, input_size: Sequence[int] = (128, 128)) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file and resize it to the model's input size, exactly as in training.

    This is :func:`to_model_input` of a path without its last step: the model input is
    ``preprocess(image)``. The folder job, the image-folder loader and :func:`to_model_input`
    all read files through it.

    Args:
        path: the file (any mode :func:`load_image` reads).
        input_size: ``(height, width)`` of the model input.

    Returns:
        ``(image, original_size)``: ``image`` is ``(height, width, 3) uint8`` RGB (also the
        picture to show beside a map), ``original_size`` the file's own ``(h, w)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded (see :func:`load_image`), or a bad ``input_size``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> p = tempfile.mkdtemp() + "/wide.png"
        >>> Image.new("RGB", (300, 200), (255, 0, 0)).save(p)
        >>> image, original = load_resized(p, (128, 128))
        >>> image.shape, image.dtype, original, image[0, 0].tolist()
        ((128, 128, 3), dtype('uint8'), (200, 300), [255, 0, 0])
    """
    size = _check_size(input_size)
    rgb = load_image(path)
    return _resize(Image.fromarray(rgb), size), (int(rgb.shape[0]), int(rgb.shape[1]))


def to_model_input(image, input_size: Sequence[int] = (128, 128)) -> np.ndarray:
    """Bring one image to model input exactly as in training (see :data:`PREPROCESSING`).

    Args:
        image: a path, a ``PIL.Image`` of any mode, or an array: ``(h, w)`` or ``(h, w, 1|3|4)``
            uint8 (0–255), uint16 (0–65535) or float (already in [0, 1]).
        input_size: ``(height, width)`` of the model input.

    Returns:
        ``(height, width, 3) float32`` in ``[-1, 1]``.

    Example:
        >>> to_model_input(np.zeros((300, 200), np.uint8)).shape
        (128, 128, 3)
    """
    size = _check_size(input_size)
    if isinstance(image, (str, os.PathLike)):
        return preprocess(load_resized(image, size)[0])
    if isinstance(image, Image.Image):
        im = _to_rgb8(image)
    elif isinstance(image, np.ndarray):
        im = Image.fromarray(_array_to_rgb8(image))
    else:
        raise TypeError(f"`image` (type {type(image).__name__}) must be a path, a PIL.Image or a numpy array")
    return preprocess(_resize(im, size))


def _array_to_rgb8(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"`image` (shape {arr.shape}) must have shape (h, w) or (h, w, 1|3|4)")
    if arr.dtype == np.uint8:
        a = arr.astype(np.float64)
    elif arr.dtype == np.uint16:
        a = arr.astype(np.float64) / 65535.0 * 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        a = np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0
    else:
        raise TypeError(f"`image` dtype {arr.dtype} is not accepted; use uint8, uint16 or float in [0, 1]")
    if a.shape[-1] == 4:  # alpha over black
        a = a[:, :, :3] * (a[:, :, 3:] / 255.0)
    elif a.shape[-1] == 1:
        a = np.concatenate([a, a, a], axis=-1)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- image folders


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


def _read_class(files: list[Path], size: tuple[int, int], skipped: list) -> tuple[list[np.ndarray], list[str]]:
    """Read and resize ``files``; each unreadable one is warned about and appended to ``skipped``."""
    images, paths = [], []
    for p in files:
        try:
            images.append(load_resized(p, size)[0])
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

    Returns:
        An :class:`ImageFolderData`.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: fewer than two class folders, a class without readable images, or bad
            arguments.
    """
    size = _check_size(input_size)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"`val_fraction` (={val_fraction!r}) must be a number in [0, 1)")
    _check_int("seed", seed, 0)
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
        images, paths = _read_class(_class_files(root / name, exts), size, skipped)
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
