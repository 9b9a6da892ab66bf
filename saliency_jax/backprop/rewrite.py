"""Rewrite: give any JAX function a ReLU backward rule and switch pooling, by rewriting its jaxpr.

:func:`with_rule` traces the function (a Flax linen ``apply``, an NNX model called through
``nnx.split``/``nnx.merge``, plain ``jax.numpy``/``lax`` code) and re-evaluates its jaxpr
with the shared interpreter :mod:`saliency_jax.jaxpr`, replacing

* every ReLU — ``jax.nn.relu`` / ``flax.linen.relu`` appear in a jaxpr as a
  ``custom_jvp_call`` around ``max(x, 0)``; optionally (``bare_max=True``) also a bare
  ``jnp.maximum(x, 0)`` — by :func:`saliency_jax.backprop.rules.relu_rule`;
* every capped rectifier — ``jax.nn.relu6`` (a ``custom_jvp_call`` around
  ``min(max(x, 0), 6)``), ``jnp.clip(x, 0, c)`` with constant ``c > 0``, and, with
  ``bare_max=True``, a bare ``jnp.minimum(jnp.maximum(x, 0), c)`` — by
  :func:`saliency_jax.backprop.rules.clip_rule` (lower bound rectified as for ReLU; the upper
  bound keeps the gradient's mask for ``gradient``/``guided``, ``deconvnet`` ignores it);
* every max pool (``reduce_window_max``) by
  :func:`saliency_jax.backprop.rules.max_pool_switched` (``switches=True``).

It reaches inside nested ``jit``, ``remat``/``nn.remat``, ``scan``/``nn.scan``, ``cond`` and
``while``; forward values are bit-identical to the original function's. The model's code is
not touched.

Strictness (default): for ``deconvnet`` and ``guided``, tracing raises ``ValueError`` when no
ReLU is found, when a value computed from the data passes through an activation the rules
do not cover (gelu, tanh, sigmoid, leaky ReLU, softplus, …: see :data:`UNCOVERED`), or
through a max-pool configuration the switch pool does not support (dilations, negative
padding, global ``reduce_max``). Named activations (``jax.nn.silu``, ``hard_swish``,
``hard_sigmoid``, …) are reported by their name, GELU by its ``tanh``/``erf``.

A softmax or log-softmax *head* is accepted: its max under ``stop_gradient`` is a numerical
stabiliser, not an activation, and when the (log-)softmax's result only flows to the function's
outputs (through reshapes, slices, copies) it keeps its exact gradient, so the map explains the
probability (to explain the logits, as Zeiler & Fergus, pass the function before the softmax).
A softmax anywhere else (attention) is still reported. The ``gradient`` rule is the exact gradient of any function,
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
    "NAMED_ACTIVATIONS",
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
#: Named calls (``jit`` / ``custom_jvp`` wrappers of ``jax.nn``) reported as uncovered activations by
#: name: some hold a covered ReLU6 inside (``hard_swish = x · relu6(x + 3) / 6``).
NAMED_ACTIVATIONS = frozenset({
    "silu", "swish", "hard_silu", "hard_swish", "hard_sigmoid", "hard_tanh", "gelu", "sigmoid",
    "log_sigmoid", "softplus", "soft_sign", "sparse_plus", "sparse_sigmoid", "elu", "celu", "selu",
    "glu", "mish", "leaky_relu", "squareplus", "tanh",
})
#: What an uncovered primitive usually is, added to its report.
_HINTS = {
    "tanh": "tanh, or GELU (tanh form)", "erf": "GELU (exact form)", "erfc": "GELU (exact form)",
    "logistic": "sigmoid, SiLU/swish", "integer_pow": "e.g. GELU (tanh form)",
    "select_n": "e.g. leaky ReLU", "log1p": "e.g. softplus",
}
#: Equations through which a value still "is the output" (selection, layout, copies).
_TO_OUTPUT = frozenset({"copy", "copy_p", "reshape", "squeeze", "expand_dims", "convert_element_type",
                        "transpose", "slice", "dynamic_slice", "gather"})
#: Pooling-like reductions the switch pool does not support (their default VJP differs:
#: ``reduce_max`` splits the signal evenly between tied maxima).
_UNSUPPORTED_POOLS = frozenset({"reduce_max", "reduce_min", "reduce_window_min", "reduce_window"})


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


_DATA = object()  # marks the data input of a call whose other inputs are constants


def _scalar(value) -> float | None:
    """The one number a constant holds (a scalar, or an array of equal values), else ``None``."""
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - not an array-like constant
        return None
    if a.size == 0 or a.size > 4096 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        return None
    flat = a.reshape(-1).astype(np.float64)
    return float(flat[0]) if np.all(flat == flat[0]) else None


def _clip_body(closed_jaxpr, known) -> tuple[float, float] | None:
    """``(lo, hi)`` when the jaxpr computes ``clip(x, lo, hi)`` of its one data input, else ``None``.

    ``known`` holds, per invar, a constant or ``_DATA``. Only ``max``/``min`` against constants,
    conversions of constants and nested calls on the unclipped input are allowed.
    """
    j = closed_jaxpr.jaxpr
    consts = dict(zip(j.constvars, closed_jaxpr.consts))
    env: dict = {v: ("x", -np.inf, np.inf) if k is _DATA else ("const", _scalar(k)) for v, k in zip(j.invars, known)}

    def read(v):
        if isinstance(v, jcore.Literal):
            return ("const", _scalar(v.val))
        if v not in env and v in consts:
            env[v] = ("const", _scalar(consts[v]))
        return env.get(v)

    for eqn in j.eqns:
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if any(i is None for i in ins) or len(eqn.outvars) != 1:
            return None
        xs = [i for i in ins if i[0] == "x"]
        if not xs and name == "convert_element_type":
            out = ins[0]
        elif name in ("max", "min") and len(ins) == 2 and len(xs) == 1:
            c = next(i for i in ins if i[0] == "const")[1]
            if c is None:
                return None
            op = max if name == "max" else min
            out = ("x", op(xs[0][1], c), op(xs[0][2], c))
        elif name in jx.CALL_PRIMITIVES and len(xs) == 1 and xs[0][1:] == (-np.inf, np.inf):
            inner = _clip_body(jx.sub_jaxprs(eqn)[0], [_DATA if i[0] == "x" else i[1] for i in ins])
            if inner is None:
                return None
            out = ("x",) + inner
        else:
            return None
        env[eqn.outvars[0]] = out
    result = read(j.outvars[0]) if len(j.outvars) == 1 else None
    return None if result is None or result[0] != "x" else (result[1], result[2])


def _clip_call(eqn) -> tuple[int, float] | None:
    """For a call (``jit``, ``custom_jvp_call``) computing ``clip(x, 0, c)``, ``c > 0`` constant:
    ``(position of x, c)`` (``c`` may be ``inf``: a ReLU). Else ``None``."""
    name = eqn.primitive.name
    if (name not in jx.CALL_PRIMITIVES and name != "custom_jvp_call") or len(eqn.outvars) != 1 \
            or not _is_float(eqn.outvars[0].aval):
        return None
    known = [v.val if isinstance(v, jcore.Literal) else _DATA for v in eqn.invars]
    data = [i for i, k in enumerate(known) if k is _DATA]
    body = jx.sub_jaxprs(eqn)[0]
    if len(data) != 1 or len(body.jaxpr.invars) != len(known):
        return None
    bounds = _clip_body(body, known)
    if bounds is None or bounds[0] != 0.0 or not bounds[1] > 0:
        return None
    return data[0], bounds[1]


def _bare_cap(eqn, bare_outputs) -> tuple | None:
    """For ``min(m, c)`` where ``m`` is a bare ``max(x, 0)``'s output and ``c > 0`` a literal:
    ``(m, c)``. Else ``None``."""
    if eqn.primitive.name != "min" or len(eqn.invars) != 2 or not _is_float(eqn.outvars[0].aval):
        return None
    for m, c in (eqn.invars, eqn.invars[::-1]):
        if not isinstance(m, jcore.Literal) and m in bare_outputs and isinstance(c, jcore.Literal):
            cap = _scalar(c.val)
            if cap is not None and cap > 0:
                return m, cap
    return None


def _call_name(eqn) -> str | None:
    """The function name of a named call (``jit[silu]`` → ``"silu"``), else ``None``."""
    lab = jx.label(eqn)
    return lab[lab.index("[") + 1:-1] if lab.endswith("]") and "[" in lab else None


# softmax / log-softmax heads

_LAYOUT = ("broadcast_in_dim", "reshape", "expand_dims", "squeeze", "convert_element_type")


def _softmax_heads(closed_jaxpr, at_end=None, marks=None) -> dict:
    """``{id(eqn): role}`` for the softmax / log-softmax heads of a jaxpr (nested calls included).

    A head is ``exp(a − stop_gradient(max(a)))`` normalised by its sum along the max's axes
    (softmax: ``div``; log-softmax: ``− log(sum)``) whose result flows only to the outputs
    (through :data:`_TO_OUTPUT` equations). The stabiliser equations (``reduce_max``, its
    ``max(−inf, ·)`` guard, broadcasts, ``stop_gradient``) get the role ``"stabiliser"``; the
    ``exp`` (and ``log``) the role ``"softmax"`` or ``"log_softmax"``. ``at_end``: per outvar,
    whether it is (a selection of) the function's output; default all.
    """
    j = closed_jaxpr.jaxpr
    marks = {} if marks is None else marks
    at_end = [True] * len(j.outvars) if at_end is None else list(at_end)
    producer, consumers = {}, collections.defaultdict(list)
    for eqn in j.eqns:
        for v in eqn.outvars:
            producer[v] = eqn
        for v in eqn.invars:
            if not isinstance(v, jcore.Literal):
                consumers[v].append(eqn)
    outpos = collections.defaultdict(list)
    for i, v in enumerate(j.outvars):
        if not isinstance(v, jcore.Literal):
            outpos[v].append(i)
    memo: dict = {}

    def ends(v) -> bool:
        if isinstance(v, jcore.DropVar):
            return False
        if v not in memo:
            memo[v] = False
            ok = bool(outpos[v] or consumers[v]) and all(at_end[i] for i in outpos[v])
            for e in consumers[v]:
                ok = ok and e.primitive.name in _TO_OUTPUT and e.invars[0] is v and all(ends(o) for o in e.outvars)
            memo[v] = ok
        return memo[v]

    graph = (producer, consumers, outpos, ends)
    for eqn in j.eqns:
        name = eqn.primitive.name
        if name == "stop_gradient":
            _match_softmax(eqn, graph, marks)
        elif name in jx.CALL_PRIMITIVES or name in jx.CUSTOM_CALL_PRIMITIVES or name in jx.REMAT_PRIMITIVES:
            body = jx.sub_jaxprs(eqn)[0]
            if len(body.jaxpr.outvars) == len(eqn.outvars):
                _softmax_heads(body, [ends(v) for v in eqn.outvars], marks)
    return marks


def _match_softmax(sg, graph, marks) -> None:
    """Mark the softmax / log-softmax head stabilised by the ``stop_gradient`` equation ``sg``, if any."""
    producer, consumers, outpos, ends = graph

    def only_use(v):
        return len(consumers[v]) == 1 and not outpos[v]

    chain, v = [sg], sg.invars[0]
    while True:  # back from the stop_gradient to the reduce_max, through layout ops and ±inf guards
        p = producer.get(v)
        if p is None or not only_use(v):
            return
        chain.append(p)
        if p.primitive.name == "reduce_max":
            break
        lits = [i for i in p.invars if isinstance(i, jcore.Literal)]
        if p.primitive.name in _LAYOUT:
            v = p.invars[0]
        elif p.primitive.name in ("max", "min") and len(p.invars) == 2 and len(lits) == 1:
            v = next(i for i in p.invars if not isinstance(i, jcore.Literal))
        else:
            return
    a, axes, s = chain[-1].invars[0], tuple(chain[-1].params["axes"]), sg.outvars[0]
    (sub, *more) = consumers[s] or [None]
    if more or sub is None or sub.primitive.name != "sub" or sub.invars[0] is not a or sub.invars[1] is not s:
        return
    f = sub.outvars[0]
    exps = [e for e in consumers[f] if e.primitive.name == "exp"]
    if len(exps) != 1 or outpos[f]:
        return
    x_eqn, g = exps[0], exps[0].outvars[0]
    sums = [e for e in consumers[g] if e.primitive.name == "reduce_sum" and tuple(e.params["axes"]) == axes]
    if len(sums) != 1 or outpos[g]:
        return
    v, e = _through_layout(sums[0].outvars[0], consumers, outpos)
    if e is None:
        return
    g_uses = {id(u) for u in consumers[g]}
    f_others = [u for u in consumers[f] if u is not x_eqn]
    if e.primitive.name == "div" and e.invars[0] is g and e.invars[1] is v and g_uses == {id(sums[0]), id(e)} \
            and not f_others:
        out, kind, heads = e.outvars[0], "softmax", [x_eqn]
    elif e.primitive.name == "log" and g_uses == {id(sums[0])}:
        lv, last = _through_layout(e.outvars[0], consumers, outpos)
        if last is None or last.primitive.name != "sub" or last.invars[0] is not f or last.invars[1] is not lv \
                or [id(u) for u in f_others] != [id(last)]:
            return
        out, kind, heads = last.outvars[0], "log_softmax", [x_eqn, e]
    else:
        return
    if ends(out):
        marks.update({id(c): "stabiliser" for c in chain})
        marks.update({id(h): kind for h in heads})


def _through_layout(v, consumers, outpos):
    """Follow ``v`` through single-use layout ops: ``(last value, the equation using it)`` or ``(v, None)``."""
    while True:
        if len(consumers[v]) != 1 or outpos[v]:
            return v, None
        e = consumers[v][0]
        if e.primitive.name not in _LAYOUT:
            return v, e
        v = e.outvars[0]


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


def _analyse(closed_jaxpr, flags, bare_max: bool, marks=None) -> Report:
    findings: list[Finding] = []
    marks = _softmax_heads(closed_jaxpr) if marks is None else marks
    bare_outputs: set = set()

    def visit(eqn, in_flags, path):
        name = eqn.primitive.name
        data = any(in_flags)
        add = lambda kind, detail="": findings.append(Finding(kind, jx.label(eqn), path, _shape(eqn), detail))  # noqa: E731
        role = marks.get(id(eqn))
        if role is not None:
            if role != "stabiliser" and data:
                add("head", f"{role} at the output: kept with its exact gradient")
            return False
        if _is_relu_call(eqn):
            add("relu")
            return False
        if _max_zero_operand(eqn) is not None:
            add("relu" if bare_max else "bare_max", "jnp.maximum(x, 0)")
            bare_outputs.add(eqn.outvars[0])
            return False
        capped = _bare_cap(eqn, bare_outputs)
        if capped is not None:
            add("clip" if bare_max else "bare_max", f"jnp.minimum(jnp.maximum(x, 0), {capped[1]:g})")
            return False
        if _call_name(eqn) in NAMED_ACTIVATIONS and name in (jx.CALL_PRIMITIVES | jx.CUSTOM_CALL_PRIMITIVES):
            if data:
                add("uncovered", "a named activation")
            return False
        clip = _clip_call(eqn)
        if clip is not None:
            add("relu" if clip[1] == np.inf else "clip", f"clip(x, 0, {clip[1]:g})")
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
                jx.sub_jaxprs(eqn)[0].jaxpr.invars) else None, bare_max, marks)
            bad = inner.of("uncovered") + inner.of("unsupported_pool") + inner.of("bare_max")
            if bad and data:
                add("uncovered", "custom-derivative function computing " + ", ".join(
                    sorted({f.primitive for f in bad})))
                return False
            if inner.relus or inner.clips or inner.pools:
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
            add("uncovered", _HINTS.get(name, ""))
        elif (name not in jx.CALL_PRIMITIVES and name not in jx.REMAT_PRIMITIVES
              and name not in ("scan", "cond", "while") and jx.sub_jaxprs(eqn)):
            inner = [_analyse(b, None, bare_max) for b in jx.sub_jaxprs(eqn)]
            if any(r.relus or r.clips or r.pools for r in inner):
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

    ``handler(eqn, invals)`` returns the outputs of a ReLU (``rule``'s custom VJP), of a capped
    rectifier (ReLU6, ``clip(x, 0, c)``: :func:`~saliency_jax.backprop.rules.clip_rule`), of a
    supported max pool (:func:`~saliency_jax.backprop.rules.max_pool_switched`, or
    :func:`~saliency_jax.backprop.rules.max_pool_spread` for the footprint rule), or of a
    custom-derivative call whose body holds either (evaluated inline, through the handler);
    a named activation the rules do not cover (:data:`NAMED_ACTIVATIONS`, e.g. hard-swish,
    which holds a ReLU6) is bound unchanged, keeping its ordinary backward pass; ``None`` for
    every other equation (the interpreter's default).

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
        self._clips: dict[int, tuple | None] = {}
        self._bare: dict = {}  # output Var of a replaced bare max(x, 0) → x (for a following min(·, c))

    def relu_operand(self, eqn) -> int | None:
        """The position of the ReLU's input if ``eqn`` is a ReLU this handler replaces, else ``None``."""
        if _is_relu_call(eqn):
            return 0
        return _max_zero_operand(eqn) if self.bare_max else None

    def clip_call(self, eqn) -> tuple[int, float] | None:
        """``(position of x, c)`` if ``eqn`` is a call computing ``clip(x, 0, c)`` (ReLU6: ``c = 6``;
        ``c = inf``: a ReLU) that this handler replaces whole, else ``None``."""
        key = id(eqn)
        if key not in self._clips:
            self._clips[key] = None if _is_relu_call(eqn) else _clip_call(eqn)
        return self._clips[key]

    def opaque(self, eqn) -> bool:
        """Whether ``eqn`` is a call this handler evaluates whole, never entering its body: a
        ``clip(x, 0, c)`` (its rule) or a named activation (its ordinary backward pass)."""
        if eqn.primitive.name not in jx.CALL_PRIMITIVES | jx.CUSTOM_CALL_PRIMITIVES:
            return False
        return _call_name(eqn) in NAMED_ACTIVATIONS or self.clip_call(eqn) is not None

    def inlines(self, eqn) -> bool:
        """Whether ``eqn`` is a custom-derivative call (not a ReLU) whose body holds ReLUs or, with
        ``switches``, max pools: the handler evaluates its body inline, dropping its custom rule."""
        if eqn.primitive.name not in jx.CUSTOM_CALL_PRIMITIVES or _is_relu_call(eqn):
            return False
        key = id(eqn)
        if key not in self._inlines:
            r = _analyse(jx.sub_jaxprs(eqn)[0], None, self.bare_max)
            self._inlines[key] = bool(r.relus or r.clips or (self.switches and r.pools))
        return self._inlines[key]

    def __call__(self, eqn, invals):
        pos = self.relu_operand(eqn)
        if pos is not None:
            if eqn.primitive.name == "max":
                self._bare[eqn.outvars[0]] = invals[pos]
            return [self.relu(invals[pos])]
        if self.bare_max and self._bare:
            capped = _bare_cap(eqn, self._bare)
            if capped is not None:  # min(max(x, 0), c): the capped rule on x, value bit-identical
                return [rules.clip_rule(self.rule, capped[1])(self._bare[capped[0]])]
        if eqn.primitive.name in jx.CALL_PRIMITIVES | jx.CUSTOM_CALL_PRIMITIVES:
            if _call_name(eqn) in NAMED_ACTIVATIONS:
                return jx.bind(eqn, invals)
            clip = self.clip_call(eqn)
            if clip is not None:
                return [rules.clip_rule(self.rule, clip[1])(invals[clip[0]])]
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

