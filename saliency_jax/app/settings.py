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
import json
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
    "check_options",
    "parse_option",
    "SHARED_OPTIONS",
]

#: The settings fields that are method options too (window, stride, fill): each method gets those
#: it takes; ``--option`` may not set them (they have flags of their own).
SHARED_OPTIONS: tuple[str, ...] = ("window", "stride", "fill", "segments")

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
    segments: int | None = None  # superpixels of the feature methods; None: each method's own default
    options: tuple[tuple[str, str, object], ...] = ()

    def as_dict(self) -> dict:
        """The fields as JSON values (tuples become lists), as written to the sidecar; the method
        ``options`` as ``{method: {key: value}}``, left out when there are none, and ``segments``
        left out when no method segments the image (so the sidecars of earlier runs read as before)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
               if k != "options"}
        if self.segments is None or not any("segments" in registry.get(m).options for m in self.methods):
            del out["segments"]  # decides nothing without a feature method: earlier sidecars stay valid
        if self.options:
            out["options"] = self.method_options_dict()
        return out

    def method_options(self, method: str) -> dict:
        """The ``options`` given for ``method`` (``{key: value}``; empty when none were given).

        Example:
            >>> s = ExplainSettings.request(methods="integrated_gradients", options=["integrated_gradients.n_steps=8"])
            >>> s.method_options("integrated_gradients")
            {'n_steps': 8}
        """
        return {k: v for m, k, v in self.options if m == method}

    def method_options_dict(self) -> dict:
        """``{method: {key: value}}`` of every option given."""
        out: dict = {}
        for m, k, v in self.options:
            out.setdefault(m, {})[k] = v
        return out

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
        segments: int | None = None,
        options=None,
    ) -> "ExplainSettings":
        """The options of :func:`~saliency_jax.app.explain.explain_paths` (their meaning and
        defaults are documented there), checked without a model.

        ``methods=None`` is the registry's default selection; ``window``/``stride`` stay as given
        (``None``, an int or a pair, checked for type) and ``target`` as given until
        :meth:`complete`. ``options`` are the methods' own options (:func:`check_options`).

        Raises:
            ValueError, TypeError: an option no model could accept.
        """
        if window is not None:
            _validate.pair("window", window)
        if stride is not None:
            _validate.pair("stride", stride)
        chosen = check_methods(methods)
        return cls(
            methods=chosen, options=check_options(options, chosen), window=window, stride=stride, fill=check_fill(fill), target=target,
            formats=names("formats", formats, FORMATS), cmap=check_cmap("cmap", cmap),
            signed_cmap=check_cmap("signed_cmap", signed_cmap), alpha=check_alpha(alpha),
            colorbar=_validate.boolean("colorbar", colorbar), segments=None if segments is None else _validate.integer("segments", segments, lo=1),
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


def parse_option(text: str) -> tuple[str, str, object]:
    """One ``METHOD.KEY=VALUE`` as typed (``--option``) -> ``(method, key, value)``.

    The value is read as JSON where it parses (``8`` an int, ``0.5`` a float, ``true``/``false``
    bools, ``null`` None, ``"x"`` or ``[1, 2]``), else kept as the text (``riemann_trapezoid``).

    Example:
        >>> parse_option("integrated_gradients.n_steps=8"), parse_option("smoothgrad.kind=vargrad")
        (('integrated_gradients', 'n_steps', 8), ('smoothgrad', 'kind', 'vargrad'))
        >>> parse_option("grad_cam.relu=false")
        ('grad_cam', 'relu', False)

    Raises:
        ValueError: text not of the form ``METHOD.KEY=VALUE``.
    """
    if not isinstance(text, str) or "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"`option` (={text!r}) must be METHOD.KEY=VALUE, e.g. integrated_gradients.n_steps=32")
    lhs, raw = text.split("=", 1)
    method, key = (part.strip() for part in lhs.split(".", 1))
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return method, key, value


def _json_value(value) -> bool:
    if value is None or isinstance(value, (str, bool, numbers.Real)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_json_value(v) for v in value)
    return False


def check_options(value, methods: Sequence[str]) -> tuple[tuple[str, str, object], ...]:
    """The methods' own options, checked against the registry: sorted ``(method, key, value)``.

    Args:
        value: ``None``; ``METHOD.KEY=VALUE`` strings (one, or a list: :func:`parse_option`);
            ``(method, key, value)`` triples; or a mapping ``{method: {key: value}}``.
        methods: the run's methods; an option must name one of them and one of its
            :attr:`~saliency_jax.methods.Method.options` (not the shared ``window``, ``stride``,
            ``fill``, which have settings of their own). Values must be JSON scalars or lists
            (they are recorded in the sidecars); their meaning is checked by the method.

    Example:
        >>> check_options(["smoothgrad.n_samples=8", "grad_cam.relu=false"], ("smoothgrad", "grad_cam"))
        (('grad_cam', 'relu', False), ('smoothgrad', 'n_samples', 8))

    Raises:
        ValueError: a malformed option, a method not in ``methods``, a key the method does not
            take (the message lists the keys it takes), a value given twice or not JSON.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        triples = []
        for m, opts in value.items():
            if not isinstance(opts, dict):
                raise ValueError(f"`options` ({m!r}: {opts!r}) must map each method to {{key: value}}")
            triples += [(m, k, v) for k, v in opts.items()]
    elif isinstance(value, (list, tuple)):
        triples = [parse_option(v) if isinstance(v, str) else tuple(v) for v in value]
    else:
        raise ValueError(f"`options` (={value!r}) must be METHOD.KEY=VALUE strings or {{method: {{key: value}}}}")
    seen = {}
    for triple in triples:
        if len(triple) != 3:
            raise ValueError(f"`options` ({triple!r}) must be (method, key, value)")
        m, k, v = triple
        if m not in methods:
            raise ValueError(f"`options`: method {m!r} (in {m}.{k}) is not among the run's methods {tuple(methods)}")
        taken = tuple(o for o in registry.get(m).options if o not in SHARED_OPTIONS)
        if k not in taken:
            shared = f"; set {k} with its own option (--{k})" if k in SHARED_OPTIONS else ""
            raise ValueError(f"`options`: {k!r} is not an option of method {m!r}; it takes {taken}{shared}")
        if not _json_value(v):
            raise ValueError(f"`options`: {m}.{k} (={v!r}) must be a number, string, bool, null or a list of them")
        if (m, k) in seen and seen[(m, k)] != v:
            raise ValueError(f"`options`: {m}.{k} is given twice ({seen[(m, k)]!r} and {v!r})")
        seen[(m, k)] = list(v) if isinstance(v, tuple) else v
    return tuple(sorted((m, k, _frozen(v)) for (m, k), v in seen.items()))


def _frozen(v):
    """Lists as tuples (settings are frozen and hashable)."""
    return tuple(_frozen(x) for x in v) if isinstance(v, list) else v
