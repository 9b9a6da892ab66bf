"""What decides the folder job's outputs: the methods, formats and rendering options, checked.

:class:`ExplainSettings` holds everything that decides an image's outputs; it is recorded in each
sidecar, and a rerun with other settings redoes the image. The checks here are the app's own
(comma lists from the command line, class names as targets, colour-map names, the fill's
spellings); window, stride and the other shared arguments go through :mod:`saliency_jax._validate`
and :func:`saliency_jax.occlude.windows.window_grid`, so a bad value gets the same error as from
:func:`saliency_jax.occlusion`.

Example:
    >>> names("methods", "occlusion, crop,occlusion", EXPLAIN_METHODS)
    ('occlusion', 'crop')
    >>> check_target("cross", ["circle", "cross"]), check_target("1", ["circle", "cross"])
    (1, 1)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

from saliency_jax import _validate

__all__ = [
    "EXPLAIN_METHODS",
    "DEFAULT_METHODS",
    "HEAT_METHODS",
    "FORMATS",
    "ExplainSettings",
    "names",
    "check_fill",
    "check_target",
    "check_cmap",
    "check_alpha",
]

#: Methods ``explain_paths`` can run, in panel order.
EXPLAIN_METHODS: tuple[str, ...] = ("crop", "occlusion", "deconvnet", "guided", "gradient")
#: The original write-up's panel: image | crop heat map | occlusion heat map | deconvnet projection.
DEFAULT_METHODS: tuple[str, ...] = ("crop", "occlusion", "deconvnet")
#: The methods whose maps are ``(H, W)`` heat maps (occlusion); the others are backprop maps ``(H, W, C)``.
HEAT_METHODS: tuple[str, ...] = ("crop", "occlusion")
#: Output formats: rendered images and raw float32 arrays.
FORMATS: tuple[str, ...] = ("png", "npy")


@dataclasses.dataclass(frozen=True)
class ExplainSettings:
    """Everything that decides an image's outputs (recorded in each sidecar; a rerun with other
    settings redoes the image). See :func:`saliency_jax.app.explain.explain_paths` for the
    meaning of each field.

    Example:
        >>> s = ExplainSettings(("occlusion",), (32, 32), (8, 8), 0.0, "predicted", ("npy",),
        ...                     "jet", "RdBu_r", 0.5, False)
        >>> s.as_dict()["window"]
        [32, 32]
    """

    methods: tuple[str, ...]
    window: tuple[int, int]
    stride: tuple[int, int]
    fill: float | str
    target: str | int
    formats: tuple[str, ...]
    cmap: str
    signed_cmap: str
    alpha: float
    colorbar: bool

    def as_dict(self) -> dict:
        """The fields as JSON values (tuples become lists), as written to the sidecar."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def names(name: str, value, allowed: Sequence[str]) -> tuple[str, ...]:
    """A non-empty selection from ``allowed``: a list or a comma-separated string (as typed on the
    command line); duplicates are dropped, the first occurrence's order kept.

    Raises:
        ValueError: ``value`` is empty, not a list or string, or names something not allowed.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)) or not items:
        raise ValueError(f"`{name}` (={value!r}) must be a non-empty list from {allowed}")
    out = []
    for item in items:
        item = item.strip() if isinstance(item, str) else item
        if item not in allowed:
            raise ValueError(f"`{name}` (={value!r}): {item!r} is not one of {allowed}")
        if item not in out:
            out.append(item)
    return tuple(out)


def check_fill(fill) -> float | str:
    """The occlusion fill: a finite number (also as typed, ``"0.5"``), ``"mean"`` or ``"blur"``.

    Raises:
        ValueError: anything else.
    """
    if isinstance(fill, str):
        try:
            fill = float(fill)
        except ValueError:
            if fill not in ("mean", "blur"):
                raise ValueError(f"`fill` (={fill!r}) must be a number (model-input units), 'mean' or 'blur'") from None
            return fill
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(fill):
        raise ValueError(f"`fill` (={fill!r}) must be a finite number (model-input units), 'mean' or 'blur'")
    return float(fill)


def check_target(target, classes: Sequence[str]) -> str | int:
    """``"predicted"`` (also for ``None``), ``"all"``, or a class index from an index or a class name
    (also an index typed as text, ``"1"``).

    Raises:
        ValueError: an unknown class name or an index outside ``[0, len(classes))``.
    """
    if target is None or target == "predicted":
        return "predicted"
    if target == "all":
        return "all"
    if isinstance(target, str):
        if target in classes:
            return classes.index(target)
        if target.lstrip("-").isdigit():
            target = int(target)
    if _validate.is_int(target) and 0 <= target < len(classes):
        return int(target)
    raise ValueError(
        f"`target` (={target!r}) must be 'predicted', 'all', a class name in {tuple(classes)} "
        f"or a class index in [0, {len(classes)})"
    )


def check_cmap(name: str, cmap) -> str:
    """``cmap`` if it names a matplotlib colour map.

    Raises:
        ValueError: anything else.
    """
    from matplotlib import colormaps  # matplotlib loads with the first check, not with the module

    if not isinstance(cmap, str) or cmap not in colormaps:
        raise ValueError(f"`{name}` (={cmap!r}) must be a matplotlib colour-map name, e.g. 'jet', 'viridis', 'RdBu_r'")
    return cmap


def check_alpha(alpha) -> float:
    """The overlays' heat-map weight, a number in ``[0, 1]``.

    Raises:
        ValueError: anything else.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` (={alpha!r}) must be a number in [0, 1]")
    return float(alpha)
