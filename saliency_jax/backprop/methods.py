"""Deconvnet, guided backprop and gradient maps; unit projections; the dataset-level "top 9".

All maps explain **logits** (pre-softmax scores): ``apply_fn(params, batch)`` must return
``(B, K)`` logits. Every function takes one image ``(H, W, C)`` or a batch ``(N, H, W, C)``
(floating dtype, finite), runs one forward pass per image and the backward pass ``vmap``-ed
over the signals it needs (classes or units), and composes with ``jax.jit`` and ``jax.vmap``.
The maps are not additive: the map of a sum of signals is not the sum of their maps (the
rules rectify the signal on the way down), so never build one by summing others.

**Dtypes.** Every map is float32 whatever the image's floating dtype (float16, bfloat16,
float32), and float64 for a float64 image (with ``jax_enable_x64``): the same rule as
:func:`saliency_jax.occlusion`. ``compute_dtype=jnp.bfloat16`` runs the model (image and
floating parameters cast) in bfloat16; the map is still returned under that rule.

Arguments are checked by :mod:`saliency_jax._validate`, as for occlusion: ``apply_fn`` (and a
callable ``layer``) must be hashable, since it keys the compilation cache. A map whose score
(or unit activation) is not finite is NaN everywhere, never a clean-looking map.

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
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax import _validate
from saliency_jax._dtypes import cast_floating, check_compute_dtype, map_dtype
from saliency_jax.backprop import receptive_field as field
from saliency_jax.backprop import rules
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
]


def _check_flags(**flags) -> None:
    for name, value in flags.items():
        _validate.boolean(name, value)


def _finite_or_nan(maps, scores):
    """``maps`` (``scores.shape + map shape``) where the score explained is finite, NaN where it is not."""
    ok = jnp.isfinite(scores).reshape(jnp.shape(scores) + (1,) * (maps.ndim - jnp.ndim(scores)))
    return jnp.where(ok, maps, jnp.asarray(jnp.nan, maps.dtype))


# --------------------------------------------------------------------------------------------
# class maps


def _maps_impl(apply_fn, rule, kind, strict, switches, bare_max, dtypes, params, x, targets):
    compute, out = dtypes
    ruled = with_rule(lambda p, xi: apply_fn(p, xi[None])[0], rule, strict=strict, switches=switches,
                      bare_max=bare_max, data_argnums=1)
    params, x = cast_floating(params, compute), cast_floating(x, compute)

    def one(xi, ti):
        logits, vjp = jax.vjp(lambda v: ruled(params, v), xi)
        k = logits.shape[-1]
        if kind == "all":
            return _finite_or_nan(jax.vmap(lambda c: vjp(c)[0])(jnp.eye(k, dtype=logits.dtype)), logits)
        t = jnp.argmax(logits) if kind == "predicted" else ti
        return _finite_or_nan(vjp(jax.nn.one_hot(t, k, dtype=logits.dtype))[0], logits[t])

    return jax.vmap(one)(x, targets).astype(out)


_maps_jit = jax.jit(_maps_impl, static_argnums=(0, 1, 2, 3, 4, 5, 6))


def saliency_maps(apply_fn: Callable, params: Any, image, target=None, *, rule: str = "deconvnet",
                  strict: bool = True, switches: bool = True, bare_max: bool = False, compute_dtype=None):
    """Maps in input space of the logit ``target`` under a backward ``rule``.

    Args:
        apply_fn: ``apply_fn(params, batch (B, H, W, C)) -> (B, K)`` logits, e.g. a linen
            ``model.apply``; it must treat images independently (no batch statistics), and be
            hashable (it keys the compilation cache).
        params: its parameters (any pytree, e.g. the linen variables dict).
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating dtype; concrete pixels must be finite.
        target: ``None`` (each image's predicted class, the argmax of its logits), an int class
            index, one int per image (``(N,)``), or ``"all"`` (every class: one forward pass,
            the backward pass vmapped over classes).
        rule: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        strict, switches, bare_max: see :func:`saliency_jax.backprop.with_rule`.
        compute_dtype: ``None`` (default: the model runs on the image and ``params`` as given)
            or a floating dtype such as ``jnp.bfloat16``: the image and every floating leaf of
            ``params`` are cast to it, the forward and backward passes run in it, and the map
            is cast back (see Returns).

    Returns:
        float32 whatever the image's floating dtype (float16, bfloat16, float32), float64 for a
        float64 image (with ``jax_enable_x64``): the rule of every map, occlusion's included.
        Shape ``(H, W, C)`` / ``(N, H, W, C)``, or with ``target="all"`` ``(K, H, W, C)`` /
        ``(N, K, H, W, C)``. A map whose target logit is not finite is NaN.

    Raises:
        TypeError, ValueError: for arguments :mod:`saliency_jax._validate` refuses (non-finite
            pixels, an unhashable ``apply_fn``, a target out of range …) and for a ``rule``
            not in :data:`~saliency_jax.backprop.rules.RULES`.
    """
    _validate.apply_fn(apply_fn)
    rules.check_rule(rule)
    _check_flags(strict=strict, switches=switches, bare_max=bare_max)
    compute = check_compute_dtype(compute_dtype)
    x, batched = _validate.image(image)
    k = _validate.num_classes(apply_fn, params, x)
    kind, targets = _validate.target(target, n=x.shape[0], num_classes=k)
    dtypes = (compute, map_dtype(x.dtype).name)
    out = _maps_jit(apply_fn, rule, kind, strict, switches, bare_max, dtypes, params, x, targets)
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


def _layer_fn(features):
    """One image ``(H, W, C)`` to its activation (no batch axis)."""
    return lambda p, xi: features(p, xi[None])[0]


def _project_one(features, rule, strict, switches, bare_max, k, params, xi, ui, rf):
    """Maps, values and coordinates of one image's units (``ui`` flat indices, or the ``k`` strongest)."""
    layer_fn = _layer_fn(features)
    if rf:
        act, field_back = field.vjp(layer_fn, params, xi, rule=rule, switches=switches, strict=strict,
                                    bare_max=bare_max)
    else:
        ruled = with_rule(layer_fn, rule, strict=strict, switches=switches, bare_max=bare_max, data_argnums=1)
        act, vjp = jax.vjp(lambda v: ruled(params, v), xi)
    flat = act.reshape(-1)
    if ui is None:
        vals, idx = lax.top_k(flat, k)
    else:
        idx = ui
        vals = flat[idx]
    coords = jnp.stack(jnp.unravel_index(idx, act.shape), axis=-1).astype(jnp.int32)

    def back(i, c, v):
        if rf:
            m = field_back(field.unit_seed(act, c, v))
        else:
            m = vjp(jnp.zeros_like(flat).at[i].set(v).reshape(act.shape))[0]
        return _finite_or_nan(m, v)

    return jax.vmap(back)(idx, coords, vals), vals, coords


def _project_impl(features, rule, strict, switches, bare_max, k, params, x, units, rf, dtypes):
    compute, out = dtypes
    params, x = cast_floating(params, compute), cast_floating(x, compute)
    one = functools.partial(_project_one, features, rule, strict, switches, bare_max, k, params, rf=rf)
    if units is None:
        maps, vals, coords = jax.vmap(lambda xi: one(xi, None))(x)
    else:
        maps, vals, coords = jax.vmap(one)(x, units)
    return maps.astype(out), vals.astype(out), coords


_project_jit = jax.jit(_project_impl, static_argnums=(0, 1, 2, 3, 4, 5, 9, 10))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 10, 11))
def _project_named_jit(apply_fn, layer, rule, strict, switches, bare_max, k, params, x, units, rf, dtypes):
    # keyed by (apply_fn, layer): layer_features builds a new closure on every call
    return _project_impl(layer_features(apply_fn, layer), rule, strict, switches, bare_max, k, params, x, units, rf,
                         dtypes)


