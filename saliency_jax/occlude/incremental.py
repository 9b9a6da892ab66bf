"""Exact incremental re-inference for occlusion: recompute only what each window changes.

An occluder changes a rectangle of the image. Through a convolution or a pooling the changed
rectangle of the output follows from the changed rectangle of the input (kernel, stride,
padding, dilation), so each layer's changed region is known statically for every window. This
module analyses the model's jaxpr (with the shared interpreter :mod:`saliency_jax.jaxpr`) and
evaluates it in two passes:

1. **cache** (once per image, outside the loop over windows): the unoccluded image runs through
   the model; the input of every convolution / pooling that will be recomputed incrementally is
   stored, padded once with that operation's own padding (zeros for a convolution, ``-inf``
   for a max-pool), and so is the value at each point where the computation turns "full".
2. **per window** (``vmap`` over windows): every value that depends on the image is carried as
   a *patch* — the layer's changed region, of a static size (the largest over all windows) at
   a dynamic position. An elementwise operation maps the patch; a convolution or pooling reads
   the input region its output region needs with ``lax.dynamic_slice`` from the padded cache,
   splices the input patch into it (a gather and a select: no scatter) and runs the same
   operation with ``VALID`` padding on that region only — under ``vmap`` one batched
   convolution per layer for all windows of a chunk. From the first
   operation that mixes all positions (reshape/flatten, dense, global pooling, anything not
   recognised) the patch is spliced back into the cached map and the model runs in full.

A layer whose changed region would cover at least :data:`FULL_LAYER_FRACTION` of its output
(counted FLOPs of the region against the full layer) is computed in full instead, and so is
everything after it. The result equals full re-inference up to float32 rounding (the same
operations on the same numbers, only fewer of them).

What it applies to: ``mode="occlude"`` occlusion of any model ``apply_fn(params, (B, H, W, C))``
whose data path is traceable to a jaxpr; the savings come from 2-D ``conv_general_dilated``
whose spatial axes are the image's H and W axes (any padding, stride, dilation and feature
groups; not transposed convolutions), ``reduce_window_max/min/sum`` pools over those two axes
(max/avg pooling), and elementwise operations (bias, ReLU, scaling, constants of the map's
size, ``select`` …) between them. Residual additions of two *different* changed regions,
``scan``/``cond``/``while`` on the feature maps, transposes, padding primitives and anything
else make the computation full from that point (still exact, just not cheaper); a model with
none of these layers (an MLP) runs entirely in full.

Memory: per image, one padded copy of the input of every layer computed incrementally (about
one forward pass's activations), plus, per chunk, the regions of its windows.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> from saliency_jax.occlude import incremental
    >>> model = sj.get_model("small", width=0.25, fc=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    >>> rep = incremental.flop_report(model.apply, variables, (128, 128, 3), window=32, stride=8)
    >>> rep.ratio > 2   # full FLOPs per window / incremental FLOPs per window
    True
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax.occlude.compile import chunk_indices, jit_with_policy
from saliency_jax.occlude.windows import WindowGrid, accumulate, window_grid, window_mask

__all__ = [
    "FULL_LAYER_FRACTION",
    "AUTO_MIN_RATIO",
    "DEFAULT_CHUNK_SIZE",
    "LayerCost",
    "FlopReport",
    "flop_report",
    "prepare",
    "window_outputs",
    "capped_occlusion",
]

FULL_LAYER_FRACTION = 0.8
"""A convolution / pooling whose changed region costs at least this fraction of the full layer
(in counted FLOPs) is computed in full for every window, and so is everything after it."""

DEFAULT_CHUNK_SIZE = 32
"""Windows per chunk for ``method="incremental"`` when ``chunk_size`` is not given. On the 2-core
CPU of ``benchmarks/results/incremental.md`` (XLA's own convolutions), 32 beat 16 by 20 % on the
ZF-style model (w16 s4) and 6 % on the VGG16-style one, and 64 was no faster: the recomputed
regions are small, so larger batches than full re-inference's pay, and the dense layers read
their weights once per chunk."""

AUTO_MIN_RATIO = 1.5
"""``method="auto"`` chooses incremental re-inference when the counted-FLOP ratio (full over
incremental) is at least this."""

_ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
    copy_p cos cosh div erf erf_inv erfc exp exp2 expm1 floor integer_pow is_finite log log1p
    logistic max min mul ne eq ge gt le lt neg nextafter not or pow reduce_precision rem round
    rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor""".split()
)
_POOLS = {"reduce_window_max": -np.inf, "reduce_window_min": np.inf, "reduce_window_sum": 0.0}


