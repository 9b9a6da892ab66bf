"""Exact incremental re-inference for occlusion: recompute only what each window changes.

(Over 600 lines on purpose: one interpreter, its two passes and its ~20 primitive handlers share
the private region types ``_Axis``/``_Spatial``/``_Full`` and helpers ``_union``/``_place``;
split across modules they would become a cross-module API for what is one algorithm. The FLOP
count (:mod:`~saliency_jax.occlude.flops`) and the approximate capped field
(:mod:`~saliency_jax.occlude.capped`) that used to live here have their own modules.)

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
   a dynamic position, along the value's two spatial axes (wherever the layout puts them). An
   elementwise operation maps the patch; a convolution or pooling reads the input region its
   output region needs with ``lax.dynamic_slice`` from the padded cache, splices the input
   patch into it (a gather and a select: no scatter) and runs the same operation with
   ``VALID`` padding on that region only — under ``vmap`` one batched convolution per layer
   for all windows of a chunk.

DAGs: where two branches with *different* changed regions meet (a residual addition, ``max``,
``mul``, ``select_n``, ``concatenate`` along channels), the result is computed on the bounding
box of the operands' regions (Krypton's merge, Nakandala et al. 2019); each operand is read
from the cache of its unoccluded value outside its own patch. Layouts: the two spatial axes
are tracked through ``transpose``, ``reshape`` (splitting or merging non-spatial axes only),
``broadcast_in_dim``, ``squeeze``, slices and ``split`` of non-spatial axes and reductions over
non-spatial axes, so NCHW models (an NHWC→NCHW transpose at the input, OIHW kernels) get the
same regions as their NHWC twins. The ``pad`` primitive (zero-padding layers; negative padding
crops, interior padding spreads) moves the region and writes the padded patch into the cached
padded map. ``dot_general`` that keeps the spatial axes free (a dense layer applied at every
position) runs on the patch.

What goes full: an operation that mixes all positions — a reduction over the spatial axes
(global pooling, a squeeze-excitation's mean, a norm over the map), a flatten (``reshape``
merging a spatial axis) and the dense layers after it, attention, ``scan``/``cond``/``while``
on the feature maps, any primitive not listed here — runs in full, and so does everything that
depends on its result: a squeeze-excitation block's scale multiplied back into the map turns
the map full at that point. A convolution or pooling whose changed region would cover at least
:data:`FULL_LAYER_FRACTION` of its output is computed in full too. :func:`window_equations` lists,
per equation, what is computed per window and why; :func:`saliency_jax.occlude.flops.flop_report`
counts it (``FlopReport.full_layers``, ``FlopReport.reasons``, ``FlopReport.table()``).
Still exact, just not cheaper; a model with none of the region operations (an MLP) runs
entirely in full. The result equals full re-inference up to float32 rounding (the same
operations on the same numbers, only fewer of them).

What it applies to: ``mode="occlude"`` occlusion of any model ``apply_fn(params, (B, H, W, C))``
whose data path is traceable to a jaxpr; the savings come from 2-D ``conv_general_dilated``
over the image's two spatial axes in any layout (any padding, stride, dilation and feature
groups — depthwise and grouped included; not transposed convolutions),
``reduce_window_max/min/sum`` pools over those two axes (max/avg pooling) and the operations
between them listed above (bias, BatchNorm in inference form, ReLU/ReLU6, scaling, constants of
the map's size …).

Memory: per image, one padded copy of the input of every layer computed incrementally (about
one forward pass's activations), one copy of each merge operand and padded map, plus, per
chunk, the regions of its windows.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> from saliency_jax.occlude import flops
    >>> model = sj.get_model("small", width=0.25, fc=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    >>> rep = flops.flop_report(model.apply, variables, (128, 128, 3), window=32, stride=8)
    >>> rep.ratio > 2   # full FLOPs per window / incremental FLOPs per window
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax import jaxpr as jx
from saliency_jax._lazy import lazy_exports
from saliency_jax._compile import CHUNK_SIZES
from saliency_jax.occlude.windows import WindowGrid, window_mask

__all__ = [
    "FULL_LAYER_FRACTION",
    "DEFAULT_CHUNK_SIZE",
    "ELEMENTWISE",
    "POOLS",
    "Recomputed",
    "prepare",
    "window_outputs",
    "window_equations",
]

FULL_LAYER_FRACTION = 0.8
"""A convolution / pooling whose changed region costs at least this fraction of the full layer
(in counted FLOPs) is computed in full for every window, and so is everything after it."""

DEFAULT_CHUNK_SIZE = CHUNK_SIZES["cpu"]["incremental"]
"""Windows per chunk for ``method="incremental"`` on the CPU when ``chunk_size`` is not given (other
backends: :func:`saliency_jax._compile.default_chunk_size`). On the 2-core
CPU of ``benchmarks/results/incremental.md`` (XLA's own convolutions), 32 beat 16 by 20 % on the
ZF-style model (w16 s4) and 6 % on the VGG16-style one, and 64 was no faster: the recomputed
regions are small, so larger batches than full re-inference's pay, and the dense layers read
their weights once per chunk."""

ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
    copy_p cos cosh div erf erf_inv erfc exp exp2 expm1 floor integer_pow is_finite log log1p
    logistic max min mul ne eq ge gt le lt neg nextafter not or pow reduce_precision rem round
    rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor""".split()
)
"""Elementwise primitives: computed on the union box of their operands' changed regions."""
POOLS = {"reduce_window_max": -np.inf, "reduce_window_min": np.inf, "reduce_window_sum": 0.0}
"""``reduce_window`` pools computed on their changed region, and what each one's padding holds."""


