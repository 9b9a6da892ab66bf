"""Rewrite: give any JAX function a ReLU backward rule and switch pooling, by rewriting its jaxpr.

:func:`with_rule` traces the function (a Flax linen ``apply``, an NNX model called through
``nnx.split``/``nnx.merge``, plain ``jax.numpy``/``lax`` code) and re-evaluates its jaxpr
with the shared interpreter :mod:`saliency_jax.jaxpr`, replacing

* every ReLU — ``jax.nn.relu`` / ``flax.linen.relu`` appear in a jaxpr as a
  ``custom_jvp_call`` around ``max(x, 0)``; optionally (``bare_max=True``) also a bare
  ``jnp.maximum(x, 0)`` — by :func:`saliency_jax.backprop.rules.relu_rule`;
* every max pool (``reduce_window_max``) by
  :func:`saliency_jax.backprop.rules.max_pool_switched` (``switches=True``).

It reaches inside nested ``jit``, ``remat``/``nn.remat``, ``scan``/``nn.scan``, ``cond`` and
``while``; forward values are bit-identical to the original function's. The model's code is
not touched.

Strictness (default): for ``deconvnet`` and ``guided``, tracing raises ``ValueError`` when no
ReLU is found, when a value computed from the data passes through an activation the rules
do not cover (gelu, tanh, sigmoid, leaky ReLU, softplus, …: see :data:`UNCOVERED`), or
through a max-pool configuration the switch pool does not support (dilations, negative
padding, global ``reduce_max``). The ``gradient`` rule is the exact gradient of any function,
so it checks nothing. :func:`report` lists what was found without raising.

Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) of the result raises ``TypeError``:
the rules define a backward pass only.

The rewrite itself is one :mod:`saliency_jax.jaxpr` handler, :class:`RuleHandler`; the
receptive-field backward pass (:mod:`saliency_jax.backprop.receptive_field`) evaluates with the
same handler and records what it needs on the way.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax.backprop import rules

__all__ = [
    "UNCOVERED",
    "Finding",
    "Report",
    "report",
    "pool_config",
    "data_flags",
    "check_strict",
    "RuleHandler",
    "with_rule",
]

#: Primitives treated as activations the ReLU rules do not cover, when applied to data.
UNCOVERED = frozenset({
    "tanh", "logistic", "erf", "erfc", "erf_inv", "exp", "exp2", "expm1", "log", "log1p",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
    "sqrt", "rsqrt", "cbrt", "integer_pow", "square", "pow", "abs", "sign", "floor", "ceil",
    "round", "max", "min", "clamp", "select_n", "atan2", "rem", "sort", "argmax", "argmin",
    "cumprod", "cummax", "cummin", "cumlogsumexp", "reduce_prod", "lgamma", "digamma", "logaddexp",
})
#: Pooling-like reductions the switch pool does not support (their default VJP differs:
#: ``reduce_max`` splits the signal evenly between tied maxima).
_UNSUPPORTED_POOLS = frozenset({"reduce_max", "reduce_min", "reduce_window_min", "reduce_window"})


@dataclasses.dataclass(frozen=True)
class Finding:
    """One equation of interest.

    Attributes:
        kind: ``"relu"``, ``"bare_max"`` (``jnp.maximum(x, 0)`` not treated as ReLU),
            ``"pool"``, ``"unsupported_pool"``, ``"uncovered"`` (an activation the rules do not
            cover), ``"inlined"`` (a custom-derivative function whose body holds ReLUs or
            pools; its custom rule is dropped so the body can be rewritten) or ``"opaque"`` (a
            higher-order primitive the rewrite cannot enter, yet holding ReLUs or pools).
        primitive: the primitive's name (``custom_jvp_call[relu6]`` style for named calls).
        path: the enclosing higher-order primitives, outermost first.
        shape: the output shape.
        detail: a short human description.
    """

    kind: str
    primitive: str
    path: tuple[str, ...]
    shape: tuple[int, ...]
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`report` found in a function's jaxpr."""

    findings: tuple[Finding, ...]

    def of(self, kind: str) -> tuple[Finding, ...]:
        """The findings of one ``kind``."""
        return tuple(f for f in self.findings if f.kind == kind)

    @property
    def relus(self):
        return self.of("relu")

    @property
    def pools(self):
        return self.of("pool")

    def problems(self, rule: str) -> list[str]:
        """Reasons why ``rule`` would be refused in strict mode (empty: fine)."""
        if rule == "gradient":
            return []
        out = []
        if not self.relus:
            out.append("no ReLU was found (jax.nn.relu / flax.linen.relu; pass bare_max=True to count "
                       "jnp.maximum(x, 0))")
        for kind, what in (("uncovered", "activations the ReLU rules do not cover"),
                           ("bare_max", "bare jnp.maximum(x, 0) (pass bare_max=True to treat it as a ReLU)"),
                           ("unsupported_pool", "max-pool configurations the switch pool does not support"),
                           ("opaque", "ReLUs or pools inside a primitive the rewrite cannot enter")):
            items = self.of(kind)
            if items:
                out.append(f"{what}: {_summary(items)}")
        if any(f.primitive in ("exp", "logistic") for f in self.of("uncovered")):
            out.append("if that is a softmax or sigmoid at the output, explain the logits instead")
        return out

    def __str__(self) -> str:
        counts = collections.Counter(f.kind for f in self.findings)
        lines = [f"{k}: {counts.get(k, 0)}" for k in ("relu", "pool", "bare_max", "uncovered",
                                                       "unsupported_pool", "inlined", "opaque")]
        for f in self.findings:
            if f.kind not in ("relu", "pool"):
                where = " > ".join(f.path) or "top level"
                lines.append(f"  {f.kind}: {f.primitive} {f.shape} at {where}{': ' + f.detail if f.detail else ''}")
        return "\n".join(lines)


