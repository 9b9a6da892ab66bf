"""Data for the shipped models, one import: the generated task, image input and image folders.

A thin facade, kept because ``saliency_jax.data`` (``sj.data.preprocess``, ``sj.data.MEAN`` …)
is public API that the README and user code call, and many modules and tests import it. The
concepts live in their own modules; every name here is theirs:

* :mod:`saliency_jax.model.generated` — the generated task ("rings and crosses"): images with
  exact masks of the deciding object, and the spurious cue (:func:`generate`,
  :func:`generate_example`, :class:`GeneratedData` …);
* :mod:`saliency_jax.model.image_input` — image input: decoding any file or array to RGB,
  fitting it to the input size, and the model card's preprocessing record
  (:class:`Preprocessing`, :func:`preprocess`, :func:`to_model_input`, :func:`load_image`,
  :func:`load_resized`, :data:`PREPROCESSING`, :data:`MEAN`, :data:`STD`);
* :mod:`saliency_jax.model.image_folder` — a user's ``root/<class>/<image>`` folder as a dataset
  (:func:`load_image_folder`);
* :mod:`saliency_jax.model.photos` — real photos bundled with installed packages
  (:func:`sample_photos`).

Example:
    >>> from saliency_jax.model import data
    >>> d = data.generate(4, split="test", seed=0)
    >>> d.images.shape, d.images.dtype, d.labels.tolist(), d.masks.shape
    ((4, 128, 128, 3), dtype('uint8'), [0, 1, 0, 1], (4, 128, 128))
    >>> bool(data.preprocess(d.images).min() >= -1.0)
    True
"""

from __future__ import annotations

from saliency_jax.model.generated import (
    CLASSES,
    CUE_SPLITS,
    DISTRACTOR_KINDS,
    SPLITS,
    TARGET_KINDS,
    Example,
    GeneratedData,
    ObjectSpec,
    check_clutter,
    generate,
    generate_example,
    resolve_cue_split,
    shape_mask,
)
from saliency_jax.model.image_folder import ImageFolderData, load_image_folder
from saliency_jax.model.photos import sample_photos
from saliency_jax.model.image_input import (
    DEFAULT_PREPROCESSING,
    IMAGE_EXTENSIONS,
    MEAN,
    PREPROCESSING,
    STD,
    Preprocessing,
    as_preprocessing,
    load_image,
    load_resized,
    preprocess,
    to_model_input,
    to_unit,
)

__all__ = [
    # the generated task
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
    # image input
    "IMAGE_EXTENSIONS",
    "MEAN",
    "STD",
    "Preprocessing",
    "DEFAULT_PREPROCESSING",
    "PREPROCESSING",
    "as_preprocessing",
    "to_unit",
    "preprocess",
    "load_image",
    "load_resized",
    "to_model_input",
    # image folders
    "ImageFolderData",
    "load_image_folder",
    # real photos bundled with installed packages
    "sample_photos",
]