class Recomputed(NamedTuple):
    """One image-dependent equation of the window pass (:func:`window_equations`).

    Attributes:
        eqn: the jaxpr equation.
        full_shape: its output's full shape (``()`` for an equation without outputs).
        window_shape: the output shape computed per window (the changed region), or ``None``
            where the equation runs in full.
        reason: for one in full, why: where the computation turned full, or ``"after …"`` that
            point; ``""`` for one on its changed region.
        index: the k-th image-dependent equation (``primitive #k`` in reasons).
        inherited: computed in full only because an input already was (``reason`` ``"after …"``).
    """

    eqn: Any
    full_shape: tuple[int, ...]
    window_shape: tuple[int, ...] | None
    reason: str
    index: int
    inherited: bool


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


def _same_patch(a: tuple[_Axis, _Axis], b: tuple[_Axis, _Axis]) -> bool:
    """Whether two geometries carry their patches at the same positions for every window."""
    return a is b or all(
        x is y or (x.dim == y.dim and x.size == y.size and np.array_equal(x.start, y.start)) for x, y in zip(a, b)
    )


def _union(geoms: Sequence[tuple[_Axis, _Axis]]) -> tuple[_Axis, _Axis]:
    """The bounding box of several changed regions, per window (Krypton's merge of DAG branches)."""
    first = geoms[0]
    if all(_same_patch(g, first) for g in geoms[1:]):
        return first
    out = []
    for k in range(2):
        axes = [g[k] for g in geoms]
        if all(a is axes[0] for a in axes):
            out.append(axes[0])
            continue
        lo = np.min([np.where(a.hi > a.lo, a.lo, a.dim) for a in axes], axis=0)
        hi = np.max([np.where(a.hi > a.lo, a.hi, 0) for a in axes], axis=0)
        out.append(_Axis.of(axes[0].dim, lo, np.maximum(lo, hi)))
    return tuple(out)


@dataclasses.dataclass(eq=False)
class _Full:
    """A value that depends on the image but is computed in full (per window in the window pass).

    ``origin`` names the equation where the computation turned full (``primitive #k``, the k-th
    image-dependent equation), for :func:`flop_report`.
    """

    value: Any
    origin: str