def _summary(items: Sequence[Finding]) -> str:
    counts = collections.Counter(f.primitive for f in items)
    parts = []
    for prim, n in counts.items():
        first = next(f for f in items if f.primitive == prim)
        where = " > ".join(first.path) or "top level"
        detail = f" [{first.detail}]" if first.detail else ""
        parts.append(f"{prim} x{n} (first at {where}, shape {first.shape}){detail}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# pattern recognition


def _is_float(aval) -> bool:
    return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating)


def _is_zero_literal(v) -> bool:
    if not isinstance(v, jcore.Literal):
        return False
    try:
        return bool(np.all(np.asarray(v.val) == 0))
    except Exception:  # noqa: BLE001 - exotic literal types are simply not zero literals
        return False


def _max_zero_operand(eqn):
    """For ``max(x, 0)`` / ``max(0, x)`` (literal zero), the position of ``x``; else ``None``."""
    if eqn.primitive.name != "max" or len(eqn.invars) != 2 or not _is_float(eqn.outvars[0].aval):
        return None
    a, b = eqn.invars
    if _is_zero_literal(b) and not isinstance(a, jcore.Literal):
        return 0
    if _is_zero_literal(a) and not isinstance(b, jcore.Literal):
        return 1
    return None


def _is_relu_body(closed_jaxpr) -> bool:
    """Whether a jaxpr computes exactly ``max(x, 0)`` of its single input (possibly via jit)."""
    j = closed_jaxpr.jaxpr
    if len(j.invars) != 1 or len(j.outvars) != 1 or len(j.eqns) != 1:
        return False
    (eqn,) = j.eqns
    if eqn.primitive.name in jx.CALL_PRIMITIVES:
        return len(eqn.invars) == 1 and eqn.invars[0] is j.invars[0] and eqn.outvars[0] is j.outvars[0] \
            and _is_relu_body(jx.sub_jaxprs(eqn)[0])
    pos = _max_zero_operand(eqn)
    return pos is not None and eqn.invars[pos] is j.invars[0] and eqn.outvars[0] is j.outvars[0]


def _is_relu_call(eqn) -> bool:
    return (eqn.primitive.name == "custom_jvp_call" and len(eqn.invars) == 1
            and _is_float(eqn.outvars[0].aval) and _is_relu_body(jx.sub_jaxprs(eqn)[0]))