# --------------------------------------------------------------------------------------------
# Static geometry of changed regions
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Axis:
    """Changed region of one spatial axis of one value, for every window row (or column).

    ``lo[g]:hi[g]`` is the exactly changed interval for grid index ``g``; the patch carried is
    ``start[g] : start[g] + size`` (``size`` static, the largest changed length, at least 1).
    """

    dim: int
    size: int
    lo: np.ndarray
    hi: np.ndarray
    start: np.ndarray

    @staticmethod
    def of(dim: int, lo: np.ndarray, hi: np.ndarray) -> "_Axis":
        lo = np.minimum(np.asarray(lo, np.int64), dim)
        hi = np.maximum(np.asarray(hi, np.int64), lo)
        size = int(min(dim, max(1, int((hi - lo).max()))))
        start = np.clip(lo, 0, dim - size)
        return _Axis(dim, size, lo, hi, start)

    def through(self, out_dim: int, k_eff: int, stride: int, pad_lo: int, cap: float | None = None) -> "_Axis":
        """The changed output interval of a sliding window (extent ``k_eff``, ``stride``, padding
        ``pad_lo`` before the first element): output ``o`` reads inputs ``[o·s − p, o·s − p + k)``.

        ``cap`` (APPROXIMATE, Krypton's projective-field threshold): an interval longer than
        ``ceil(cap · out_dim)`` is cut to that length around its centre; outside it the layer
        keeps the unoccluded image's values.
        """
        oa = np.maximum(0, (self.lo + pad_lo - k_eff) // stride + 1)
        ob = np.minimum(out_dim, (self.hi - 1 + pad_lo) // stride + 1)
        ob = np.where(self.hi > self.lo, ob, oa)
        oa = np.minimum(oa, out_dim)
        ob = np.maximum(ob, oa)
        if cap is not None:
            limit = max(1, math.ceil(cap * out_dim))
            excess = np.maximum(0, ob - oa - limit)
            oa = oa + excess // 2
            ob = oa + np.minimum(ob - oa, limit)
        return _Axis.of(out_dim, oa, ob)


@dataclasses.dataclass(eq=False)
class _Spatial:
    """A value that depends on the image: full value (cache pass) or patch (window pass)."""

    value: Any
    axes: tuple[int, int]
    geom: tuple[_Axis, _Axis]
    shape: tuple[int, ...]  # the full shape


# --------------------------------------------------------------------------------------------
# FLOP counting
# --------------------------------------------------------------------------------------------


def _eqn_flops(eqn, out_shape=None) -> int:
    """Counted FLOPs of one equation (multiply-adds count 2, comparisons and elementwise 1)."""
    name = eqn.primitive.name
    if out_shape is None and not eqn.outvars:  # effects only (e.g. a debug callback)
        return 0
    shape = tuple(eqn.outvars[0].aval.shape) if out_shape is None else tuple(out_shape)
    size = int(np.prod(shape, dtype=np.int64))
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out_feat = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
        return 2 * size * int(np.prod(rhs, dtype=np.int64)) // out_feat
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2 * size * int(np.prod([lhs[d] for d in lc], dtype=np.int64))
    if name in _POOLS:
        return size * int(np.prod(eqn.params["window_dimensions"], dtype=np.int64))
    if name in _ELEMENTWISE:
        return size
    return 0


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One data-dependent equation: its primitive, full output shape, the output shape computed
    per window (the changed region, or the full shape), and the counted FLOPs of each."""

    primitive: str
    full_shape: tuple[int, ...]
    window_shape: tuple[int, ...]
    full_flops: int
    window_flops: int


@dataclasses.dataclass(frozen=True)
class FlopReport:
    """Counted FLOPs per window of full re-inference and of incremental re-inference.

    ``ratio = full_flops / incremental_flops`` is the ceiling on the speed-up. Data movement
    (reading regions from the cache, splicing patches) is not counted.
    """

    full_flops: int
    incremental_flops: int
    layers: tuple[LayerCost, ...]

    @property
    def ratio(self) -> float:
        return self.full_flops / max(1, self.incremental_flops)

    @property
    def saved_fraction(self) -> float:
        """The fraction of the full FLOPs that incremental re-inference does not compute."""
        return 1.0 - self.incremental_flops / max(1, self.full_flops)


# --------------------------------------------------------------------------------------------
# The interpreter: one handler, two passes; one function per primitive family
# --------------------------------------------------------------------------------------------


def _shape_with(shape, axes, sizes):
    shape = list(shape)
    for a, s in zip(axes, sizes):
        shape[a] = s
    return tuple(shape)


def _place(base, origin, patch, pstart, psize, axes):
    """``base`` (its spatial axes start at ``origin``) with ``patch`` (at ``pstart``) written in.

    Written as a gather plus a select (no scatter): the patch entry for each position of ``base``
    is read at a clipped index and kept where the position lies inside the patch.
    """
    val, mask = patch, None
    for a, o, ps, r in zip(axes, origin, pstart, psize):
        n = base.shape[a]
        pos = jnp.arange(n, dtype=jnp.int32)
        rel = ps - o
        idx = jnp.clip(pos - rel, 0, r - 1)
        val = jnp.take(val, idx, axis=a, mode="clip")
        m = ((pos >= rel) & (pos < rel + r)).reshape([n if d == a else 1 for d in range(base.ndim)])
        mask = m if mask is None else mask & m
    return jnp.where(mask, val, base)


class _Interpreter:
    """Handler for :func:`saliency_jax.jaxpr.eval_jaxpr` in one of two passes.

    ``cache`` pass: values are full (batch 1); records what the window pass will read.
    ``window`` pass: values are patches; reads the records (``caches``, leading axis = image)
    at image ``img`` and grid position ``(iy, ix)``. The primitive families are handled by
    :func:`_elementwise`, :func:`_conv` and :func:`_pool` below; anything else materialises
    its image-dependent inputs and runs in full.
    """

    def __init__(self, mode: str, caches: Sequence[Any] = (), img=None, iy=None, ix=None, cap=None):
        self.mode = mode
        self.cap = cap
        self.records: list = []
        self._caches = list(caches)
        self._next = 0
        self.img, self.iy, self.ix = img, iy, ix
        self._materialised: dict = {}
        self.savings: list[LayerCost] = []

    def record(self, value):
        """Cache pass: keep ``value`` for the window pass."""
        self.records.append(value)

    def read(self):
        """Window pass: the next recorded value (all images: leading axis ``N``)."""
        if self._next >= len(self._caches):
            raise RuntimeError("incremental occlusion: the window pass read more caches than were recorded")
        value = self._caches[self._next]
        self._next += 1
        return value

    def starts(self, x: _Spatial):
        """Window pass: where ``x``'s patch starts along its two spatial axes (int32 scalars)."""
        return (
            jnp.asarray(x.geom[0].start, jnp.int32)[self.iy],
            jnp.asarray(x.geom[1].start, jnp.int32)[self.ix],
        )

    def materialise(self, x: _Spatial):
        """The full value of ``x`` (cache pass: itself, recorded; window pass: patch spliced in)."""
        key = id(x)
        if key in self._materialised:
            return self._materialised[key][1]
        if self.mode == "cache":
            self.record(x.value)
            full = x.value
        else:
            base = lax.dynamic_index_in_dim(self.read(), self.img, 0, keepdims=False)
            zero = jnp.zeros((), jnp.int32)
            full = _place(base, (zero, zero), x.value, self.starts(x), (x.geom[0].size, x.geom[1].size), x.axes)
        self._materialised[key] = (x, full)
        return full

    def __call__(self, eqn, invals):
        tagged = [isinstance(v, _Spatial) for v in invals]
        name = eqn.primitive.name
        if not any(tagged):
            if name in jx.CALL_PRIMITIVES or name in jx.CUSTOM_CALL_PRIMITIVES or jx.sub_jaxprs(eqn):
                return None
            return jx.bind(eqn, invals)
        if name in jx.CALL_PRIMITIVES:
            return None  # eval_eqn inlines the body through this handler
        if name in jx.CUSTOM_CALL_PRIMITIVES:
            return jx.eval_call_body(eqn, invals, handler=self)
        out = None
        if name == "conv_general_dilated" and tagged == [True, False]:
            out = _conv(self, eqn, invals)
        elif name in _POOLS and tagged == [True]:
            out = _pool(self, eqn, invals)
        elif name in _ELEMENTWISE and len(eqn.outvars) == 1:
            out = _elementwise(self, eqn, invals, tagged)
        if out is not None:
            return out
        full = [self.materialise(v) if t else v for v, t in zip(invals, tagged)]
        if jx.sub_jaxprs(eqn):
            return jx.eval_eqn(eqn, full, handler=self)
        return jx.bind(eqn, full)


# -- elementwise -----------------------------------------------------------------------------


def _elementwise_fits(eqn, invals, tagged) -> _Spatial | None:
    """The changed region an elementwise equation keeps (its first image-dependent input), or
    ``None`` where it cannot be computed on the region: a broadcast output, two different
    regions meeting, or a plain operand that varies along the spatial axes in another shape."""
    spatial = [v for v, t in zip(invals, tagged) if t]
    first = spatial[0]
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if out_shape != first.shape:
        return None
    for s in spatial[1:]:
        if s.geom is not first.geom or s.axes != first.axes or s.shape != first.shape:
            return None  # two different changed regions meet: compute in full from here
    for v, t in zip(invals, tagged):
        shp = tuple(np.shape(v))
        if not t and shp and (len(shp) != len(out_shape) or any(shp[a] not in (1, out_shape[a]) for a in first.axes)):
            return None
    return first


def _elementwise(interp: _Interpreter, eqn, invals, tagged):
    """An elementwise equation on the changed region: plain operands of the map's size are
    sliced to the patch (window pass)."""
    first = _elementwise_fits(eqn, invals, tagged)
    if first is None:
        return None
    out_shape = first.shape
    if interp.mode == "cache":
        outs = jx.bind(eqn, [v.value if t else v for v, t in zip(invals, tagged)])
        return [_Spatial(outs[0], first.axes, first.geom, out_shape)]
    sizes = (first.geom[0].size, first.geom[1].size)
    starts = interp.starts(first)
    args = []
    for v, t in zip(invals, tagged):
        shp = () if t else tuple(np.shape(v))
        if t:
            v = v.value
        elif shp and any(shp[a] != 1 for a in first.axes):
            begin = [jnp.zeros((), jnp.int32)] * len(shp)
            for a, s in zip(first.axes, starts):
                begin[a] = s
            v = lax.dynamic_slice(v, begin, _shape_with(shp, first.axes, sizes))
        args.append(v)
    outs = jx.bind(eqn, args)
    win_shape = _shape_with(out_shape, first.axes, sizes)
    interp.savings.append(LayerCost(eqn.primitive.name, out_shape, win_shape, _eqn_flops(eqn), _eqn_flops(eqn, win_shape)))
    return [_Spatial(outs[0], first.axes, first.geom, out_shape)]


# -- sliding windows (convolution, pooling) --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Sliding:
    """A convolution's or pooling's window along the two spatial axes, and how to rerun it."""

    k_eff: tuple[int, int]  # dilated window extent
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_axes: tuple[int, int]
    pad_value: float  # what the operation's padding holds (0 for a convolution, -inf for a max-pool)
    valid_params: dict  # the eqn's parameters that rerun it without padding


def _conv(interp: _Interpreter, eqn, invals):
    """A 2-D convolution over the image's spatial axes (not transposed, no batch groups)."""
    x, rhs = invals
    p = eqn.params
    dn = p["dimension_numbers"]
    if len(dn.lhs_spec) != 4 or p["batch_group_count"] != 1 or any(d != 1 for d in p["lhs_dilation"]):
        return None
    if tuple(dn.lhs_spec[2:]) != x.axes:
        return None
    pads = tuple(tuple(int(v) for v in pr) for pr in p["padding"])
    if any(v < 0 for pr in pads for v in pr):
        return None
    kernel = [eqn.invars[1].aval.shape[d] for d in dn.rhs_spec[2:]]
    sliding = _Sliding(
        k_eff=tuple((k - 1) * d + 1 for k, d in zip(kernel, p["rhs_dilation"])), strides=tuple(p["window_strides"]),
        pads=pads, out_axes=tuple(dn.out_spec[2:]), pad_value=0.0, valid_params={"padding": ((0, 0), (0, 0))},
    )
    return _windowed(interp, eqn, x, [rhs], sliding)


def _pool(interp: _Interpreter, eqn, invals):
    """A ``reduce_window`` max / min / sum pool over the spatial axes only."""
    (x,) = invals
    p = eqn.params
    nd = len(x.shape)
    wd, ws, pad = p["window_dimensions"], p["window_strides"], p["padding"]
    bd, wdl = p["base_dilation"], p["window_dilation"]
    for a in range(nd):
        if a in x.axes:
            if bd[a] != 1 or pad[a][0] < 0 or pad[a][1] < 0:
                return None
        elif wd[a] != 1 or ws[a] != 1 or tuple(pad[a]) != (0, 0) or bd[a] != 1 or wdl[a] != 1:
            return None
    sliding = _Sliding(
        k_eff=tuple((wd[a] - 1) * wdl[a] + 1 for a in x.axes), strides=tuple(ws[a] for a in x.axes),
        pads=tuple(tuple(int(v) for v in pad[a]) for a in x.axes), out_axes=x.axes,
        pad_value=_POOLS[eqn.primitive.name], valid_params={"padding": tuple((0, 0) for _ in range(nd))},
    )
    return _windowed(interp, eqn, x, [], sliding)


def _windowed(interp: _Interpreter, eqn, x: _Spatial, other, sw: _Sliding):
    """A sliding-window equation on the changed region of its output (``None``: run it in full)."""
    out_shape = tuple(eqn.outvars[0].aval.shape)
    geom = tuple(
        g.through(out_shape[oa], k, s, p[0], interp.cap)
        for g, oa, k, s, p in zip(x.geom, sw.out_axes, sw.k_eff, sw.strides, sw.pads)
    )
    sizes = (geom[0].size, geom[1].size)
    if sizes[0] * sizes[1] >= FULL_LAYER_FRACTION * out_shape[sw.out_axes[0]] * out_shape[sw.out_axes[1]]:
        return None  # nearly everything changes: this layer (and what follows) in full
    if interp.mode == "cache":
        config = [(0, 0, 0)] * len(x.shape)
        for a, p in zip(x.axes, sw.pads):
            config[a] = (p[0], p[1], 0)
        interp.record(lax.pad(x.value, jnp.asarray(sw.pad_value, x.value.dtype), config))
        outs = jx.bind(eqn, [x.value, *other])
        return [_Spatial(outs[0], sw.out_axes, geom, out_shape)]
    win_shape = _shape_with(out_shape, sw.out_axes, sizes)
    region = _input_region(interp, x, geom, sw)
    outs = jx.bind(eqn, [region, *other], **sw.valid_params)
    if tuple(outs[0].shape) != win_shape:
        raise RuntimeError(f"incremental occlusion: region of {eqn.primitive.name} has shape "
                           f"{tuple(outs[0].shape)}, expected {win_shape}")
    interp.savings.append(
        LayerCost(eqn.primitive.name, out_shape, win_shape, _eqn_flops(eqn), _eqn_flops(eqn, win_shape))
    )
    return [_Spatial(outs[0], sw.out_axes, geom, out_shape)]


def _input_region(interp: _Interpreter, x: _Spatial, geom, sw: _Sliding):
    """Window pass: the padded input region that the output region ``geom`` reads, read from the
    cache with ``x``'s patch written in."""
    padded = interp.read()  # (N, *x.shape with spatial axes padded)
    sizes = (geom[0].size, geom[1].size)
    out_starts = (jnp.asarray(geom[0].start, jnp.int32)[interp.iy], jnp.asarray(geom[1].start, jnp.int32)[interp.ix])
    read_sizes = tuple((r - 1) * s + k for r, s, k in zip(sizes, sw.strides, sw.k_eff))
    begin = [jnp.zeros((), jnp.int32)] * len(x.shape)
    for a, st, s in zip(x.axes, out_starts, sw.strides):
        begin[a] = st * s  # padded coordinates
    region = lax.dynamic_slice(padded, [interp.img, *begin], (1, *_shape_with(x.shape, x.axes, read_sizes)))[0]
    origin = tuple(st * s - p[0] for st, s, p in zip(out_starts, sw.strides, sw.pads))
    return _place(region, origin, x.value, interp.starts(x), (x.geom[0].size, x.geom[1].size), x.axes)


# --------------------------------------------------------------------------------------------
# Public entry points (used by saliency_jax.occlude.engine)
# --------------------------------------------------------------------------------------------


def _input_value(images_shape, grid: WindowGrid, value):
    _, h, w, c = images_shape
    gy = _Axis.of(h, grid.origins_y, grid.origins_y + grid.extents_y)
    gx = _Axis.of(w, grid.origins_x, grid.origins_x + grid.extents_x)
    return _Spatial(value, (1, 2), (gy, gx), (1, h, w, c))


def _traced(apply_fn, params, images_shape, dtype):
    x = jax.ShapeDtypeStruct((1, *images_shape[1:]), dtype)
    return jx.trace(apply_fn, params, x)


def _run(traced, params, x: _Spatial, interp: _Interpreter):
    leaves = jax.tree_util.tree_leaves(params)
    outs = jx.eval_jaxpr(traced.jaxpr, [*leaves, x], handler=interp)
    outs = [interp.materialise(o) if isinstance(o, _Spatial) else o for o in outs]
    return jax.tree_util.tree_unflatten(traced.out_tree, outs)


def prepare(apply_fn: Callable, params: Any, images: jax.Array, grid: WindowGrid, *, cap: float | None = None) -> list:
    """The per-image caches of the unoccluded images ``(N, H, W, C)``, for :func:`window_outputs`.

    A list of arrays, each with a leading image axis: the padded inputs of the layers computed
    incrementally and the full values where the computation turns full.
    """
    traced = _traced(apply_fn, params, images.shape, images.dtype)

    def one(image):
        interp = _Interpreter("cache", cap=cap)
        _run(traced, params, _input_value(images.shape, grid, image[None]), interp)
        return interp.records

    return jax.vmap(one)(images)


def _window_pass(apply_fn, params, images, fills, grid: WindowGrid, caches, img, iy, ix, cap):
    """:func:`window_outputs`, and the :class:`LayerCost` of each equation computed on a region."""
    x = _input_value(images.shape, grid, None)
    (gy, gx) = x.geom
    sy = jnp.asarray(gy.start, jnp.int32)[iy]
    sx = jnp.asarray(gx.start, jnp.int32)[ix]
    size = (1, gy.size, gx.size, images.shape[3])
    zero = jnp.zeros((), jnp.int32)
    pixels = lax.dynamic_slice(images, (img, sy, sx, zero), size)
    filled = lax.dynamic_slice(fills, (img, sy, sx, zero), size)
    rows = sy + jnp.arange(gy.size, dtype=jnp.int32)
    cols = sx + jnp.arange(gx.size, dtype=jnp.int32)
    x.value = jnp.where(window_mask(grid, iy, ix, rows, cols)[None, :, :, None], filled, pixels)
    traced = _traced(apply_fn, params, images.shape, images.dtype)
    interp = _Interpreter("window", caches, img, iy, ix, cap=cap)
    return _run(traced, params, x, interp), interp.savings


def window_outputs(apply_fn, params, images, fills, grid: WindowGrid, caches, img, iy, ix, *, cap=None):
    """Model output ``(1, K)`` for window ``(iy, ix)`` of image ``img`` occluded with ``fills``.

    Per window (``vmap`` it over windows): the changed region of each layer is recomputed from
    ``caches`` (from :func:`prepare` on the same ``images`` and ``grid``).

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        images, fills: ``(N, H, W, C)``: the images and what an occluded pixel becomes.
        grid: the window grid.
        caches: :func:`prepare`'s result.
        img, iy, ix: int32 scalars: image, window row, window column.
        cap: ``None`` (exact) or the projective-field cap of :func:`capped_occlusion`
            (APPROXIMATE); must be the one given to :func:`prepare`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from saliency_jax.occlude import incremental, window_grid
        >>> f = lambda p, x: jax.nn.relu(jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
        ...                                                    "VALID")).sum(axis=(1, 2))   # (B, 4, 4, 1) -> (B, 1)
        >>> images = jnp.ones((1, 4, 4, 1))
        >>> grid = window_grid((4, 4), window=2)
        >>> caches = incremental.prepare(f, None, images, grid)
        >>> i = jnp.int32(0)
        >>> incremental.window_outputs(f, None, images, jnp.zeros_like(images), grid, caches, i, i, i).tolist()
        [[12.0]]
    """
    return _window_pass(apply_fn, params, images, fills, grid, caches, img, iy, ix, cap)[0]


def _full_flops(apply_fn, params, image_shape) -> tuple[int, list]:
    traced = _traced(apply_fn, params, (1, *image_shape), jnp.float32)
    n_params = len(jax.tree_util.tree_leaves(params))
    counted: list = []

    def visit(eqn, flags, path):
        if any(flags):
            counted.append(_eqn_flops(eqn))

    jx.walk(traced.jaxpr, visit, [False] * n_params + [True])
    return sum(counted), counted


def flop_report(
    apply_fn: Callable, params: Any, image_shape, *, window, stride=None, placement: str = "clip",
    cap: float | None = None,
) -> FlopReport:
    """Counted FLOPs per window of full and incremental re-inference (no computation is run).

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        image_shape: ``(H, W, C)``.
        window, stride, placement: the window grid, as for :func:`saliency_jax.occlusion`.
        cap: ``None`` (exact) or the APPROXIMATE projective-field cap of :func:`capped_occlusion`.

    Returns:
        A :class:`FlopReport`; ``ratio`` is the ceiling on the speed-up. Cached per model,
        parameter shapes, image shape and grid (``method="auto"`` asks for it on every call).
    """
    h, w, c = (int(d) for d in image_shape)
    grid = window_grid((h, w), window, stride, placement)
    try:
        key = (apply_fn, _validate.signature(params), (h, w, c), tuple(map(tuple, grid)), FULL_LAYER_FRACTION, cap)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _REPORTS:
        return _REPORTS[key]
    full, _ = _full_flops(apply_fn, params, (h, w, c))
    abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), params)
    images = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    stats: list[LayerCost] = []

    def run(p, imgs):
        caches = prepare(apply_fn, p, imgs, grid, cap=cap)
        zero = jnp.zeros((), jnp.int32)
        out, savings = _window_pass(apply_fn, p, imgs, imgs, grid, caches, zero, zero, zero, cap)
        stats.extend(savings)
        return out

    jax.eval_shape(run, abstract_params, images)
    saved = sum(layer.full_flops - layer.window_flops for layer in stats)
    report = FlopReport(int(full), int(full - saved), tuple(stats))
    if key is not None:
        _REPORTS[key] = report
    return report


