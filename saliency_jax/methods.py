"""The method registry: one record per saliency method, and one generic entry, :func:`attribute`.

A *method* turns ``(apply_fn, params, image, target)`` into a map. Each has its own public
function (:func:`saliency_jax.occlusion`, :func:`saliency_jax.deconvnet`, …); this module records
what every consumer needs to know about it — the folder job's ``--methods``, the demo, the
faithfulness report and the spurious-cue audit read :data:`REGISTRY` and keep no list of their own:

* ``name`` — what users type (``--methods occlusion,deconvnet``);
* ``kind`` — what the map is: ``"heat"`` (``(H, W)``, higher = more of the class), ``"signed"``
  (``(H, W)``, positive supports the class, negative opposes it) or ``"rgb"`` (``(H, W, C)``, a
  pattern in input space, shown through the display normalisation);
* ``fn`` — ``fn(apply_fn, params, image, target, **options) -> map``;
* ``options`` — the options it takes, with their defaults (``None``: the function's own default,
  which may depend on the image, such as occlusion's window);
* ``exactness`` — ``"exact"`` (a deterministic function of the model, reproducible to float
  rounding), ``"approximate"`` (trades accuracy for speed) or ``"stochastic"`` (depends on a key);
* ``shows`` — what a value of the map is, for captions (``"drop in logit({cls})"``);
* ``default`` — one of the original write-up's panel (crop, occlusion, deconvnet): the folder
  job's and the demo's default selection.

The windowed methods (occlusion, crop) share one default window and stride,
:func:`default_window` and :func:`default_stride`: a quarter of the image's shorter side, and a
quarter of the window — the folder job completes its settings with the same two functions.

The model-free floors of the faithfulness report (a random map, a centre prior, a colour/edge
filter) are not methods — they never call the model — and live beside them in :data:`BASELINES`.

Adding a method is one function plus one :func:`register` call; the folder job
(``--methods mine``), its panels (by ``kind``) and :func:`attribute` then know it::

    def grad_times_input(apply_fn, params, image, target=None, *, compute_dtype=None):
        g = saliency_jax.gradient(apply_fn, params, image, target=target, compute_dtype=compute_dtype)
        return (g * image).sum(-1)                            # (…, H, W): signed, + supports the class

    register(Method("grad-x-input", "signed", grad_times_input, {"compute_dtype": None}, "exact",
                    "the gradient times the input, summed over channels"))

The execution strategies of occlusion (``"full"``, ``"incremental"``, ``"auto"``) are not methods:
they are :data:`saliency_jax.EXECUTIONS` (``sj.METHODS`` is its deprecated alias).

Example:
    >>> import jax.numpy as jnp
    >>> names()[:5]
    ('crop', 'occlusion', 'deconvnet', 'guided', 'gradient')
    >>> names()[5:10]
    ('integrated_gradients', 'input_x_gradient', 'smoothgrad', 'grad_cam', 'guided_grad_cam')
    >>> get("guided").kind, get("occlusion").exactness
    ('rgb', 'exact')
    >>> apply_fn = lambda p, x: jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], -1) * p
    >>> attribute("gradient", apply_fn, jnp.float32(1.0), jnp.ones((8, 8, 3)), target=0).shape
    (8, 8, 3)
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping

from saliency_jax import _validate
from saliency_jax.backprop.grad_cam import grad_cam as _grad_cam_fn, guided_grad_cam as _guided_grad_cam_fn
from saliency_jax.backprop import gradients as _gradients
from saliency_jax.backprop import methods as _backprop
from saliency_jax.metrics import baselines as _baselines
from saliency_jax.occlude import engine as _engine

__all__ = [
    "KINDS", "EXACTNESS", "Method", "Baseline", "REGISTRY", "BASELINES", "register", "get", "names",
    "attribute", "baseline_map", "default_window", "default_stride", "REPORT_KINDS", "report_order",
]

#: What a map is: ``(H, W)`` heat or signed scores, or an ``(H, W, C)`` pattern in input space.
KINDS = ("heat", "signed", "rgb")
#: How far a map can be trusted to be reproduced: exact, approximate or stochastic.
EXACTNESS = ("exact", "approximate", "stochastic")


@dataclasses.dataclass(frozen=True)
class Method:
    """One saliency method.

    Attributes:
        name: the registry key (``--methods`` on the command line).
        kind: one of :data:`KINDS`.
        fn: ``fn(apply_fn, params, image, target, **options)``; ``image`` ``(H, W, C)`` or
            ``(N, H, W, C)``; ``target`` an int, ``(N,)`` ints, ``None`` (predicted) or ``"all"``.
        options: the keyword options ``fn`` takes, with their defaults.
        exactness: one of :data:`EXACTNESS`.
        summary: one line for listings and ``--help``.
        shows: what a value of the map is, ``{cls}`` standing for the class name (captions
            ``"<name>: <shows>"``); empty: captions read ``"<name> (<cls>)"``.
        default: part of the default selection (the original write-up's panel).
    """

    name: str
    kind: str
    fn: Callable[..., Any]
    options: Mapping[str, Any]
    exactness: str
    summary: str
    shows: str = ""
    default: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"`kind` (={self.kind!r}) must be one of {KINDS}")
        if self.exactness not in EXACTNESS:
            raise ValueError(f"`exactness` (={self.exactness!r}) must be one of {EXACTNESS}")
        if not isinstance(self.name, str) or not self.name or "," in self.name or self.name != self.name.strip():
            raise ValueError(f"`name` (={self.name!r}) must be a non-empty string without commas or outer spaces "
                             "(it is typed in comma lists: --methods a,b)")
        if not callable(self.fn):
            raise TypeError(f"`fn` (={self.fn!r}) must be callable: fn(apply_fn, params, image, target, **options)")
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))

    def caption(self, cls: str) -> str:
        """The caption of this method's tile for class ``cls``.

        Example:
            >>> get("occlusion").caption("cross"), get("deconvnet").caption("cross")
            ('occlusion: drop in logit(cross)', 'deconvnet (cross)')
        """
        return f"{self.name}: {self.shows.format(cls=cls)}" if self.shows else f"{self.name} ({cls})"


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A model-free floor of the faithfulness report: ``fn(images_uint8 (N, H, W, 3), key) -> (N, H, W)``."""

    name: str
    fn: Callable[..., Any]
    summary: str


#: name -> :class:`Method`, in the order methods are shown (panels, tables).
REGISTRY: dict[str, Method] = {}
#: name -> :class:`Baseline`.
BASELINES: dict[str, Baseline] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`REGISTRY` (a name may be registered once) and return it."""
    if not isinstance(method, Method):
        raise TypeError(f"`method` (={method!r}) must be a saliency_jax.methods.Method")
    if method.name in REGISTRY or method.name in BASELINES:
        raise ValueError(f"`method.name` (={method.name!r}) is already registered")
    REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    """The registered method ``name``; a ``ValueError`` naming the registered ones otherwise."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"`method` (={name!r}) must be one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def names(*, kind: str | None = None, exactness: str | None = None, default: bool | None = None) -> tuple[str, ...]:
    """Registered method names in registry order, optionally only those of one ``kind``/``exactness``,
    or only those in (``default=True``) or out of the default selection.

    Example:
        >>> names(default=True), names(kind="rgb")[:3]
        (('crop', 'occlusion', 'deconvnet'), ('deconvnet', 'guided', 'gradient'))
    """
    return tuple(m.name for m in REGISTRY.values()
                 if (kind is None or m.kind == kind) and (exactness is None or m.exactness == exactness)
                 and (default is None or m.default == default))


#: The order reports list methods in, by kind: signed maps (occlusion, the original write-up's
#: subject) first, then heat maps (crop), then rgb projections (deconvnet, guided, gradient).
REPORT_KINDS = ("signed", "heat", "rgb")


def report_order(method_names) -> tuple[str, ...]:
    """``method_names`` (registered) ordered by :data:`REPORT_KINDS`, registry order within a kind.

    Example:
        >>> report_order(names()[:5])
        ('occlusion', 'crop', 'deconvnet', 'guided', 'gradient')
    """
    return tuple(sorted(method_names, key=lambda m: REPORT_KINDS.index(get(m).kind)))


def attribute(name: str, apply_fn: Callable, params: Any, image, target=None, **options):
    """The map of the registered method ``name``: the one generic entry to every method.

    Args:
        name: a registered method (:func:`names`).
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> scores (B, K)``.
        params: its parameters.
        image: ``(H, W, C)`` or ``(N, H, W, C)`` floating point.
        target: an int, one int per image, ``None`` (each image's predicted class) or ``"all"``.
        **options: the method's options (:attr:`Method.options`); an unknown one is a ``TypeError``.

    Returns:
        The method's map: ``(…, H, W)`` for heat and signed methods, ``(…, H, W, C)`` for rgb ones.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: x.mean((1, 2)) * p
        >>> attribute("occlusion", f, jnp.float32(1.0), jnp.ones((8, 8, 3)), target=0, window=4).shape
        (8, 8)
    """
    method = get(name)
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        raise TypeError(f"`{unknown[0]}` is not an option of method {name!r}; it takes {tuple(method.options)}")
    return method.fn(apply_fn, params, image, target, **options)


def baseline_map(name: str, images_uint8, key=None):
    """The baseline ``name``'s maps ``(N, H, W)`` float32 for ``images_uint8 (N, H, W, 3)``."""
    if not isinstance(name, str) or name not in BASELINES:
        raise ValueError(f"`baseline` (={name!r}) must be one of {tuple(BASELINES)}")
    return BASELINES[name].fn(images_uint8, key)


# ----------------------------------------------------------------------------- the methods


def default_window(size) -> int:
    """The windowed methods' default window side: a quarter of the shorter side of ``size`` ``(H, W)``.

    Example:
        >>> default_window((128, 128)), default_window((48, 300)), default_window((3, 3))
        (32, 12, 1)
    """
    return max(1, min(int(size[0]), int(size[1])) // 4)


def default_stride(window) -> tuple[int, int]:
    """The default stride for ``window`` (an int or ``(h, w)``): a quarter of it per axis, at least 1.

    Example:
        >>> default_stride(32), default_stride((48, 32)), default_stride(2)
        ((8, 8), (12, 8), (1, 1))
    """
    h, w = _validate.pair("window", window)
    return max(1, h // 4), max(1, w // 4)


def _occlusion(apply_fn, params, image, target, *, mode="occlude", window=None, stride=None, **options):
    if window is None:
        window = default_window(image.shape[-3:-1])
    if stride is None:
        stride = default_stride(window)
    return _engine.occlusion(apply_fn, params, image, window=window, stride=stride, target=target, mode=mode,
                             **options)


def _crop(apply_fn, params, image, target, **options):
    return _occlusion(apply_fn, params, image, target, mode="crop", **options)


def _rule(rule: str) -> Callable:
    def maps(apply_fn, params, image, target, **options):
        return _backprop.saliency_maps(apply_fn, params, image, target, rule=rule, **options)
    return maps


_OCCLUSION_OPTIONS = {"window": None, "stride": None, "fill": None, "score": None, "combine": "mean",
                      "placement": "clip", "blur_sigma": None, "chunk_size": None, "devices": None,
                      "method": "auto", "compute_dtype": None}
_BACKPROP_OPTIONS = {"strict": True, "switches": True, "bare_max": False, "compute_dtype": None}

# crop keeps only the window: a fill (and the blur of fill="blur") means nothing to it
register(Method("crop", "heat", _crop,
                {k: v for k, v in _OCCLUSION_OPTIONS.items() if k not in ("fill", "blur_sigma")}, "exact",
                "each window alone, resized to the image and classified (the write-up's left heat map)",
                shows="logit({cls})", default=True))
register(Method("occlusion", "signed", _occlusion, _OCCLUSION_OPTIONS, "exact",
                "score drop when a window is filled (Zeiler & Fergus); positive supports the class",
                shows="drop in logit({cls})", default=True))
register(Method("deconvnet", "rgb", _rule("deconvnet"), _BACKPROP_OPTIONS, "exact",
                "the class score projected to pixels through rectified transposed filters and switches",
                default=True))
register(Method("guided", "rgb", _rule("guided"), _BACKPROP_OPTIONS, "exact",
                "guided backprop: the gradient, rectified on the way back"))
register(Method("gradient", "rgb", _rule("gradient"), _BACKPROP_OPTIONS, "exact",
                "the plain gradient of the class score"))


# --- the gradient family (integrated gradients, input × gradient, SmoothGrad, Grad-CAM) -----


def _integrated_gradients(apply_fn, params, image, target, **options):
    return _gradients.integrated_gradients(apply_fn, params, image, target=target, **options)


def _input_x_gradient(apply_fn, params, image, target, **options):
    return _gradients.input_x_gradient(apply_fn, params, image, target=target, **options)


def _smoothgrad(apply_fn, params, image, target, *, method="gradient", seed=0, **options):
    import jax

    _validate.integer("seed", seed)
    return _gradients.smooth_grad(method, apply_fn, params, image, target=target, key=jax.random.key(seed), **options)


def _grad_cam(apply_fn, params, image, target, **options):
    return _grad_cam_fn(apply_fn, params, image, target=target, **options)


def _guided_grad_cam(apply_fn, params, image, target, **options):
    return _guided_grad_cam_fn(apply_fn, params, image, target=target, **options)


register(Method("integrated_gradients", "rgb", _integrated_gradients,
                {"baseline": 0.0, "n_steps": 50, "method": "gausslegendre", "chunk_size": None, "blur_sigma": None,
                 "compute_dtype": None}, "exact",
                "integrated gradients (Sundararajan et al.): (x - baseline) times the path-averaged gradient"))
register(Method("input_x_gradient", "rgb", _input_x_gradient, {"chunk_size": None, "compute_dtype": None}, "exact",
                "the image times the gradient of the class score (Shrikumar et al.)"))
register(Method("smoothgrad", "rgb", _smoothgrad,
                {"method": "gradient", "kind": "smoothgrad", "n_samples": 50, "stdev": 0.15, "relative": True,
                 "seed": 0, "chunk_size": None}, "stochastic",
                "SmoothGrad (Smilkov et al.): a gradient method's maps averaged over noisy copies "
                "(kind: smoothgrad, smoothgrad_sq, vargrad; stdev a fraction of the image's range)"))
register(Method("grad_cam", "heat", _grad_cam, {"layer": None, "relu": True, "upsample": True, "compute_dtype": None},
                "exact", "Grad-CAM (Selvaraju et al.): a layer's channels weighted by their mean gradient, "
                "upsampled to the image"))
register(Method("guided_grad_cam", "rgb", _guided_grad_cam,
                {"layer": None, "interpolate": "nearest", "compute_dtype": None}, "exact",
                "guided backprop times the Grad-CAM map"))


def _random(images_uint8, key):
    import jax

    n, h, w = images_uint8.shape[:3]
    return _baselines.random_map(jax.random.key(0) if key is None else key, (n, h, w))


def _centre(images_uint8, key):
    n, h, w = images_uint8.shape[:3]
    return _baselines.centre_prior((n, h, w))


def _colour_edge(images_uint8, key):
    import jax.numpy as jnp

    return _baselines.colour_edge_saliency(jnp.asarray(images_uint8, jnp.float32))


for _b in (Baseline("random", _random, "uniform noise: the floor of chance"),
           Baseline("centre", _centre, "a Gaussian centre prior (objects tend to sit in the middle)"),
           Baseline("colour-edge", _colour_edge, "Fleck et al.'s model-free colour/texture filter")):
    BASELINES[_b.name] = _b


# the perturbation family
# Feature methods take ``segments=``: a number of superpixels (sj.segments, SLIC when scikit-image is
# installed, else a grid) or an explicit feature mask (H, W) / (N, H, W); the folder job's ``fill`` is
# their baseline.
# The exact Shapley values segment by the grid: SLIC may return many more segments than asked for on a
# small image, and the exact method must stay within its limit of features.
def _featured(name: str, kind: str = "auto", n: int = 50) -> Callable:
    def maps(apply_fn, params, image, target, *, segments=n, fill=0.0, **options):
        from saliency_jax.occlude import perturbation, segments as _segments

        mask = _segments.segments(image, n=segments, kind=kind) if _validate.is_int(segments) else segments
        return getattr(perturbation, name)(apply_fn, params, image, mask, target=target, baseline=fill, **options)
    maps.__name__ = name
    return maps


def _rise(apply_fn, params, image, target, **options):
    from saliency_jax.occlude import perturbation

    return perturbation.rise(apply_fn, params, image, target=target, **options)


_ENGINE_OPTIONS = {"chunk_size": None, "devices": None, "method": "auto", "compute_dtype": None}
register(Method("feature_ablation", "signed", _featured("feature_ablation"),
                {"segments": 50, "fill": 0.0, **_ENGINE_OPTIONS}, "exact",
                "score drop when one segment (superpixel) is replaced by the baseline (Captum FeatureAblation)",
                shows="drop in logit({cls})"))
register(Method("shapley_values", "signed", _featured("shapley_values", kind="grid", n=8),
                {"segments": 8, "fill": 0.0, **_ENGINE_OPTIONS}, "exact",
                "exact Shapley values of the segments, all 2^F coalitions (F <= 16)", shows="Shapley value, logit({cls})"))
register(Method("shapley_sampling", "signed", _featured("shapley_sampling"),
                {"segments": 50, "fill": 0.0, "n_samples": 25, "key": None, **_ENGINE_OPTIONS}, "stochastic",
                "Shapley values of the segments over random permutations (Captum ShapleyValueSampling)",
                shows="Shapley value, logit({cls})"))
register(Method("kernel_shap", "signed", _featured("kernel_shap"),
                {"segments": 50, "fill": 0.0, "n_samples": 1000, "key": None, **_ENGINE_OPTIONS}, "stochastic",
                "KernelSHAP (Lundberg & Lee): kernel-weighted least squares under efficiency",
                shows="Shapley value, logit({cls})"))
register(Method("rise", "heat", _rise,
                {"n_masks": 4000, "cell": 7, "p": 0.5, "key": None, "fill": 0.0, "chunk_size": None, "devices": None,
                 "compute_dtype": None}, "stochastic",
                "RISE (Petsiuk et al.): random upsampled masks, the score-weighted mean mask",
                shows="expected logit({cls}) when visible"))