def pool_config(eqn) -> tuple | str:
    """``(window, strides, padding)`` of a ``reduce_window_max`` equation the switch pool supports.

    Args:
        eqn: a ``reduce_window_max`` equation of a jaxpr.

    Returns:
        ``(window, strides, padding)`` as tuples of ints (``padding`` one ``(lo, hi)`` pair per
        dimension), or a string saying why the configuration is not supported (integer dtype,
        dilation, negative padding).
    """
    p = eqn.params
    if not _is_float(eqn.outvars[0].aval):
        return "integer max pool (no gradient)"
    if any(d != 1 for d in p["base_dilation"]) or any(d != 1 for d in p["window_dilation"]):
        return f"dilation base={p['base_dilation']} window={p['window_dilation']}"
    padding = tuple((int(lo), int(hi)) for lo, hi in p["padding"])
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        return f"negative padding {padding}"
    return tuple(int(w) for w in p["window_dimensions"]), tuple(int(s) for s in p["window_strides"]), padding


def _shape(eqn):
    aval = eqn.outvars[0].aval if eqn.outvars else None
    return tuple(getattr(aval, "shape", ()))


def _analyse(closed_jaxpr, flags, bare_max: bool) -> Report:
    findings: list[Finding] = []

    def visit(eqn, in_flags, path):
        name = eqn.primitive.name
        data = any(in_flags)
        add = lambda kind, detail="": findings.append(Finding(kind, jx.label(eqn), path, _shape(eqn), detail))  # noqa: E731
        if _is_relu_call(eqn):
            add("relu")
            return False
        if _max_zero_operand(eqn) is not None:
            add("relu" if bare_max else "bare_max", "jnp.maximum(x, 0)")
            return False
        if name == "reduce_window_max":
            cfg = pool_config(eqn)
            if isinstance(cfg, str):
                if data:
                    add("unsupported_pool", cfg)
            else:
                add("pool", f"window={cfg[0]} strides={cfg[1]} padding={cfg[2]}")
            return False
        if name in jx.CUSTOM_CALL_PRIMITIVES:
            inner = _analyse(jx.sub_jaxprs(eqn)[0], in_flags if len(in_flags) == len(
                jx.sub_jaxprs(eqn)[0].jaxpr.invars) else None, bare_max)
            bad = inner.of("uncovered") + inner.of("unsupported_pool") + inner.of("bare_max")
            if bad and data:
                add("uncovered", "custom-derivative function computing " + ", ".join(
                    sorted({f.primitive for f in bad})))
                return False
            if inner.relus or inner.pools:
                add("inlined", "its custom derivative rule is dropped to rewrite the ReLUs/pools inside")
                return True
            return False
        if not data:
            return None
        if name in _UNSUPPORTED_POOLS:
            add("unsupported_pool", name)
        elif name in UNCOVERED:
            if name == "select_n" and not in_flags[0]:
                return None  # a selection by a data-independent predicate is linear in the data
            add("uncovered")
        elif (name not in jx.CALL_PRIMITIVES and name not in jx.REMAT_PRIMITIVES
              and name not in ("scan", "cond", "while") and jx.sub_jaxprs(eqn)):
            inner = [_analyse(b, None, bare_max) for b in jx.sub_jaxprs(eqn)]
            if any(r.relus or r.pools for r in inner):
                add("opaque", "the rewrite cannot enter this primitive")
            return False
        return None

    jx.walk(closed_jaxpr, visit, flags)
    return Report(tuple(findings))


def data_flags(traced: jx.Traced, args, data_argnums) -> list[bool]:
    """One flag per invar of ``traced``: whether it is a leaf of a positional argument in ``data_argnums``.

    Args:
        traced: from :func:`saliency_jax.jaxpr.trace` on ``args``.
        args: the positional arguments, as traced.
        data_argnums: a tuple of positions, or ``None`` (every input is data).
    """
    n_leaves = len(traced.jaxpr.jaxpr.invars)
    if data_argnums is None:
        return [True] * n_leaves
    flags = [False] * n_leaves
    for i, rng in enumerate(traced.arg_leaf_ranges(args)):
        if i in data_argnums:
            for j in rng:
                flags[j] = True
    return flags


def _check_data_argnums(data_argnums):
    if data_argnums is None:
        return None
    if _validate.is_int(data_argnums):
        data_argnums = (data_argnums,)
    if (not isinstance(data_argnums, (tuple, list))
            or not all(_validate.is_int(i) and i >= 0 for i in data_argnums)):
        raise TypeError(f"`data_argnums` (={data_argnums!r}) must be None, a non-negative int or a tuple of them")
    return tuple(int(i) for i in data_argnums)


