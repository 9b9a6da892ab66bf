"""Backward passes restricted to a unit's receptive field: one forward pass, local backward passes.

A unit of a convolutional layer — one position of a feature map — sees only a bounded box of
each layer below it (its receptive field), and so its backward signal reaches only that box:
everywhere else the signal, and the unit's map in pixel space, is exactly zero. The default
backward pass (``jax.vjp`` of the whole function, ``vmap``-ed over units) still runs every
transposed convolution over the full feature maps. This module runs it over the boxes only.

:func:`vjp` evaluates the function's jaxpr once through the shared interpreter
:mod:`saliency_jax.jaxpr`, with a handler that wraps the rewrite's
(:class:`saliency_jax.backprop.rewrite.RuleHandler`: the ReLU ``rule`` and the switch pools of
:func:`saliency_jax.backprop.with_rule`) and records what each equation's backward pass needs. Its
backward function walks the recorded equations in reverse, carrying each signal as a *patch*:
a box of static size (the largest any unit can need) at a dynamic position along the spatial
axes, full along the others:

* a convolution (``conv_general_dilated``, any stride, padding, dilation of the kernel and
  feature groups) maps an output patch of ``n`` positions to the ``(n − 1)·stride + k``
  input positions it reads: its own transpose (``jax.vjp`` of the same convolution with
  ``VALID`` padding) on that region only, cut to the input's extent;
* a max pool (``reduce_window_max``) unpools the patch through the switches recorded in the
  forward pass (with ``switches=False``: the default VJP on the same region of the input);
* elementwise operations (bias, the ReLU rules, scaling …) apply their VJP to the patch and
  the same box of their recorded inputs;
* adding or removing unit axes (``x[None]``, ``squeeze``) moves the patch's axes;
* anything else (a dense layer, a reshape that mixes axes, ``scan``, ``cond`` …) places the
  patch into a zero array of the full shape and applies that equation's ordinary VJP: exact,
  only no longer local.

The maps equal those of :func:`saliency_jax.backprop.with_rule` + ``jax.vjp`` up to float32
rounding (the same products, summed by a convolution over a smaller region; the switch
unpooling and the ReLU rules are bit-identical). Nothing is approximated: a patch always covers
every position the signal can reach.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from saliency_jax.backprop import receptive_field
    >>> w = jnp.ones((3, 3, 1, 1))
    >>> f = lambda x: jax.nn.relu(jax.lax.conv_general_dilated(x[None], w, (1, 1), "SAME",
    ...     dimension_numbers=("NHWC", "HWIO", "NHWC"))[0])
    >>> out, back = receptive_field.vjp(f, jnp.ones((8, 8, 1)), rule="deconvnet")
    >>> m = back(receptive_field.unit_seed(out, jnp.array([0, 0, 0]), 1.0))
    >>> m.shape, int((m != 0).sum())   # a corner unit reads a 2 × 2 box
    ((8, 8, 1), 4)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax.backprop import findings, rewrite, rules

__all__ = ["Patch", "vjp", "unit_seed"]

#: Use the sub-pixel form for the transposes of strided convolutions (see ``_transpose_conv``);
#: ``False`` keeps XLA's own (``benchmarks/backprop.py`` measures both). Read at trace time.
_SUBPIXEL = True

# Elementwise primitives whose VJP is applied patch by patch (their data operands sliced to the box).
_ELEMENTWISE = frozenset(
    "add sub mul div neg max min convert_element_type copy copy_p select_n abs sign".split()
)


@dataclasses.dataclass(frozen=True)
class Patch:
    """A signal that is zero outside a box: ``value`` holds the box.

    Attributes:
        value: the box's values: ``shape`` with ``sizes[i]`` on axis ``axes[i]``.
        axes: the axes along which the box is narrower than the array (static).
        starts: int32 scalars (may be traced): where the box begins along each of ``axes``.
        shape: the full array's shape (static).
    """

    value: Any
    axes: tuple[int, ...]
    starts: tuple[Any, ...]
    shape: tuple[int, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(self.value.shape[a]) for a in self.axes)

    def full(self):
        """The full array: the box placed into zeros."""
        if not self.axes:
            return self.value
        begin = [jnp.zeros((), jnp.int32)] * len(self.shape)
        for a, s in zip(self.axes, self.starts):
            begin[a] = jnp.asarray(s, jnp.int32)
        return lax.dynamic_update_slice(jnp.zeros(self.shape, self.value.dtype), self.value, begin)


def _full(c):
    return c.full() if isinstance(c, Patch) else c


def _slice_box(x, axes, starts, sizes):
    """``x`` cut to the box (axes of size 1 in ``x`` are kept: they broadcast)."""
    shape = tuple(np.shape(x))
    begin = [jnp.zeros((), jnp.int32)] * len(shape)
    size = list(shape)
    for a, s, n in zip(axes, starts, sizes):
        if shape[a] != 1:
            begin[a] = jnp.asarray(s, jnp.int32)
            size[a] = n
    return lax.dynamic_slice(x, begin, size)


def _recentre(region, axes, region_starts, dims, bounds):
    """A region (box of ``region.shape`` beginning at ``region_starts``, possibly reaching
    outside ``[0, dim)``) as a :class:`Patch` inside the array: the positions outside are
    dropped, the box shrinks to at most ``dim`` and is moved inside (zeros where it moved).
    ``bounds``: per axis, the static ``(lowest, highest)`` region start."""
    starts = []
    for a, s, dim, (s_min, s_max) in zip(axes, region_starts, dims, bounds):
        r = int(region.shape[a])
        size = min(r, dim)
        start = jnp.clip(s, 0, dim - size)
        # start − s is non-increasing in s: its extremes are at the bounds
        most = min(max(s_min, 0), dim - size) - s_min
        least = min(max(s_max, 0), dim - size) - s_max
        front, back = max(0, -least), max(0, most + size - r)
        if front or back:
            pad = [(0, 0, 0)] * region.ndim
            pad[a] = (front, back, 0)
            region = lax.pad(region, jnp.zeros((), region.dtype), pad)
        if size != int(region.shape[a]) or s_min != s_max or front or back:
            region = lax.dynamic_slice_in_dim(region, start - s + front, size, axis=a)
        starts.append(start)
    return tuple(starts), region


def _float(aval) -> bool:
    return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating)


@dataclasses.dataclass
class _Entry:
    """One recorded data-dependent equation."""

    kind: str  # "conv" | "pool" | "elementwise" | "axes" | "generic"
    eqn: Any
    invals: list
    in_nodes: list  # node id per invar (None: constant)
    out_nodes: list  # node id per outvar (None: not differentiated)
    fn: Callable | None = None  # forward of the equation (rule-swapped) on its invals
    extra: Any = None


class _Recorder:
    """The jaxpr handler of :func:`vjp`: evaluates as :class:`~saliency_jax.backprop.rewrite.RuleHandler`
    does and records on ``tape`` what the backward pass of each data-dependent equation needs.
    Which values carry the backward signal is kept per jaxpr variable (``nodes``: a node id, ``None``
    for values that do not depend on the data). Calls (``jit``, custom-derivative calls the rule
    handler inlines) are entered, their equations recorded one by one; others are recorded whole."""

    def __init__(self, rule, switches, bare_max):
        self.switches = switches
        self.rules = rewrite.RuleHandler(rule, switches=switches, bare_max=bare_max)
        self.tape: list[_Entry] = []
        self.nodes: dict = {}
        self._bare_inputs: dict = {}  # output Var of a recorded bare max(x, 0) → (x, its node)
        self._count = 0

    def node(self):
        self._count += 1
        return self._count

    def node_of(self, v):
        return None if isinstance(v, jcore.Literal) else self.nodes.get(v)

    def default(self, eqn, invals):
        """``eqn`` evaluated by the rule handler (no recording inside)."""
        outs = self.rules(eqn, invals)
        return list(outs) if outs is not None else jx.eval_eqn(eqn, invals, handler=self.rules)

    def evaluate(self, jaxpr, args, arg_nodes):
        """Evaluate ``jaxpr`` (closed) through this handler: ``(outputs, their nodes)``."""
        for v, n in zip(jaxpr.jaxpr.invars, arg_nodes):
            self.nodes[v] = n
        outs = jx.eval_jaxpr(jaxpr, args, handler=self)
        return outs, [self.node_of(v) for v in jaxpr.jaxpr.outvars]

    def __call__(self, eqn, invals):
        in_nodes = [self.node_of(v) for v in eqn.invars]
        if all(n is None for n in in_nodes):
            outs, out_nodes = self.default(eqn, invals), [None] * len(eqn.outvars)
        else:
            outs, out_nodes = self.record(eqn, invals, in_nodes)
        for v, n in zip(eqn.outvars, out_nodes):
            if not isinstance(v, jcore.DropVar):
                self.nodes[v] = n
        return outs

    def record(self, eqn, invals, in_nodes):
        """Evaluate and tape a data-dependent ``eqn``, classified by the rule handler's ``match`` (as in with_rule)."""
        m, name = self.rules.match(eqn), eqn.primitive.name
        kind = None if m is None else m.kind
        if kind == "custom_call" or (kind is None and name in jx.CALL_PRIMITIVES):
            body = jx.sub_jaxprs(eqn)[0]
            if len(body.jaxpr.invars) == len(invals):
                return self.evaluate(body, invals, in_nodes)
        out_nodes = [self.node() if _float(v.aval) else None for v in eqn.outvars]
        entry = _Entry("generic", eqn, invals, in_nodes, out_nodes)
        if kind == "rectifier":  # ReLU, ReLU6, clip(x, 0, c): the rule, elementwise
            outs = self.rectifier(entry, m)
        elif kind == "pool" and m.pool is not None and in_nodes[0] is not None and self.rules.rule != rules.FOOTPRINT:
            entry.kind, outs = "pool", [self.pool(entry, m.pool)]
        elif name == "conv_general_dilated" and in_nodes[0] is not None and in_nodes[1] is None \
                and eqn.params["batch_group_count"] == 1 and all(d == 1 for d in eqn.params["lhs_dilation"]) \
                and all(lo >= 0 and hi >= 0 for lo, hi in eqn.params["padding"]):
            entry.kind, outs = "conv", self.default(eqn, invals)
        elif name in _ELEMENTWISE and len(eqn.outvars) == 1:
            entry.kind, entry.fn = "elementwise", (lambda *v: jx.bind(eqn, list(v)))
            outs = self.default(eqn, invals)
        elif name in ("broadcast_in_dim", "reshape", "squeeze", "expand_dims") and _unit_axes_map(eqn) is not None:
            entry.kind, outs = "axes", self.default(eqn, invals)
        else:  # named activations, unsupported or spread (footprint) pools, …: the equation's own VJP
            outs = self.default(eqn, invals)
        self.tape.append(entry)
        return outs, out_nodes

    def rectifier(self, entry, m):
        """A rectifier's output, taped as its rule (``min(max(x, 0), c)`` reads ``x``, as the rewrite does)."""
        rect = self.rules.rectifier(m)
        pos = m.operand
        if m.form == "capped_max":
            x, node = self._bare_inputs[entry.eqn.invars[pos]]
            entry.invals, entry.in_nodes, pos = [x], [node], 0
        elif m.form == "bare_max":
            self._bare_inputs[entry.eqn.outvars[0]] = (entry.invals[pos], entry.in_nodes[pos])
        entry.kind, entry.fn = "elementwise", (lambda *v: [rect(v[pos])])
        return entry.fn(*entry.invals)

    def pool(self, entry, config):
        """A max pool's output; keeps on ``entry`` the switches (or the padded input) its backward pass reads."""
        window, strides, padding = config
        x = entry.invals[0]
        if self.switches:
            y, sw = rules.pool_with_switches(x, window, strides, padding)
            entry.extra = (window, strides, padding, True, sw)
        else:
            y = jx.bind(entry.eqn, entry.invals)[0]
            xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), [(lo, hi, 0) for lo, hi in padding])
            entry.extra = (window, strides, padding, False, xp)
        return y