_REPORTS: dict = {}


# --------------------------------------------------------------------------------------------
# APPROXIMATE: capped projective field (Krypton's "projective field threshold")
# --------------------------------------------------------------------------------------------


def _capped(apply_fn, params, images, fill, targets, grid_key, cap, chunk, target_kind):
    """The capped map ``(N, K', H, W)`` (``K' = K`` for ``target_kind="all"``, else 1)."""
    n, h, w, _ = images.shape
    grid = window_grid((h, w), *grid_key)
    fills = jnp.broadcast_to(fill.astype(images.dtype), images.shape)
    caches = prepare(apply_fn, params, images, grid, cap=cap)
    n_cols, per_image = grid.shape[1], grid.size
    total = n * per_image

    def one(t):
        img, p = t // per_image, t % per_image
        return window_outputs(apply_fn, params, images, fills, grid, caches, img, p // n_cols, p % n_cols, cap=cap)[0]

    outs = lax.map(jax.vmap(one), chunk_indices(total, chunk)[0])
    outs = outs.reshape(-1, outs.shape[-1])[:total].astype(jnp.float32)
    base = apply_fn(params, images).astype(jnp.float32)  # (N, K)
    drops = base[:, None] - outs.reshape(n, per_image, -1)
    heat = accumulate(drops.reshape(n, *grid.shape, -1), grid, (h, w), "mean")  # (N, K, H, W)
    if target_kind == "all":
        return heat
    if target_kind == "predicted":
        targets = jnp.argmax(base, axis=-1).astype(jnp.int32)
    return jnp.take_along_axis(heat, targets[:, None, None, None], axis=1)


def capped_occlusion(
    apply_fn: Callable, params: Any, image: jax.Array, *, window, stride=None, target, cap: float,
    fill: float = 0.0, chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """APPROXIMATE occlusion map with a capped projective field (Krypton's threshold τ).

    As ``occlusion(..., method="incremental")`` with ``score="difference"``, ``combine="mean"``,
    ``placement="clip"`` and a constant ``fill``, except that at every convolution / pooling the
    changed region is cut to at most ``ceil(cap · size)`` rows and columns around its centre;
    beyond it the layer keeps the unoccluded image's activations. ``cap >= 1`` is exact; a
    smaller cap does less work and is wrong by an amount that depends on the model and image —
    measure it against the exact map (``occlusion(..., method="incremental")``) before trusting
    it, e.g. with ``benchmarks/incremental.py --approx``. :func:`flop_report` with the same
    ``cap`` counts its FLOPs.

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating point (float32), finite.
        window, stride: as for :func:`saliency_jax.occlusion`.
        target: as for :func:`saliency_jax.occlusion`: an int, one int per image, ``"all"`` or
            ``None`` (each image's predicted class).
        cap: the fraction of each map's side a changed region may span, in ``(0, 1]``.
        fill: the constant (finite) an occluded pixel becomes.
        chunk_size: windows per batched step.

    Returns:
        float32 ``(H, W)`` for one image, ``(N, H, W)`` for a batch, with a class axis before
        ``H`` for ``target="all"``: the mean score drop of the windows covering each pixel.

    Raises:
        TypeError, ValueError: for a malformed argument, before the model is traced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import saliency_jax as sj
        >>> model = sj.get_model("small", width=0.25, fc=(8,))
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
        >>> image = jax.random.normal(jax.random.key(1), (128, 128, 3))
        >>> sj.incremental.capped_occlusion(model.apply, variables, image, window=32, stride=16, target=1,
        ...                                 cap=0.5).shape
        (128, 128)
    """
    _validate.apply_fn(apply_fn)
    images, batched = _validate.image(image)
    n, h, w, _ = images.shape
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real):
        raise TypeError(f"`cap` (={cap!r}) must be a number in (0, 1]")
    if not 0 < cap <= 1:
        raise ValueError(f"`cap` (={cap!r}) must be a number in (0, 1]")
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"`fill` (={fill!r}) must be a number")
    if not math.isfinite(fill):
        raise ValueError(f"`fill` (={fill!r}) must be finite")
    chunk_size = _validate.integer("chunk_size", chunk_size, lo=1)
    window_grid((h, w), window, stride, "clip")  # validates window and stride against the image
    window_yx = _validate.pair("window", window)
    stride_yx = window_yx if stride is None else _validate.pair("stride", stride)
    kind, targets = _validate.target(target, n=n, num_classes=_validate.num_classes(apply_fn, params, images))
    fill_arr = jnp.asarray(fill, jnp.float32)
    run = jit_with_policy(_capped, (0, 5, 6, 7, 8), args=(params, images, targets))
    heat = run(apply_fn, params, images, fill_arr, targets, (window_yx, stride_yx), float(cap), chunk_size, kind)
    if kind != "all":
        heat = heat[:, 0]
    return heat if batched else heat[0]