class _Interpreter:
    """Handler for :func:`saliency_jax.jaxpr.eval_jaxpr` in one of two passes.

    ``cache`` pass: values are full (batch 1); records what the window pass will read.
    ``window`` pass: values are patches; reads the records (``caches``, leading axis = image)
    at image ``img`` and grid position ``(iy, ix)``, in the order the cache pass recorded them
    (both passes take the same static decisions). Image-dependent values are :class:`_Spatial`
    (a changed region) or :class:`_Full` (computed in full); constants are plain arrays. Each
    primitive family has a handler in :data:`_HANDLERS` that returns the outputs, or a reason
    string when the equation must run in full (it then runs in full and so does everything
    that depends on it).
    """

    def __init__(self, mode: str, caches: Sequence[Any] = (), img=None, iy=None, ix=None, cap=None):
        self.mode = mode
        self.cap = cap
        self.records: list = []
        self._caches = list(caches)
        self._next = 0
        self.img, self.iy, self.ix = img, iy, ix
        self._full_values: dict = {}
        self._count = 0
        self.recomputed: list[Recomputed] = []  # window pass: every image-dependent equation, program order

    def take(self, value):
        """Cache pass: keep ``value`` (all images stacked later) and return it. Window pass: the
        value the cache pass kept at this point (leading axis ``N``; ``value`` is ignored)."""
        if self.mode == "cache":
            self.records.append(value)
            return value
        if self._next >= len(self._caches):
            raise RuntimeError("incremental occlusion: the window pass read more caches than were recorded")
        value = self._caches[self._next]
        self._next += 1
        return value

    def unoccluded(self, x: _Spatial):
        """The full unoccluded value of ``x``: cache pass ``(1, …)``; window pass this image's ``(1, …)``
        (recorded once per value)."""
        key = id(x)
        if key not in self._full_values:
            self._full_values[key] = (x, self.take(x.value))
        full = self._full_values[key][1]
        return full if self.mode == "cache" else lax.dynamic_index_in_dim(full, self.img, 0, keepdims=False)

    def starts(self, geom: tuple[_Axis, _Axis]):
        """Window pass: where a patch of geometry ``geom`` starts along its two spatial axes (int32)."""
        return (jnp.asarray(geom[0].start, jnp.int32)[self.iy], jnp.asarray(geom[1].start, jnp.int32)[self.ix])

    def materialise(self, x: _Spatial):
        """The full value of ``x`` (cache pass: itself; window pass: patch spliced into the cache)."""
        base = self.unoccluded(x)
        if self.mode == "cache":
            return x.value
        zero = jnp.zeros((), jnp.int32)
        return _place(base, (zero, zero), x.value, self.starts(x.geom), (x.geom[0].size, x.geom[1].size), x.axes)

    def to_region(self, x: _Spatial, geom):
        """``x`` on the patch of ``geom`` (which contains ``x``'s changed region): its own patch
        where the two coincide, else the unoccluded region from the cache with ``x``'s patch in."""
        if _same_patch(x.geom, geom):
            return x.value
        full = self.unoccluded(x)
        if self.mode == "cache":
            return x.value
        sizes = (geom[0].size, geom[1].size)
        starts = self.starts(geom)
        region = _slice_region(full, x.axes, starts, sizes)
        return _place(region, starts, x.value, self.starts(x.geom), (x.geom[0].size, x.geom[1].size), x.axes)

    def const_region(self, v, axes, geom):
        """A constant operand (no image dependence) cut to the patch of ``geom`` where it has the
        map's spatial size (window pass); broadcast (size-1) and scalar operands pass."""
        shp = tuple(np.shape(v))
        if self.mode == "cache" or not shp or all(shp[a] == 1 for a in axes):
            return v
        return _slice_region(v, axes, self.starts(geom), (geom[0].size, geom[1].size))

    def region_cost(self, eqn, out_shape, win_shape):
        """Window pass: note that ``eqn`` ran on a region of shape ``win_shape``."""
        if self.mode == "window":
            self.recomputed.append(Recomputed(eqn, tuple(out_shape), tuple(win_shape), "", self._count, False))

    def __call__(self, eqn, invals):
        spatial = [isinstance(v, _Spatial) for v in invals]
        full = [isinstance(v, _Full) for v in invals]
        name = eqn.primitive.name
        if not any(spatial) and not any(full):
            if name in jx.CALL_PRIMITIVES or name in jx.CUSTOM_CALL_PRIMITIVES or jx.sub_jaxprs(eqn):
                return None
            return jx.bind(eqn, invals)
        if name in jx.CALL_PRIMITIVES:
            return None  # eval_eqn inlines the body through this handler
        if name in jx.CUSTOM_CALL_PRIMITIVES:
            return jx.eval_call_body(eqn, invals, handler=self)
        self._count += 1
        if any(full):
            origin = next(v.origin for v in invals if isinstance(v, _Full))
            if any(spatial):
                return self.run_full(eqn, invals, f"combines the changed region with a value computed in full since "
                                                  f"{origin}", origin=None)
            return self.run_full(eqn, invals, f"after {origin} (full from there)", origin=origin)
        handler = _HANDLERS.get(name)
        if handler is None and name in ELEMENTWISE:
            handler = _elementwise
        out = handler(self, eqn, invals) if handler is not None else f"unsupported primitive: {name}"
        if isinstance(out, str):
            return self.run_full(eqn, invals, out, origin=None)
        return out

    def run_full(self, eqn, invals, reason: str, origin: str | None):
        """Run ``eqn`` in full; its outputs are :class:`_Full`. ``origin``: the reason inherited
        from a full input (``None``: this equation is where the computation turns full)."""
        args = [self.materialise(v) if isinstance(v, _Spatial) else v.value if isinstance(v, _Full) else v
                for v in invals]
        outs = jx.eval_eqn(eqn, args, handler=self) if jx.sub_jaxprs(eqn) else jx.bind(eqn, args)
        if self.mode == "window":
            shape = tuple(eqn.outvars[0].aval.shape) if eqn.outvars else ()
            self.recomputed.append(Recomputed(eqn, shape, None, reason, self._count, origin is not None))
        if origin is None:
            origin = f"{jx.label(eqn)} #{self._count}"
        return [_Full(o, origin) for o in outs]


