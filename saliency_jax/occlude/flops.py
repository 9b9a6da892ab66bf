"""Counted FLOPs of occlusion: full re-inference against exact incremental re-inference, per window.

:func:`flop_report` traces the model abstractly (nothing runs), lists what the incremental
engine computes per window (:func:`saliency_jax.occlude.incremental.window_equations`) and
counts it with :func:`eqn_flops`: the ratio of full to incremental FLOPs is the ceiling on
the speed-up, and the rule of ``method="auto"``
(:func:`saliency_jax.occlude.options.counted_choice`). Data movement (reading regions from the
cache, splicing patches) is not counted.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> model = sj.get_model("small", width=0.25, fc=(8,))
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    >>> rep = sj.flop_report(model.apply, variables, (128, 128, 3), window=32, stride=8)
    >>> rep.ratio > 2   # full FLOPs per window / incremental FLOPs per window
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax.occlude import incremental
from saliency_jax.occlude.incremental import ELEMENTWISE, POOLS
from saliency_jax.occlude.windows import WindowGrid, window_grid

__all__ = ["LayerCost", "FlopReport", "flop_report", "eqn_flops", "full_flops"]


def eqn_flops(eqn, out_shape=None) -> int:
    """Counted FLOPs of one jaxpr equation: multiply-adds count 2, comparisons and elementwise 1.

    Args:
        eqn: the equation.
        out_shape: the output shape to count for (a changed region); default the equation's own.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> (eqn,) = jax.make_jaxpr(lambda a, b: a @ b)(jnp.ones((2, 3)), jnp.ones((3, 4))).eqns
        >>> eqn_flops(eqn), eqn_flops(eqn, (1, 4))
        (48, 24)
    """
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
    if name in POOLS:
        return size * int(np.prod(eqn.params["window_dimensions"], dtype=np.int64))
    if name in ELEMENTWISE:
        return size
    return 0


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One data-dependent equation: its primitive, full output shape, the output shape computed
    per window (the changed region, or the full shape), and the counted FLOPs of each.

    ``reason`` is empty for an equation computed on its changed region; for one computed in
    full it says why: where the computation turned full (e.g. ``"global reduction over spatial
    axes (reduce_sum)"``, ``"changed region 13×13 covers 86% of the 14×14 layer (>=
    FULL_LAYER_FRACTION 0.8)"``, ``"unsupported primitive: cumsum"``) or ``"after …"`` that
    point."""

    primitive: str
    full_shape: tuple[int, ...]
    window_shape: tuple[int, ...]
    full_flops: int
    window_flops: int
    reason: str = ""
    index: int = 0  # the k-th image-dependent equation (``primitive #k`` in reasons); 0: not numbered


