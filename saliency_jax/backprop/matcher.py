"""Matcher: what one jaxpr equation is to the backprop rules, decided in one place.

:func:`match` classifies one equation and returns a small :class:`Match` record (or ``None``:
nothing the rules care about). Its checks run in one order, and every reader of a jaxpr
asks it rather than deciding for itself:

1. a ReLU call — ``jax.nn.relu`` / ``flax.linen.relu``: a ``custom_jvp_call`` around ``max(x, 0)``;
2. a bare ``jnp.maximum(x, 0)`` (a literal zero; a rectifier only with ``bare_max=True``);
3. a capped bare max ``jnp.minimum(m, c)``, ``m`` the output of a bare max, ``c > 0`` a literal;
4. a named activation call (:data:`NAMED_ACTIVATIONS`: silu, hard_swish, gelu …), kept whole;
5. a call (``jit``, ``custom_jvp_call``) computing ``clip(x, 0, c)``: ReLU6, ``jnp.clip``;
6. a max pool (``reduce_window_max``), with the configuration the switch pool supports or the
   reason it does not;
7. any other custom-derivative call (its body may hold rectifiers or pools);
8. a pooling-like reduction the switch pool does not support (:data:`UNSUPPORTED_POOLS`), or a
   primitive activation the rules do not cover (:data:`UNCOVERED`).

The readers: :func:`saliency_jax.backprop.findings.report` turns matches into findings,
:class:`saliency_jax.backprop.rewrite.RuleHandler` (what ``with_rule`` evaluates with) replaces
rectifiers and pools, and the receptive-field pass (:mod:`saliency_jax.backprop.receptive_field`)
records them, each through :func:`match`; so what ``report()`` lists is what ``with_rule`` rewrites.

Example:
    >>> import jax, jax.numpy as jnp
    >>> eqns = jax.make_jaxpr(lambda x: jnp.tanh(jax.nn.relu6(x)))(jnp.ones(3)).jaxpr.eqns
    >>> [(m.kind, m.form, m.detail) for m in map(match, eqns)]
    [('rectifier', 'clip_call', 'clip(x, 0, 6)'), ('activation', 'tanh', 'tanh, or GELU (tanh form)')]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Collection

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from saliency_jax import jaxpr as jx

__all__ = ["UNCOVERED", "NAMED_ACTIVATIONS", "UNSUPPORTED_POOLS", "Match", "match", "pool_config"]

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
#: Pooling-like reductions the switch pool does not support (their default VJP differs:
#: ``reduce_max`` splits the signal evenly between tied maxima).
UNSUPPORTED_POOLS = frozenset({"reduce_max", "reduce_min", "reduce_window_min", "reduce_window"})


@dataclasses.dataclass(frozen=True)
class Match:
    """What one equation is to the backprop rules (see the module docstring for the order).

    Attributes:
        kind: ``"rectifier"`` (a ReLU or a capped rectifier: its rule replaces it), ``"named"`` (a
            named activation call: kept whole, with its ordinary backward pass), ``"pool"`` (a
            max pool, supported or not), ``"custom_call"`` (a custom-derivative call that is none
            of the above) or ``"activation"`` (a primitive the rules do not cover).
        form: a rectifier's spelling: ``"relu_call"``, ``"bare_max"`` (``jnp.maximum(x, 0)``),
            ``"capped_max"`` (``jnp.minimum(m, c)`` of a bare max's output ``m``) or
            ``"clip_call"`` (a call computing ``clip(x, 0, c)``); a named activation's name;
            otherwise the primitive's name.
        operand: the position, among the equation's inputs, of the rectifier's input (for
            ``"capped_max"``: of the bare max's output ``m``; the rule applies to that max's input).
        cap: a rectifier's upper bound (its open mask is ``0 < x < cap``); ``inf`` for a ReLU.
        bare: a rectifier spelled with bare ``jnp.maximum``/``jnp.minimum``: one only with ``bare_max=True``.
        pool: ``(window, strides, padding)`` of a max pool the switch pool supports (see
            :func:`pool_config`), else ``None``.
        detail: a short human description (a rectifier's spelling, a pool's configuration or why
            it is not supported, what an uncovered primitive usually is).
    """

    kind: str
    form: str
    operand: int = 0
    cap: float = math.inf
    bare: bool = False
    pool: tuple | None = None
    detail: str = ""


#: What an uncovered primitive usually is, added to its match's detail.
_HINTS = {
    "tanh": "tanh, or GELU (tanh form)", "erf": "GELU (exact form)", "erfc": "GELU (exact form)",
    "logistic": "sigmoid, SiLU/swish", "integer_pow": "e.g. GELU (tanh form)",
    "select_n": "e.g. leaky ReLU", "log1p": "e.g. softplus",
}


def match(eqn, bare_outputs: Collection = ()) -> Match | None:
    """What ``eqn`` is to the backprop rules: a :class:`Match`, or ``None`` (nothing they act on).

    Args:
        eqn: one equation of a jaxpr.
        bare_outputs: the output variables of the bare ``max(x, 0)`` equations seen so far (a
            caller adds ``eqn.outvars[0]`` of each ``"bare_max"`` match); they make a following
            ``min(m, c)`` a ``"capped_max"``.

    Returns:
        A :class:`Match`, or ``None``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> (eqn,) = jax.make_jaxpr(lambda x: jnp.maximum(x, 0.0))(jnp.ones(2)).jaxpr.eqns
        >>> m = match(eqn)
        >>> m.kind, m.form, m.operand, m.bare
        ('rectifier', 'bare_max', 0, True)
    """
    name = eqn.primitive.name
    if _is_relu_call(eqn):
        return Match("rectifier", "relu_call")
    pos = _max_zero_operand(eqn)
    if pos is not None:
        return Match("rectifier", "bare_max", operand=pos, bare=True, detail="jnp.maximum(x, 0)")
    capped = _bare_cap(eqn, bare_outputs)
    if capped is not None:
        pos, cap = capped
        return Match("rectifier", "capped_max", operand=pos, cap=cap, bare=True,
                     detail=f"jnp.minimum(jnp.maximum(x, 0), {cap:g})")
    called = _call_name(eqn) if name in jx.CALL_PRIMITIVES | jx.CUSTOM_CALL_PRIMITIVES else None
    if called in NAMED_ACTIVATIONS:
        return Match("named", called, detail="a named activation")
    clip = _clip_call(eqn)
    if clip is not None:
        return Match("rectifier", "clip_call", operand=clip[0], cap=clip[1], detail=f"clip(x, 0, {clip[1]:g})")
    if name == "reduce_window_max":
        cfg = pool_config(eqn)
        if isinstance(cfg, str):
            return Match("pool", name, detail=cfg)
        return Match("pool", name, pool=cfg, detail=f"window={cfg[0]} strides={cfg[1]} padding={cfg[2]}")
    if name in jx.CUSTOM_CALL_PRIMITIVES:
        return Match("custom_call", name)
    if name in UNSUPPORTED_POOLS:
        return Match("pool", name, detail=name)
    if name in UNCOVERED:
        return Match("activation", name, detail=_HINTS.get(name, ""))
    return None


def pool_config(eqn) -> tuple | str:
    """``(window, strides, padding)`` of a ``reduce_window_max`` equation the switch pool supports.

    Args:
        eqn: a ``reduce_window_max`` equation of a jaxpr.

    Returns:
        ``(window, strides, padding)`` as tuples of ints (``padding`` one ``(lo, hi)`` pair per
        dimension), or a string saying why the configuration is not supported (integer dtype,
        dilation, negative padding).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax import lax
        >>> f = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (2, 2), "VALID")
        >>> pool_config(jax.make_jaxpr(f)(jnp.ones((4, 4))).jaxpr.eqns[0])
        ((2, 2), (2, 2), ((0, 0), (0, 0)))
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