def _slice_region(v, axes, starts, sizes):
    """``v[..., starts : starts + sizes, ...]`` along its two spatial ``axes`` (dynamic starts)."""
    begin = [jnp.zeros((), jnp.int32)] * np.ndim(v)
    for a, s in zip(axes, starts):
        begin[a] = s
    return lax.dynamic_slice(v, begin, _shape_with(np.shape(v), axes, sizes))


# -- elementwise (n-ary, with the union of the operands' regions) -----------------------------


def _elementwise(interp: _Interpreter, eqn, invals):
    """An elementwise equation on the bounding box of its image-dependent operands' regions;
    each operand outside its own patch is read from the cache, constants of the map's size are
    cut to the box."""
    if len(eqn.outvars) != 1:
        return f"elementwise primitive with {len(eqn.outvars)} outputs: {eqn.primitive.name}"
    out_shape = tuple(eqn.outvars[0].aval.shape)
    spatial = [v for v in invals if isinstance(v, _Spatial)]
    first = spatial[0]
    if any(s.shape != out_shape or s.axes != first.axes for s in spatial):
        return "operands of different shapes or spatial layouts"
    for v in invals:
        shp = tuple(np.shape(v)) if not isinstance(v, _Spatial) else ()
        if shp and (len(shp) != len(out_shape) or any(shp[a] not in (1, out_shape[a]) for a in first.axes)):
            return "a constant operand varies along the spatial axes in another shape"
    geom = _union([s.geom for s in spatial])
    args = [interp.to_region(v, geom) if isinstance(v, _Spatial) else interp.const_region(v, first.axes, geom)
            for v in invals]
    outs = jx.bind(eqn, args)
    interp.region_cost(eqn, out_shape, _shape_with(out_shape, first.axes, (geom[0].size, geom[1].size)))
    return [_Spatial(outs[0], first.axes, geom, out_shape)]


def _concatenate(interp: _Interpreter, eqn, invals):
    """``concatenate`` along a non-spatial axis (channels: Inception, DenseNet) on the union box."""
    dim = eqn.params["dimension"]
    spatial = [v for v in invals if isinstance(v, _Spatial)]
    first = spatial[0]
    if dim in first.axes:
        return "concatenates along a spatial axis"
    if any(s.axes != first.axes for s in spatial):
        return "operands of different spatial layouts"
    out_shape = tuple(eqn.outvars[0].aval.shape)
    geom = _union([s.geom for s in spatial])
    args = [interp.to_region(v, geom) if isinstance(v, _Spatial) else interp.const_region(v, first.axes, geom)
            for v in invals]
    outs = jx.bind(eqn, args)
    return [_Spatial(outs[0], first.axes, geom, out_shape)]


# -- layout: transpose, reshape, broadcast, squeeze, slices of non-spatial axes ---------------


def _relaid(interp: _Interpreter, eqn, x: _Spatial, axes, **patch_params):
    """``eqn`` applied to ``x``'s patch (with ``patch_params`` over its params), the spatial axes
    now at ``axes`` of the output."""
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if any(out_shape[b] != x.shape[a] for a, b in zip(x.axes, axes)):
        return "a spatial axis changes size"
    params = {} if interp.mode == "cache" else patch_params
    outs = jx.bind(eqn, [x.value], **params)
    return [_Spatial(outs[0], tuple(axes), x.geom, out_shape)]


def _patch_shape(out_shape, axes, x: _Spatial):
    return _shape_with(out_shape, axes, (x.geom[0].size, x.geom[1].size))


def _transpose(interp: _Interpreter, eqn, invals):
    (x,) = invals
    perm = tuple(eqn.params["permutation"])
    return _relaid(interp, eqn, x, tuple(perm.index(a) for a in x.axes))