def _unit_axes_map(eqn):
    """For an op that only adds or removes size-1 axes: ``{out_axis: in_axis}`` for the others."""
    if len(eqn.invars) != 1 or not hasattr(eqn.invars[0].aval, "shape"):
        return None
    if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
        return None
    ins, outs = tuple(eqn.invars[0].aval.shape), tuple(eqn.outvars[0].aval.shape)
    i_keep = [i for i, d in enumerate(ins) if d != 1]
    o_keep = [o for o, d in enumerate(outs) if d != 1]
    if [ins[i] for i in i_keep] != [outs[o] for o in o_keep]:
        return None
    if eqn.primitive.name == "broadcast_in_dim":
        bd = eqn.params["broadcast_dimensions"]
        if any(bd[i] != o for i, o in zip(i_keep, o_keep)):
            return None
    return dict(zip(o_keep, i_keep))


# --------------------------------------------------------------------------------------------
# the backward pass


def _widen(g: Patch, axis: int):
    """``g`` with its box widened to the whole of ``axis`` (start 0)."""
    i = g.axes.index(axis)
    shape = list(g.value.shape)
    shape[axis] = g.shape[axis]
    begin = [jnp.zeros((), jnp.int32)] * len(shape)
    begin[axis] = jnp.asarray(g.starts[i], jnp.int32)
    value = lax.dynamic_update_slice(jnp.zeros(shape, g.value.dtype), g.value, begin)
    starts = list(g.starts)
    starts[i] = jnp.zeros((), jnp.int32)
    return Patch(value, g.axes, tuple(starts), g.shape)


