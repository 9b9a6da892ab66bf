"""Image input: any image file or array to RGB, fitted to the model's input size, made model input.

Decoding
--------
:func:`load_image` reads a file of any mode as ``(h, w, 3) uint8`` RGB at its own size
(grayscale replicated, alpha composited over black, 16-bit scaled to 8 bits, palette expanded,
EXIF orientation applied). Every file the package reads for a model (training folders,
:func:`to_model_input`, the folder job) goes through :func:`load_resized`: decode, then fit to
the input size as the model's preprocessing says.

The preprocessing record
------------------------
A model card's ``preprocessing`` field states how a uint8 RGB image becomes model input;
:class:`Preprocessing` is that record, parsed and checked, and the one place where pixels are
scaled and standardised:

1. **fit** to the input size ``(H, W)``: ``"resize": {"filter": "bilinear", "shorter_side": null}``
   stretches the whole image to ``(H, W)`` (aspect ratio not kept); ``"shorter_side": S`` makes
   the shorter side ``S`` px (aspect ratio kept, the longer side truncated to an integer) and
   ``"crop": "centre"`` then cuts the central ``(H, W)`` (torchvision's ``Resize(S)`` +
   ``CenterCrop``); ``"crop": "centre"`` with ``"crop_padding": P`` (and no ``shorter_side``)
   instead cuts the central square of side ``int(S / (S + P) * min(h, w))`` first (``S`` the
   input side) and resizes it to ``(S, S)``: the TensorFlow TPU evaluation crop of EfficientNet
   (``preprocess_for_eval``, ``CROP_PADDING`` 32 at 224: 224/256 of the shorter side);
   :meth:`Preprocessing.crop_box` says which part of the photo the model sees, for every policy;
2. **scale and standardise**: ``x = (pixels / scale - mean) / std`` in float32, per channel
   (``mean`` and ``std``: one number per channel, or one for all); ``range`` states what the
   pixel values 0 and 255 become, and is checked against ``mean`` and ``std``.

The shipped models' record is :data:`PREPROCESSING` (bilinear stretch, ``scale`` 255, ``mean`` =
``std`` = 0.5: range ``[-1, 1]``). An ImageNet model's would read ``{"resize": {"filter":
"bilinear", "shorter_side": 256}, "crop": "centre", "scale": 255, "mean": [0.485, 0.456, 0.406],
"std": [0.229, 0.224, 0.225]}`` with an input size of 224. The other fields (``channels``,
``dtype``, ``layout``, ``formula``) describe, in words, what the code does for every record.

A card written before the record was machine-readable (``resize`` and ``scale`` given as prose,
no ``crop`` or ``range``) reads as that same policy: what every model of those versions used.

Example:
    >>> p = Preprocessing.from_record(PREPROCESSING)
    >>> p.range, p(np.array([[[0, 255, 51]]], np.uint8)).tolist()
    ((-1.0, 1.0), [[[-1.0, 1.0, -0.6000000238418579]]])
    >>> to_model_input(np.zeros((300, 200), np.uint8)).shape
    (128, 128, 3)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

from saliency_jax import _validate

__all__ = [
    "IMAGE_EXTENSIONS",
    "FILTERS",
    "CROPS",
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
]

#: File suffixes read as images (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Resampling filters a record may name (PIL's).
FILTERS: dict[str, int] = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
#: Crops a record may name: none (``None``) or the central input-size window.
CROPS: tuple[str | None, ...] = (None, "centre")
#: The shipped models' per-channel mean and standard deviation (the same for R, G and B).
MEAN: float = 0.5
STD: float = 0.5
_CHANNELS = "RGB (grayscale replicated; alpha composited over black; 16-bit scaled to 8-bit; EXIF orientation applied)"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a uint8 RGB image becomes model input (the model card's ``preprocessing`` record).

    Attributes:
        filter: the resampling filter, a key of :data:`FILTERS`.
        shorter_side: ``None``: stretch the whole image to the input size; an int: resize the
            shorter side to it, keeping the aspect ratio (then ``crop`` must be ``"centre"``).
        crop: ``None`` or ``"centre"`` (the central input-size window after the resize; or,
            with ``crop_padding``, the central square cut before the resize).
        crop_padding: ``None``, or ``P >= 0``: crop first, a centred square of side
            ``int(S / (S + P) * min(h, w))`` (float32 product; ``S`` the square input's side;
            top ``(h - side + 1) // 2``, left ``(w - side + 1) // 2``), then resize it to the
            input size with ``filter`` (``crop`` must be ``"centre"``, ``shorter_side`` ``None``).
        scale: pixels are divided by it first (255: ``[0, 255] -> [0, 1]``).
        mean, std: per channel (or one value for all), float32: ``(pixels / scale - mean) / std``.

    Example:
        >>> Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).range
        ((-2.1179..., -2.0357..., -1.8044...), (2.2489..., 2.4285..., 2.64...))
    """

    filter: str = "bilinear"
    shorter_side: int | None = None
    crop: str | None = None
    scale: float = 255.0
    mean: tuple[float, ...] = (MEAN,) * 3
    std: tuple[float, ...] = (STD,) * 3
    crop_padding: int | None = None

    def __post_init__(self):
        _validate.choice("filter", self.filter, tuple(FILTERS))
        if self.shorter_side is not None:
            _validate.integer("shorter_side", self.shorter_side, lo=1)
        if self.crop not in CROPS:
            raise ValueError(f"`crop` (={self.crop!r}) must be one of {CROPS}")
        if self.crop_padding is not None:
            _validate.integer("crop_padding", self.crop_padding, lo=0)
            if self.crop != "centre" or self.shorter_side is not None:
                raise ValueError(f"`crop_padding` (={self.crop_padding!r}) needs crop='centre' and no `shorter_side` "
                                 f"(got crop={self.crop!r}, shorter_side={self.shorter_side!r}): the crop comes "
                                 "first, then the resize to the input size")
        elif (self.shorter_side is None) != (self.crop is None):
            raise ValueError(f"`shorter_side` (={self.shorter_side!r}) and `crop` (={self.crop!r}) go together: "
                             "a resize that keeps the aspect ratio needs the centre crop to reach the input size, "
                             "and a stretch to the input size leaves nothing to crop")
        object.__setattr__(self, "scale", _positive("scale", self.scale))
        for name in ("mean", "std"):
            values = getattr(self, name)
            values = (values,) if isinstance(values, numbers.Real) else values
            if not isinstance(values, (tuple, list)) or len(values) not in (1, 3):
                raise ValueError(f"`{name}` (={values!r}) must be one number or one per channel (3)")
            check = _positive if name == "std" else _finite
            object.__setattr__(self, name, tuple(check(name, v) for v in values))

    # ----------------------------------------------------------------- the record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Preprocessing":
        """The policy a model card's ``preprocessing`` record states (see the module docstring).

        Raises:
            TypeError, ValueError: a field of the wrong type or value, or a ``range`` that
                ``mean`` and ``std`` do not give.

        Example:
            >>> Preprocessing.from_record({"resize": "whole image, PIL bilinear", "scale": "x / 255"})
            Preprocessing(filter='bilinear', shorter_side=None, crop=None, scale=255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_padding=None)
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"`preprocessing` (={record!r}) must be a mapping (the model card's record)")
        resize = record.get("resize")
        if resize is None or isinstance(resize, str):  # prose: a card written before the record was machine-readable
            resize = {}
        if not isinstance(resize, Mapping):
            raise TypeError(f"`resize` (={resize!r}) must be a mapping {{'filter', 'shorter_side'}} or prose")
        unknown = sorted(set(resize) - {"filter", "shorter_side"})
        if unknown:
            raise ValueError(f"`resize` has unknown field(s) {unknown}; it takes 'filter' and 'shorter_side'")
        scale = record.get("scale", 255.0)
        policy = cls(filter=resize.get("filter", "bilinear"), shorter_side=resize.get("shorter_side"),
                     crop=record.get("crop"), scale=255.0 if isinstance(scale, str) else scale,
                     mean=record.get("mean", (MEAN,) * 3), std=record.get("std", (STD,) * 3),
                     crop_padding=record.get("crop_padding"))
        stated = record.get("range")
        if stated is not None:
            lo, hi = policy.range
            if (not isinstance(stated, (list, tuple)) or len(stated) != 2
                    or not all(np.allclose(s, v, rtol=0, atol=1e-6) for s, v in zip(stated, (lo, hi)))):
                raise ValueError(f"`range` (={stated!r}) is not what `mean` {list(policy.mean)} and `std` "
                                 f"{list(policy.std)} make of the pixel values 0 and 255: {[lo, hi]}")
        return policy

    def record(self) -> dict:
        """The card's ``preprocessing`` record of this policy (JSON values; ``range`` where it is
        the same for every channel).

        Example:
            >>> Preprocessing().record()["range"]
            [-1.0, 1.0]
        """
        lo, hi = self.range
        out = {
            "channels": _CHANNELS,
            "resize": {"filter": self.filter, "shorter_side": self.shorter_side},
            "crop": self.crop,
            **({} if self.crop_padding is None else {"crop_padding": self.crop_padding}),
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "(pixels / scale - mean) / std, float32, per channel",
            "dtype": "float32",
            "layout": "NHWC",
        }
        if len(set(np.atleast_1d(lo))) == 1 and len(set(np.atleast_1d(hi))) == 1:
            out["range"] = [float(np.atleast_1d(lo)[0]), float(np.atleast_1d(hi)[0])]
        return out

    @property
    def range(self) -> tuple:
        """What the pixel values 0 and 255 become: ``(lo, hi)``, floats, or per-channel tuples
        where the channels differ."""
        ends = self(np.array([[[0] * 3, [255] * 3]], np.uint8))[0].astype(np.float64)
        lo, hi = (tuple(float(v) for v in row) for row in ends)
        return (lo[0], hi[0]) if len(set(lo)) == 1 and len(set(hi)) == 1 else (lo, hi)

    # ----------------------------------------------------------------- the steps

    def fit(self, im: Image.Image, size: tuple[int, int]) -> np.ndarray:
        """Step 1: an RGB ``PIL.Image`` to ``size = (height, width)``, ``(height, width, 3) uint8``.

        Example:
            >>> Preprocessing().fit(Image.new("RGB", (30, 20)), (8, 8)).shape
            (8, 8, 3)
        """
        h, w = size
        if self.crop_padding is not None:
            top, left, ch, cw = self.crop_box((im.size[1], im.size[0]), size)
            im = im.crop((left, top, left + cw, top + ch))
            if im.size != (w, h):
                im = im.resize((w, h), FILTERS[self.filter])
            return np.asarray(im, dtype=np.uint8)
        if self.shorter_side is None:
            if im.size != (w, h):
                im = im.resize((w, h), FILTERS[self.filter])
            return np.asarray(im, dtype=np.uint8)
        s = self.shorter_side
        if s < max(h, w):
            raise ValueError(f"`shorter_side` (={s}) must be at least the input size {(h, w)} for the centre crop")
        iw, ih = im.size
        nw, nh = (s, int(s * ih / iw)) if iw <= ih else (int(s * iw / ih), s)
        if (nw, nh) != (iw, ih):
            im = im.resize((nw, nh), FILTERS[self.filter])
        top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
        return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)

    def crop_box(self, original: Sequence[int], size: Sequence[int]) -> tuple[int, int, int, int]:
        """The part of a photo of ``original = (h, w)`` that the model input of ``size = (H, W)``
        shows: ``(top, left, height, width)`` in the photo's pixels (the whole photo for a stretch;
        a resize-then-crop box rounded to whole pixels). A map at the input size covers exactly
        this box: resized to ``(height, width)`` and placed at ``(top, left)``, it lies over the
        photo (the folder job's ``photo`` view does this).

        Example:
            >>> Preprocessing(filter="bicubic", crop="centre", crop_padding=32).crop_box((300, 451), (224, 224))
            (19, 95, 262, 262)
            >>> Preprocessing(shorter_side=256, crop="centre").crop_box((300, 400), (224, 224))
            (19, 68, 262, 263)
        """
        oh, ow = (int(v) for v in original)
        h, w = (int(v) for v in size)
        if self.crop_padding is not None:
            if h != w:
                raise ValueError(f"`crop_padding` needs a square input; the input size is {(h, w)}")
            side = max(1, int(np.float32(h / (h + self.crop_padding)) * np.float32(min(oh, ow))))
            return (oh - side + 1) // 2, (ow - side + 1) // 2, side, side
        if self.shorter_side is None:
            return 0, 0, oh, ow
        s = self.shorter_side
        nw, nh = (s, int(s * oh / ow)) if ow <= oh else (int(s * ow / oh), s)
        top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
        fy, fx = oh / nh, ow / nw
        return (int(round(top * fy)), int(round(left * fx)), max(1, int(round(h * fy))), max(1, int(round(w * fx))))

    def to_unit(self, images):
        """Step 2a: pixels to ``pixels / scale`` float32 (numpy, or jax arrays inside ``jit``)."""
        return images.astype(np.float32) / np.float32(self.scale)

    def standardize(self, x):
        """Step 2b: ``(x - mean) / std`` per channel over the last axis, float32; ``x`` is what
        :meth:`to_unit` gives (numpy, or jax arrays inside ``jit``: training augments between
        the two steps). ``mean`` and ``std`` take the rank of ``x`` (no rank promotion)."""
        shape = (1,) * (x.ndim - 1) + (-1,)
        return (x - np.asarray(self.mean, np.float32).reshape(shape)) / np.asarray(self.std, np.float32).reshape(shape)

    def __call__(self, images):
        """Step 2: uint8 images at the input size ``(..., H, W, 3)`` to model input, float32."""
        if images.dtype != np.uint8:
            raise TypeError(f"`images` must be uint8 (got dtype {images.dtype}); use to_model_input for other inputs")
        if images.ndim < 3 or images.shape[-1] != 3:
            raise ValueError(f"`images` (shape {images.shape}) must have shape (..., H, W, 3)")
        return self.standardize(self.to_unit(images))


def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` (={value!r}) must hold finite numbers")
    return float(value)


def _positive(name: str, value) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise ValueError(f"`{name}` (={value!r}) must hold positive numbers")
    return value


#: The shipped models' policy: bilinear stretch to the input size, ``[0, 255] -> [-1, 1]``.
DEFAULT_PREPROCESSING = Preprocessing()
#: Its model-card record (:meth:`Preprocessing.record`), as written by
#: :func:`saliency_jax.model.export.export_model`.
PREPROCESSING: dict = DEFAULT_PREPROCESSING.record()


def as_preprocessing(preprocessing=None) -> Preprocessing:
    """``preprocessing`` as a :class:`Preprocessing`: one as is, a card record parsed, ``None``
    the shipped models' (:data:`DEFAULT_PREPROCESSING`).

    Example:
        >>> as_preprocessing(None) is DEFAULT_PREPROCESSING
        True
    """
    if preprocessing is None:
        return DEFAULT_PREPROCESSING
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if isinstance(preprocessing, Mapping):
        return Preprocessing.from_record(preprocessing)
    raise TypeError(f"`preprocessing` (type {type(preprocessing).__name__}) must be a Preprocessing, a model card's "
                    "preprocessing record or None")


def to_unit(images) -> np.ndarray:
    """uint8 pixels to float32 in ``[0, 1]`` (``x / 255``): the picture shown beside a map.

    Example:
        >>> to_unit(np.array([0, 51, 255], np.uint8)).tolist()
        [0.0, 0.20000000298023224, 1.0]
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"`images` must be uint8 (got dtype {arr.dtype})")
    return Preprocessing(scale=255.0).to_unit(arr)