def _aligned_axis(old_shape, a, new_shape):
    """The axis of ``new_shape`` that holds axis ``a`` of ``old_shape`` whole under a row-major
    reshape (same size, same product of the axes before it), or ``None``."""
    before = math.prod(old_shape[:a])
    for b in range(len(new_shape)):
        if new_shape[b] == old_shape[a] and math.prod(new_shape[:b]) == before:
            return b
    return None


def _reshape(interp: _Interpreter, eqn, invals):
    """A reshape that splits or merges non-spatial axes only (the two spatial axes stay whole)."""
    x = invals[0]
    if len(invals) != 1 or eqn.params.get("dimensions") is not None:
        return "reshape with dynamic shape or dimension order"
    new = tuple(eqn.outvars[0].aval.shape)
    axes = tuple(_aligned_axis(x.shape, a, new) for a in x.axes)
    if None in axes or axes[0] >= axes[1]:
        return "reshape merges or splits a spatial axis (flatten)"
    return _relaid(interp, eqn, x, axes, new_sizes=_patch_shape(new, axes, x))


def _broadcast_in_dim(interp: _Interpreter, eqn, invals):
    x = invals[0]
    if len(invals) != 1:
        return "broadcast with a dynamic shape"
    dims = tuple(eqn.params["broadcast_dimensions"])
    axes = tuple(dims[a] for a in x.axes)
    new = tuple(eqn.outvars[0].aval.shape)
    return _relaid(interp, eqn, x, axes, shape=_patch_shape(new, axes, x))


def _squeeze(interp: _Interpreter, eqn, invals):
    (x,) = invals
    dims = tuple(d % len(x.shape) for d in eqn.params["dimensions"])
    if any(a in dims for a in x.axes):
        return "squeezes a spatial axis"
    return _relaid(interp, eqn, x, tuple(a - sum(d < a for d in dims) for a in x.axes))


def _slice(interp: _Interpreter, eqn, invals):
    """A static slice of non-spatial axes (a channel split); the spatial axes stay whole."""
    (x,) = invals
    p = eqn.params
    strides = p["strides"] or (1,) * len(x.shape)
    for a in x.axes:
        if p["start_indices"][a] != 0 or p["limit_indices"][a] != x.shape[a] or strides[a] != 1:
            return "slices a spatial axis"
    limits = list(p["limit_indices"])
    for a, g in zip(x.axes, x.geom):
        limits[a] = g.size
    return _relaid(interp, eqn, x, x.axes, limit_indices=tuple(limits))


def _split(interp: _Interpreter, eqn, invals):
    """``split`` along a non-spatial axis (``jnp.split`` of channels)."""
    (x,) = invals
    if eqn.params["axis"] in x.axes:
        return "splits a spatial axis"
    outs = jx.bind(eqn, [x.value])
    return [_Spatial(o, x.axes, x.geom, tuple(v.aval.shape)) for o, v in zip(outs, eqn.outvars)]


_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                         "argmax", "argmin"})


def _reduce(interp: _Interpreter, eqn, invals):
    """A reduction over non-spatial axes only (a channel mean or max) on the patch."""
    (x,) = invals
    red = tuple(eqn.params["axes"])
    hit = [a for a in x.axes if a in red]
    if len(hit) == 2:
        return f"global reduction over spatial axes ({eqn.primitive.name})"
    if hit:
        return f"reduction over a spatial axis ({eqn.primitive.name})"
    return _relaid(interp, eqn, x, tuple(a - sum(d < a for d in red) for a in x.axes))


