"""Grad-CAM (Selvaraju et al. 2017) and guided Grad-CAM on any layer with spatial axes.

Grad-CAM of class ``t`` at a layer with activation ``A`` ``(h, w, c)``: the weights
``α_c = mean_{i,j} ∂y_t/∂A_{ijc}`` (the layer's output gradient averaged over space), the map
``Σ_c α_c A_{··c}`` ``(h, w)``, a ReLU when ``relu=True``, and bilinear upsampling to the input
``(H, W)`` when ``upsample=True`` (half-pixel centres, no antialiasing: torch's
``F.interpolate(mode="bilinear", align_corners=False)``, which Captum's
``LayerAttribution.interpolate`` calls). With ``relu=False, upsample=False`` it equals Captum's
``LayerGradCam(model, layer).attribute(x, target, relu_attributions=False)``.

**Layers.** ``layer`` is the name (or ``/``-joined path) of a Flax linen submodule called by
``apply_fn`` (its ``__call__`` output, the first call; as :func:`~saliency_jax.backprop.project_units`
takes it), or, for any other JAX function, a pair ``(features, head)`` of hashable callables
``features(params, batch) -> A (B, h, w, c)`` and ``head(params, A) -> (B, K)`` logits. A lone
features callable (what ``project_units`` also accepts) is not enough here: Grad-CAM needs the
logits' gradient at the layer, hence the head. ``layer=None`` takes the **last** linen
submodule whose output has spatial axes ``(B, h, w, c)`` (:func:`last_spatial_layer`) and logs
its name (logger ``saliency_jax.backprop.grad_cam``, level INFO); for a plain JAX function that
calls no linen submodule, the output of the last top-level equation of its jaxpr with spatial
axes (logged the same way).

Guided Grad-CAM is guided backprop times the ReLU-ed Grad-CAM upsampled to the input, Captum's
``GuidedGradCam`` (whose default upsampling is torch's legacy ``"nearest"``; also offered).

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> model = sj.get_model("small", num_classes=3, width=0.125, fc=(8,))
    >>> x = jnp.ones((64, 64, 3))
    >>> params = model.init(jax.random.key(0), x[None])
    >>> grad_cam(model.apply, params, x, target=1, layer="conv5").shape
    (64, 64)
    >>> last_spatial_layer(model.apply, params, x)
    'conv5'
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax._dtypes import cast_floating, check_compute_dtype, map_dtype
from saliency_jax.backprop.methods import guided_backprop, layer_features
from saliency_jax._compile import jit_with_policy

__all__ = ["INTERPOLATIONS", "grad_cam", "guided_grad_cam", "last_spatial_layer", "layer_outputs", "upsample_map"]

INTERPOLATIONS = ("bilinear", "nearest")
"""Upsampling modes of :func:`upsample_map` (torch's ``F.interpolate`` modes of the same names)."""

_log = logging.getLogger(__name__)


def layer_outputs(apply_fn: Callable, params: Any, image) -> list[tuple[str, tuple[int, ...]]]:
    """``(path, output shape)`` of every linen submodule ``apply_fn`` calls, in the order they return.

    Traced abstractly (no computation). The shapes include the batch axis of ``image``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import saliency_jax as sj
        >>> model = sj.get_model("small", num_classes=3, width=0.125, fc=(8,))
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 64, 64, 3)))
        >>> layer_outputs(model.apply, params, jnp.ones((64, 64, 3)))[:2]
        [('conv1', (1, 32, 32, 4)), ('conv2', (1, 16, 16, 8))]
    """
    x, _ = _validate.image(image)
    seen = []

    def run(p, batch):
        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name is not None:
                path = "/".join(str(q) for q in context.module.path)
                seen.append((path, tuple(out.shape) if hasattr(out, "shape") else ()))
            return out

        with nn.intercept_methods(interceptor):
            return apply_fn(p, batch)

    jax.eval_shape(run, params, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return seen


def last_spatial_layer(apply_fn: Callable, params: Any, image) -> str:
    """The path of the last linen submodule (in return order) whose output is ``(B, h, w, c)``.

    What :func:`grad_cam` takes when ``layer=None``. Raises ``ValueError`` listing the layers
    seen when there is none. (A plain JAX function that calls no linen module gets, from
    :func:`grad_cam`, the output of the last top-level equation of its jaxpr with spatial axes.)
    """
    outputs = layer_outputs(apply_fn, params, image)
    n = 1 if np.ndim(image) == 3 else image.shape[0]
    spatial = [path for path, shape in outputs if len(shape) == 4 and shape[0] == n]
    if not spatial:
        raise ValueError(f"`layer` (=None): `apply_fn` calls no linen submodule with spatial output (B, h, w, c); "
                         f"layers seen: {outputs}; pass layer= a submodule name or a (features, head) pair")
    return spatial[-1]


def _check_layer(apply_fn, params, x, layer):
    """``(layer, activation shape per image)``; ``layer=None`` resolved to the last spatial one."""
    if layer is None:
        try:
            layer = last_spatial_layer(apply_fn, params, x)
            _log.info("grad_cam: layer=None, using the last spatial layer %r", layer)
        except ValueError:
            if layer_outputs(apply_fn, params, x):
                raise
            layer = _last_spatial_equation(apply_fn, params, x)  # a plain JAX function: no linen layers
            _log.info("grad_cam: layer=None and no linen submodule, using %s", layer)
    if isinstance(layer, _EquationCut):
        act = jax.eval_shape(lambda p, b: _logits_at(apply_fn, layer)(p, b, jnp.zeros((), b.dtype))[1], params,
                             jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
        return layer, tuple(act.shape[1:])
    if isinstance(layer, tuple):
        if len(layer) != 2 or not all(callable(f) for f in layer):
            raise TypeError(f"`layer` (={layer!r}) as a pair must be (features, head): features(params, batch) -> "
                            "activations (B, h, w, c), head(params, activations) -> logits (B, K)")
        _validate.hashable("layer", layer)
        features = layer[0]
    elif callable(layer):
        raise TypeError(f"`layer` (={layer!r}) is a lone callable: Grad-CAM needs the logits' gradient at the layer, "
                        "so pass a submodule name or a pair (features, head) with head(params, activations) -> logits")
    else:
        features = layer_features(apply_fn, layer)  # TypeError for a non-string
    act = jax.eval_shape(features, params, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    shape = tuple(getattr(act, "shape", ()))
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"`layer` (={layer!r}) must have spatial axes: activations (B, h, w, c), got shape "
                         f"{shape or type(act).__name__}")
    return layer, shape[1:]


class _EquationCut:
    """The output of top-level equation ``index`` of ``apply_fn``'s jaxpr: Grad-CAM's layer for a
    plain JAX function (no linen submodules), chosen by :func:`_last_spatial_equation`."""

    def __init__(self, index: int, primitive: str):
        self.index, self.primitive = index, primitive

    def __eq__(self, other):
        return isinstance(other, _EquationCut) and (other.index, other.primitive) == (self.index, self.primitive)

    def __hash__(self):
        return hash((_EquationCut, self.index, self.primitive))

    def __repr__(self):
        return f"the output of equation #{self.index} ({self.primitive}) of apply_fn's jaxpr"


def _last_spatial_equation(apply_fn, params, x) -> _EquationCut:
    """The last top-level equation of ``apply_fn(params, batch)`` with one ``(B, h, w, c)`` output."""
    traced = jx.trace(apply_fn, params, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    found = [(i, e.primitive.name) for i, e in enumerate(traced.jaxpr.jaxpr.eqns)
             if len(e.outvars) == 1 and len(getattr(e.outvars[0].aval, "shape", ())) == 4
             and e.outvars[0].aval.shape[0] == 1 and jnp.issubdtype(e.outvars[0].aval.dtype, jnp.floating)]
    if not found:
        raise ValueError("`layer` (=None): `apply_fn` has no intermediate with spatial axes (B, h, w, c); layers "
                         "seen: [] (no linen submodule); pass layer= a (features, head) pair")
    return _EquationCut(*found[-1])


def _logits_at(apply_fn, layer):
    """``run(params, batch, delta) -> (logits, activation)`` with ``delta`` added to the layer's output."""
    if isinstance(layer, _EquationCut):
        def run_cut(params, batch, delta):
            traced = jx.trace(apply_fn, params, batch)
            target = traced.jaxpr.jaxpr.eqns[layer.index]
            captured = []

            def handler(eqn, invals):
                if eqn is not target:
                    return None
                (out,) = jx.eval_eqn(eqn, invals)
                captured.append(out)
                return [out + delta.astype(out.dtype)]

            return traced.call(params, batch, handler=handler), captured[0]

        return run_cut
    if isinstance(layer, tuple):
        features, head = layer

        def run(params, batch, delta):
            act = features(params, batch)
            return head(params, act + delta.astype(act.dtype)), act

        return run

    def run(params, batch, delta):
        captured = []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name is not None and not captured \
                    and layer in (context.module.name, "/".join(str(q) for q in context.module.path)):
                captured.append(out)
                return out + delta.astype(out.dtype)
            return out

        with nn.intercept_methods(interceptor):
            logits = apply_fn(params, batch)
        return logits, captured[0]

    return run


def _torch_nearest(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of torch's legacy ``"nearest"`` (``floor(i · (float)in/out)`` in float32)."""
    if n_in == n_out:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def upsample_map(maps, size: tuple[int, int], mode: str = "bilinear") -> jax.Array:
    """``maps`` ``(..., h, w)`` resized to ``(..., H, W)`` as torch's ``F.interpolate`` does it.

    ``"bilinear"``: half-pixel centres, no antialiasing (``align_corners=False``);
    ``"nearest"``: torch's legacy nearest, source index ``floor(i · in/out)``.

    Example:
        >>> import jax.numpy as jnp
        >>> upsample_map(jnp.array([[0.0, 1.0]]), (1, 4)).tolist()
        [[0.0, 0.25, 0.75, 1.0]]
        >>> upsample_map(jnp.array([[0.0, 1.0]]), (1, 4), "nearest").tolist()
        [[0.0, 0.0, 1.0, 1.0]]
    """
    _validate.choice("mode", mode, INTERPOLATIONS)
    maps = jnp.asarray(maps)
    h, w = maps.shape[-2:]
    if mode == "nearest":
        return maps[..., _torch_nearest(h, size[0])[:, None], _torch_nearest(w, size[1])[None, :]]
    return jax.image.resize(maps, maps.shape[:-2] + tuple(size), "bilinear", antialias=False)


def _cam_impl(apply_fn, layer, kind, relu, size, mode, dtypes, params, x, targets):
    compute, out = dtypes
    params, xc = cast_floating(params, compute), cast_floating(x, compute)
    run = _logits_at(apply_fn, layer)
    act_shape = jax.eval_shape(lambda p, b: run(p, b, jnp.zeros((), xc.dtype))[1], params, xc).shape
    delta = jnp.zeros(act_shape, jnp.float32)
    logits, back, act = jax.vjp(lambda d: run(params, xc, d), delta, has_aux=True)
    k = logits.shape[-1]

    def cam(cot):
        weights = jnp.mean(back(cot.astype(logits.dtype))[0].astype(jnp.float32), axis=(1, 2))  # (N, c)
        return jnp.sum(weights[:, None, None, :] * act.astype(jnp.float32), axis=-1)  # (N, h, w)

    if kind == "all":
        maps = jnp.swapaxes(jax.vmap(lambda c: cam(jnp.broadcast_to(jax.nn.one_hot(c, k), logits.shape)))(
            jnp.arange(k)), 0, 1)  # (N, K, h, w)
        scores = logits
    else:
        t = jnp.argmax(logits, axis=-1) if kind == "predicted" else targets
        maps = cam(jax.nn.one_hot(t, k))
        scores = jnp.take_along_axis(logits, t[:, None], axis=1)[:, 0]
    if relu:
        maps = jax.nn.relu(maps)
    if size is not None:
        maps = upsample_map(maps, size, mode)
    ok = jnp.isfinite(scores).reshape(scores.shape + (1, 1))
    return jnp.where(ok, maps, jnp.nan).astype(out)


def _grad_cam(apply_fn, params, image, target, layer, relu, size_mode, compute_dtype):
    _validate.apply_fn(apply_fn)
    _validate.boolean("relu", relu)
    compute = check_compute_dtype(compute_dtype)
    x, batched = _validate.image(image)
    k = _validate.num_classes(apply_fn, params, x)
    kind, targets = _validate.target(target, n=x.shape[0], num_classes=k)
    layer, _ = _check_layer(apply_fn, params, x, layer)
    size, mode = size_mode(x)
    static = (apply_fn, layer, kind, relu, size, mode, (compute, map_dtype(x.dtype).name))
    run = jit_with_policy(_cam_impl, tuple(range(len(static))), args=(params, x, targets))
    out = run(*static, params, x, targets)
    return out, batched


def grad_cam(apply_fn: Callable, params: Any, image, *, target=None, layer=None, relu: bool = True,
             upsample: bool = True, compute_dtype=None) -> jax.Array:
    """Grad-CAM of the target logit at ``layer`` (see the module for the formula and the layer forms).

    One forward pass per image; the backward pass stops at the layer (``"all"``: vmapped over
    classes).

    Args:
        apply_fn: ``apply_fn(params, batch (B, H, W, C)) -> (B, K)`` logits; hashable.
        params: its parameters.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating, finite.
        target: ``None`` (predicted class), an int, one int per image ``(N,)``, or ``"all"``.
        layer: a linen submodule name/path, a hashable pair ``(features, head)``, or ``None``
            (the last linen submodule with spatial output, logged; :func:`last_spatial_layer`).
        relu: keep the positive part of the map (Grad-CAM's definition; Captum's
            ``relu_attributions``, which defaults to False there).
        upsample: resize the ``(h, w)`` map bilinearly to the input's ``(H, W)``.
        compute_dtype: run the model in this floating dtype (maps keep the dtype rule).

    Returns:
        float32 (float64 for a float64 image) maps without a channel axis: ``(H, W)`` /
        ``(N, H, W)`` when upsampled, else the layer's ``(h, w)`` / ``(N, h, w)``; with
        ``target="all"`` a class axis after ``N``. NaN where the target logit is not finite.

    Raises:
        TypeError, ValueError: naming the argument, before tracing: a ``layer`` that does not
            exist (the layers seen are listed), one without spatial axes, a lone callable,
            non-finite pixels, bad targets.
    """
    _validate.boolean("upsample", upsample)
    out, batched = _grad_cam(apply_fn, params, image, target, layer, relu,
                             lambda x: ((tuple(x.shape[1:3]) if upsample else None), "bilinear"), compute_dtype)
    return out if batched else out[0]


def guided_grad_cam(apply_fn: Callable, params: Any, image, *, target=None, layer=None,
                    interpolate: str = "nearest", compute_dtype=None) -> jax.Array:
    """Guided Grad-CAM: guided backprop times the ReLU-ed Grad-CAM upsampled to the input.

    Captum's ``GuidedGradCam(model, layer).attribute(x, target)``: the Grad-CAM map
    (``relu=True``) resized to ``(H, W)`` with ``interpolate`` (Captum's default ``"nearest"``,
    torch's legacy rule; or ``"bilinear"``) multiplies every channel of
    :func:`~saliency_jax.backprop.guided_backprop`'s map.

    Args:
        apply_fn, params, image, target, layer, compute_dtype: as for :func:`grad_cam`.
        interpolate: one of :data:`INTERPOLATIONS`.

    Returns:
        Maps of guided backprop's shape, ``(H, W, C)`` / ``(N, H, W, C)`` (``"all"``: with a
        class axis), float32 (float64 for a float64 image).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import saliency_jax as sj
        >>> model = sj.get_model("small", num_classes=3, width=0.125, fc=(8,))
        >>> x = jnp.ones((64, 64, 3))
        >>> params = model.init(jax.random.key(0), x[None])
        >>> guided_grad_cam(model.apply, params, x, target=0).shape
        (64, 64, 3)
    """
    _validate.choice("interpolate", interpolate, INTERPOLATIONS)
    cam, batched = _grad_cam(apply_fn, params, image, target, layer, True,
                             lambda x: (tuple(x.shape[1:3]), interpolate), compute_dtype)
    guided = guided_backprop(apply_fn, params, image if np.ndim(image) == 4 else jnp.asarray(image)[None],
                             target, compute_dtype=compute_dtype)
    out = guided * cam[..., None].astype(guided.dtype)
    return out if batched else out[0]