def _plan(g: Patch, out_axes, in_axes, in_shape, k_eff, strides, pads):
    """Per spatial axis, the input region an output box reads: ``(g, region sizes, region starts,
    paddings)``. Where the region would be at least the whole input axis, the box is widened to
    the whole output axis and the axis keeps its own padding (the full transpose is cheaper)."""
    sizes, starts, paddings, bounds = [], [], [], []
    for oa, ia, k, s, (lo, hi) in zip(out_axes, in_axes, k_eff, strides, pads):
        n = int(g.value.shape[oa])
        r = (n - 1) * s + k
        if r >= in_shape[ia] and n < g.shape[oa]:
            g = _widen(g, oa)
        if int(g.value.shape[oa]) == g.shape[oa] and r >= in_shape[ia]:
            sizes.append(in_shape[ia])
            starts.append(jnp.zeros((), jnp.int32))
            paddings.append((lo, hi))
            bounds.append((0, 0))
        else:
            sizes.append(r)
            starts.append(jnp.asarray(g.starts[g.axes.index(oa)], jnp.int32) * s - lo)
            paddings.append((0, 0))
            bounds.append((-lo, (g.shape[oa] - n) * s - lo))
    return g, sizes, starts, paddings, bounds


def _transpose_conv(eqn, rhs, g, lhs_shape, padding):
    """The transpose of ``eqn``'s convolution (its ``padding`` replaced) applied to ``g``: the
    cotangent of an lhs of ``lhs_shape``.

    A strided convolution's transpose is, as XLA emits it, a convolution over the signal
    dilated with zeros (``lhs_dilation``); on CPU that spends most of its time on the zeros.
    Here it is the sub-pixel form instead: one stride-1 convolution of the undilated signal
    whose output channels are the ``s_1·s_2·…`` stride phases of every input channel
    (kernel ``ceil(k/s)`` per axis), then the phases interleaved. The same products, summed
    in another order (float32 rounding). Other convolutions use ``jax.linear_transpose``.
    """
    p = eqn.params
    strides = tuple(int(v) for v in p["window_strides"])
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if (not _SUBPIXEL or all(v == 1 for v in strides) or p["feature_group_count"] != 1 or p["batch_group_count"] != 1
            or any(d != 1 for d in p["rhs_dilation"]) or any(d != 1 for d in p["lhs_dilation"])
            or not _float(eqn.outvars[0].aval)):
        f = jax.linear_transpose(lambda x: jx.bind(eqn, [x, rhs], padding=padding)[0],
                                 jax.ShapeDtypeStruct(tuple(lhs_shape), g.dtype))
        return f(g)[0]
    dn = p["dimension_numbers"]
    d = len(strides)
    # canonical layouts: signal (N, spatial…, C_out), kernel (spatial…, C_in, C_out)
    gc = jnp.transpose(g, (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1]))
    w = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0])).astype(g.dtype)
    kernel = w.shape[:d]
    c_in, c_out = w.shape[d], w.shape[d + 1]
    m = tuple(-(-k // s) for k, s in zip(kernel, strides))
    w = jnp.pad(w, [(0, mi * s - k) for mi, s, k in zip(m, strides, kernel)] + [(0, 0), (0, 0)])
    w = w.reshape(tuple(v for mi, s in zip(m, strides) for v in (mi, s)) + (c_in, c_out))
    w = jnp.flip(w, tuple(2 * i for i in range(d)))  # tap j of the phase kernel is offset m = M − 1 − j
    perm = tuple(2 * i for i in range(d)) + (2 * d + 1,) + tuple(2 * i + 1 for i in range(d)) + (2 * d,)
    w = jnp.transpose(w, perm).reshape(m + (c_out, int(np.prod(strides)) * c_in))
    spatial = tuple(range(1, d + 1))
    dims = lax.ConvDimensionNumbers((0, d + 1) + spatial, (d + 1, d) + tuple(range(d)), (0, d + 1) + spatial)
    out = lax.conv_general_dilated(gc, w, (1,) * d, [(mi - 1, mi - 1) for mi in m], dimension_numbers=dims,
                                   precision=p.get("precision"))
    q = out.shape[1:d + 1]
    out = out.reshape((out.shape[0],) + q + strides + (c_in,))
    perm = (0,) + tuple(a for i in range(d) for a in (1 + i, 1 + d + i)) + (2 * d + 1,)
    out = jnp.transpose(out, perm).reshape((out.shape[0],) + tuple(a * s for a, s in zip(q, strides)) + (c_in,))
    # `out` covers padded positions [0, q·s) per axis; the lhs is [lo, lo + size)
    sizes = [lhs_shape[a] for a in dn.lhs_spec[2:]]
    extra = [max(0, lo + n - a * s) for (lo, _), n, a, s in zip(padding, sizes, q, strides)]
    out = jnp.pad(out, [(0, 0)] + [(0, e) for e in extra] + [(0, 0)])
    out = lax.slice(out, (0,) + tuple(lo for lo, _ in padding) + (0,),
                    (out.shape[0],) + tuple(lo + n for (lo, _), n in zip(padding, sizes)) + (c_in,))
    canonical = (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1])
    return jnp.transpose(out, tuple(int(i) for i in np.argsort(canonical)))


def _back_conv(e: _Entry, g):
    eqn = e.eqn
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs_shape = tuple(eqn.invars[0].aval.shape)
    rhs = e.invals[1]
    out_sp, in_sp = tuple(dn.out_spec[2:]), tuple(dn.lhs_spec[2:])
    if not isinstance(g, Patch) or sorted(g.axes) != sorted(out_sp):
        return [_transpose_conv(eqn, rhs, _full(g), lhs_shape, p["padding"]), None]
    kernel = [eqn.invars[1].aval.shape[d] for d in dn.rhs_spec[2:]]
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, p["rhs_dilation"])]
    g, sizes, starts, paddings, bounds = _plan(g, out_sp, in_sp, lhs_shape, k_eff, p["window_strides"], p["padding"])
    region_shape = list(lhs_shape)
    for a, r in zip(in_sp, sizes):
        region_shape[a] = r
    order = [g.axes.index(a) for a in out_sp]
    g = Patch(jnp.asarray(g.value), tuple(out_sp), tuple(g.starts[i] for i in order), g.shape)
    # the transpose of the same convolution on the region only (VALID where the region is
    # inside the map), without evaluating the convolution itself
    region = _transpose_conv(eqn, rhs, g.value, tuple(region_shape), paddings)
    new_starts, value = _recentre(region, in_sp, starts, [lhs_shape[a] for a in in_sp], bounds)
    return [Patch(value, in_sp, new_starts, lhs_shape), None]