def report(fn: Callable, *args, bare_max: bool = False, data_argnums=None, **kwargs) -> Report:
    """List the ReLUs, pools and uncovered activations of ``fn(*args, **kwargs)``.

    Args:
        fn: any JAX function of pytrees of arrays.
        *args, **kwargs: example arguments (arrays or ``jax.ShapeDtypeStruct``).
        bare_max: count ``jnp.maximum(x, 0)`` as a ReLU.
        data_argnums: positional arguments that carry the data (the rest, e.g. weights, are
            constants for the "computed from the data" test); default all.

    Returns:
        A :class:`Report`; ``str(report)`` is a readable summary, ``report.problems(rule)`` the
        reasons strict mode would refuse ``rule``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> r = report(lambda x: jnp.tanh(jax.nn.relu(x)), jnp.ones(3))
        >>> len(r.relus), [f.primitive for f in r.of("uncovered")]
        (1, ['tanh'])
    """
    data_argnums = _check_data_argnums(data_argnums)
    traced = jx.trace(fn, *args, **kwargs)
    return _analyse(traced.jaxpr, data_flags(traced, args, data_argnums), _validate.boolean("bare_max", bare_max))


# --------------------------------------------------------------------------------------------
# the rewrite


class RuleHandler:
    """The :mod:`saliency_jax.jaxpr` handler that swaps a jaxpr's ReLU and max-pool rules.

    ``handler(eqn, invals)`` returns the outputs of a ReLU (``rule``'s custom VJP), of a
    supported max pool (:func:`~saliency_jax.backprop.rules.max_pool_switched`, or
    :func:`~saliency_jax.backprop.rules.max_pool_spread` for the footprint rule), or of a
    custom-derivative call whose body holds either (evaluated inline, through the handler);
    ``None`` for every other equation (the interpreter's default).

    Args:
        rule: one of :data:`~saliency_jax.backprop.rules.RULES` or
            :data:`~saliency_jax.backprop.rules.FOOTPRINT`.
        switches: replace max pools by the switch pool.
        bare_max: also treat ``jnp.maximum(x, 0)`` (a literal zero) as a ReLU.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from saliency_jax import jaxpr as jx
        >>> t = jx.trace(lambda x: jnp.sum(jax.nn.relu(x) * jnp.array([1.0, -1.0])), jnp.ones(2))
        >>> jax.grad(lambda x: t.call(x, handler=RuleHandler("deconvnet")))(jnp.ones(2))
        Array([1., 0.], dtype=float32)
    """

    def __init__(self, rule: str, *, switches: bool = True, bare_max: bool = False):
        self.rule = rules.check_rule(rule, footprint=True)
        self.switches = _validate.boolean("switches", switches)
        self.bare_max = _validate.boolean("bare_max", bare_max)
        self.relu = rules.relu_rule(rule)
        if rule == rules.FOOTPRINT:
            self._pool = rules.max_pool_spread
        else:
            self._pool = rules.max_pool_switched if switches else None
        self._inlines: dict[int, bool] = {}

    def relu_operand(self, eqn) -> int | None:
        """The position of the ReLU's input if ``eqn`` is a ReLU this handler replaces, else ``None``."""
        if _is_relu_call(eqn):
            return 0
        return _max_zero_operand(eqn) if self.bare_max else None

    def inlines(self, eqn) -> bool:
        """Whether ``eqn`` is a custom-derivative call (not a ReLU) whose body holds ReLUs or, with
        ``switches``, max pools: the handler evaluates its body inline, dropping its custom rule."""
        if eqn.primitive.name not in jx.CUSTOM_CALL_PRIMITIVES or _is_relu_call(eqn):
            return False
        key = id(eqn)
        if key not in self._inlines:
            r = _analyse(jx.sub_jaxprs(eqn)[0], None, self.bare_max)
            self._inlines[key] = bool(r.relus or (self.switches and r.pools))
        return self._inlines[key]

    def __call__(self, eqn, invals):
        pos = self.relu_operand(eqn)
        if pos is not None:
            return [self.relu(invals[pos])]
        if eqn.primitive.name == "reduce_window_max" and self._pool is not None:
            cfg = pool_config(eqn)
            return None if isinstance(cfg, str) else [self._pool(invals[0], *cfg)]
        if self.inlines(eqn):
            return jx.eval_call_body(eqn, invals, handler=self)
        return None