def _check_layer(layer):
    """A callable ``layer`` must be hashable too: it keys the compilation cache like ``apply_fn``."""
    return _validate.hashable("layer", layer) if callable(layer) else layer


def _activation_shape(features, params, x, layer) -> tuple[int, ...]:
    """One image's activation shape at ``layer`` (abstract evaluation on a batch of one)."""
    act = jax.eval_shape(features, params, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    if not hasattr(act, "shape") or len(act.shape) < 1 or act.shape[0] != 1:
        raise ValueError(f"`layer` (={layer!r}) must give activations with a leading batch axis, got {act}")
    return tuple(act.shape[1:])


def _check_units(units, top_k, act_shape, n):
    """``None`` (take the ``top_k`` strongest) or the flat unit indices ``(n, U)`` int32."""
    size = int(np.prod(act_shape))
    if units is None:
        _validate.integer("top_k", top_k, lo=1, hi=size)
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
                  bare_max: bool = False, receptive_field: bool = True, compute_dtype=None) -> UnitProjections:
    """Project single activations of ``layer`` back to pixel space (Zeiler & Fergus, Fig. 2).

    Each unit's signal is its own activation value at that unit and zero elsewhere in the
    layer; one forward pass per image, the backward pass vmapped over units.

    Args:
        apply_fn: calls linen modules (``model.apply``) when ``layer`` is a name; hashable.
        params: the parameters.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating dtype; concrete pixels must be finite.
        layer: a submodule name (``"conv1"`` … ``"conv5"``, the module's output, i.e. before the
            ReLU that follows it; the strongest activations are positive, where the ReLU is
            the identity) or a hashable callable ``(params, batch) -> activations``.
        units: which units: flat indices ``(U,)`` or coordinates ``(U, R)`` into one image's
            activation (e.g. ``(row, col, channel)``); default the ``top_k`` strongest.
        top_k: number of strongest activations (per image) when ``units`` is None.
        rule, strict, switches, bare_max: as for :func:`saliency_maps`.
        receptive_field: run each unit's backward pass only over its receptive field
            (:mod:`saliency_jax.backprop.receptive_field`): a box of each layer, outside which the
            signal is exactly zero. Same maps up to float32 rounding, several times faster
            for deep layers; ``False`` runs ``jax.vjp`` over the full feature maps.
        compute_dtype: as for :func:`saliency_maps` (the model runs in it; maps and values are
            cast back).

    Returns:
        :class:`UnitProjections` (with a leading ``N`` axis for a batch); ``maps`` and
        ``values`` follow the maps' dtype rule of :func:`saliency_maps` (float32, or float64
        for a float64 image). The map of a unit whose activation is not finite is NaN.

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
    _validate.apply_fn(apply_fn)
    rules.check_rule(rule)
    _check_flags(strict=strict, switches=switches, bare_max=bare_max, receptive_field=receptive_field)
    compute = check_compute_dtype(compute_dtype)
    x, batched = _validate.image(image)
    _validate.params(params)
    features = layer_features(apply_fn, _check_layer(layer))
    u = _check_units(units, top_k, _activation_shape(features, params, x, layer), x.shape[0])
    k = None if u is not None else int(top_k)
    opts = (rule, strict, switches, bare_max, k, params, x, u, receptive_field, (compute, map_dtype(x.dtype).name))
    if isinstance(layer, str):
        out = _project_named_jit(apply_fn, layer, *opts)
    else:
        out = _project_jit(features, *opts)
    out = UnitProjections(*out)
    return out if batched else UnitProjections(*(a[0] for a in out))


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
    ruled = with_rule(_layer_fn(features), rules.FOOTPRINT, strict=False, switches=True)
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


def _check_channels(channels, num_channels: int) -> jax.Array:
    ch = np.asarray(channels)
    if ch.ndim != 1 or ch.size == 0 or not np.issubdtype(ch.dtype, np.integer) or (ch < 0).any() \
            or (ch >= num_channels).any():
        raise ValueError(f"`channels` (={channels!r}) must be a non-empty sequence of ints in [0, {num_channels})")
    return jnp.asarray(ch, jnp.int32)


def _strongest(features, params, x, ch, batch_size):
    """Per image and chosen channel, the strongest activation and its spatial index: two ``(N, F)``."""

    @jax.jit
    def batch(p, xb):
        a = features(p, xb)[..., ch]  # (B, h, w, F)
        flat = a.reshape(a.shape[0], -1, a.shape[-1])
        return jnp.max(flat, axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32)  # (B, F)

    parts = [batch(params, x[start:start + batch_size]) for start in range(0, x.shape[0], batch_size)]
    return jnp.concatenate([v for v, _ in parts]), jnp.concatenate([q for _, q in parts])


def _project_top(features, params, x, img_idx, unit, rule, strict, batch_size):
    """Each ``(image, flat unit)``'s projection (its receptive field only) and receptive-field box."""

    @jax.jit
    def project(p, xs, img_idx, unit):
        def one(i, u):
            xi = xs[i]
            a, back = field.vjp(_layer_fn(features), p, xi, rule=rule, strict=strict)
            coords = jnp.stack(jnp.unravel_index(u, a.shape)).astype(jnp.int32)
            return back(field.unit_seed(a, coords, a.reshape(-1)[u])), _footprint_box(features, p, xi, u)

        return lax.map(lambda iu: one(*iu), (img_idx, unit), batch_size=batch_size)

    return project(params, x, img_idx, unit)