def _back_pool(e: _Entry, g):
    window, strides, padding, switched, saved = e.extra
    in_shape = tuple(e.eqn.invars[0].aval.shape)
    if not isinstance(g, Patch) or not g.axes:
        full = _full(g)
        if switched:
            return [rules.unpool(full, saved, in_shape, window, strides, padding)]
        valid = tuple((0, 0) for _ in window)
        _, f = jax.vjp(lambda x: lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides,
                                                   valid), saved)
        region = f(full)[0]
        return [lax.slice(region, [lo for lo, _ in padding], [lo + n for (lo, _), n in zip(padding, in_shape)])]
    axes = tuple(g.axes)
    g, sizes, starts, paddings, bounds = _plan(g, axes, axes, in_shape, [window[a] for a in axes],
                                       [strides[a] for a in axes], [padding[a] for a in axes])
    region_shape, region_pad = list(in_shape), list(padding)
    for a, r, pd in zip(axes, sizes, paddings):
        region_shape[a], region_pad[a] = r, pd
    if switched:
        sw = _slice_box(saved, axes, g.starts, g.sizes)
        region = rules.unpool(g.value, sw, tuple(region_shape), window, strides, tuple(region_pad))
    else:
        # `saved` is the input padded on every axis: read the region (and its padding) from it
        begin = [jnp.zeros((), jnp.int32)] * len(in_shape)
        size = [int(d) for d in saved.shape]
        for a, s, r, pd in zip(axes, starts, sizes, paddings):
            begin[a] = s + padding[a][0] - pd[0]
            size[a] = r + pd[0] + pd[1]
        xr = lax.dynamic_slice(saved, begin, size)
        _, f = jax.vjp(lambda x: lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides,
                                                   tuple((0, 0) for _ in window)), xr)
        region = f(g.value)[0]
        lo = [region_pad[a][0] for a in range(len(in_shape))]
        region = lax.slice(region, lo, [lo_ + n for lo_, n in zip(lo, region_shape)])
    new_starts, value = _recentre(region, axes, starts, [in_shape[a] for a in axes], bounds)
    return [Patch(value, axes, new_starts, in_shape)]