def preprocess(images, preprocessing=None) -> np.ndarray:
    """Bring ``uint8`` images at the model's input size to model input (step 2 of the record).

    With the shipped models' record, ``(x / 255 - 0.5) / 0.5``: centred input (mid-grey is 0)
    matters for this un-normalised convnet (with inputs in [0, 1] the shipped model's training
    stalled at chance; centred, it learns), and makes an occlusion fill of 0.0 a mid-grey patch.

    Args:
        images: ``(..., H, W, 3)`` uint8 array (a single image or a batch).
        preprocessing: a :class:`Preprocessing`, a card's record, or ``None`` (the shipped models').

    Returns:
        The same shape, ``float32`` (in ``[-1, 1]`` for the shipped models).

    Example:
        >>> preprocess(np.array([[[0, 255, 51]]], np.uint8)).tolist()
        [[[-1.0, 1.0, -0.6000000238418579]]]
    """
    return as_preprocessing(preprocessing)(np.asarray(images))


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


def load_resized(path: str | os.PathLike, input_size: Sequence[int] = (128, 128), preprocessing=None,
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file and fit it to the model's input size, exactly as in training.

    This is :func:`to_model_input` of a path without its last step: the model input is
    ``preprocess(image, preprocessing)``. The folder job, the image-folder loader and
    :func:`to_model_input` all read files through it.

    Args:
        path: the file (any mode :func:`load_image` reads).
        input_size: ``(height, width)`` of the model input.
        preprocessing: the model's record (:func:`as_preprocessing`; ``None``: the shipped
            models', a bilinear stretch).

    Returns:
        ``(image, original_size)``: ``image`` is ``(height, width, 3) uint8`` RGB (also the
        picture to show beside a map), ``original_size`` the file's own ``(h, w)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded (see :func:`load_image`), or a bad ``input_size``.

    Example:
        >>> import tempfile
        >>> p = tempfile.mkdtemp() + "/wide.png"
        >>> Image.new("RGB", (300, 200), (255, 0, 0)).save(p)
        >>> image, original = load_resized(p, (128, 128))
        >>> image.shape, image.dtype, original, image[0, 0].tolist()
        ((128, 128, 3), dtype('uint8'), (200, 300), [255, 0, 0])
    """
    size = _check_size(input_size)
    policy = as_preprocessing(preprocessing)
    rgb = load_image(path)
    return policy.fit(Image.fromarray(rgb), size), (int(rgb.shape[0]), int(rgb.shape[1]))


def to_model_input(image, input_size: Sequence[int] = (128, 128), preprocessing=None) -> np.ndarray:
    """Bring one image to model input exactly as in training: decode, fit, scale and standardise.

    Args:
        image: a path, a ``PIL.Image`` of any mode, or an array: ``(h, w)`` or ``(h, w, 1|3|4)``
            uint8 (0–255), uint16 (0–65535) or float (already in [0, 1]).
        input_size: ``(height, width)`` of the model input.
        preprocessing: the model's record (:func:`as_preprocessing`; ``None``: the shipped models').

    Returns:
        ``(height, width, 3) float32`` (in ``[-1, 1]`` for the shipped models).

    Example:
        >>> to_model_input(np.zeros((300, 200), np.uint8)).shape
        (128, 128, 3)
    """
    size = _check_size(input_size)
    policy = as_preprocessing(preprocessing)
    if isinstance(image, (str, os.PathLike)):
        return policy(load_resized(image, size, policy)[0])
    if isinstance(image, Image.Image):
        im = _to_rgb8(image)
    elif isinstance(image, np.ndarray):
        im = Image.fromarray(_array_to_rgb8(image))
    else:
        raise TypeError(f"`image` (type {type(image).__name__}) must be a path, a PIL.Image or a numpy array")
    return policy(policy.fit(im, size))