def check_strict(traced: jx.Traced, fn: Callable, rule: str, args, data_argnums, bare_max: bool) -> None:
    """Raise ``ValueError`` when strict mode refuses ``rule`` for the traced function.

    Only ``deconvnet`` and ``guided`` are checked (see :meth:`Report.problems`); ``fn`` names
    the function in the message; ``args`` and ``data_argnums`` are as for :func:`data_flags`.
    """
    if rule not in ("deconvnet", "guided"):
        return
    rep = _analyse(traced.jaxpr, data_flags(traced, args, data_argnums), bare_max)
    problems = rep.problems(rule)
    if problems:
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        raise ValueError(f"with_rule({name}, rule={rule!r}, strict=True): " + "; ".join(problems)
                         + ". The deconvnet and guided rules are defined for ReLU / max-pool networks; "
                         "pass strict=False to keep these layers' ordinary backward pass, or use "
                         "rule='gradient'.")


_JVP_MESSAGE = ("with_rule(..., rule={rule!r}): forward-mode differentiation (jax.jvp, jax.jacfwd, "
                "jax.linearize) is not defined for the backprop rules, which only define a backward pass; "
                "use jax.vjp or jax.grad")


def with_rule(fn: Callable, rule: str = "deconvnet", *, switches: bool = True, strict: bool = True,
              bare_max: bool = False, data_argnums=None) -> Callable:
    """``fn`` with its ReLUs' backward pass replaced by ``rule`` and its max pools switched.

    Args:
        fn: any JAX function of pytrees of floating arrays (e.g. a linen ``model.apply``).
        rule: ``"gradient"`` (``g·[x>0]``: the exact gradient), ``"deconvnet"`` (``relu(g)``)
            or ``"guided"`` (``relu(g)·[x>0]``); also
            :data:`~saliency_jax.backprop.rules.FOOTPRINT` (``|g|``, pools spread: finds
            receptive fields).
        switches: pool with :func:`~saliency_jax.backprop.rules.max_pool_switched` (same
            VJP as the default, less memory, faster repeated backward passes).
        strict: for ``deconvnet``/``guided``, raise ``ValueError`` at trace time when no ReLU
            is found, or when data passes through an activation or pooling the rules do not
            cover (see :func:`report`). With ``strict=False`` those keep their ordinary VJP.
        bare_max: also treat ``jnp.maximum(x, 0)`` (a literal zero) as a ReLU.
        data_argnums: positional arguments carrying the data, for the strict check (weights
            may pass through anything); default all.

    Returns:
        A function with ``fn``'s signature and bit-identical forward values, usable under
        ``jit``, ``vmap``, ``jax.vjp`` and ``jax.grad``; ``jax.jvp`` raises ``TypeError``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: jnp.sum(jax.nn.relu(x) * jnp.array([1.0, -1.0, 1.0]))
        >>> jax.grad(with_rule(f, "deconvnet"))(jnp.array([1.0, 1.0, -1.0]))
        Array([1., 0., 1.], dtype=float32)
    """
    if not callable(fn):
        raise TypeError(f"`fn` (={fn!r}) must be callable")
    rules.check_rule(rule, footprint=True)
    for name, val in (("switches", switches), ("strict", strict), ("bare_max", bare_max)):
        _validate.boolean(name, val)
    data_argnums = _check_data_argnums(data_argnums)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        traced = jx.trace(fn, *args, **kwargs)
        if strict:
            check_strict(traced, fn, rule, args, data_argnums, bare_max)
        flat = jax.tree_util.tree_leaves((args, kwargs))
        try:
            outs = jx.eval_jaxpr(traced.jaxpr, flat, handler=RuleHandler(rule, switches=switches, bare_max=bare_max))
        except TypeError as e:
            if "forward-mode" in str(e):
                raise TypeError(_JVP_MESSAGE.format(rule=rule)) from e
            raise
        return jax.tree_util.tree_unflatten(traced.out_tree, outs)

    return wrapped

