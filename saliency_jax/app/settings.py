"""What decides the folder job's outputs: the methods, formats and rendering options, checked.

:class:`ExplainSettings` holds everything that decides an image's outputs; it is recorded in each
sidecar, and a rerun with other settings redoes the image. It is built in one place,
:meth:`ExplainSettings.request` (the options as given, checked before anything is read), then
:meth:`ExplainSettings.complete` (the defaults and class names a model decides). The methods are
those of the registry (:mod:`saliency_jax.methods`), shown in its order. The checks here are the
app's own (comma lists from the command line, class names as targets, the fill's spellings);
window, stride and the other shared arguments go through :mod:`saliency_jax._validate` and
:func:`saliency_jax.occlude.windows.window_grid`, so a bad value gets the same error as from
:func:`saliency_jax.occlusion`; colour maps through :func:`saliency_jax._plotting.check_cmap`.

Example:
    >>> names("methods", "occlusion, crop,occlusion", ("crop", "occlusion"))
    ('occlusion', 'crop')
    >>> check_target("cross", ["circle", "cross"]), check_target("1", ["circle", "cross"])
    (1, 1)
    >>> s = ExplainSettings.request(methods="occlusion,crop", target="cross").complete((128, 128), ["ring", "cross"])
    >>> s.methods, s.window, s.stride, s.target
    (('crop', 'occlusion'), (32, 32), (8, 8), 1)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

from saliency_jax import _validate, methods as registry
from saliency_jax._plotting import check_cmap
from saliency_jax.occlude.windows import window_grid

__all__ = [
    "FORMATS",
    "ExplainSettings",
    "check_methods",
    "names",
    "check_fill",
    "check_target",
    "check_alpha",
]

#: Output formats: rendered images and raw float32 arrays.
FORMATS: tuple[str, ...] = ("png", "npy")


@dataclasses.dataclass(frozen=True)
class ExplainSettings:
    """Everything that decides an image's outputs (recorded in each sidecar; a rerun with other
    settings redoes the image). See :func:`saliency_jax.app.explain.explain_paths` for the
    meaning of each field.

    Build it with :meth:`request` (checks the options as given) and :meth:`complete` (fills in
    what the model decides); a settings record from :meth:`request` alone may still hold
    ``None`` for the window and stride and a class name as the target.

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

    @classmethod
    def request(
        cls,
        *,
        methods: str | Sequence[str] | None = None,
        window: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        fill: float | str = 0.0,
        target: str | int | None = "predicted",
        formats: str | Sequence[str] = FORMATS,
        cmap: str = "jet",
        signed_cmap: str = "RdBu_r",
        alpha: float = 0.5,
        colorbar: bool = False,
    ) -> "ExplainSettings":
        """The options of :func:`~saliency_jax.app.explain.explain_paths` (their meaning and
        defaults are documented there), checked without a model.

        ``methods=None`` is the registry's default selection; ``window``/``stride`` stay as given
        (``None``, an int or a pair, checked for type) and ``target`` as given until
        :meth:`complete`.

        Raises:
            ValueError, TypeError: an option no model could accept.
        """
        if window is not None:
            _validate.pair("window", window)
        if stride is not None:
            _validate.pair("stride", stride)
        return cls(
            methods=check_methods(methods), window=window, stride=stride, fill=check_fill(fill), target=target,
            formats=names("formats", formats, FORMATS), cmap=check_cmap("cmap", cmap),
            signed_cmap=check_cmap("signed_cmap", signed_cmap), alpha=check_alpha(alpha),
            colorbar=_validate.boolean("colorbar", colorbar),
        )

    def complete(self, input_size: Sequence[int], classes: Sequence[str]) -> "ExplainSettings":
        """These settings for a model of input ``(H, W, …)`` and ``classes``: the target among its
        classes, the default window and stride (:func:`saliency_jax.methods.default_window`,
        :func:`~saliency_jax.methods.default_stride`) and the window grid checked against the input
        size exactly as :func:`saliency_jax.occlusion` checks it.

        Raises:
            ValueError, TypeError: a target the model does not have, a window or stride that does
                not fit its input.
        """
        h, w = input_size[:2]
        window = self.window if self.window is not None else registry.default_window((h, w))
        window_pair = _validate.pair("window", window)
        stride = self.stride if self.stride is not None else registry.default_stride(window_pair)
        window_grid((h, w), window, stride)  # the same errors as sj.occlusion for a window or stride that does not fit
        return dataclasses.replace(self, window=window_pair, stride=_validate.pair("stride", stride),
                                   target=check_target(self.target, list(classes)))


def check_methods(value) -> tuple[str, ...]:
    """Registered method names (:func:`saliency_jax.methods.names`), a list or a comma-separated
    string, in registry (panel) order; ``None`` is the registry's default selection.

    Example:
        >>> check_methods("deconvnet,crop"), check_methods(None)
        (('crop', 'deconvnet'), ('crop', 'occlusion', 'deconvnet'))
    """
    if value is None:
        return registry.names(default=True)
    chosen = names("methods", value, registry.names())
    return tuple(m for m in registry.names() if m in chosen)


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
    named = tuple(classes) if len(classes) <= 20 else f"the model's {len(classes)} classes (e.g. {tuple(classes[:3])})"
    raise ValueError(
        f"`target` (={target!r}) must be 'predicted', 'all', a class name in {named} "
        f"or a class index in [0, {len(classes)})"
    )


def check_alpha(alpha) -> float:
    """The overlays' heat-map weight, a number in ``[0, 1]``.

    Raises:
        ValueError: anything else.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` (={alpha!r}) must be a number in [0, 1]")
    return float(alpha)
