"""A small jaxpr interpreter, shared by the features that rewrite or re-evaluate a traced model.

Two features of this package walk a model's jaxpr: the backprop rule swap (every ReLU and
max-pool gets a different backward pass) and exact incremental occlusion (re-evaluate only
what a window changes). Both need the same three things, which live here:

* :func:`trace` — turn any JAX function of pytrees into a :class:`Traced` (a closed jaxpr
  plus the pytree structure of its inputs and outputs);
* :func:`eval_jaxpr` — evaluate a jaxpr equation by equation, letting a *handler* replace
  any equation, and recursing into the higher-order primitives that carry sub-jaxprs
  (``jit``/``pjit``, ``closed_call``, ``remat``, ``scan``, ``cond``, ``while``) so that the
  handler also sees the equations inside them. Evaluation binds primitives on the current
  trace, so the result composes with ``jit``, ``vmap`` and ``grad`` like any JAX code;
* :func:`walk` — visit every equation, nested ones included, with a per-input "depends on
  the data" flag propagated through the program (a scan's carry to a fixed point).

A handler is ``handler(eqn, invals) -> list | None``: return the equation's output values
to replace it, or ``None`` for the default evaluation. Custom-derivative calls
(``custom_jvp_call``, ``custom_vjp_call``) are bound unchanged by default, keeping their
rules; a handler that needs to see inside one calls :func:`eval_call_body`.

The handler is also the hook for observing a program as it runs: it sees each equation with
its input values and produces (or delegates, via :func:`eval_eqn`) its outputs, and it may
keep its own state per variable, keyed by ``eqn.invars`` / ``eqn.outvars`` (each ``Var``
names one value of one jaxpr). To follow values into a call, it evaluates the body itself
with :func:`eval_jaxpr` after setting its state for the body's invars. The backprop rewrite
(:class:`saliency_jax.backprop.rewrite.RuleHandler`) is one handler; the receptive-field
backward pass (:mod:`saliency_jax.backprop.receptive_field`) wraps it in another that tracks
which values carry the backward signal and records what their backward passes need.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from saliency_jax import jaxpr as jx
    >>> t = jx.trace(lambda x: jnp.sin(x) * 2.0, jnp.ones(3))
    >>> def double_sines(eqn, invals):
    ...     if eqn.primitive.name == "sin":
    ...         return [2.0 * jnp.sin(invals[0])]
    ...     return None
    >>> t.call(jnp.zeros(3) + jnp.pi / 2, handler=double_sines)
    Array([4., 4., 4.], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Sequence

import jax
from jax import lax
from jax.extend import core as jcore

__all__ = [
    "CALL_PRIMITIVES",
    "REMAT_PRIMITIVES",
    "CUSTOM_CALL_PRIMITIVES",
    "Handler",
    "Traced",
    "trace",
    "eval_jaxpr",
    "eval_eqn",
    "eval_call_body",
    "bind",
    "label",
    "walk",
    "sub_jaxprs",
    "closed",
]

#: Call-like primitives whose body is evaluated inline (the ``jit`` boundary is dropped).
CALL_PRIMITIVES = frozenset({"jit", "pjit", "closed_call", "core_call"})
#: Rematerialisation (``jax.checkpoint`` / ``nn.remat``); re-wrapped in ``jax.checkpoint``.
REMAT_PRIMITIVES = frozenset({"remat2", "remat", "checkpoint"})
#: Calls carrying a user-defined derivative rule; bound unchanged unless a handler inlines them.
CUSTOM_CALL_PRIMITIVES = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})

Handler = Callable[[Any, list], "list | None"]


def closed(jaxpr) -> jcore.ClosedJaxpr:
    """``jaxpr`` as a :class:`ClosedJaxpr` (an open ``Jaxpr`` gets no constants)."""
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        return jaxpr
    if isinstance(jaxpr, jcore.Jaxpr):
        return jcore.ClosedJaxpr(jaxpr, ())
    raise TypeError(f"`jaxpr` must be a Jaxpr or ClosedJaxpr, got {type(jaxpr).__name__}")


@dataclasses.dataclass(frozen=True)
class Traced:
    """A traced function: its closed jaxpr and the pytree structure of inputs and outputs.

    Attributes:
        jaxpr: the :class:`jax.extend.core.ClosedJaxpr`; its invars are the flattened leaves
            of ``(args, kwargs)`` in order.
        in_tree: treedef of ``(args, kwargs)``.
        out_tree: treedef of the function's output.
    """

    jaxpr: jcore.ClosedJaxpr
    in_tree: Any
    out_tree: Any

    def call(self, *args, handler: Handler | None = None, **kwargs):
        """Evaluate on new arguments of the traced shapes, with an optional ``handler``."""
        flat, in_tree = jax.tree_util.tree_flatten((args, kwargs))
        if in_tree != self.in_tree:
            raise TypeError(f"arguments have structure {in_tree}, the traced function expects {self.in_tree}")
        outs = eval_jaxpr(self.jaxpr, flat, handler=handler)
        return jax.tree_util.tree_unflatten(self.out_tree, outs)

    def arg_leaf_ranges(self, args: Sequence[Any]) -> list[range]:
        """For positional ``args`` (as traced), the range of flat invars each one occupies."""
        ranges, start = [], 0
        for a in args:
            n = len(jax.tree_util.tree_leaves(a))
            ranges.append(range(start, start + n))
            start += n
        return ranges


def trace(fn: Callable, *args, **kwargs) -> Traced:
    """Trace ``fn(*args, **kwargs)`` (pytrees of arrays) into a :class:`Traced`.

    Works on concrete arrays and on tracers of an enclosing ``jit``/``vmap``/``grad``
    (closed-over tracers become constants of the jaxpr).
    """
    flat, in_tree = jax.tree_util.tree_flatten((args, kwargs))
    out_tree_box: list = []

    def flat_fn(*leaves):
        a, k = jax.tree_util.tree_unflatten(in_tree, leaves)
        out = fn(*a, **k)
        out_flat, out_tree = jax.tree_util.tree_flatten(out)
        out_tree_box.append(out_tree)
        return out_flat

    closed_jaxpr = jax.make_jaxpr(flat_fn)(*flat)
    return Traced(closed_jaxpr, in_tree, out_tree_box[-1])


def sub_jaxprs(eqn) -> list[jcore.ClosedJaxpr]:
    """The sub-jaxprs an equation carries (as closed jaxprs), in a fixed order; ``[]`` if none."""
    name, p = eqn.primitive.name, eqn.params
    if name in CALL_PRIMITIVES or name in REMAT_PRIMITIVES:
        return [closed(p.get("jaxpr", p.get("call_jaxpr")))]
    if name == "scan":
        return [closed(p["jaxpr"])]
    if name == "cond":
        return [closed(b) for b in p["branches"]]
    if name == "while":
        return [closed(p["cond_jaxpr"]), closed(p["body_jaxpr"])]
    if name in CUSTOM_CALL_PRIMITIVES:
        key = "call_jaxpr" if "call_jaxpr" in p else "fun_jaxpr"
        return [closed(p[key])]
    found = []
    for v in p.values():
        for item in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(item, (jcore.Jaxpr, jcore.ClosedJaxpr)):
                found.append(closed(item))
    return found


# --------------------------------------------------------------------------------------------
# evaluation


def eval_jaxpr(jaxpr, args: Sequence[Any], *, consts: Sequence[Any] | None = None,
               handler: Handler | None = None) -> list:
    """Evaluate ``jaxpr`` on flat ``args``, giving ``handler`` the first word on every equation.

    Args:
        jaxpr: a ``ClosedJaxpr`` (its own constants are used) or an open ``Jaxpr`` (pass
            ``consts`` for its constvars).
        args: one value (array or tracer) per invar.
        consts: values of the constvars of an open ``Jaxpr``.
        handler: ``handler(eqn, invals) -> list | None``; see the module docstring.

    Returns:
        The list of output values, one per outvar.
    """
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        consts = jaxpr.consts if consts is None else consts
        jaxpr = jaxpr.jaxpr
    consts = () if consts is None else consts
    if len(args) != len(jaxpr.invars):
        raise TypeError(f"jaxpr takes {len(jaxpr.invars)} inputs, got {len(args)}")
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = handler(eqn, invals) if handler is not None else None
        if outs is None:
            outs = eval_eqn(eqn, invals, handler=handler)
        outs = list(outs)
        if len(outs) != len(eqn.outvars):
            raise ValueError(f"handler returned {len(outs)} values for {eqn.primitive.name}, "
                             f"which has {len(eqn.outvars)} outputs")
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


def eval_call_body(eqn, invals, *, handler: Handler | None = None) -> list:
    """Evaluate the body of a call-like or custom-derivative equation inline, through ``handler``.

    For ``custom_jvp_call``/``custom_vjp_call`` this drops the custom derivative rule: the
    result is differentiated through the (possibly rewritten) body.
    """
    (body,) = sub_jaxprs(eqn)[:1]
    return eval_jaxpr(body, invals, handler=handler)


try:  # what lax's own wrappers call: inside shard_map, make per-window and shared operands agree
    from jax._src.core import auto_insert_reshard as _match_varying
except ImportError:  # pragma: no cover - older/newer jax without it: nothing to match
    def _match_varying(*args):
        return args


def bind(eqn, invals: Sequence[Any], **param_updates) -> list:
    """Bind ``eqn``'s primitive to ``invals`` (with ``param_updates`` over its params); a list of outputs.

    Operands are first made to agree on the mesh axes they vary over (what ``lax``'s own
    wrappers do), so an equation re-bound inside ``shard_map`` may mix per-device and shared
    values.
    """
    params = dict(eqn.primitive.get_bind_params(eqn.params))
    params.update(param_updates)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*_match_varying(*invals), **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def eval_eqn(eqn, invals: Sequence[Any], *, handler: Handler | None = None) -> list:
    """Default evaluation of one equation; recurses with ``handler`` into sub-jaxprs.

    ``jit``/``closed_call`` bodies are inlined; ``remat`` is re-wrapped in ``jax.checkpoint``
    (same ``prevent_cse`` and ``policy``); ``scan``, ``cond`` and ``while`` are rebuilt with
    ``lax.scan``, ``lax.switch`` and ``lax.while_loop`` over interpreted bodies; every other
    primitive (custom-derivative calls included) is bound unchanged.
    """
    name, p = eqn.primitive.name, eqn.params
    if handler is None:
        return bind(eqn, invals)
    if name in CALL_PRIMITIVES:
        return eval_call_body(eqn, invals, handler=handler)
    if name in REMAT_PRIMITIVES:
        body = closed(p["jaxpr"])

        def remat_body(*xs):
            return eval_jaxpr(body, xs, handler=handler)

        fn = jax.checkpoint(remat_body, prevent_cse=p.get("prevent_cse", True), policy=p.get("policy"))
        return list(fn(*invals))
    if name == "scan":
        return _eval_scan(eqn, invals, handler)
    if name == "cond":
        branches = [closed(b) for b in p["branches"]]
        index, ops = invals[0], list(invals[1:])
        fns = [functools.partial(_branch, b, handler) for b in branches]
        if len(fns) == 1:
            return list(fns[0](*ops))
        return list(lax.switch(index, fns, *ops))
    if name == "while":
        cj, bj = closed(p["cond_jaxpr"]), closed(p["body_jaxpr"])
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        cc, bc, init = list(invals[:nc]), list(invals[nc:nc + nb]), list(invals[nc + nb:])
        out = lax.while_loop(lambda s: eval_jaxpr(cj, [*cc, *s], handler=handler)[0],
                             lambda s: list(eval_jaxpr(bj, [*bc, *s], handler=handler)), init)
        return list(out)
    return bind(eqn, invals)


def _branch(body, handler, *ops):
    return list(eval_jaxpr(body, ops, handler=handler))


def _eval_scan(eqn, invals, handler):
    p = eqn.params
    body = closed(p["jaxpr"])
    nc, nk = p["num_consts"], p["num_carry"]
    consts, init, xs = list(invals[:nc]), list(invals[nc:nc + nk]), list(invals[nc + nk:])

    def step(carry, x):
        outs = eval_jaxpr(body, [*consts, *carry, *x], handler=handler)
        return list(outs[:nk]), list(outs[nk:])

    carry, ys = lax.scan(step, init, xs, length=p["length"], reverse=p["reverse"], unroll=p.get("unroll", 1))
    return [*carry, *ys]


# --------------------------------------------------------------------------------------------
# walking with data-dependence flags


def walk(jaxpr, visit: Callable[[Any, tuple, tuple], "bool | None"] | None,
         in_flags: Iterable[bool] | None = None, path: tuple = ()) -> list[bool]:
    """Visit every equation of ``jaxpr`` (nested ones included) in program order.

    Each input carries a flag ("depends on the data"); an equation's outputs depend on the
    data when any of its inputs does, and the flags follow values into sub-jaxprs (through
    a scan's or while loop's carry to a fixed point, into every branch of a cond).

    Args:
        jaxpr: a ``ClosedJaxpr`` or ``Jaxpr`` (its constants never depend on the data).
        visit: ``visit(eqn, in_flags, path)``, called once per equation; ``path`` names the
            enclosing higher-order primitives. Return ``False`` to skip the equation's
            sub-jaxprs (e.g. a recognised pattern); anything else descends. ``None``: no visits.
        in_flags: one bool per invar; default all ``True``.
        path: prefix for ``path`` (used by the recursion).

    Returns:
        One flag per outvar.
    """
    jaxpr = jaxpr.jaxpr if isinstance(jaxpr, jcore.ClosedJaxpr) else jaxpr
    in_flags = [True] * len(jaxpr.invars) if in_flags is None else list(in_flags)
    env: dict = {v: False for v in jaxpr.constvars}
    env.update(zip(jaxpr.invars, in_flags))

    def read(v):
        return False if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        flags = [read(v) for v in eqn.invars]
        descend = True
        if visit is not None:
            descend = visit(eqn, tuple(flags), path) is not False
        outs = _walk_eqn(eqn, flags, visit if descend else None, path)
        for v, f in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = f
    return [read(v) for v in jaxpr.outvars]


def _walk_eqn(eqn, flags, visit, path):
    name, p = eqn.primitive.name, eqn.params
    sub_path = path + (label(eqn),)
    any_flag = any(flags)
    if name in CALL_PRIMITIVES or name in REMAT_PRIMITIVES or name in CUSTOM_CALL_PRIMITIVES:
        body = sub_jaxprs(eqn)[0]
        if len(body.jaxpr.invars) != len(flags):  # unusual layout: be conservative
            walk(body, visit, None, sub_path)
            return [any_flag] * len(eqn.outvars)
        return walk(body, visit, flags, sub_path)
    if name == "scan":
        body = closed(p["jaxpr"])
        nc, nk = p["num_consts"], p["num_carry"]
        consts, carry, xs = flags[:nc], list(flags[nc:nc + nk]), flags[nc + nk:]
        while True:
            outs = walk(body, None, [*consts, *carry, *xs])
            new = [a or b for a, b in zip(carry, outs[:nk])]
            if new == carry:
                break
            carry = new
        outs = walk(body, visit, [*consts, *carry, *xs], sub_path)
        return [*carry, *outs[nk:]]
    if name == "cond":
        ops = flags[1:]
        outs = None
        for b in p["branches"]:
            o = walk(closed(b), visit, ops, sub_path)
            outs = o if outs is None else [a or c for a, c in zip(outs, o)]
        return [f or flags[0] for f in outs]
    if name == "while":
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        cc, bc, carry = flags[:nc], flags[nc:nc + nb], list(flags[nc + nb:])
        while True:
            outs = walk(closed(p["body_jaxpr"]), None, [*bc, *carry])
            new = [a or b for a, b in zip(carry, outs)]
            if new == carry:
                break
            carry = new
        walk(closed(p["cond_jaxpr"]), visit, [*cc, *carry], sub_path)
        walk(closed(p["body_jaxpr"]), visit, [*bc, *carry], sub_path)
        return carry
    for body in sub_jaxprs(eqn):  # unknown higher-order primitive: visit conservatively
        walk(body, visit, None, sub_path)
    return [any_flag] * len(eqn.outvars)


def label(eqn) -> str:
    """``primitive[name]`` for named calls (``pjit[relu]``, ``custom_jvp_call[relu]``), else the primitive."""
    name = eqn.params.get("name")
    if not isinstance(name, str) and eqn.primitive.name in CUSTOM_CALL_PRIMITIVES:
        subs = sub_jaxprs(eqn)
        info = getattr(subs[0].jaxpr, "debug_info", None) if subs else None
        name = getattr(info, "func_name", None)
    return f"{eqn.primitive.name}[{name}]" if isinstance(name, str) else eqn.primitive.name