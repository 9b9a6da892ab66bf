"""Softmax and log-softmax heads: the (log-)softmax at a function's output, kept with its exact gradient.

A head is ``exp(a − stop_gradient(max(a)))`` normalised by its sum along the max's axes
(softmax: ``div``; log-softmax: ``− log(sum)``) whose result flows only to the function's
outputs (through reshapes, slices, copies). Its ``max`` under ``stop_gradient`` is a numerical
stabiliser, not an activation, and its ``exp`` (and ``log``) explain the probability exactly,
so :func:`saliency_jax.backprop.findings.report` (and the strict check of ``with_rule``)
accepts it; a softmax anywhere else (attention) is still reported. :func:`softmax_heads` finds
them; the rewrite never changes them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> closed = jax.make_jaxpr(jax.nn.softmax)(jnp.ones(3))
    >>> sorted(set(softmax_heads(closed).values()))
    ['softmax', 'stabiliser']
"""

from __future__ import annotations

import collections

from jax.extend import core as jcore

from saliency_jax import jaxpr as jx

__all__ = ["softmax_heads"]

#: Equations through which a value still "is the output" (selection, layout, copies).
_TO_OUTPUT = frozenset({"copy", "copy_p", "reshape", "squeeze", "expand_dims", "convert_element_type",
                        "transpose", "slice", "dynamic_slice", "gather"})
#: Layout equations between the pieces of a head.
_LAYOUT = ("broadcast_in_dim", "reshape", "expand_dims", "squeeze", "convert_element_type")


def softmax_heads(closed_jaxpr, at_end=None, marks=None) -> dict:
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
                softmax_heads(body, [ends(v) for v in eqn.outvars], marks)
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

