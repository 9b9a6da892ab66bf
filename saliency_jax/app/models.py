"""The model a folder job explains: a checkpoint, a pretrained model, or any JAX model from a factory.

``--model`` (``model=`` of :func:`saliency_jax.explain_paths`) takes

* nothing: the shipped model;
* a checkpoint name or directory, or a pretrained name (``efficientnet-lite0`` …):
  :func:`saliency_jax.load` (:mod:`saliency_jax.model.hub`);
* ``package.module:function``: a factory, called with no arguments, returning an object with
  ``apply_fn`` (``apply_fn(params, x (N, H, W, C) float32) -> logits (N, K)``), ``params``,
  ``classes`` (``K`` names) and ``preprocess`` (one image, ``(h, w, 3) uint8`` RGB at its own
  size, to model input ``(H, W, C) float32``). So a Flax, Haiku, Keras 3 (JAX backend) or
  Equinox model runs the folder job without writing a checkpoint. Optional attributes:
  ``input_size`` ``(H, W[, C])`` (else read from ``preprocess`` of a grey 256×256 image) and
  ``preprocessing`` (a :class:`~saliency_jax.model.image_input.Preprocessing` or a card's record:
  how the picture shown beside the maps is fitted to the input, and where the maps lie on the whole
  photo; else a bilinear stretch of the whole image, which is right when ``preprocess`` stretches).

A factory that cannot be imported, raises, or returns an object without those four attributes is
refused with one ``ValueError`` naming the factory (the command line: one line, exit 2), before
anything is written.

Example:
    >>> load_model(None).input_size
    (128, 128, 3)
    >>> load_model("no_such_module_here:make")
    Traceback (most recent call last):
    ...
    ValueError: `model` (='no_such_module_here:make'): the module 'no_such_module_here' failed to import: ModuleNotFoundError: No module named 'no_such_module_here'
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from saliency_jax.model import checkpoint, hub, image_input

__all__ = ["FACTORY_ATTRIBUTES", "FactoryModel", "is_factory_spec", "load_model", "model_from_object"]

#: What a factory's object must have.
FACTORY_ATTRIBUTES: tuple[str, ...] = ("apply_fn", "params", "classes", "preprocess")
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class FactoryModel(checkpoint.LoadedModel):
    """A user's model from a factory, shaped as a :class:`~saliency_jax.model.checkpoint.LoadedModel`
    (``module`` is ``None``, ``path`` the factory spec, ``card`` holds ``classes``, ``input_size``,
    ``preprocessing`` and the weights' digest); :meth:`preprocess` is the factory's own."""

    preprocess_fn: Callable | None = None

    def preprocess(self, image) -> np.ndarray:
        """The factory object's ``preprocess`` of ``(h, w, 3) uint8`` RGB, as float32."""
        return np.asarray(self.preprocess_fn(image), np.float32)


def is_factory_spec(model) -> bool:
    """``True`` for a ``package.module:function`` string that is not an existing path.

    Example:
        >>> is_factory_spec("my_models.keras:make"), is_factory_spec("checkpoints/zf"), is_factory_spec(None)
        (True, False, False)
    """
    return isinstance(model, str) and bool(_SPEC.match(model)) and not Path(model).exists()


def load_model(model=None) -> checkpoint.LoadedModel:
    """The folder job's model from what ``model=`` / ``--model`` says (see the module docstring).

    Raises:
        ValueError: a factory that fails (import, call, or its object's attributes).
        FileNotFoundError, CheckpointError, ImportError: as :func:`saliency_jax.load`.
    """
    if isinstance(model, checkpoint.LoadedModel):
        return model
    if is_factory_spec(model):
        return _from_factory(model)
    if model is not None and not isinstance(model, (str, os.PathLike)):
        if all(hasattr(model, a) for a in FACTORY_ATTRIBUTES):
            return model_from_object(model, name=type(model).__name__)
        raise TypeError(f"`model` (type {type(model).__name__}) must be None, a checkpoint name or path, a pretrained "
                        f"name, 'package.module:function', a LoadedModel or an object with {FACTORY_ATTRIBUTES}")
    return hub.load(model)


def _from_factory(spec: str) -> checkpoint.LoadedModel:
    module_name, func_name = spec.split(":")
    try:
        mod = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any failure of the user's module is one line
        raise ValueError(f"`model` (={spec!r}): the module {module_name!r} failed to import: "
                         f"{type(err).__name__}: {err}") from err
    factory = getattr(mod, func_name, None)
    if not callable(factory):
        raise ValueError(f"`model` (={spec!r}): the module {module_name!r} has no function {func_name!r}")
    try:
        obj = factory()
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"`model` (={spec!r}): the factory raised {type(err).__name__}: {err}") from err
    if isinstance(obj, checkpoint.LoadedModel):
        return obj
    return model_from_object(obj, name=spec)


def model_from_object(obj: Any, name: str = "model") -> FactoryModel:
    """A :class:`FactoryModel` from an object with :data:`FACTORY_ATTRIBUTES` (checked).

    Raises:
        ValueError: an attribute is missing, ``classes`` is empty, ``preprocess`` does not give
            an ``(H, W, C)`` array, or ``preprocessing`` is not a policy.

    Example:
        >>> import types, jax.numpy as jnp
        >>> obj = types.SimpleNamespace(apply_fn=lambda p, x: x.mean((1, 2)) @ p, params=jnp.ones((3, 2)),
        ...     classes=["a", "b"], preprocess=lambda im: im[:8, :8] / 255.0)
        >>> model_from_object(obj).input_size
        (8, 8, 3)
    """
    missing = [a for a in FACTORY_ATTRIBUTES if not hasattr(obj, a)]
    if missing:
        raise ValueError(f"`model` (={name!r}) returned a {type(obj).__name__} without {missing}; the folder job needs "
                         f"an object with {list(FACTORY_ATTRIBUTES)}")
    if not callable(obj.apply_fn) or not callable(obj.preprocess):
        raise ValueError(f"`model` (={name!r}): `apply_fn` and `preprocess` must be callable")
    classes = [str(c) for c in obj.classes]
    if not classes:
        raise ValueError(f"`model` (={name!r}): `classes` is empty")
    size = getattr(obj, "input_size", None)
    if size is None:
        try:
            probe = np.asarray(obj.preprocess(np.full((256, 256, 3), 127, np.uint8)))
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"`model` (={name!r}): `preprocess` of a 256×256 RGB uint8 image raised "
                             f"{type(err).__name__}: {err}") from err
        if probe.ndim != 3:
            raise ValueError(f"`model` (={name!r}): `preprocess` gave shape {probe.shape}, not (H, W, C)")
        size = probe.shape
    size = tuple(int(s) for s in size) + ((3,) if len(size) == 2 else ())
    try:
        policy = image_input.as_preprocessing(getattr(obj, "preprocessing", None))
    except (TypeError, ValueError) as err:
        raise ValueError(f"`model` (={name!r}): `preprocessing` is not a policy: {err}") from err
    try:
        digest = checkpoint.weights_digest(obj.params)
    except Exception:  # noqa: BLE001 - params that are not arrays: the sidecar records no digest
        digest = None
    card = {"name": name, "classes": classes, "input_size": list(size), "preprocessing": policy.record(),
            "weights": {"sha256": digest}, "source": {"factory": name}}
    return FactoryModel(module=None, params=obj.params, apply_fn=obj.apply_fn, card=card, path=Path(name),
                        preprocess_fn=obj.preprocess)