def _dot_general(interp: _Interpreter, eqn, invals):
    """A matrix product that keeps the spatial axes as free axes of one operand (a dense layer
    applied to every position, a 1×1 convolution written as ``dot_general``)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    side = 0 if isinstance(invals[0], _Spatial) else 1
    if isinstance(invals[1 - side], _Spatial):
        return "product of two image-dependent values (attention)"
    x = invals[side]
    contract, batch = (lc, lb) if side == 0 else (rc, rb)
    if any(a in contract for a in x.axes):
        return "contracts over a spatial axis (dense layer on the flattened map)"
    if any(a in batch for a in x.axes):
        return "batches over a spatial axis"
    free = [d for d in range(len(x.shape)) if d not in contract and d not in batch]
    offset = len(lb) + (0 if side == 0 else len(np.shape(invals[0])) - len(lc) - len(lb))
    axes = tuple(offset + free.index(a) for a in x.axes)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    args = list(invals)
    args[side] = x.value
    outs = jx.bind(eqn, args)
    interp.region_cost(eqn, out_shape, _patch_shape(out_shape, axes, x))
    return [_Spatial(outs[0], axes, x.geom, out_shape)]


def _pad(interp: _Interpreter, eqn, invals):
    """The ``pad`` primitive (zero-padding layers; negative padding crops, interior padding
    spreads): the changed region moves by the low padding; the patch is padded along the
    non-spatial axes and written into the cached padded map."""
    x, value = invals
    if not isinstance(x, _Spatial) or isinstance(value, _Spatial):
        return "the padding value depends on the image"
    config = tuple(tuple(int(c) for c in cfg) for cfg in eqn.params["padding_config"])
    out_shape = tuple(eqn.outvars[0].aval.shape)
    geom = []
    for a, g in zip(x.axes, x.geom):
        lo, _, interior = config[a]
        step, n = interior + 1, out_shape[a]
        a_lo = np.clip(g.lo * step + lo, 0, n)
        a_hi = np.clip((g.hi - 1) * step + lo + 1, 0, n)
        geom.append(_Axis.of(n, a_lo, np.where(g.hi > g.lo, np.maximum(a_lo, a_hi), a_lo)))
    geom = tuple(geom)
    if interp.mode == "cache":
        outs = jx.bind(eqn, [x.value, value])
        interp.take(outs[0])
        return [_Spatial(outs[0], x.axes, geom, out_shape)]
    inner = list(config)
    for a in x.axes:
        inner[a] = (0, 0, config[a][2])
    patch = jx.bind(eqn, [x.value, value], padding_config=tuple(inner))[0]
    cached = lax.dynamic_index_in_dim(interp.take(None), interp.img, 0, keepdims=False)
    starts = interp.starts(geom)
    region = _slice_region(cached, x.axes, starts, (geom[0].size, geom[1].size))
    pstart = tuple(s * (config[a][2] + 1) + config[a][0] for s, a in zip(interp.starts(x.geom), x.axes))
    psize = tuple((g.size - 1) * (config[a][2] + 1) + 1 for g, a in zip(x.geom, x.axes))
    out = _place(region, starts, patch, pstart, psize, x.axes)
    return [_Spatial(out, x.axes, geom, out_shape)]


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
    """A 2-D convolution over the image's spatial axes (any layout, strides, dilation, feature
    groups — depthwise included; not transposed, no batch groups)."""
    x, rhs = invals
    if not isinstance(x, _Spatial) or isinstance(rhs, _Spatial):
        return "convolution with image-dependent weights"
    p = eqn.params
    dn = p["dimension_numbers"]
    if len(dn.lhs_spec) != 4:
        return f"{len(dn.lhs_spec) - 2}-D convolution"
    if p["batch_group_count"] != 1 or any(d != 1 for d in p["lhs_dilation"]):
        return "transposed convolution or batch groups"
    if tuple(dn.lhs_spec[2:]) != x.axes:
        return "convolution whose spatial axes are not the image's (rows, columns)"
    pads = tuple(tuple(int(v) for v in pr) for pr in p["padding"])
    if any(v < 0 for pr in pads for v in pr):
        return "convolution with negative padding"
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
                return "pooling with base dilation or negative padding"
        elif wd[a] != 1 or ws[a] != 1 or tuple(pad[a]) != (0, 0) or bd[a] != 1 or wdl[a] != 1:
            return "pooling across a non-spatial axis"
    sliding = _Sliding(
        k_eff=tuple((wd[a] - 1) * wdl[a] + 1 for a in x.axes), strides=tuple(ws[a] for a in x.axes),
        pads=tuple(tuple(int(v) for v in pad[a]) for a in x.axes), out_axes=x.axes,
        pad_value=POOLS[eqn.primitive.name], valid_params={"padding": tuple((0, 0) for _ in range(nd))},
    )
    return _windowed(interp, eqn, x, [], sliding)


def _windowed(interp: _Interpreter, eqn, x: _Spatial, other, sw: _Sliding):
    """A sliding-window equation on the changed region of its output (a reason string: run it in full)."""
    out_shape = tuple(eqn.outvars[0].aval.shape)
    geom = tuple(
        g.through(out_shape[oa], k, s, p[0], interp.cap)
        for g, oa, k, s, p in zip(x.geom, sw.out_axes, sw.k_eff, sw.strides, sw.pads)
    )
    sizes = (geom[0].size, geom[1].size)
    area = out_shape[sw.out_axes[0]] * out_shape[sw.out_axes[1]]
    if sizes[0] * sizes[1] >= FULL_LAYER_FRACTION * area:
        return (f"changed region {sizes[0]}×{sizes[1]} covers {100 * sizes[0] * sizes[1] / area:.0f}% of the "
                f"{out_shape[sw.out_axes[0]]}×{out_shape[sw.out_axes[1]]} layer (>= FULL_LAYER_FRACTION "
                f"{FULL_LAYER_FRACTION:g})")
    if interp.mode == "cache":
        config = [(0, 0, 0)] * len(x.shape)
        for a, p in zip(x.axes, sw.pads):
            config[a] = (p[0], p[1], 0)
        interp.take(lax.pad(x.value, jnp.asarray(sw.pad_value, x.value.dtype), config))
        outs = jx.bind(eqn, [x.value, *other])
        return [_Spatial(outs[0], sw.out_axes, geom, out_shape)]
    win_shape = _shape_with(out_shape, sw.out_axes, sizes)
    region = _input_region(interp, x, geom, sw)
    outs = jx.bind(eqn, [region, *other], **sw.valid_params)
    if tuple(outs[0].shape) != win_shape:
        raise RuntimeError(f"incremental occlusion: region of {eqn.primitive.name} has shape "
                           f"{tuple(outs[0].shape)}, expected {win_shape}")
    interp.region_cost(eqn, out_shape, win_shape)
    return [_Spatial(outs[0], sw.out_axes, geom, out_shape)]


def _input_region(interp: _Interpreter, x: _Spatial, geom, sw: _Sliding):
    """Window pass: the padded input region that the output region ``geom`` reads, read from the
    cache with ``x``'s patch written in."""
    padded = interp.take(None)  # (N, *x.shape with spatial axes padded)
    sizes = (geom[0].size, geom[1].size)
    out_starts = interp.starts(geom)
    read_sizes = tuple((r - 1) * s + k for r, s, k in zip(sizes, sw.strides, sw.k_eff))
    begin = [jnp.zeros((), jnp.int32)] * len(x.shape)
    for a, st, s in zip(x.axes, out_starts, sw.strides):
        begin[a] = st * s  # padded coordinates
    region = lax.dynamic_slice(padded, [interp.img, *begin], (1, *_shape_with(x.shape, x.axes, read_sizes)))[0]
    origin = tuple(st * s - p[0] for st, s, p in zip(out_starts, sw.strides, sw.pads))
    return _place(region, origin, x.value, interp.starts(x.geom), (x.geom[0].size, x.geom[1].size), x.axes)