def _back_elementwise(e: _Entry, g):
    out_shape = tuple(e.eqn.outvars[0].aval.shape)
    data = [i for i, n in enumerate(e.in_nodes) if n is not None]
    if isinstance(g, Patch) and g.axes and all(tuple(np.shape(e.invals[i])) == out_shape for i in data):
        args = [_slice_box(v, g.axes, g.starts, g.sizes) if np.ndim(v) == len(out_shape) else v for v in e.invals]
        wrap = lambda c: Patch(c, g.axes, g.starts, out_shape)  # noqa: E731
        cot = g.value
    else:
        args, wrap, cot = list(e.invals), (lambda c: c), _full(g)

    def f(*d):
        vals = list(args)
        for i, v in zip(data, d):
            vals[i] = v
        return e.fn(*vals)[0]

    _, vjp_fn = jax.vjp(f, *[args[i] for i in data])
    cots = vjp_fn(cot)
    out = [None] * len(e.invals)
    for i, c in zip(data, cots):
        out[i] = wrap(c)
    return out


def _back_axes(e: _Entry, g):
    in_shape = tuple(e.eqn.invars[0].aval.shape)
    if not isinstance(g, Patch):
        return [jnp.reshape(g, in_shape)]
    mapping = _unit_axes_map(e.eqn)
    if any(a not in mapping for a in g.axes):
        return [jnp.reshape(g.full(), in_shape)]
    axes = tuple(mapping[a] for a in g.axes)
    shape = list(in_shape)
    for a, n in zip(axes, g.sizes):
        shape[a] = n
    return [Patch(jnp.reshape(g.value, shape), axes, g.starts, in_shape)]


