"""The library calls of the folder job: one batch of images in, every method's maps out.

Example:
    >>> import numpy as np, saliency_jax as sj
    >>> from saliency_jax.app.settings import SHARED_OPTIONS, ExplainSettings
    >>> model = sj.load()
    >>> s = ExplainSettings(("occlusion", "deconvnet"), (64, 64), (64, 64), 0.0, "predicted", ("npy",),
    ...                     "jet", "RdBu_r", 0.5, False)
    >>> b = explain_batch(model.apply_fn, model.params, np.zeros((2, 128, 128, 3), np.uint8), s)
    >>> b.logits.shape, b.maps["occlusion"].shape, b.maps["deconvnet"].shape
    ((2, 2), (2, 128, 128), (2, 128, 128, 3))
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import methods
from saliency_jax.app.settings import SHARED_OPTIONS, ExplainSettings
from saliency_jax.model import data

__all__ = ["SHARED_OPTIONS", "BatchMaps", "compute_maps", "explain_batch", "explained_classes"]


def compute_maps(apply_fn: Callable, params: Any, x: jax.Array, targets, settings: ExplainSettings) -> dict:
    """Every method of ``settings`` on a batch, through :func:`saliency_jax.methods.attribute`.

    Args:
        apply_fn, params: the model.
        x: ``(N, H, W, C)`` model input.
        targets: ``(N,)`` int class per image, or ``"all"``.
        settings: the methods, the window, stride and fill of the methods that take them
            (:data:`SHARED_OPTIONS`) and each method's own options
            (:meth:`~saliency_jax.app.settings.ExplainSettings.method_options`, ``--option``).

    Returns:
        ``{method: maps}`` as numpy float32 arrays: ``(N, H, W)`` for ``"heat"`` and
        ``"signed"`` methods (occlusion, crop), ``(N, H, W, C)`` for ``"rgb"`` ones (deconvnet,
        guided, gradient); with ``targets="all"`` a class axis after the batch axis.
    """
    out = {}
    for name in settings.methods:
        taken = methods.get(name).options
        options = {k: getattr(settings, k) for k in SHARED_OPTIONS if k in taken and getattr(settings, k) is not None}
        options.update(settings.method_options(name))
        out[name] = np.asarray(methods.attribute(name, apply_fn, params, x, targets, **options), np.float32)
    return out


@dataclasses.dataclass(frozen=True)
class BatchMaps:
    """What the model says about a batch.

    Attributes:
        logits: ``(N, K) float32``. probs: ``(N, K)`` softmax of the logits.
        maps: ``{method: maps}`` as from :func:`compute_maps`.
    """

    logits: np.ndarray
    probs: np.ndarray
    maps: dict


def explain_batch(apply_fn: Callable, params: Any, pixels: np.ndarray, settings: ExplainSettings, *,
                  inputs: np.ndarray | None = None) -> BatchMaps:
    """Predict a batch and compute every method's maps for ``settings.target``.

    Args:
        apply_fn, params: the model.
        pixels: ``(N, H, W, 3) uint8`` at the model's input size (preprocessed here as in training).
        settings: the methods, their options and the target (``"predicted"``, ``"all"`` or an index).
        inputs: ``(N, H, W, C) float32`` model input of the batch, made by the model's own
            preprocessing (the folder job passes it); ``None``: ``pixels`` through the shipped
            models' record.

    Returns:
        A :class:`BatchMaps`.
    """
    x = jnp.asarray(data.preprocess(pixels) if inputs is None else inputs)
    logits, probs = (np.asarray(a, np.float32) for a in _predict(apply_fn, params, x))
    target = settings.target
    targets = "all" if target == "all" else jnp.asarray(
        logits.argmax(-1) if target == "predicted" else np.full((len(pixels),), target), jnp.int32)
    maps = compute_maps(apply_fn, params, x, targets, settings)
    return BatchMaps(logits, probs, maps)


@functools.partial(jax.jit, static_argnums=0)
def _predict(apply_fn: Callable, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(logits, softmax)`` of a batch in one compiled call (not op by op)."""
    logits = apply_fn(params, x).astype(jnp.float32)
    return logits, jax.nn.softmax(logits, axis=-1)


def explained_classes(target: str | int, predicted: int, num_classes: int) -> list[int]:
    """The class indices one image's maps explain: every class, the predicted one or the target.

    Example:
        >>> explained_classes("all", 1, 3), explained_classes("predicted", 1, 3), explained_classes(0, 1, 3)
        ([0, 1, 2], [1], [0])
    """
    if target == "all":
        return list(range(num_classes))
    return [predicted if target == "predicted" else target]