_HANDLERS: dict[str, Callable] = {
    "conv_general_dilated": _conv,
    **{name: _pool for name in POOLS},
    "concatenate": _concatenate,
    "pad": _pad,
    "transpose": _transpose,
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": _squeeze,
    "slice": _slice,
    "split": _split,
    **{name: _reduce for name in _REDUCTIONS},
    "dot_general": _dot_general,
}
"""Primitive name -> handler ``(interp, eqn, invals) -> outputs | reason``; elementwise
primitives (:data:`ELEMENTWISE`) go to :func:`_elementwise`."""

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
    outs = [interp.materialise(o) if isinstance(o, _Spatial) else o.value if isinstance(o, _Full) else o
            for o in outs]
    return jax.tree_util.tree_unflatten(traced.out_tree, outs)


def prepare(apply_fn: Callable, params: Any, images: jax.Array, grid: WindowGrid, *, cap: float | None = None) -> list:
    """The per-image caches of the unoccluded images ``(N, H, W, C)``, for :func:`window_outputs`.

    A list of arrays, each with a leading image axis: the padded inputs of the layers computed
    incrementally, the unoccluded operands of merges and padded maps, and the full values where
    the computation turns full.
    """
    return _cache_pass(apply_fn, params, images, grid, cap)


def _cache_pass(apply_fn, params, images, grid: WindowGrid, cap):
    """:func:`prepare` (also traced abstractly by :func:`window_equations`, which runs no occlusion)."""
    traced = _traced(apply_fn, params, images.shape, images.dtype)

    def one(image):
        interp = _Interpreter("cache", cap=cap)
        _run(traced, params, _input_value(images.shape, grid, image[None]), interp)
        return interp.records

    return jax.vmap(one)(images)


