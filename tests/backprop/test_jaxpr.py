"""The shared jaxpr interpreter: faithful re-evaluation, handlers inside nested primitives, data flags."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax import jaxpr as jx


def nested(x, w, loop=True, sin=jnp.sin):
    """Every higher-order primitive the interpreter rebuilds, with a sin in each body."""
    y = jax.jit(lambda v: sin(v) * w)(x)
    y = jax.checkpoint(lambda v: sin(v) + 1.0)(y)
    c, ys = lax.scan(lambda c, v: (c + sin(v), sin(v) * c), jnp.zeros(()), y)
    z = lax.cond(c > 0, lambda v: sin(v), lambda v: -v, ys)
    if loop:
        z = lax.while_loop(lambda s: s[1] < 2, lambda s: (sin(s[0]), s[1] + 1), (z, 0))[0]
    return jnp.sum(z) + c


X = jnp.linspace(-1.0, 1.0, 5)
W = jnp.float32(0.7)


def count_sines():
    seen = []

    def handler(eqn, invals):
        if eqn.primitive.name == "sin":
            seen.append(eqn)
            return [jnp.cos(invals[0])]  # swap sin for cos everywhere
        return None

    return handler, seen


def test_eval_without_handler_is_identical():
    t = jx.trace(nested, X, W)
    np.testing.assert_array_equal(np.asarray(t.call(X, W)), np.asarray(nested(X, W)))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a, b: t.call(a, b))(X, W)), np.asarray(nested(X, W)))


def test_handler_sees_inside_jit_remat_scan_cond_and_while():
    handler, seen = count_sines()
    t = jx.trace(nested, X, W)
    got = t.call(X, W, handler=handler)

    def reference(x, w, loop=True):  # the same program written with cos (jnp.cos is a primitive, not a sin)
        return nested(x, w, loop, sin=jnp.cos)

    np.testing.assert_allclose(np.asarray(got), np.asarray(reference(X, W)), rtol=1e-6)
    # jit, remat, scan body (2), cond branch, while body: six sines rewritten (scan/while bodies once each)
    assert len({id(e) for e in seen}) == 6
    # the rewritten function still differentiates (no while loop: JAX cannot reverse one) and vmaps
    t2 = jx.trace(lambda a, b: nested(a, b, loop=False), X, W)
    g = jax.grad(lambda a: t2.call(a, W, handler=count_sines()[0]))(X)
    g_ref = jax.grad(lambda a: reference(a, W, loop=False))(X)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5)
    v = jax.vmap(lambda a: t.call(a, W, handler=count_sines()[0]))(jnp.stack([X, 2 * X]))
    np.testing.assert_allclose(np.asarray(v), [reference(X, W), reference(2 * X, W)], rtol=1e-6)


def test_custom_derivative_calls_keep_their_rules_by_default():
    f = lambda x: jnp.sum(jax.nn.softplus(x) + jax.nn.relu(x))  # noqa: E731
    t = jx.trace(f, X)
    g = jax.grad(lambda a: t.call(a, handler=lambda e, i: None))(X)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(jax.grad(f)(X)))


def test_walk_propagates_data_dependence_by_hand():
    def f(w, x):
        a = jnp.tanh(w)  # weights only
        c, _ = lax.scan(lambda c, v: (c * 0.5 + v, None), jnp.zeros(3), jnp.stack([x, x]))
        b = jnp.exp(c)  # depends on x through the scan carry (fixed point)
        return a + b

    t = jx.trace(f, jnp.ones(3), jnp.ones(3))
    flags = {}

    def visit(eqn, in_flags, path):
        if eqn.primitive.name in ("tanh", "exp"):
            flags[eqn.primitive.name] = any(in_flags)

    out = jx.walk(t.jaxpr, visit, [False, True])
    assert flags == {"tanh": False, "exp": True}
    assert out == [True]
    out_w = jx.walk(t.jaxpr, visit, [True, False])
    assert flags == {"tanh": True, "exp": False} and out_w == [True]


def test_a_handler_can_follow_values_through_shared_call_bodies():
    """The handler is the observation hook: it sees each equation's Vars, keeps state per Var, and
    enters calls itself. The same jitted function called twice shares one body jaxpr; the state
    must follow each call's own inputs (what the receptive-field recorder relies on)."""
    sin = jax.jit(jnp.sin)

    def f(x, y):
        return sin(x) * 2.0, sin(y) + 1.0

    t = jx.trace(f, X, X)
    tainted: dict = {}
    seen = []

    def taint_of(v):
        return False if isinstance(v, jax.extend.core.Literal) else tainted.get(v, False)

    def handler(eqn, invals):
        flags = [taint_of(v) for v in eqn.invars]
        if eqn.primitive.name in jx.CALL_PRIMITIVES:
            (body,) = jx.sub_jaxprs(eqn)
            tainted.update(zip(body.jaxpr.invars, flags))
            outs = jx.eval_jaxpr(body, invals, handler=handler)
            out_flags = [taint_of(v) for v in body.jaxpr.outvars]
        else:
            outs, out_flags = jx.bind(eqn, invals), [any(flags)] * len(eqn.outvars)
            seen.append((eqn.primitive.name, any(flags)))
        tainted.update(zip(eqn.outvars, out_flags))
        return outs

    tainted.update(zip(t.jaxpr.jaxpr.invars, [True, False]))  # only x is followed
    outs = jx.eval_jaxpr(t.jaxpr, [X, X], handler=handler)
    np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(jnp.sin(X) * 2.0))
    assert [taint_of(v) for v in t.jaxpr.jaxpr.outvars] == [True, False]
    assert seen == [("sin", True), ("mul", True), ("sin", False), ("add", False)]