# --------------------------------------------------------------------------------------------
# the patterns


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
    # jnp.issubdtype: numpy's own does not count the ml_dtypes floats (bfloat16, float8) as numbers
    if a.size == 0 or a.size > 4096 or not (jnp.issubdtype(a.dtype, jnp.number) or a.dtype == bool):
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


def _bare_cap(eqn, bare_outputs) -> tuple[int, float] | None:
    """For ``min(m, c)`` where ``m`` is a bare ``max(x, 0)``'s output and ``c > 0`` a literal:
    ``(position of m, c)``. Else ``None``."""
    if eqn.primitive.name != "min" or len(eqn.invars) != 2 or not _is_float(eqn.outvars[0].aval):
        return None
    for pos in (0, 1):
        m, c = eqn.invars[pos], eqn.invars[1 - pos]
        if not isinstance(m, jcore.Literal) and m in bare_outputs and isinstance(c, jcore.Literal):
            cap = _scalar(c.val)
            if cap is not None and cap > 0:
                return pos, cap
    return None


def _call_name(eqn) -> str | None:
    """The function name of a named call (``jit[silu]`` → ``"silu"``), else ``None``."""
    lab = jx.label(eqn)
    return lab[lab.index("[") + 1:-1] if lab.endswith("]") and "[" in lab else None