def _window_pass(apply_fn, params, images, fills, grid: WindowGrid, caches, img, iy, ix, cap, region_mask=None):
    """:func:`window_outputs`, and the interpreter (its :class:`Recomputed` notes)."""
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
    if region_mask is None:
        x.value = jnp.where(window_mask(grid, iy, ix, rows, cols)[None, :, :, None], filled, pixels)
    else:  # a mask of the masked-evaluation core on this patch: binary selects, soft blends
        m = region_mask(rows, cols)[None, :, :, None]
        x.value = jnp.where(m, filled, pixels) if m.dtype == jnp.bool_ else \
            pixels * (1 - m.astype(pixels.dtype)) + filled * m.astype(pixels.dtype)
    traced = _traced(apply_fn, params, images.shape, images.dtype)
    interp = _Interpreter("window", caches, img, iy, ix, cap=cap)
    return _run(traced, params, x, interp), interp


def window_outputs(apply_fn, params, images, fills, grid: WindowGrid, caches, img, iy, ix, *, cap=None,
                   region_mask=None):
    """Model output ``(1, K)`` for window ``(iy, ix)`` of image ``img`` occluded with ``fills``.

    Per window (``vmap`` it over windows): the changed region of each layer is recomputed from
    ``caches`` (from :func:`prepare` on the same ``images`` and ``grid``).

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        images, fills: ``(N, H, W, C)``: the images and what an occluded pixel becomes.
        grid: the window grid.
        caches: :func:`prepare`'s result.
        img, iy, ix: int32 scalars: image, window row, window column.
        cap: ``None`` (exact) or the projective-field cap of
            :func:`saliency_jax.occlude.capped.capped_occlusion` (APPROXIMATE); must be the one
            given to :func:`prepare`.
        region_mask: ``None`` (the window ``(iy, ix)`` of ``grid``) or, for any other mask whose
            support lies inside ``grid``'s box ``(iy, ix)`` (:mod:`saliency_jax.occlude.masked`),
            ``region_mask(rows (R,), cols (C,)) -> (R, C)`` the mask on those pixels: bool
            (selects ``fills``) or floating (blends ``x·(1 − m) + fill·m``).

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
    return _window_pass(apply_fn, params, images, fills, grid, caches, img, iy, ix, cap, region_mask)[0]


def window_equations(apply_fn: Callable, params: Any, image_shape, grid: WindowGrid, *,
                     cap: float | None = None) -> tuple[Recomputed, ...]:
    """What the window pass computes per window, traced abstractly (no computation is run).

    The cache pass and one window pass are traced with :func:`jax.eval_shape`; the result lists
    every image-dependent equation the window pass evaluates, in program order, with the shape
    it computes per window (its changed region, or ``None``: in full) and, for one computed in
    full, why. :func:`saliency_jax.occlude.flops.flop_report` counts their FLOPs.

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        image_shape: ``(H, W, C)``.
        grid: the window grid.
        cap: ``None`` (exact) or the APPROXIMATE projective-field cap of
            :func:`saliency_jax.occlude.capped.capped_occlusion`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from saliency_jax.occlude import incremental, window_grid
        >>> f = lambda p, x: jax.nn.relu(x).sum(axis=(1, 2))    # (B, 8, 8, 1) -> (B, 1)
        >>> notes = incremental.window_equations(f, None, (8, 8, 1), window_grid((8, 8), 2))
        >>> [(n.eqn.primitive.name, n.window_shape, n.reason) for n in notes]
        [('max', (1, 2, 2, 1), ''), ('reduce_sum', None, 'global reduction over spatial axes (reduce_sum)')]
    """
    h, w, c = (int(d) for d in image_shape)
    abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), params)
    images = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    stats: list[_Interpreter] = []

    def run(p, imgs):
        caches = _cache_pass(apply_fn, p, imgs, grid, cap)
        zero = jnp.zeros((), jnp.int32)
        out, interp = _window_pass(apply_fn, p, imgs, imgs, grid, caches, zero, zero, zero, cap)
        stats.append(interp)
        return out

    jax.eval_shape(run, abstract_params, images)
    (interp,) = stats
    return tuple(interp.recomputed)


# Names that lived here before the split by concept (issue 19): still served, from their homes.
_MOVED = {
    "flop_report": ("saliency_jax.occlude.flops", "flop_report"),
    "FlopReport": ("saliency_jax.occlude.flops", "FlopReport"),
    "LayerCost": ("saliency_jax.occlude.flops", "LayerCost"),
    "capped_occlusion": ("saliency_jax.occlude.capped", "capped_occlusion"),
    "AUTO_MIN_RATIO": ("saliency_jax.occlude.options", "AUTO_MIN_RATIO"),
}
_, __getattr__, _ = lazy_exports(globals(), _MOVED)