def _field_size(features, params, image, act_shape) -> tuple[int, int]:
    """The full receptive field ``(rh, rw)``: the box of the unit at the centre of the layer."""
    centre = (act_shape[0] // 2 * act_shape[1] + act_shape[1] // 2) * act_shape[-1]
    box = jax.jit(_footprint_box, static_argnums=0)(features, params, image, jnp.int32(centre))
    return int(box[2] - box[0]), int(box[3] - box[1])


def _cut(img, box, rh, rw):
    """The ``(rh, rw)`` window of ``img`` at ``box`` (a box clipped at the top/left edge is extended
    outwards, into zeros, so that the patch keeps the unit where the full field would put it)."""
    top = jnp.where((box[0] == 0) & (box[2] - box[0] < rh), box[2] - rh, box[0])
    left = jnp.where((box[1] == 0) & (box[3] - box[1] < rw), box[3] - rw, box[1])
    padded = jnp.pad(img, ((rh, rh), (rw, rw), (0, 0)))
    return lax.dynamic_slice(padded, (top + rh, left + rw, 0), (rh, rw, img.shape[-1]))


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
        images: ``(N, H, W, C)`` floating, finite, ``N >= k``.
        layer: a submodule name or a hashable callable ``(params, batch) -> (B, h, w, c)``.
        channels: the feature maps (indices into the last axis of the activation).
        k: how many per feature map.
        rule: ``"deconvnet"`` (the paper), ``"guided"`` or ``"gradient"``.
        batch_size: images per forward batch.
        strict: see :func:`saliency_jax.backprop.with_rule`.

    Returns:
        :class:`TopActivations`; :func:`saliency_jax.backprop.display.top_figure` lays it out
        as the paper's figures.
    """
    _validate.apply_fn(apply_fn)
    rules.check_rule(rule)
    _check_flags(strict=strict)
    if not hasattr(images, "ndim") or images.ndim != 4:
        raise ValueError(f"`images` (shape {getattr(images, 'shape', None)}) must be a batch (N, H, W, C)")
    x, _ = _validate.image(images)
    _validate.params(params)
    k = _validate.integer("k", k, lo=1, hi=x.shape[0])
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    features = layer_features(apply_fn, _check_layer(layer))
    act_shape = _activation_shape(features, params, x, layer)
    if len(act_shape) != 3:
        raise ValueError(f"`layer` (={layer!r}) must give (B, h, w, c) activations, got shape {(1,) + act_shape}")
    ch = _check_channels(channels, act_shape[-1])

    vals, pos = _strongest(features, params, x, ch, batch_size)  # (N, F)
    top_vals, top_img = lax.top_k(vals.T, k)  # (F, k)
    top_pos = jnp.take_along_axis(pos.T, top_img, axis=1)  # spatial index in (h, w)
    flat_unit = top_pos * act_shape[-1] + ch[:, None]  # (F, k) flat index into (h, w, c)
    maps, boxes = _project_top(features, params, x, top_img.reshape(-1), flat_unit.reshape(-1), rule, strict,
                               batch_size)
    rh, rw = _field_size(features, params, x[0], act_shape)
    patches = jax.vmap(lambda img, box: _cut(img, box, rh, rw))(x[top_img.reshape(-1)], boxes)
    proj_patches = jax.vmap(lambda img, box: _cut(img, box, rh, rw))(maps, boxes)
    lead = flat_unit.shape
    return TopActivations(
        values=top_vals, image_index=top_img.astype(jnp.int32),
        units=jnp.stack(jnp.unravel_index(flat_unit, act_shape), axis=-1).astype(jnp.int32),
        projections=maps.reshape(lead + maps.shape[1:]), boxes=boxes.reshape(lead + (4,)),
        patches=patches.reshape(lead + patches.shape[1:]),
        projection_patches=proj_patches.reshape(lead + proj_patches.shape[1:]),
    )
