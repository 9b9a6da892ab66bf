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

What each equation is comes from :func:`saliency_jax.backprop.matcher.match`, the same
classification :func:`saliency_jax.backprop.findings.report` lists. It reaches inside nested
``jit``, ``remat``/``nn.remat``, ``scan``/``nn.scan``, ``cond`` and ``while``; forward values are
bit-identical to the original function's. The model's code is not touched.

Strictness (default): for ``deconvnet`` and ``guided``, tracing raises ``ValueError`` when no
ReLU is found or when data passes through an activation or pooling the rules do not cover (see
:mod:`saliency_jax.backprop.findings`); a softmax or log-softmax head at the output is accepted
and keeps its exact gradient. The ``gradient`` rule is the exact gradient of any function, so it
checks nothing.

Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) of the result raises ``TypeError``:
the rules define a backward pass only.

The rewrite itself is one :mod:`saliency_jax.jaxpr` handler, :class:`RuleHandler`; the
receptive-field backward pass (:mod:`saliency_jax.backprop.receptive_field`) evaluates with the
same handler and records what it needs on the way.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from saliency_jax import _validate
from saliency_jax import jaxpr as jx
from saliency_jax.backprop import findings, matcher, rules

__all__ = ["RuleHandler", "with_rule"]


class RuleHandler:
    """The :mod:`saliency_jax.jaxpr` handler that swaps a jaxpr's ReLU and max-pool rules.

    ``handler(eqn, invals)`` returns the outputs of a ReLU (``rule``'s custom VJP), of a capped
    rectifier (ReLU6, ``clip(x, 0, c)``: :func:`~saliency_jax.backprop.rules.clip_rule`), of a
    supported max pool (:func:`~saliency_jax.backprop.rules.max_pool_switched`, or
    :func:`~saliency_jax.backprop.rules.max_pool_spread` for the footprint rule), or of a
    custom-derivative call whose body holds either (evaluated inline, through the handler);
    a named activation the rules do not cover
    (:data:`~saliency_jax.backprop.matcher.NAMED_ACTIVATIONS`, e.g. hard-swish, which holds a
    ReLU6) is bound unchanged, keeping its ordinary backward pass; ``None`` for every other
    equation (the interpreter's default). :meth:`match` says which, per equation.

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
        if rule == rules.FOOTPRINT:
            self._pool = rules.max_pool_spread
        else:
            self._pool = rules.max_pool_switched if switches else None
        self._matches: dict[int, matcher.Match | None] = {}
        self._bare_outputs: set = set()  # output Vars of the bare max(x, 0) this handler rectifies
        self._bare: dict = {}  # output Var of a replaced bare max(x, 0) → x (for a following min(·, c))

    def match(self, eqn) -> matcher.Match | None:
        """What this handler does with ``eqn``: its :func:`~saliency_jax.backprop.matcher.match`
        record, or ``None`` when the interpreter evaluates it as it is.

        Kept: rectifiers (the bare forms only with ``bare_max``: replaced by the rule), named
        activations (bound whole), max pools (replaced when ``pool`` is set and the handler pools;
        an unsupported one is evaluated as it is), and custom-derivative calls whose body holds
        rectifiers or, with ``switches``, max pools (evaluated inline, their custom rule dropped).
        """
        key = id(eqn)
        if key not in self._matches:
            m = matcher.match(eqn, self._bare_outputs)
            if m is not None and (m.kind == "activation" or (m.bare and not self.bare_max)
                                  or (m.kind == "custom_call" and not self._holds_rules(eqn))):
                m = None
            if m is not None and m.form == "bare_max":
                self._bare_outputs.add(eqn.outvars[0])
            self._matches[key] = m
        return self._matches[key]

    def _holds_rules(self, eqn) -> bool:
        r = findings.analyse(jx.sub_jaxprs(eqn)[0], None, self.bare_max)
        return bool(r.relus or r.clips or (self.switches and r.pools))

    def rectifier(self, m: matcher.Match) -> Callable:
        """The rule's function for a rectifier match: ``clip(x, 0, m.cap)`` (a ReLU for ``cap = inf``)
        whose backward pass follows ``rule`` (:func:`~saliency_jax.backprop.rules.clip_rule`)."""
        return rules.clip_rule(self.rule, m.cap)

    def __call__(self, eqn, invals):
        m = self.match(eqn)
        if m is None:
            return None
        if m.kind == "rectifier":
            if m.form == "capped_max":  # min(max(x, 0), c): the capped rule on x, value bit-identical
                x = self._bare.get(eqn.invars[m.operand])
                return None if x is None else [self.rectifier(m)(x)]
            x = invals[m.operand]
            if m.form == "bare_max":
                self._bare[eqn.outvars[0]] = x
            return [self.rectifier(m)(x)]
        if m.kind == "named":
            return jx.bind(eqn, invals)
        if m.kind == "pool":
            return None if m.pool is None or self._pool is None else [self._pool(invals[0], *m.pool)]
        return jx.eval_call_body(eqn, invals, handler=self)  # a custom-derivative call holding rectifiers or pools


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
            cover (see :func:`~saliency_jax.backprop.findings.report`). With ``strict=False`` those keep their ordinary VJP.
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
    data_argnums = findings.check_data_argnums(data_argnums)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        traced = jx.trace(fn, *args, **kwargs)
        if strict:
            findings.check_strict(traced, fn, rule, args, data_argnums, bare_max)
        flat = jax.tree_util.tree_leaves((args, kwargs))
        try:
            outs = jx.eval_jaxpr(traced.jaxpr, flat, handler=RuleHandler(rule, switches=switches, bare_max=bare_max))
        except TypeError as e:
            if "forward-mode" in str(e):
                raise TypeError(_JVP_MESSAGE.format(rule=rule)) from e
            raise
        return jax.tree_util.tree_unflatten(traced.out_tree, outs)

    return wrapped