@dataclasses.dataclass(frozen=True)
class FlopReport:
    """Counted FLOPs per window of full re-inference and of incremental re-inference.

    ``ratio = full_flops / incremental_flops`` is the ceiling on the speed-up. Data movement
    (reading regions from the cache, splicing patches) is not counted. ``layers`` are the
    equations computed on their changed region; ``full_layers`` those computed in full for every
    window, each with its ``reason`` (every point where the computation turns full, and each
    equation with FLOPs after one). :meth:`table` prints both, per layer, in program order.
    """

    full_flops: int
    incremental_flops: int
    layers: tuple[LayerCost, ...]
    full_layers: tuple[LayerCost, ...] = ()
    order: tuple[LayerCost, ...] = dataclasses.field(default=(), repr=False, compare=False)

    @property
    def ratio(self) -> float:
        return self.full_flops / max(1, self.incremental_flops)

    @property
    def saved_fraction(self) -> float:
        """The fraction of the full FLOPs that incremental re-inference does not compute."""
        return 1.0 - self.incremental_flops / max(1, self.full_flops)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the computation turned full, once per point where it did (program order)."""
        return tuple(layer.reason for layer in self.full_layers if not layer.reason.startswith("after "))

    def table(self) -> str:
        """The per-layer arithmetic as text: one line per equation with FLOPs (and per point
        where the computation turns full), program order: ``#k``, primitive, full output shape
        -> shape computed per window, counted FLOPs full -> per window, reason; each run of
        equations computed in full after such a point is summed on one line.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from saliency_jax.occlude import flops
            >>> def net(w, x):   # (B, 16, 16, 1) -> (B, 2): convolution, ReLU, global mean
            ...     y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            ...     return jax.nn.relu(y).mean(axis=(1, 2))
            >>> rep = flops.flop_report(net, jnp.ones((3, 3, 1, 2)), (16, 16, 1), window=4, stride=4)
            >>> print(rep.table())  # doctest: +NORMALIZE_WHITESPACE
            counted FLOPs per window: full 9,730, incremental 1,370, ratio 7.10
            #1   conv_general_dilated  1×16×16×2 -> 1×6×6×2  9,216 -> 1,296
            #2   max                   1×16×16×2 -> 1×6×6×2    512 ->    72
            #3   reduce_sum                  1×2 -> full         0 ->     0  global reduction over spatial axes (reduce_sum)
            #4-4: 1 equations in full, 2 FLOPs, after reduce_sum #3 (full from there)
        """
        lines = [f"counted FLOPs per window: full {self.full_flops:,}, incremental {self.incremental_flops:,}, "
                 f"ratio {self.ratio:.2f}"]
        layers = list(self.order or (*self.layers, *self.full_layers))
        k = 0
        while k < len(layers):
            layer = layers[k]
            if layer.reason.startswith("after "):  # one line for a run of equations after a full point
                run = [layer]
                while k + 1 < len(layers) and layers[k + 1].reason == layer.reason:
                    k += 1
                    run.append(layers[k])
                flops = sum(item.full_flops for item in run)
                lines.append(f"#{run[0].index}-{run[-1].index}: {len(run)} equations in full, {flops:,} FLOPs, "
                             f"{layer.reason}")
            elif layer.full_flops or layer.reason:
                shape = "×".join(map(str, layer.full_shape))
                win = "full" if layer.reason else "×".join(map(str, layer.window_shape))
                lines.append(f"#{layer.index:<3d} {layer.primitive:20s} {shape:>14s} -> {win:<14s} "
                             f"{layer.full_flops:>13,} -> {layer.window_flops:>13,}  {layer.reason}".rstrip())
            k += 1
        return "\n".join(lines)


def full_flops(apply_fn: Callable, params: Any, image_shape) -> tuple[int, list[int]]:
    """Counted FLOPs of one forward pass on one image ``(H, W, C)``: ``(total, per equation)``
    for every equation that depends on the image (float32 input, traced abstractly).

    Example:
        >>> import jax.numpy as jnp
        >>> full_flops(lambda w, x: x.reshape(1, -1) @ w, jnp.ones((12, 2)), (2, 2, 3))
        (48, [0, 48])
    """
    traced = jx.trace(apply_fn, params, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    n_params = len(jax.tree_util.tree_leaves(params))
    counted: list = []

    def visit(eqn, flags, path):
        if any(flags):
            counted.append(eqn_flops(eqn))

    jx.walk(traced.jaxpr, visit, [False] * n_params + [True])
    return sum(counted), counted


def _cost(note: incremental.Recomputed) -> LayerCost | None:
    """The counted cost of one equation of the window pass (``None``: in full only because an
    input was, and no FLOPs: not listed)."""
    eqn, flops = note.eqn, eqn_flops(note.eqn)
    if note.window_shape is not None:
        return LayerCost(eqn.primitive.name, note.full_shape, note.window_shape, flops,
                         eqn_flops(eqn, note.window_shape), "", note.index)
    if note.inherited and flops == 0:
        return None
    return LayerCost(eqn.primitive.name, note.full_shape, note.full_shape, flops, flops, note.reason, note.index)


def flop_report(
    apply_fn: Callable, params: Any, image_shape, *, window=None, stride=None, placement: str = "clip",
    cap: float | None = None, grid: WindowGrid | None = None,
) -> FlopReport:
    """Counted FLOPs per window of full and incremental re-inference (no computation is run).

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        image_shape: ``(H, W, C)``.
        window, stride, placement: the window grid, as for :func:`saliency_jax.occlusion`.
        cap: ``None`` (exact) or the APPROXIMATE projective-field cap of
            :func:`saliency_jax.occlude.capped.capped_occlusion`.
        grid: instead of ``window``: any grid of boxes, e.g. the bounding boxes of a mask set
            (:func:`saliency_jax.occlude.masked.box_grid`); the patch of each layer is the
            largest over the boxes, as for windows.

    Returns:
        A :class:`FlopReport`; ``ratio`` is the ceiling on the speed-up. Cached per model,
        parameter shapes, image shape, grid, :data:`saliency_jax.occlude.incremental.FULL_LAYER_FRACTION`
        and ``cap`` (``method="auto"`` asks for it on every call).

    Example:
        >>> import jax
        >>> f = lambda p, x: jax.nn.relu(x).sum(axis=(1, 2))     # (B, 8, 8, 1) -> (B, 1)
        >>> rep = flop_report(f, None, (8, 8, 1), window=4)       # relu: 64 FLOPs, 16 per 4×4 window
        >>> rep.full_flops, rep.incremental_flops, rep.ratio
        (64, 16, 4.0)
    """
    h, w, c = (int(d) for d in image_shape)
    if grid is None:
        if window is None:
            raise TypeError("flop_report needs `window` (a window grid) or `grid` (boxes)")
        grid = window_grid((h, w), window, stride, placement)
    try:
        key = (apply_fn, _validate.signature(params), (h, w, c), tuple(map(tuple, grid)),
               incremental.FULL_LAYER_FRACTION, cap)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _REPORTS:
        return _REPORTS[key]
    full, _ = full_flops(apply_fn, params, (h, w, c))
    costs = [cost for cost in map(_cost, incremental.window_equations(apply_fn, params, (h, w, c), grid, cap=cap))
             if cost is not None]
    savings = tuple(cost for cost in costs if not cost.reason)
    saved = sum(layer.full_flops - layer.window_flops for layer in savings)
    report = FlopReport(int(full), int(full - saved), savings, tuple(cost for cost in costs if cost.reason),
                        tuple(costs))
    if key is not None:
        _REPORTS[key] = report
    return report


_REPORTS: dict = {}
