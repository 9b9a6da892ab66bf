"""Deconvnet, guided backprop and gradient maps; unit projections; the dataset-level "top 9".

All maps explain **logits** (pre-softmax scores): ``apply_fn(params, batch)`` must return
``(B, K)`` logits. Every function takes one image ``(H, W, C)`` or a batch ``(N, H, W, C)``
(floating dtype), runs one forward pass per image and the backward pass ``vmap``-ed over
the signals it needs (classes or units), and composes with ``jax.jit`` and ``jax.vmap``.
The maps are not additive: the map of a sum of signals is not the sum of their maps (the
rules rectify the signal on the way down), so never build one by summing others.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> from saliency_jax.backprop import deconvnet
    >>> model = sj.get_model("small", num_classes=3, width=0.125, fc=(8,))
    >>> x = jnp.ones((128, 128, 3))
    >>> params = model.init(jax.random.key(0), x[None])
    >>> deconvnet(model.apply, params, x, target=1).shape
    (128, 128, 3)
    >>> deconvnet(model.apply, params, x, target="all").shape
    (3, 128, 128, 3)
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax.backprop import receptive_field as local, rules
from saliency_jax.backprop.rewrite import with_rule

__all__ = [
    "saliency_maps",
    "deconvnet",
    "guided_backprop",
    "gradient",
    "UnitProjections",
    "project_units",
    "layer_features",
    "TopActivations",
    "top_activations",
    "top_grid",
    "top_figure",
]


# --------------------------------------------------------------------------------------------
# validation (at the Python boundary, before the heavy tracing)


def _check_apply(apply_fn):
    if not callable(apply_fn):
        raise TypeError(f"`apply_fn` (={apply_fn!r}) must be callable as apply_fn(params, batch) -> (B, K) logits")


def _check_image(image):
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        try:
            image = jnp.asarray(image)
        except TypeError:
            raise TypeError(f"`image` must be an array (H, W, C) or (N, H, W, C), got {type(image).__name__}") from None
    if image.ndim not in (3, 4):
        raise ValueError(f"`image` (shape {tuple(image.shape)}) must have shape (H, W, C) or (N, H, W, C)")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(f"`image` (dtype {image.dtype}) must have a floating dtype, e.g. float32")
    if 0 in image.shape:
        raise ValueError(f"`image` (shape {tuple(image.shape)}) must not be empty")
    batched = image.ndim == 4
    return (image if batched else image[None]), batched


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` (={value!r}) must be a bool")


def _num_classes(apply_fn, params, x) -> int:
    spec = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)
    out = jax.eval_shape(apply_fn, params, spec)
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"`apply_fn` must map a batch (B, H, W, C) to logits (B, K); for B=1 it returned "
                         f"{shape if shape is not None else type(out).__name__}")
    return int(shape[1])


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_target(target, n: int, num_classes: int, batched: bool):
    """``(mode, targets)``: mode in {'given', 'predicted', 'all'}; targets ``(N,)`` int32 or None."""
    accepted = ("None (the predicted class), 'all', an int class index, or one int per image "
                f"(length {n}), each in [0, {num_classes})")
    if target is None:
        return "predicted", None
    if isinstance(target, str):
        if target != "all":
            raise ValueError(f"`target` (={target!r}) must be {accepted}")
        return "all", None
    if _is_int(target):
        if not 0 <= int(target) < num_classes:
            raise ValueError(f"`target` (={target!r}) must be {accepted}")
        return "given", jnp.full((n,), int(target), jnp.int32)
    if isinstance(target, jax.core.Tracer):
        t = target
        if t.ndim == 0:
            t = jnp.broadcast_to(t, (n,))
        if t.shape != (n,) or not jnp.issubdtype(t.dtype, jnp.integer):
            raise ValueError(f"`target` (traced, shape {t.shape}, dtype {t.dtype}) must be {accepted}")
        return "given", t.astype(jnp.int32)
    try:
        t = np.asarray(target)
    except Exception:  # noqa: BLE001
        raise TypeError(f"`target` (={target!r}) must be {accepted}") from None
    if not np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_:
        raise TypeError(f"`target` (={target!r}) must be {accepted}")
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,) or (not batched and t.ndim != 1):
        raise ValueError(f"`target` (={target!r}, shape {t.shape}) must be {accepted}")
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"`target` (={target!r}) must be {accepted}")
    return "given", jnp.asarray(t, jnp.int32)


def _hashable(fn) -> bool:
    try:
        hash(fn)
        return True
    except TypeError:
        return False


# --------------------------------------------------------------------------------------------
# class maps


def _maps_impl(apply_fn, rule, mode, strict, switches, bare_max, params, x, targets):
    ruled = with_rule(lambda p, xi: apply_fn(p, xi[None])[0], rule, strict=strict, switches=switches,
                      bare_max=bare_max, data_argnums=1)

    def one(xi, ti):
        logits, vjp = jax.vjp(lambda v: ruled(params, v), xi)
        k = logits.shape[-1]
        if mode == "all":
            return jax.vmap(lambda c: vjp(c)[0])(jnp.eye(k, dtype=logits.dtype))
        t = jnp.argmax(logits) if mode == "predicted" else ti
        return vjp(jax.nn.one_hot(t, k, dtype=logits.dtype))[0]

    if targets is None:
        targets = jnp.zeros((x.shape[0],), jnp.int32)
    return jax.vmap(one)(x, targets)


_maps_jit = jax.jit(_maps_impl, static_argnums=(0, 1, 2, 3, 4, 5))


def saliency_maps(apply_fn: Callable, params: Any, image, target=None, *, rule: str = "deconvnet",
                  strict: bool = True, switches: bool = True, bare_max: bool = False):
    """Maps in input space of the logit ``target`` under a backward ``rule``.

    Args:
        apply_fn: ``apply_fn(params, batch (B, H, W, C)) -> (B, K)`` logits, e.g. a linen
            ``model.apply``; it must treat images independently (no batch statistics).
        params: its parameters (any pytree, e.g. the linen variables dict).
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating dtype.
        target: ``None`` (each image's predicted class, the argmax of its logits), an int class
            index, one int per image (``(N,)``), or ``"all"`` (every class: one forward pass,
            the backward pass vmapped over classes).
        rule: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        strict, switches, bare_max: see :func:`saliency_jax.backprop.with_rule`.

    Returns:
        ``image``'s dtype; shape ``(H, W, C)`` / ``(N, H, W, C)``, or with ``target="all"``
        ``(K, H, W, C)`` / ``(N, K, H, W, C)``.
    """
    _check_apply(apply_fn)
    rules._check_rule(rule)
    for name, val in (("strict", strict), ("switches", switches), ("bare_max", bare_max)):
        _check_bool(name, val)
    x, batched = _check_image(image)
    k = _num_classes(apply_fn, params, x)
    mode, targets = _check_target(target, x.shape[0], k, batched)
    impl = _maps_jit if _hashable(apply_fn) else _maps_impl
    out = impl(apply_fn, rule, mode, strict, switches, bare_max, params, x, targets)
    return out if batched else out[0]


def deconvnet(apply_fn: Callable, params: Any, image, target=None, **kwargs):
    """Zeiler & Fergus's deconvnet map: ReLU backward ``relu(g)``, max-pools unpooled by switches.

    Args and returns as :func:`saliency_maps` (``rule="deconvnet"``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> apply_fn = lambda p, x: jax.nn.relu(x.reshape(x.shape[0], -1) @ p).reshape(x.shape[0], -1) @ jnp.ones((2, 2))
        >>> deconvnet(apply_fn, -jnp.eye(2), jnp.array([[[1.0], [-1.0]]]), target=0).shape
        (1, 2, 1)
    """
    return saliency_maps(apply_fn, params, image, target, rule="deconvnet", **kwargs)


def guided_backprop(apply_fn: Callable, params: Any, image, target=None, **kwargs):
    """Guided backpropagation (Springenberg et al. 2015): ReLU backward ``relu(g)·[x>0]``.

    Args and returns as :func:`saliency_maps` (``rule="guided"``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> apply_fn = lambda p, x: jax.nn.relu(x.reshape(x.shape[0], -1) * p) @ jnp.ones((2, 1))
        >>> guided_backprop(apply_fn, jnp.array([1.0, 1.0]), jnp.array([[[1.0], [-1.0]]]), target=0)
        Array([[[1.],
                [0.]]], dtype=float32)
    """
    return saliency_maps(apply_fn, params, image, target, rule="guided", **kwargs)


def gradient(apply_fn: Callable, params: Any, image, target=None, **kwargs):
    """The gradient of the target logit w.r.t. the image (Simonyan et al. 2014), signed.

    Equal to ``jax.grad``; max-pools use the switch pool (same values, faster when many
    backward passes share one forward pass). Args and returns as :func:`saliency_maps`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> apply_fn = lambda p, x: jax.nn.relu(x.reshape(x.shape[0], -1) * p) @ jnp.ones((2, 1))
        >>> gradient(apply_fn, jnp.array([2.0, 1.0]), jnp.array([[[1.0], [-1.0]]]), target=0)
        Array([[[2.],
                [0.]]], dtype=float32)
    """
    return saliency_maps(apply_fn, params, image, target, rule="gradient", **kwargs)


# --------------------------------------------------------------------------------------------
# unit projections


def layer_features(apply_fn: Callable, layer) -> Callable:
    """``features(params, batch) -> activations (B, ...)`` of ``layer``.

    Args:
        apply_fn: a function that calls Flax linen modules (e.g. ``model.apply``).
        layer: the name (or ``/``-joined path) of a linen submodule: its ``__call__`` output
            is the activation (the first call if it is called several times; ``apply_fn`` must
            call the modules in Python, i.e. not be wrapped in ``jax.jit`` itself); or a callable
            ``(params, batch) -> activations (B, ...)``, used as is (NNX, plain JAX).

    Returns:
        The feature function. A missing layer raises ``ValueError`` listing the layers seen.
    """
    if callable(layer):
        return layer
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"`layer` (={layer!r}) must be a submodule name such as 'conv5' or a callable "
                        "(params, batch) -> activations")

    def features(params, batch):
        captured, seen = [], []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name is not None:
                path = "/".join(str(p) for p in context.module.path)
                seen.append(path)
                if not captured and layer in (context.module.name, path):
                    captured.append(out)
            return out

        with nn.intercept_methods(interceptor):
            apply_fn(params, batch)
        if not captured:
            raise ValueError(f"`layer` (={layer!r}) is not a submodule called by `apply_fn`; layers seen: {seen}")
        return captured[0]

    return features


class UnitProjections(NamedTuple):
    """Projections of single units of a layer to pixel space.

    Attributes:
        maps: ``(U, H, W, C)`` (or ``(N, U, H, W, C)``): one map per unit.
        values: ``(U,)`` (or ``(N, U)``): the unit's activation, by which its signal was scaled.
        units: ``(U, R)`` int32 (or ``(N, U, R)``): the unit's index in the layer's activation
            (per image, without the batch axis; ``R`` its rank, ``(row, col, channel)`` for a conv).
    """

    maps: jax.Array
    values: jax.Array
    units: jax.Array


def _project_impl(features, rule, strict, switches, bare_max, k, params, x, units, receptive_field=False):
    layer_fn = lambda p, xi: features(p, xi[None])[0]  # noqa: E731
    ruled = with_rule(layer_fn, rule, strict=strict, switches=switches, bare_max=bare_max, data_argnums=1)

    def one(xi, ui):
        if receptive_field:
            act, local_back = local.vjp(layer_fn, params, xi, rule=rule, switches=switches, strict=strict,
                                        bare_max=bare_max)
        else:
            act, vjp = jax.vjp(lambda v: ruled(params, v), xi)
        flat = act.reshape(-1)
        if ui is None:
            vals, idx = lax.top_k(flat, k)
        else:
            idx = ui
            vals = flat[idx]
        coords = jnp.stack(jnp.unravel_index(idx, act.shape), axis=-1).astype(jnp.int32)

        def back(i, c, v):
            if receptive_field:
                return local_back(local.unit_seed(act, c, v))
            cot = jnp.zeros_like(flat).at[i].set(v).reshape(act.shape)
            return vjp(cot)[0]

        maps = jax.vmap(back)(idx, coords, vals)
        return maps, vals, coords

    if units is None:
        return jax.vmap(lambda xi: one(xi, None))(x)
    return jax.vmap(one)(x, units)


_project_jit = jax.jit(_project_impl, static_argnums=(0, 1, 2, 3, 4, 5, 9))


def _check_units(units, top_k, act_shape, n):
    size = int(np.prod(act_shape))
    if units is None:
        if not _is_int(top_k) or not 1 <= top_k <= size:
            raise ValueError(f"`top_k` (={top_k!r}) must be an int in [1, {size}] (the layer has {size} units "
                             f"of shape {act_shape})")
        return None
    u = np.asarray(units)
    if not np.issubdtype(u.dtype, np.integer):
        raise TypeError(f"`units` (dtype {u.dtype}) must hold integers")
    if u.ndim == 1:  # flat indices
        flat = u
    elif u.ndim == 2 and u.shape[1] == len(act_shape):
        if (u < 0).any() or (u >= np.asarray(act_shape)).any():
            raise ValueError(f"`units` (={units!r}) must index the activation of shape {act_shape}")
        flat = np.ravel_multi_index(tuple(u.T), act_shape)
    else:
        raise ValueError(f"`units` (shape {u.shape}) must be flat indices (U,) or coordinates (U, {len(act_shape)}) "
                         f"into the activation of shape {act_shape}")
    if flat.size == 0 or (flat < 0).any() or (flat >= size).any():
        raise ValueError(f"`units` (={units!r}) must be non-empty, each in [0, {size})")
    return jnp.broadcast_to(jnp.asarray(flat, jnp.int32), (n, flat.size))


def project_units(apply_fn: Callable, params: Any, image, layer="conv5", *, units=None, top_k: int = 9,
                  rule: str = "deconvnet", strict: bool = True, switches: bool = True,
                  bare_max: bool = False, receptive_field: bool = True) -> UnitProjections:
    """Project single activations of ``layer`` back to pixel space (Zeiler & Fergus, Fig. 2).

    Each unit's signal is its own activation value at that unit and zero elsewhere in the
    layer; one forward pass per image, the backward pass vmapped over units.

    Args:
        apply_fn: calls linen modules (``model.apply``) when ``layer`` is a name.
        params: the parameters.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating dtype.
        layer: a submodule name (``"conv1"`` … ``"conv5"``, the module's output, i.e. before the
            ReLU that follows it; the strongest activations are positive, where the ReLU is
            the identity) or a callable ``(params, batch) -> activations``.
        units: which units: flat indices ``(U,)`` or coordinates ``(U, R)`` into one image's
            activation (e.g. ``(row, col, channel)``); default the ``top_k`` strongest.
        top_k: number of strongest activations (per image) when ``units`` is None.
        rule, strict, switches, bare_max: as for :func:`saliency_maps`.
        receptive_field: run each unit's backward pass only over its receptive field
            (:mod:`saliency_jax.backprop.receptive_field`): a box of each layer, outside which the
            signal is exactly zero. Same maps up to float32 rounding, several times faster
            for deep layers; ``False`` runs ``jax.vjp`` over the full feature maps.

    Returns:
        :class:`UnitProjections` (with a leading ``N`` axis for a batch).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import saliency_jax as sj
        >>> model = sj.get_model("small", width=0.125, fc=(8,))
        >>> x = jnp.ones((128, 128, 3))
        >>> params = model.init(jax.random.key(0), x[None])
        >>> p = project_units(model.apply, params, x, layer="conv2", top_k=4)
        >>> p.maps.shape, p.values.shape, p.units.shape
        ((4, 128, 128, 3), (4,), (4, 3))
    """
    _check_apply(apply_fn)
    rules._check_rule(rule)
    for name, val in (("strict", strict), ("switches", switches), ("bare_max", bare_max),
                      ("receptive_field", receptive_field)):
        _check_bool(name, val)
    x, batched = _check_image(image)
    features = layer_features(apply_fn, layer)
    act = jax.eval_shape(features, params, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    if not hasattr(act, "shape") or len(act.shape) < 1 or act.shape[0] != 1:
        raise ValueError(f"`layer` (={layer!r}) must give activations with a leading batch axis, got {act}")
    act_shape = tuple(act.shape[1:])
    u = _check_units(units, top_k, act_shape, x.shape[0])
    k = None if u is not None else int(top_k)
    rf = receptive_field
    if isinstance(layer, str):
        if _hashable(apply_fn):
            out = _project_named_jit(apply_fn, layer, rule, strict, switches, bare_max, k, params, x, u, rf)
        else:
            out = _project_impl(features, rule, strict, switches, bare_max, k, params, x, u, rf)
    else:
        impl = _project_jit if _hashable(layer) else _project_impl
        out = impl(features, rule, strict, switches, bare_max, k, params, x, u, rf)
    out = UnitProjections(*out)
    return out if batched else UnitProjections(*(a[0] for a in out))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 10))
def _project_named_jit(apply_fn, layer, rule, strict, switches, bare_max, k, params, x, u, rf):
    return _project_impl(layer_features(apply_fn, layer), rule, strict, switches, bare_max, k, params, x, u, rf)


# --------------------------------------------------------------------------------------------
# dataset-level top 9


class TopActivations(NamedTuple):
    """The ``k`` strongest activations of chosen feature maps over a set of images.

    For feature map ``f`` (``F`` of them) and rank ``r`` (``k``, strongest first):

    Attributes:
        values: ``(F, k)`` the activation.
        image_index: ``(F, k)`` int32, which image.
        units: ``(F, k, R)`` int32, the unit in that image's activation.
        projections: ``(F, k, H, W, C)`` the unit's projection to pixel space.
        boxes: ``(F, k, 4)`` int32 ``(top, left, bottom, right)`` (exclusive) of the receptive
            field, clipped to the image.
        patches: ``(F, k, rh, rw, C)`` the image under the receptive field (``rh × rw`` the
            full receptive field; zeros outside the image).
        projection_patches: ``(F, k, rh, rw, C)`` the projection under the same window.
    """

    values: jax.Array
    image_index: jax.Array
    units: jax.Array
    projections: jax.Array
    boxes: jax.Array
    patches: jax.Array
    projection_patches: jax.Array


def _footprint_box(features, params, x, flat_idx):
    """Bounding box (top, left, bottom, right) of the pixels that can influence unit ``flat_idx``."""
    ruled = with_rule(lambda p, xi: features(p, xi[None])[0], rules._FOOTPRINT, strict=False, switches=True)
    act, vjp = jax.vjp(lambda v: ruled(params, v), x)
    cot = jnp.zeros((act.size,), act.dtype).at[flat_idx].set(1.0).reshape(act.shape)
    support = jnp.any(vjp(cot)[0] != 0, axis=-1)  # (H, W)
    rows, cols = jnp.any(support, axis=1), jnp.any(support, axis=0)
    h, w = support.shape

    def span(mask, n):
        idx = jnp.arange(n)
        lo = jnp.min(jnp.where(mask, idx, n))
        hi = jnp.max(jnp.where(mask, idx, -1)) + 1
        return lo, hi

    top, bottom = span(rows, h)
    left, right = span(cols, w)
    return jnp.stack([top, left, bottom, right]).astype(jnp.int32)


def top_activations(apply_fn: Callable, params: Any, images, layer, channels: Sequence[int], *, k: int = 9,
                    rule: str = "deconvnet", batch_size: int = 16, strict: bool = True) -> TopActivations:
    """Zeiler & Fergus's "top 9": the strongest activations of feature maps over a set of images.

    For each chosen feature map (channel ``c`` of ``layer``), each image contributes its
    strongest activation in that map; the ``k`` images with the largest are kept (so the
    ``k`` patches come from ``k`` different images, as in the paper's figures). Each is
    projected to pixel space with ``rule``, and the image patch under the unit's receptive
    field is cut out. The receptive field is found by sending a positive signal from the unit
    through every path (all ReLUs open, every pool position) and taking the bounding box of
    the pixels reached. Activations are computed ``batch_size`` images at a time.

    Args:
        apply_fn, params: the model (``layer`` as for :func:`project_units`).
        images: ``(N, H, W, C)`` floating, ``N >= k``.
        layer: a submodule name or a callable ``(params, batch) -> (B, h, w, c)``.
        channels: the feature maps (indices into the last axis of the activation).
        k: how many per feature map.
        rule: ``"deconvnet"`` (the paper), ``"guided"`` or ``"gradient"``.
        batch_size: images per forward batch.
        strict: see :func:`saliency_jax.backprop.with_rule`.

    Returns:
        :class:`TopActivations`; :func:`top_grid` lays it out as the paper's figures.
    """
    _check_apply(apply_fn)
    rules._check_rule(rule)
    _check_bool("strict", strict)
    if not hasattr(images, "ndim") or images.ndim != 4:
        raise ValueError(f"`images` (shape {getattr(images, 'shape', None)}) must be a batch (N, H, W, C)")
    x, _ = _check_image(images)
    n = x.shape[0]
    if not _is_int(k) or not 1 <= k <= n:
        raise ValueError(f"`k` (={k!r}) must be an int in [1, N={n}]")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` (={batch_size!r}) must be a positive int")
    features = layer_features(apply_fn, layer)
    act = jax.eval_shape(features, params, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    if len(act.shape) != 4:
        raise ValueError(f"`layer` (={layer!r}) must give (B, h, w, c) activations, got shape {act.shape}")
    act_shape = tuple(act.shape[1:])
    ch = np.asarray(channels)
    if ch.ndim != 1 or ch.size == 0 or not np.issubdtype(ch.dtype, np.integer) or (ch < 0).any() \
            or (ch >= act_shape[-1]).any():
        raise ValueError(f"`channels` (={channels!r}) must be a non-empty sequence of ints in [0, {act_shape[-1]})")
    ch = jnp.asarray(ch, jnp.int32)

    @jax.jit
    def strongest(p, xb):
        a = features(p, xb)[..., ch]  # (B, h, w, F)
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        return jnp.max(flat, axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32)  # (B, F)

    vals, pos = [], []
    for start in range(0, n, batch_size):
        v, q = strongest(params, x[start:start + batch_size])
        vals.append(v)
        pos.append(q)
    vals, pos = jnp.concatenate(vals), jnp.concatenate(pos)  # (N, F)
    top_vals, top_img = lax.top_k(vals.T, k)  # (F, k)
    top_pos = jnp.take_along_axis(pos.T, top_img, axis=1)  # spatial index in (h, w)
    num_ch = act_shape[-1]
    flat_unit = top_pos * num_ch + ch[:, None]  # (F, k) flat index into (h, w, c)

    @jax.jit
    def project(p, xs, img_idx, unit):
        def one(i, u):
            xi = xs[i]
            # the unit's backward pass over its receptive field only (backprop.local)
            a, back = local.vjp(lambda pp, v: features(pp, v[None])[0], p, xi, rule=rule, strict=strict)
            coords = jnp.stack(jnp.unravel_index(u, a.shape)).astype(jnp.int32)
            return back(local.unit_seed(a, coords, a.reshape(-1)[u])), _footprint_box(features, p, xi, u)

        return lax.map(lambda iu: one(*iu), (img_idx, unit), batch_size=batch_size)

    f_, k_ = flat_unit.shape
    maps, boxes = project(params, x, top_img.reshape(-1), flat_unit.reshape(-1))
    # Full receptive-field size: the box of the unit at the centre of the layer.
    centre = (act_shape[0] // 2 * act_shape[1] + act_shape[1] // 2) * num_ch
    cbox = jax.jit(_footprint_box, static_argnums=0)(features, params, x[0], jnp.int32(centre))
    rh, rw = int(cbox[2] - cbox[0]), int(cbox[3] - cbox[1])

    def cut(img, box):
        top = jnp.where((box[0] == 0) & (box[2] - box[0] < rh), box[2] - rh, box[0])
        left = jnp.where((box[1] == 0) & (box[3] - box[1] < rw), box[3] - rw, box[1])
        padded = jnp.pad(img, ((rh, rh), (rw, rw), (0, 0)))
        return lax.dynamic_slice(padded, (top + rh, left + rw, 0), (rh, rw, img.shape[-1]))

    patches = jax.vmap(cut)(x[top_img.reshape(-1)], boxes)
    proj_patches = jax.vmap(cut)(maps, boxes)
    coords = jnp.stack(jnp.unravel_index(flat_unit, act_shape), axis=-1).astype(jnp.int32)
    return TopActivations(
        values=top_vals, image_index=top_img.astype(jnp.int32), units=coords,
        projections=maps.reshape((f_, k_) + maps.shape[1:]), boxes=boxes.reshape(f_, k_, 4),
        patches=patches.reshape((f_, k_) + patches.shape[1:]),
        projection_patches=proj_patches.reshape((f_, k_) + proj_patches.shape[1:]),
    )


def top_grid(tiles, rows: int = 3, gap: int = 1, fill: float = 1.0):
    """Lay out ``(..., k, h, w, C)`` tiles as ``rows``-row grids ``(..., R·h + (R-1)·gap, Q·w + …, C)``.

    With ``k = 9`` and ``rows = 3`` this is the 3 × 3 block of one feature map in Zeiler &
    Fergus's Fig. 2 (tiles in reading order, strongest first; missing cells get ``fill``).
    Apply :func:`saliency_jax.app.render.normalize_map` to projections first.
    """
    tiles = jnp.asarray(tiles)
    if tiles.ndim < 4:
        raise ValueError(f"`tiles` (shape {tiles.shape}) must be (..., k, h, w, C)")
    if not _is_int(rows) or rows < 1 or not _is_int(gap) or gap < 0:
        raise ValueError(f"`rows` (={rows!r}) must be a positive int and `gap` (={gap!r}) a non-negative int")
    *lead, k, h, w, c = tiles.shape
    cols = -(-k // rows)
    pad = rows * cols - k
    if pad:
        filler = jnp.full((*lead, pad, h, w, c), fill, tiles.dtype)
        tiles = jnp.concatenate([tiles, filler], axis=-4)
    cells = jnp.pad(tiles, [(0, 0)] * (len(lead) + 1) + [(0, gap), (0, gap), (0, 0)], constant_values=fill)
    cells = cells.reshape(*lead, rows, cols, h + gap, w + gap, c)
    nl = len(lead)
    perm = tuple(range(nl)) + (nl, nl + 2, nl + 1, nl + 3, nl + 4)
    grid = cells.transpose(perm).reshape(*lead, rows * (h + gap), cols * (w + gap), c)
    return grid[..., : rows * (h + gap) - gap, : cols * (w + gap) - gap, :]


def top_figure(top: TopActivations, rows: int = 3, gap: int = 2, percentile: float = 99.5):
    """Zeiler & Fergus's figure block per feature map: projections (left) beside image patches (right).

    Args:
        top: from :func:`top_activations`.
        rows: grid rows (3 for the paper's 3 × 3 blocks of the top 9).
        gap: pixels between tiles and between the two grids (filled with 1.0, white).
        percentile: display scaling of each projection patch (see
            :func:`saliency_jax.app.render.normalize_map`, ``"signed"``).

    Returns:
        ``(F, R·rh + (R−1)·gap, 2·(Q·rw + (Q−1)·gap) + gap, C)`` float32 in ``[0, 1]`` for display
        (image patches are shown as they are; give images in ``[0, 1]``).
    """
    from saliency_jax.app.render import normalize_map  # local: render is display-only

    proj = normalize_map(top.projection_patches, method="signed", percentile=percentile)
    left = top_grid(proj, rows=rows, gap=gap)
    right = top_grid(top.patches.astype(jnp.float32), rows=rows, gap=gap)
    sep = jnp.ones(left.shape[:-2] + (gap, left.shape[-1]), jnp.float32)
    return jnp.concatenate([left, sep, right], axis=-2)