def _back_generic(rec: _Recorder, e: _Entry, cots):
    data = [i for i, n in enumerate(e.in_nodes) if n is not None and _float(e.eqn.invars[i].aval)]
    if not data:
        return [None] * len(e.invals)
    outs_idx = [j for j, n in enumerate(e.out_nodes) if n is not None]

    def f(*d):
        vals = list(e.invals)
        for i, v in zip(data, d):
            vals[i] = v
        outs = rec.default(e.eqn, vals)
        return [outs[j] for j in outs_idx]

    _, vjp_fn = jax.vjp(f, *[e.invals[i] for i in data])
    full = []
    for j in outs_idx:
        c = cots.get(j)
        aval = e.eqn.outvars[j].aval
        full.append(jnp.zeros(aval.shape, aval.dtype) if c is None else _full(c))
    res = vjp_fn(full)
    out = [None] * len(e.invals)
    for i, c in zip(data, res):
        out[i] = c
    return out


def _add(a, b):
    if a is None:
        return b
    if isinstance(a, Patch) and isinstance(b, Patch) and a.axes == b.axes and a.sizes == b.sizes \
            and all(x is y for x, y in zip(a.starts, b.starts)):
        return Patch(a.value + b.value, a.axes, a.starts, a.shape)
    return _full(a) + _full(b)


