"""The generated task: rings and crosses among look-alikes, with exact masks and a spurious cue.

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

The images are ``uint8``; :mod:`saliency_jax.model.image_input` brings them to model input.

Example:
    >>> d = generate(4, split="test", seed=0)
    >>> d.images.shape, d.images.dtype, d.labels.tolist(), d.masks.shape
    ((4, 128, 128, 3), dtype('uint8'), [0, 1, 0, 1], (4, 128, 128))
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from saliency_jax import _validate

__all__ = [
    "CLASSES",
    "TARGET_KINDS",
    "DISTRACTOR_KINDS",
    "SPLITS",
    "CUE_SPLITS",
    "ObjectSpec",
    "Example",
    "GeneratedData",
    "shape_mask",
    "generate_example",
    "generate",
    "check_clutter",
    "resolve_cue_split",
]

CLASSES: tuple[str, ...] = ("ring", "cross")
TARGET_KINDS: tuple[str, ...] = ("ring", "cross")  # TARGET_KINDS[label] is the deciding object
DISTRACTOR_KINDS: tuple[str, ...] = ("disc", "bar", "square", "triangle")
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
#: How the spurious mark is placed (see the module docstring): co-occurring with ``cue_class``
#: as in training, or independent of the label.
CUE_SPLITS: tuple[str, ...] = ("biased", "clean")

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

