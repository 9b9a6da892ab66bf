"""Deletion and insertion curves (Petsiuk et al. 2018, RISE): does removing what the map ranks first hurt?

For every image the pixels are ranked by the map (most relevant first; ties in row-major
order; NaN pixels last, :mod:`saliency_jax.metrics.checks`). At step ``k = 0 … steps`` the first
``n_k = ⌊k · HW / steps⌋`` pixels are

* **deleted** (:func:`deletion_curve`): replaced by the baseline (default ``0.0``, mid-grey for
  the shipped model's ``[-1, 1]`` input) — a faithful map makes the score fall fast, so
  **lower deletion AUC is better**;
* **inserted** (:func:`insertion_curve`): copied from the image into the baseline (default a
  Gaussian blur of the image, σ = 5 px as in RISE) — a faithful map makes the score rise fast,
  so **higher insertion AUC is better**.

The score is the **softmax probability** of the target class (``score="softmax"``, RISE's
choice; the AUC then lies in ``[0, 1]``) or ``apply_fn``'s raw output for it
(``score="output"``, a logit for the shipped model). The AUC is the trapezoid rule over the
deleted/inserted fraction ``n_k / HW`` on ``[0, 1]``.

**Execution.** One jitted computation per (shapes, settings): the ``N · (steps + 1)``
perturbed images are never all in memory; the flat index ``(image, step)`` runs through the
model in chunks of one fixed size (``lax.map``), each chunk's images built inside it with
``vmap``; the last chunk is padded by repeating the last index, so the model is traced once per
shape (``tests/metrics/test_perturbation.py`` counts the traces).

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from saliency_jax.metrics import deletion_curve
    >>> f = lambda p, x: jnp.stack([x[:, :2].sum((1, 2, 3)), -x[:, :2].sum((1, 2, 3))], axis=-1)  # top rows
    >>> images = jnp.ones((1, 4, 4, 1)); maps = np.zeros((1, 4, 4), np.float32); maps[0, :2] = 1.0
    >>> c = deletion_curve(f, None, images, maps, target=0, steps=2, score="output")
    >>> c.fractions.tolist(), c.scores.tolist(), c.auc.tolist()
    ([0.0, 0.5, 1.0], [[8.0, 0.0, 0.0]], [2.0])
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax.metrics.baselines import blur_matrix
from saliency_jax.metrics.checks import check_maps, relevance

__all__ = ["Curve", "deletion_curve", "insertion_curve", "trapezoid_auc", "pixel_ranks", "SCORES",
           "DEFAULT_STEPS", "DEFAULT_CHUNK_SIZE", "INSERTION_BLUR_SIGMA"]

SCORES = ("softmax", "output")
DEFAULT_STEPS = 16
DEFAULT_CHUNK_SIZE = 16
#: σ of the insertion metric's default blurred start image (RISE: kernel 11, σ 5).
INSERTION_BLUR_SIGMA = 5.0


class Curve(NamedTuple):
    """A deletion or insertion curve per image (a pytree: composes with ``jit``).

    Attributes:
        fractions: ``(steps + 1,) float32``, the share of pixels deleted/inserted at each step.
        scores: ``(N, steps + 1) float32``, the target's score (probability or raw output).
        auc: ``(N,) float32``, the trapezoid area under ``scores`` over ``fractions``.
        targets: ``(N,) int32``, the class each curve follows.
    """

    fractions: jax.Array
    scores: jax.Array
    auc: jax.Array
    targets: jax.Array


def trapezoid_auc(scores, fractions) -> jax.Array:
    """Trapezoid area under ``scores (..., S)`` over ``fractions (S,)``.

    Example:
        >>> float(trapezoid_auc(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])))
        0.5
    """
    scores = jnp.asarray(scores)
    dx = jnp.diff(jnp.asarray(fractions)).reshape((1,) * (scores.ndim - 1) + (-1,))
    return (0.5 * (scores[..., 1:] + scores[..., :-1]) * dx).sum(-1)


def pixel_ranks(maps) -> jax.Array:
    """Each pixel's place in the order of removal, int32 ``(N, H, W)``: 0 = the most relevant.

    Sorted by relevance, descending (:func:`saliency_jax.metrics.checks.relevance`: 4-D maps
    ``max_c |m|``, NaN last); ties keep row-major order (a constant map deletes row by row).

    Example:
        >>> import numpy as np
        >>> pixel_ranks(np.array([[[1.0, 3.0], [np.nan, 3.0]]], np.float32)).tolist()
        [[[2, 0], [3, 1]]]
    """
    rel = relevance(maps)
    n = rel.shape[0]
    order = jnp.argsort(-rel.reshape(n, -1), axis=-1, stable=True)
    return jnp.argsort(order, axis=-1).astype(jnp.int32).reshape(rel.shape)


def _counts(hw: int, steps: int) -> np.ndarray:
    return (np.arange(steps + 1, dtype=np.int64) * hw) // steps


def _chunks(total: int, chunk_size: int) -> np.ndarray:
    """Flat indices in ``ceil(total / chunk_size)`` equal chunks, the padding repeating ``total − 1``."""
    n_chunks = -(-total // chunk_size)
    chunk = -(-total // n_chunks)
    return np.minimum(np.arange(n_chunks * chunk), total - 1).reshape(n_chunks, chunk).astype(np.int32)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _curves(apply_fn, insert, steps, chunk_size, score, predicted, params, images, ranks, base, targets):
    n, h, w, _ = images.shape
    counts = jnp.asarray(_counts(h * w, steps), jnp.int32)

    def variant(ix):
        i, k = ix // (steps + 1), ix % (steps + 1)
        changed = (ranks[i] < counts[k])[..., None]
        return jnp.where(changed, images[i], base[i]) if insert else jnp.where(changed, base[i], images[i])

    def run(chunk):
        return apply_fn(params, jax.vmap(variant)(chunk))

    total = n * (steps + 1)
    out = jax.lax.map(run, jnp.asarray(_chunks(total, chunk_size)))
    out = out.reshape(-1, out.shape[-1])[:total].reshape(n, steps + 1, -1).astype(jnp.float32)
    if predicted:  # the class predicted on the unperturbed image: step 0 (deletion) or the last step (insertion)
        targets = out[:, steps if insert else 0].argmax(-1).astype(jnp.int32)
    values = jax.nn.softmax(out, axis=-1) if score == "softmax" else out
    scores = jnp.take_along_axis(values, targets[:, None, None], axis=-1)[..., 0]
    fractions = counts.astype(jnp.float32) / (h * w)
    return Curve(fractions, scores, trapezoid_auc(scores, fractions), targets)


def _check_baseline(baseline, images, blur_sigma) -> jax.Array:
    """The baseline as an ``(N, H, W, C)`` float32 array."""
    accepted = ("a number, a per-channel vector (C,), an image (H, W, C) or (N, H, W, C), "
                "'mean' (each image's channel means) or 'blur' (a Gaussian blur of the image)")
    if isinstance(baseline, str):
        _validate.choice("baseline", baseline, ("mean", "blur"))
        if baseline == "mean":
            return jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
        sigma = blur_sigma
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < float("inf"):
            raise ValueError(f"`blur_sigma` (={sigma!r}) must be a finite number of pixels > 0")
        bh = jnp.asarray(blur_matrix(images.shape[1], float(sigma)))
        bw = jnp.asarray(blur_matrix(images.shape[2], float(sigma)))
        return jnp.einsum("ij,njkc,lk->nilc", bh, images, bw)
    if isinstance(baseline, bool) or not (isinstance(baseline, numbers.Real) or hasattr(baseline, "shape")):
        raise TypeError(f"`baseline` (={baseline!r}) must be {accepted}")
    arr = jnp.asarray(baseline, jnp.float32)
    n, h, w, c = images.shape
    if arr.shape not in ((), (c,), (h, w, c), (n, h, w, c)):
        raise ValueError(f"`baseline` (shape={tuple(arr.shape)}) must be {accepted} for images of shape {images.shape}")
    if _validate.is_concrete(arr) and not np.isfinite(np.asarray(arr)).all():
        raise ValueError("`baseline` contains non-finite values")
    return jnp.broadcast_to(arr, images.shape)


def _perturbation_curve(insert: bool, apply_fn, params, images, maps, target, steps, baseline, blur_sigma, score,
                        chunk_size) -> Curve:
    apply_fn = _validate.apply_fn(apply_fn)
    x, batched = _validate.image(images)
    if not batched:
        raise ValueError(f"`images` (shape={tuple(images.shape)}) must be a batch (N, H, W, C); add a leading axis")
    shape = check_maps(maps)
    if shape[:3] != x.shape[:3]:
        raise ValueError(f"`maps` (shape={shape}) must match the images' (N, H, W) = {tuple(x.shape[:3])}")
    n, h, w, _ = x.shape
    steps = _validate.integer("steps", steps, lo=1, hi=h * w)
    chunk_size = _validate.integer("chunk_size", chunk_size, lo=1)
    _validate.choice("score", score, SCORES)
    x = x.astype(jnp.float32)
    kind, targets = _validate.target(target, n=n, num_classes=_validate.num_classes(apply_fn, params, x))
    if kind == "all":
        raise ValueError("`target` (='all') is not accepted here: a curve follows one class per image")
    base = _check_baseline(baseline, x, blur_sigma)
    return _curves(apply_fn, insert, steps, chunk_size, score, kind == "predicted",
                   params, x, pixel_ranks(maps), base, targets)


def deletion_curve(apply_fn: Callable, params: Any, images, maps, target=None, *, steps: int = DEFAULT_STEPS,
                   baseline=0.0, blur_sigma: float = INSERTION_BLUR_SIGMA, score: str = "softmax",
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> Curve:
    """Deletion curve: the target's score as the most relevant pixels are replaced by ``baseline``.

    Lower AUC is better (the score falls as soon as what the map ranks first is gone).

    Args:
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> (B, K)``, hashable.
        params: the model's variables (traced: new weights reuse the compilation).
        images: ``(N, H, W, C)`` float, the model's input.
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` float; NaN pixels are deleted last.
        target: ``None`` (the class predicted on each unperturbed image), an int, or one int per image.
        steps: number of steps (``1 … H·W``); the curve has ``steps + 1`` points.
        baseline: what replaces deleted pixels: a number (default ``0.0``), ``(C,)``,
            ``(H, W, C)``, ``(N, H, W, C)``, ``"mean"`` or ``"blur"``.
        blur_sigma: σ in pixels for ``baseline="blur"``.
        score: ``"softmax"`` (the target's probability) or ``"output"`` (``apply_fn``'s raw value).
        chunk_size: perturbed images per model call.

    Returns:
        A :class:`Curve`: ``fractions (steps+1,)``, ``scores (N, steps+1)``, ``auc (N,)``,
        ``targets (N,)``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> f = lambda p, x: jnp.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], -1)
        >>> c = deletion_curve(f, None, jnp.ones((2, 4, 4, 3)), np.ones((2, 4, 4), np.float32), steps=4)
        >>> c.scores.shape, c.targets.tolist()
        ((2, 5), [0, 0])
    """
    return _perturbation_curve(False, apply_fn, params, images, maps, target, steps, baseline, blur_sigma, score,
                               chunk_size)


def insertion_curve(apply_fn: Callable, params: Any, images, maps, target=None, *, steps: int = DEFAULT_STEPS,
                    baseline="blur", blur_sigma: float = INSERTION_BLUR_SIGMA, score: str = "softmax",
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> Curve:
    """Insertion curve: the target's score as the most relevant pixels are copied into ``baseline``.

    Higher AUC is better. The default start image is a Gaussian blur of the image (σ =
    ``blur_sigma``, 5 px, as in RISE). ``target=None`` follows the class predicted on the
    unperturbed image (the curve's last point). Arguments as for :func:`deletion_curve`.

    Returns:
        A :class:`Curve`.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> f = lambda p, x: jnp.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], -1)
        >>> c = insertion_curve(f, None, jnp.ones((1, 4, 4, 3)), np.ones((1, 4, 4), np.float32), target=0,
        ...                     steps=2, baseline=0.0, score="output")
        >>> c.scores.tolist()
        [[0.0, 0.5, 1.0]]
    """
    return _perturbation_curve(True, apply_fn, params, images, maps, target, steps, baseline, blur_sigma, score,
                               chunk_size)