def _backward(rec: _Recorder, out_nodes, seeds, in_nodes):
    cot: dict = {}
    for n, s in zip(out_nodes, seeds):
        if n is not None and s is not None:
            cot[n] = _add(cot.get(n), s)
    for e in reversed(rec.tape):
        got = {j: cot.pop(n) for j, n in enumerate(e.out_nodes) if n is not None and n in cot}
        if not got:
            continue
        if e.kind == "conv":
            res = _back_conv(e, got[0])
        elif e.kind == "pool":
            res = _back_pool(e, got[0])
        elif e.kind == "elementwise":
            res = _back_elementwise(e, got[0])
        elif e.kind == "axes":
            res = _back_axes(e, got[0])
        else:
            res = _back_generic(rec, e, got)
        for n, c in zip(e.in_nodes, res):
            if n is not None and c is not None:
                cot[n] = _add(cot.get(n), c)
    return [None if n is None or n not in cot else _full(cot[n]) for n in in_nodes]


# --------------------------------------------------------------------------------------------
# public


def unit_seed(out, unit, value) -> Patch:
    """The signal of one unit of ``out`` (``(h, w, …, c)``): ``value`` at ``unit``, zero elsewhere.

    Args:
        out: the function's output (only its shape and dtype are used).
        unit: int32 ``(R,)`` coordinates of the unit (``R = out.ndim``; may be traced).
        value: the signal at the unit (a scalar, may be traced).

    Returns:
        A :class:`Patch` of size 1 along every axis but the last (a conv layer's channels).
    """
    shape = tuple(out.shape)
    unit = jnp.asarray(unit, jnp.int32)
    axes = tuple(range(len(shape) - 1))
    box = jnp.zeros((1,) * len(axes) + shape[-1:], out.dtype)
    box = box.at[(0,) * len(axes) + (unit[-1],)].set(jnp.asarray(value, out.dtype))
    return Patch(box, axes, tuple(unit[a] for a in axes), shape)


#: Whether :func:`vjp` fences the inputs its elementwise backward steps read (see
#: :func:`_fence_elementwise_inputs`); a switch for the benchmark that measures it.
FENCE = True


