"""The options of an occlusion call: one frozen, validated record, one resolver, one auto rule.

Every occlusion entry point (:func:`~saliency_jax.occlude.engine.occlusion`,
:func:`~saliency_jax.occlude.drill_down.drill_down_occlusion`,
:func:`~saliency_jax.occlude.capped.capped_occlusion`) keeps its keyword arguments and builds
them, once, into an :class:`OcclusionOptions`: everything that can be checked without the
image is checked there (choices, window and stride pairs, chunk size, ``blur_sigma``, devices,
``compute_dtype``) and the defaults that need no image are resolved (``stride``, ``score``,
``blur_sigma``). What needs the image or the model is checked by :func:`inputs` (the image,
the window grid against it, the fill) and :func:`targets` (the classes, counted by tracing
the model abstractly: always last). An entry point that offers fewer options (drill-down, the
capped field) refuses the rest after the record is built, naming them.

The pieces are written for any masked evaluation, not only windows: :func:`check_fill` (what
a masked pixel becomes), :func:`check_chunk_size` (how many variants per model call) and
:func:`counted_choice` (the counted-FLOP rule of ``method="auto"``) take no window.

Example:
    >>> from saliency_jax.occlude.options import OcclusionOptions, counted_choice
    >>> opts = OcclusionOptions(window=8, stride=4, mode="crop")
    >>> opts.window_yx, opts.stride_yx, opts.score, opts.blur_sigma
    ((8, 8), (4, 4), 'output', 2.0)
    >>> OcclusionOptions(window=8, method="fast")
    Traceback (most recent call last):
    ...
    ValueError: `method` (='fast') must be one of ('full', 'incremental', 'auto')
    >>> counted_choice(3.0), counted_choice(1.2), counted_choice(None)
    ('incremental', 'full', 'full')
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax._dtypes import check_compute_dtype
from saliency_jax.occlude.windows import COMBINES, PLACEMENTS, window_grid

__all__ = ["EXECUTIONS", "MODES", "SCORES", "FILL_NAMES", "AUTO_MIN_RATIO", "OcclusionOptions", "Inputs",
           "inputs", "targets", "check_fill", "check_chunk_size", "counted_choice"]

EXECUTIONS = ("full", "incremental", "auto")
"""How the variants run through the model (``method=``): ``"full"`` re-inference of every variant,
exact ``"incremental"`` re-inference of the region each one changes, or ``"auto"`` (see
:func:`counted_choice` and :func:`saliency_jax.occlude.tune.auto_plan`)."""

MODES = ("occlude", "crop")
SCORES = ("difference", "output")
FILL_NAMES = ("mean", "blur")

AUTO_MIN_RATIO = 1.5
"""``method="auto"`` chooses incremental re-inference when the counted-FLOP ratio (full over
incremental) is at least this."""


def counted_choice(ratio: float | None) -> str:
    """The counted-FLOP rule of ``method="auto"``: ``"incremental"`` where ``ratio`` (full over
    incremental counted FLOPs, :attr:`saliency_jax.occlude.flops.FlopReport.ratio`) is at least
    :data:`AUTO_MIN_RATIO`, else ``"full"`` (also for ``None``: a crop, where nothing is saved).

    Example:
        >>> counted_choice(AUTO_MIN_RATIO)
        'incremental'
    """
    return "incremental" if ratio is not None and ratio >= AUTO_MIN_RATIO else "full"


def check_chunk_size(chunk_size) -> int | str | None:
    """``chunk_size`` checked: a positive int (returned as an int), ``"auto"`` or ``None``.

    Example:
        >>> check_chunk_size(8), check_chunk_size("auto"), check_chunk_size(None)
        (8, 'auto', None)
    """
    if chunk_size is None or isinstance(chunk_size, str):
        if chunk_size not in (None, "auto"):
            raise ValueError(f"`chunk_size` (={chunk_size!r}) must be a positive int, 'auto' or None")
        return chunk_size
    return _validate.integer("chunk_size", chunk_size, lo=1)


def check_fill(fill, mode: str, images_shape, names: Sequence[str] = FILL_NAMES) -> tuple[str, jax.Array]:
    """``(kind, fill)``: what a masked pixel becomes, checked against images ``(N, H, W, C)``.

    ``kind`` is ``"value"`` (a scalar or per-channel vector ``(C,)``), ``"image"`` (a baseline
    ``(H, W, C)``, broadcast here to ``(N, H, W, C)``, or ``(N, H, W, C)``), one of ``names``
    (then ``fill`` is a float32 zero placeholder) or ``"none"`` for ``mode="crop"``. An array
    ``fill`` is returned in its own dtype: each engine casts it where it builds the variants.

    Example:
        >>> check_fill(None, "occlude", (1, 4, 4, 3))[0], check_fill("mean", "occlude", (1, 4, 4, 3))[0]
        ('value', 'mean')
    """
    n, h, w, c = images_shape
    names = tuple(names)
    if mode == "crop":
        if fill is not None:
            raise ValueError(f"`fill` (={fill!r}) has no effect with mode='crop' (only the window is kept); leave it None")
        return "none", jnp.zeros((), jnp.float32)
    if fill is None:
        return "value", jnp.zeros((), jnp.float32)
    if isinstance(fill, str):
        if fill not in names:
            raise ValueError(
                f"`fill` (={fill!r}) must be a number, a per-channel vector (C,), a baseline image "
                f"(H, W, C) or (N, H, W, C), or one of {names}"
            )
        return fill, jnp.zeros((), jnp.float32)
    if isinstance(fill, bool) or not (isinstance(fill, numbers.Real) or hasattr(fill, "shape")):
        raise TypeError(f"`fill` (={fill!r}) must be a number, an array or one of {names}")
    arr = jnp.asarray(fill)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`fill` (dtype={arr.dtype}) must be real-valued")
    if _validate.is_concrete(arr) and not np.isfinite(np.asarray(arr)).all():
        raise ValueError("`fill` contains non-finite values; only finite fills are accepted")
    if arr.shape in ((), (c,)):
        return "value", arr
    if arr.shape == (h, w, c):
        return "image", jnp.broadcast_to(arr, (n, h, w, c))
    if arr.shape == (n, h, w, c):
        return "image", arr
    raise ValueError(
        f"`fill` (shape={tuple(arr.shape)}) must be a scalar, a per-channel vector ({c},), or a baseline "
        f"image ({h}, {w}, {c}) or ({n}, {h}, {w}, {c})"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class OcclusionOptions:
    """The options of one occlusion call, checked where no image is needed (frozen).

    Built once per call from the entry point's keyword arguments (see
    :func:`saliency_jax.occlusion` for what each means). On construction, ``window`` and
    ``stride`` are checked and kept as given (errors quote them so), and ``window_yx`` and
    ``stride_yx`` hold them as ``(rows, cols)`` pairs (``stride=None``: the window); ``score=None`` the
    mode's default (``"difference"`` for ``"occlude"``, ``"output"`` for ``"crop"``),
    ``blur_sigma=None`` a quarter of the window's shorter side (at least 0.5), ``chunk_size`` an
    int, ``"auto"`` or ``None``, ``devices`` a non-empty tuple or ``None`` (the entry point's
    default), ``compute_dtype`` a dtype name or ``None``. ``fill`` is kept as given: it is
    checked against the image by :func:`inputs`.

    Raises:
        TypeError, ValueError: naming the argument, for anything malformed.

    Example:
        >>> OcclusionOptions(window=(8, 6), stride=(4, 3), fill="blur").blur_sigma
        1.5
    """

    window: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    placement: str = "clip"
    mode: str = "occlude"
    fill: Any = None
    score: str | None = None
    combine: str = "mean"
    blur_sigma: float | None = None
    chunk_size: int | str | None = None
    devices: tuple[Any, ...] | None = None
    method: str = "auto"
    compute_dtype: Any = None
    window_yx: tuple[int, int] = dataclasses.field(init=False)
    stride_yx: tuple[int, int] = dataclasses.field(init=False)

    def __post_init__(self):
        window = _validate.pair("window", self.window)
        stride = window if self.stride is None else _validate.pair("stride", self.stride)
        _validate.choice("placement", self.placement, PLACEMENTS)
        mode = _validate.choice("mode", self.mode, MODES)
        score = _validate.choice("score", ("difference" if mode == "occlude" else "output") if self.score is None
                                 else self.score, SCORES)
        _validate.choice("combine", self.combine, COMBINES)
        method = _validate.choice("method", self.method, EXECUTIONS)
        if method == "incremental" and mode != "occlude":
            raise ValueError(
                f"`method` (={method!r}) applies to mode='occlude' only (a crop changes every pixel); "
                f"with mode={mode!r} use method='full' or 'auto'"
            )
        sigma = self.blur_sigma
        if sigma is None:
            sigma = max(min(window) / 4.0, 0.5)
        elif isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0:
            raise ValueError(f"`blur_sigma` (={sigma!r}) must be a positive number of pixels")
        chunk = check_chunk_size(self.chunk_size)
        dtype = check_compute_dtype(self.compute_dtype)
        devices = None if self.devices is None else tuple(self.devices)
        if devices == ():
            raise ValueError("`devices` (=()) must name at least one device")
        resolved = dict(window_yx=window, stride_yx=stride, score=score, blur_sigma=float(sigma), chunk_size=chunk,
                        devices=devices, compute_dtype=dtype)
        for name, value in resolved.items():
            object.__setattr__(self, name, value)  # frozen: the resolved values replace the given ones once


class Inputs(NamedTuple):
    """The image-dependent part of a call, checked (:func:`inputs`).

    Attributes:
        images: ``(N, H, W, C)`` floating point, finite where concrete.
        batched: whether the caller passed a batch (else one image ``(H, W, C)``).
        fill_kind, fill: :func:`check_fill`'s result.
    """

    images: jax.Array
    batched: bool
    fill_kind: str
    fill: jax.Array


def inputs(options: OcclusionOptions, apply_fn: Callable, image, *, fill_names: Sequence[str] = FILL_NAMES) -> Inputs:
    """Check ``apply_fn``, the image, the window grid against it and the fill (no model traced).

    Args:
        options: the call's :class:`OcclusionOptions`.
        apply_fn: the model (checked callable and hashable).
        image: ``(H, W, C)`` or ``(N, H, W, C)``.
        fill_names: the named fills the entry point offers.

    Example:
        >>> import jax.numpy as jnp
        >>> got = inputs(OcclusionOptions(window=2), lambda p, x: x.sum((1, 2)), jnp.ones((4, 4, 3)))
        >>> got.images.shape, got.batched, got.fill_kind
        ((1, 4, 4, 3), False, 'value')
    """
    _validate.apply_fn(apply_fn)
    images, batched = _validate.image(image)
    window_grid(tuple(images.shape[1:3]), options.window, options.stride, options.placement)  # fits the image
    fill_kind, fill = check_fill(options.fill, options.mode, images.shape, fill_names)
    return Inputs(images, batched, fill_kind, fill)


def targets(apply_fn: Callable, params: Any, images: jax.Array, target) -> tuple[str, jax.Array]:
    """``(kind, targets (N,) int32)`` (:func:`saliency_jax._validate.target`); the model's classes
    are counted by tracing it abstractly, so call this after every other check.

    Example:
        >>> import jax.numpy as jnp
        >>> targets(lambda p, x: x.sum((1, 2)), None, jnp.ones((2, 4, 4, 3)), 1)[0]
        'index'
    """
    return _validate.target(target, n=images.shape[0], num_classes=_validate.num_classes(apply_fn, params, images))
