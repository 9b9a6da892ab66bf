"""Findings: what a function's jaxpr holds for the backprop rules, and strict mode's refusals.

:func:`report` traces a function and lists, per equation (nested ones included), what
:func:`saliency_jax.backprop.matcher.match` classified it as: the ReLUs and capped rectifiers
the rules replace, the max pools the switch pool replaces, and what they do not cover. It is the
same classification :class:`saliency_jax.backprop.rewrite.RuleHandler` acts on, so a report
lists exactly what :func:`saliency_jax.backprop.with_rule` rewrites.

Strictness (``with_rule``'s default, :func:`check_strict`): for ``deconvnet`` and ``guided``,
tracing raises ``ValueError`` when no ReLU is found, when a value computed from the data passes
through an activation the rules do not cover (gelu, tanh, sigmoid, leaky ReLU, softplus, …: see
:data:`~saliency_jax.backprop.matcher.UNCOVERED`), or through a max-pool configuration the switch
pool does not support (dilations, negative padding, global ``reduce_max``). Named activations
(``jax.nn.silu``, ``hard_swish``, ``hard_sigmoid``, …) are reported by their name, GELU by its
``tanh``/``erf``.

A softmax or log-softmax *head* is accepted (:mod:`saliency_jax.backprop.heads`): its max under
``stop_gradient`` is a numerical stabiliser, not an activation, and when the (log-)softmax's result
only flows to the function's outputs it keeps its exact gradient, so the map explains the
probability (to explain the logits, as Zeiler & Fergus, pass the function before the softmax). A
softmax anywhere else (attention) is still reported. The ``gradient`` rule is the exact gradient
of any function, so it checks nothing.

Example:
    >>> import jax, jax.numpy as jnp
    >>> r = report(lambda x: jax.nn.relu6(jnp.maximum(x, 0.0)), jnp.ones(3))
    >>> [(f.kind, f.detail) for f in r.findings]
    [('bare_max', 'jnp.maximum(x, 0)'), ('clip', 'clip(x, 0, 6)')]
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable, Sequence

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax.backprop import heads, matcher

__all__ = [
    "Finding",
    "Report",
    "analyse",
    "data_flags",
    "check_data_argnums",
    "report",
    "check_strict",
]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One equation of interest.

    Attributes:
        kind: ``"relu"``, ``"clip"`` (a capped rectifier: ReLU6, ``clip(x, 0, c)``),
            ``"head"`` (a softmax / log-softmax at the output, kept with its exact gradient),
            ``"bare_max"`` (``jnp.maximum(x, 0)`` not treated as ReLU),
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
    def clips(self):
        return self.of("clip")

    @property
    def pools(self):
        return self.of("pool")

    def problems(self, rule: str) -> list[str]:
        """Reasons why ``rule`` would be refused in strict mode (empty: fine)."""
        if rule == "gradient":
            return []
        out = []
        if not self.relus and not self.clips:
            out.append("no ReLU was found (jax.nn.relu / flax.linen.relu / jax.nn.relu6 / jnp.clip(x, 0, c); "
                       "pass bare_max=True to count jnp.maximum(x, 0))")
        for kind, what in (("uncovered", "activations the ReLU rules do not cover"),
                           ("bare_max", "bare jnp.maximum(x, 0) (pass bare_max=True to treat it as a ReLU, "
                                        "jnp.minimum(jnp.maximum(x, 0), c) as a ReLU6)"),
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
        lines = [f"{k}: {counts.get(k, 0)}" for k in ("relu", "clip", "pool", "head", "bare_max", "uncovered",
                                                       "unsupported_pool", "inlined", "opaque")]
        for f in self.findings:
            if f.kind not in ("relu", "pool", "clip"):
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




def analyse(closed_jaxpr, flags, bare_max: bool, marks=None) -> Report:
    """The :class:`Report` of a closed jaxpr: each equation as :func:`~saliency_jax.backprop.matcher.match` sees it.

    Args:
        closed_jaxpr: the jaxpr (a ``ClosedJaxpr``).
        flags: one "depends on the data" flag per invar, or ``None`` (every input is data);
            uncovered activations and unsupported pools count only on data.
        bare_max: count ``jnp.maximum(x, 0)`` as a ReLU (and ``jnp.minimum(jnp.maximum(x, 0), c)``
            as a capped one); otherwise they are ``"bare_max"`` findings.
        marks: the softmax heads of an enclosing jaxpr (:func:`~saliency_jax.backprop.heads.softmax_heads`);
            default this jaxpr's own.

    Returns:
        A :class:`Report`, findings in program order (a custom-derivative call's inside after it).
    """
    findings: list[Finding] = []
    marks = heads.softmax_heads(closed_jaxpr) if marks is None else marks
    bare_outputs: set = set()

    def visit(eqn, in_flags, path):
        """Add ``eqn``'s finding; ``False``: do not descend into its sub-jaxprs (see :func:`saliency_jax.jaxpr.walk`)."""
        data = any(in_flags)
        add = lambda kind, detail="": findings.append(Finding(kind, jx.label(eqn), path, _shape(eqn), detail))  # noqa: E731
        role = marks.get(id(eqn))
        if role is not None:
            if role != "stabiliser" and data:
                add("head", f"{role} at the output: kept with its exact gradient")
            return False
        m = matcher.match(eqn, bare_outputs)
        kind = None if m is None else m.kind
        if kind == "rectifier":
            if m.form == "bare_max":
                bare_outputs.add(eqn.outvars[0])
            add("bare_max" if m.bare and not bare_max else "relu" if m.cap == math.inf else "clip", m.detail)
            return False
        if kind == "named":
            if data:
                add("uncovered", m.detail)
            return False
        if kind == "pool" and m.form == "reduce_window_max":
            if m.pool is not None:
                add("pool", m.detail)
            elif data:
                add("unsupported_pool", m.detail)
            return False
        if kind == "custom_call":
            return _custom_call(eqn, in_flags, bare_max, marks, add)
        if not data:
            return None
        if kind == "pool":
            add("unsupported_pool", m.detail)
        elif kind == "activation":
            if m.form == "select_n" and not in_flags[0]:
                return None  # a selection by a data-independent predicate is linear in the data
            add("uncovered", m.detail)
        elif (eqn.primitive.name not in jx.CALL_PRIMITIVES and eqn.primitive.name not in jx.REMAT_PRIMITIVES
              and eqn.primitive.name not in ("scan", "cond", "while") and jx.sub_jaxprs(eqn)):
            inner = [analyse(b, None, bare_max) for b in jx.sub_jaxprs(eqn)]
            if any(r.relus or r.clips or r.pools for r in inner):
                add("opaque", "the rewrite cannot enter this primitive")
            return False
        return None

    jx.walk(closed_jaxpr, visit, flags)
    return Report(tuple(findings))


def _custom_call(eqn, in_flags, bare_max, marks, add) -> bool:
    """A custom-derivative call's finding: ``"uncovered"`` when data meets an uncovered piece inside,
    ``"inlined"`` (``True``: descend) when its body holds rectifiers or pools."""
    body = jx.sub_jaxprs(eqn)[0]
    inner = analyse(body, in_flags if len(in_flags) == len(body.jaxpr.invars) else None, bare_max, marks)
    bad = inner.of("uncovered") + inner.of("unsupported_pool") + inner.of("bare_max")
    if bad and any(in_flags):
        add("uncovered", "custom-derivative function computing " + ", ".join(sorted({f.primitive for f in bad})))
        return False
    if inner.relus or inner.clips or inner.pools:
        add("inlined", "its custom derivative rule is dropped to rewrite the ReLUs/pools inside")
        return True
    return False


def _shape(eqn):
    aval = eqn.outvars[0].aval if eqn.outvars else None
    return tuple(getattr(aval, "shape", ()))


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


def check_data_argnums(data_argnums):
    """``data_argnums`` as a tuple of non-negative ints (an int becomes a 1-tuple), or ``None``; else ``TypeError``.

    Example:
        >>> check_data_argnums(1)
        (1,)
    """
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
    data_argnums = check_data_argnums(data_argnums)
    traced = jx.trace(fn, *args, **kwargs)
    return analyse(traced.jaxpr, data_flags(traced, args, data_argnums), _validate.boolean("bare_max", bare_max))


def check_strict(traced: jx.Traced, fn: Callable, rule: str, args, data_argnums, bare_max: bool) -> None:
    """Raise ``ValueError`` when strict mode refuses ``rule`` for the traced function.

    Only ``deconvnet`` and ``guided`` are checked (see :meth:`Report.problems`); ``fn`` names
    the function in the message; ``args`` and ``data_argnums`` are as for :func:`data_flags`.
    """
    if rule not in ("deconvnet", "guided"):
        return
    rep = analyse(traced.jaxpr, data_flags(traced, args, data_argnums), bare_max)
    problems = rep.problems(rule)
    if problems:
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))
        raise ValueError(f"with_rule({name}, rule={rule!r}, strict=True): " + "; ".join(problems)
                         + ". The deconvnet and guided rules are defined for ReLU / max-pool networks; "
                         "pass strict=False to keep these layers' ordinary backward pass, or use "
                         "rule='gradient'.")