def _fence_elementwise_inputs(tape, anchor) -> None:
    """Pass the traced inputs that the taped elementwise steps (ReLU, ReLU6, …) read in the backward
    pass through one ``lax.cond`` whose predicate XLA cannot fold, so that they are materialised
    once in the forward pass.

    Why: XLA:CPU otherwise fuses the producer of such an input into each backward consumer. After a
    3×3 depthwise convolution written as nine shifted multiply-adds (EfficientNet), the ReLU6 mask's
    input is recomputed inside each of the nine taps of the transposed convolution, 81
    multiply-adds per element: that one fusion took 26 of 40 ms of a block's forward and backward
    pass. ``lax.optimization_barrier`` does not stop it (XLA:CPU removes barriers before fusion);
    fusion cannot cross a conditional. Both branches return the values unchanged, so nothing
    changes but where they live; under ``vmap`` the conditional becomes a select (no fence, same values).
    """
    slots = [(e, i) for e in tape if e.kind == "elementwise"
             for i, n in enumerate(e.in_nodes) if n is not None and isinstance(e.invals[i], jax.core.Tracer)]
    if not slots:
        return
    a = jnp.ravel(anchor)[0]
    fenced = lax.cond(a == a, lambda v: v, lambda v: [x + jnp.zeros((), x.dtype) for x in v],
                      [e.invals[i] for e, i in slots])
    for (e, i), v in zip(slots, fenced):
        e.invals = list(e.invals)
        e.invals[i] = v


def vjp(fn: Callable, *primals, rule: str = "deconvnet", switches: bool = True, strict: bool = True,
        bare_max: bool = False):
    """``fn(*primals)`` and a backward function whose signals stay in their receptive fields.

    Like ``jax.vjp(with_rule(fn, rule, switches=switches, strict=strict, bare_max=bare_max),
    *primals)`` for a function with one array output, but the backward function takes a
    :class:`Patch` (e.g. :func:`unit_seed`) or a full cotangent, and returns the cotangent of
    the **last** primal (the data; the others, e.g. weights, are treated as constants). The
    forward pass runs once; ``vmap`` the backward function over signals.

    Args:
        fn: any JAX function; its output must be a single floating array.
        *primals: its arguments (pytrees); the last one is the data.
        rule, switches, strict, bare_max: as for :func:`saliency_jax.backprop.with_rule`.

    Returns:
        ``(out, backward)`` with ``backward(signal) -> cotangent`` of the last primal's
        structure.
    """
    if not callable(fn):
        raise TypeError(f"`fn` (={fn!r}) must be callable")
    if not primals:
        raise TypeError("receptive_field.vjp needs at least one primal (the data, last)")
    rules.check_rule(rule, footprint=True)
    for name, val in (("switches", switches), ("strict", strict), ("bare_max", bare_max)):
        _validate.boolean(name, val)
    traced = jx.trace(fn, *primals)
    data_argnums = (len(primals) - 1,)
    if strict:
        findings.check_strict(traced, fn, rule, primals, data_argnums, bare_max)
    flat = jax.tree_util.tree_leaves(primals)
    flags = findings.data_flags(traced, primals, data_argnums)
    rec = _Recorder(rule, switches, bare_max)
    arg_nodes = [rec.node() if f and _float(v.aval) else None for f, v in zip(flags, traced.jaxpr.jaxpr.invars)]
    outs, out_nodes = rec.evaluate(traced.jaxpr, flat, arg_nodes)
    if len(outs) != 1 or not _float(traced.jaxpr.jaxpr.outvars[0].aval):
        raise ValueError(f"`fn` must return a single floating array for receptive_field.vjp, got {len(outs)} outputs")
    (out,), (out_node,) = outs, out_nodes
    if FENCE:
        _fence_elementwise_inputs(rec.tape, out)
    data_leaves = jax.tree_util.tree_leaves(primals[-1])
    data_tree = jax.tree_util.tree_structure(primals[-1])
    data_nodes = arg_nodes[len(flat) - len(data_leaves):]

    def backward(signal):
        seed = signal if isinstance(signal, Patch) else jnp.asarray(signal, out.dtype)
        res = _backward(rec, [out_node], [seed], data_nodes)
        res = [jnp.zeros(np.shape(x), x.dtype) if r is None else r for r, x in zip(res, data_leaves)]
        return jax.tree_util.tree_unflatten(data_tree, res)

    return out, backward
