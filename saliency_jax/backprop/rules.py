"""Backward rules as ``jax.custom_vjp``: three ReLU rules (also for ReLU6) and max pooling with recorded switches.

ReLU rules (``x`` = the ReLU's input, ``g`` = the signal arriving from above); the forward
value is always ``relu(x)``:

=============  ====================  ==========================================
rule           backward              residual kept from the forward pass
=============  ====================  ==========================================
``gradient``   ``g · [x > 0]``       a bool mask (1 byte per element)
``deconvnet``  ``relu(g)``           nothing: ``x`` is ignored
``guided``     ``relu(g) · [x > 0]`` a bool mask
=============  ====================  ==========================================

Capped rectifiers (ReLU6 and ``clip(x, 0, c)`` in general, ``c > 0``: MobileNets, Keras
``ReLU(max_value=…)``): the forward value is ``clip(x, 0, c)``; the lower bound is rectified
exactly as for ReLU, and the upper bound follows the gradient's mask (:func:`clip_rule`):

=============  ===============================  ==========================================
rule           backward                         why
=============  ===============================  ==========================================
``gradient``   ``g · [0 < x < c]``              the exact gradient (``jax.nn.relu6``'s own)
``deconvnet``  ``relu(g)``                      deconvnet never reads the forward activation
                                                (Zeiler & Fergus: the reconstruction is
                                                rectified, not gated), so neither bound masks
``guided``     ``relu(g) · [0 < x < c]``        Springenberg et al.: the gradient's mask
                                                combined with deconvnet's rectification; a
                                                saturated unit (``x ≥ c``) passes no gradient
=============  ===============================  ==========================================

Max pooling with switches (Zeiler & Fergus's "unpooling"): the forward pass records, per
output, the position of the maximum inside its window — the *switch*, a small integer in
``[0, prod(window))``, the first maximum in row-major window order on ties (PyTorch's and
XLA's rule) — and the backward pass scatters the signal to those positions. This is exactly
the default VJP of ``lax.reduce_window_max`` / ``flax.linen.max_pool``, but its residual is
one ``int8`` per output instead of the float input, and many backward passes that share one
forward pass do not recompute the selection.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from saliency_jax.backprop import rules
    >>> relu = rules.relu_rule("deconvnet")
    >>> jax.grad(lambda x: jnp.sum(relu(x) * jnp.array([1.0, -1.0])))(jnp.array([-1.0, 2.0]))
    Array([1., 0.], dtype=float32)
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "RULES",
    "FOOTPRINT",
    "check_rule",
    "relu_rule",
    "clip_rule",
    "pool_with_switches",
    "unpool",
    "max_pool_switched",
    "max_pool_spread",
    "normalize_padding",
]

#: The ReLU backward rules, by name.
RULES: tuple[str, ...] = ("gradient", "deconvnet", "guided")
#: The rule that finds a unit's receptive field rather than explaining it: every path counts,
#: with a positive sign (ReLU backward ``|g|``, max pools spread ``|g|`` over every window
#: position, see :func:`max_pool_spread`). Accepted by :func:`relu_rule` and
#: :func:`saliency_jax.backprop.with_rule`, not by the saliency methods.
FOOTPRINT = "footprint"


def check_rule(rule, *, footprint: bool = False) -> str:
    """``rule`` if it is one of :data:`RULES` (or :data:`FOOTPRINT` when ``footprint``); else ``ValueError``.

    Example:
        >>> check_rule("guided")
        'guided'
    """
    accepted = RULES + ((FOOTPRINT,) if footprint else ())
    if not isinstance(rule, str) or rule not in accepted:
        raise ValueError(f"`rule` (={rule!r}) must be one of {RULES}")
    return rule


def _relu_fwd_value(x):
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _rectifier(rule: str, value, open_mask, name: str):
    """A ``custom_vjp`` function computing ``value(x)`` whose backward pass follows ``rule``:
    gradient ``g·open_mask(x)``, guided ``relu(g)·open_mask(x)``, deconvnet ``relu(g)`` (the
    forward value is never read), footprint ``|g|``. ReLU and ReLU6 / clip differ only in
    ``value`` and ``open_mask``."""
    @jax.custom_vjp
    def f(x):
        return value(x)

    if rule == "gradient":
        def fwd(x):
            return value(x), open_mask(x)

        def bwd(mask, g):
            return (jnp.where(mask, g, jnp.zeros((), g.dtype)),)
    elif rule == "guided":
        def fwd(x):
            return value(x), open_mask(x)

        def bwd(mask, g):
            # `~(g <= 0)`, not `g > 0`: a NaN signal passes where the unit is open (as with the
            # other rules) instead of vanishing into a clean-looking map
            return (jnp.where(mask & ~(g <= 0), g, jnp.zeros((), g.dtype)),)
    elif rule == "deconvnet":
        def fwd(x):
            return value(x), None

        def bwd(_, g):
            return (jnp.maximum(g, jnp.zeros((), g.dtype)),)
    else:  # footprint
        def fwd(x):
            return value(x), None

        def bwd(_, g):
            return (jnp.abs(g),)

    f.defvjp(fwd, bwd)
    f.__name__ = name
    return f


@functools.lru_cache(maxsize=None)
def _relu(rule: str):
    return _rectifier(rule, _relu_fwd_value, lambda x: x > 0, f"relu_{rule}")


def relu_rule(rule: str):
    """The ReLU whose backward pass follows ``rule``.

    Args:
        rule: ``"gradient"``, ``"deconvnet"`` or ``"guided"`` (or :data:`FOOTPRINT`: ``|g|``).

    Returns:
        A function ``x -> relu(x)`` (any shape, floating dtype, dtype kept) whose VJP is
        ``g·[x>0]``, ``relu(g)`` or ``relu(g)·[x>0]``. Forward-mode differentiation is not
        defined (``jax.jvp`` raises ``TypeError``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> g = jax.vjp(relu_rule("guided"), jnp.array([1.0, 1.0, -1.0]))[1]
        >>> g(jnp.array([2.0, -2.0, 2.0]))[0]
        Array([2., 0., 0.], dtype=float32)
    """
    return _relu(check_rule(rule, footprint=True))


@functools.lru_cache(maxsize=None)
def _clip(rule: str, upper: float):
    def value(x):
        return jnp.minimum(_relu_fwd_value(x), jnp.asarray(upper, x.dtype))

    def open_mask(x):
        return (x > 0) & (x < jnp.asarray(upper, x.dtype))

    return _rectifier(rule, value, open_mask, f"relu{upper:g}_{rule}")


def clip_rule(rule: str, upper: float):
    """The capped rectifier ``clip(x, 0, upper)`` (ReLU6 for ``upper=6``) whose backward pass follows ``rule``.

    The lower bound is rectified as for ReLU; the upper bound keeps the gradient's mask for
    ``gradient`` and ``guided`` and is ignored by ``deconvnet`` (see the module docstring).

    Args:
        rule: ``"gradient"``, ``"deconvnet"`` or ``"guided"`` (or :data:`FOOTPRINT`: ``|g|``).
        upper: the cap ``c > 0`` (a Python number; ``inf`` gives :func:`relu_rule`).

    Returns:
        A function ``x -> clip(x, 0, upper)`` (any shape, floating dtype, dtype kept) whose VJP
        is ``g·[0<x<c]``, ``relu(g)`` or ``relu(g)·[0<x<c]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([-1.0, 3.0, 7.0])
        >>> jax.vjp(clip_rule("guided", 6.0), x)[1](jnp.array([1.0, 1.0, 1.0]))[0]
        Array([0., 1., 0.], dtype=float32)
        >>> jax.vjp(clip_rule("deconvnet", 6.0), x)[1](jnp.array([1.0, -1.0, 1.0]))[0]
        Array([1., 0., 1.], dtype=float32)
    """
    rule = check_rule(rule, footprint=True)
    try:
        upper = float(upper)
    except (TypeError, ValueError):
        raise TypeError(f"`upper` (={upper!r}) must be a positive number") from None
    if not upper > 0:
        raise ValueError(f"`upper` (={upper!r}) must be > 0")
    if upper == float("inf"):
        return _relu(rule)
    return _clip(rule, upper)


# --------------------------------------------------------------------------------------------
# max pooling with switches


def normalize_padding(padding, ndim: int, shape=None, window=None, strides=None) -> tuple[tuple[int, int], ...]:
    """Explicit ``((lo, hi), …)`` padding for one of ``"VALID"``, ``"SAME"`` or pairs per dim.

    ``"SAME"`` follows ``lax.padtype_to_pads`` (needs ``shape``, ``window``, ``strides``).
    """
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(f"`padding` (={padding!r}) must be 'VALID', 'SAME' or a sequence of (lo, hi) pairs")
        if shape is None:
            raise ValueError("`padding` as a string needs the input shape")
        return tuple(tuple(int(a) for a in pr) for pr in lax.padtype_to_pads(shape, window, strides, padding.upper()))
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise ValueError(f"`padding` (={padding!r}) must be 'VALID', 'SAME' or a sequence of (lo, hi) pairs") from None
    if len(pads) != ndim:
        raise ValueError(f"`padding` (={padding!r}) needs one (lo, hi) pair per dimension ({ndim})")
    return pads


def _switch_dtype(n: int):
    return jnp.int8 if n <= 127 else (jnp.int16 if n <= 32767 else jnp.int32)


def _geometry(shape, window, strides, padding):
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(shape, padding))
    out = tuple((p - w) // s + 1 for p, w, s in zip(padded, window, strides))
    return padded, out


def _validate_pool(shape, window, strides, padding):
    nd = len(shape)
    window = tuple(int(w) for w in window)
    strides = tuple(int(s) for s in strides)
    if len(window) != nd or len(strides) != nd:
        raise ValueError(f"`window` (={window}) and `strides` (={strides}) need one entry per dimension of "
                         f"the input (shape {tuple(shape)})")
    if any(w < 1 for w in window) or any(s < 1 for s in strides):
        raise ValueError(f"`window` (={window}) and `strides` (={strides}) must be positive")
    padding = normalize_padding(padding, nd, shape, window, strides)
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise ValueError(f"`padding` (={padding}) must be non-negative")
    padded, _ = _geometry(shape, window, strides, padding)
    if any(w > p for w, p in zip(window, padded)):
        raise ValueError(f"`window` (={window}) must fit inside the padded input (shape {padded})")
    return window, strides, padding


def _offsets(window):
    return list(itertools.product(*[range(w) for w in window]))


def _window_slice(xp, offset, out, strides):
    limit = tuple(o + (n - 1) * s + 1 for o, n, s in zip(offset, out, strides))
    return lax.slice(xp, offset, limit, strides)


def pool_with_switches(x, window: Sequence[int], strides: Sequence[int], padding="VALID"):
    """Max pool ``x`` and record the switches.

    Args:
        x: array of any rank, floating dtype (padding uses ``-inf``, as ``flax.linen.max_pool``).
        window: window size per dimension of ``x`` (use 1 for batch and channel dimensions).
        strides: stride per dimension.
        padding: ``"VALID"``, ``"SAME"`` or ``((lo, hi), …)`` per dimension.

    Returns:
        ``(y, switches)``: ``y`` the pooled values (identical to ``lax.reduce_window`` with
        ``lax.max``), ``switches`` an integer array of ``y``'s shape holding the row-major index,
        inside its window, of the first maximum.

    Example:
        >>> import jax.numpy as jnp
        >>> y, s = pool_with_switches(jnp.array([[1.0, 3.0, 3.0, 0.0]]), (1, 2), (1, 2))
        >>> y, s
        (Array([[3., 3.]], dtype=float32), Array([[1, 0]], dtype=int8))
    """
    x, window, strides, padding = _check_pool_input(x, window, strides, padding)
    return _pool_fwd_impl(x, window, strides, padding)


def _pool_fwd_impl(x, window, strides, padding):
    init = jnp.array(-jnp.inf, x.dtype)
    y = lax.reduce_window(x, init, lax.max, window, strides, padding)
    xp = lax.pad(x, init, [(lo, hi, 0) for lo, hi in padding])
    _, out = _geometry(x.shape, window, strides, padding)
    offsets = _offsets(window)
    dtype = _switch_dtype(len(offsets))
    switches = jnp.zeros(out, dtype)
    # Walk the window backwards so that the first position equal to the maximum wins.
    for k in range(len(offsets) - 1, -1, -1):
        hit = _window_slice(xp, offsets[k], out, strides) == y
        switches = jnp.where(hit, jnp.array(k, dtype), switches)
    return y, switches


def unpool(g, switches, input_shape: Sequence[int], window: Sequence[int], strides: Sequence[int],
           padding="VALID", spread: bool = False):
    """Scatter ``g`` (shape of the pooled output) to the positions the switches recorded.

    Args:
        g: signal of the pooled output's shape, floating dtype.
        switches: from :func:`pool_with_switches` (same shape as ``g``).
        input_shape: shape of the pooling input.
        window, strides, padding: as for :func:`pool_with_switches`.
        spread: send ``g`` to every position of each window instead (the transpose of a
            sum-pool); used to find receptive fields.

    Returns:
        An array of ``input_shape`` and ``g``'s dtype: at each input position, the sum of the
        signals of the outputs whose switch points there (overlapping windows add up).
    """
    input_shape = tuple(int(n) for n in input_shape)
    window, strides, padding = _validate_pool(input_shape, window, strides, padding)
    return _unpool_impl(g, switches, input_shape, window, strides, padding, spread)


def _unpool_impl(g, switches, input_shape, window, strides, padding, spread=False):
    # Work on the stride phases: input position p = q·s + r (r in [0, s)) receives, from window
    # offset k = m·s + r, the signal of output o = q − m. So each offset's selected signal is
    # only shifted (by m) onto its phase grid, at output resolution, and the s1·s2·… phase
    # grids are interleaved once at the end; no interior-padded full-size array per offset.
    padded, out = _geometry(input_shape, window, strides, padding)
    grid = tuple(-(-p // s) for p, s in zip(padded, strides))  # phase-grid length per dimension
    zero = jnp.zeros((), g.dtype)
    offsets = _offsets(window)
    phases: dict = {}
    # Visit offsets last to first: at each input position the signals then add up in the
    # row-major order of the outputs, the order of XLA's select-and-scatter, so overlapping
    # windows give bit-identical sums.
    for k in range(len(offsets) - 1, -1, -1):
        offset = offsets[k]
        phase = tuple(o % s for o, s in zip(offset, strides))
        shift = tuple(o // s for o, s in zip(offset, strides))
        part = g if spread else jnp.where(switches == k, g, zero)
        placed = lax.pad(part, zero, [(m, q - m - n, 0) for m, q, n in zip(shift, grid, out)])
        phases[phase] = placed if phase not in phases else phases[phase] + placed
    nd = len(input_shape)
    empty = jnp.zeros(grid, g.dtype)
    stacked = jnp.stack([phases.get(r, empty) for r in itertools.product(*[range(s) for s in strides])])
    stacked = stacked.reshape(tuple(strides) + grid)  # (s_1, …, s_N, q_1, …, q_N)
    perm = tuple(a for d in range(nd) for a in (nd + d, d))  # → (q_1, s_1, q_2, s_2, …)
    full = stacked.transpose(perm).reshape(tuple(q * s for q, s in zip(grid, strides)))
    start = tuple(lo for lo, _ in padding)
    return lax.slice(full, start, tuple(a + n for a, n in zip(start, input_shape)))


@functools.lru_cache(maxsize=None)
def _switched_pool(input_shape, window, strides, padding, spread):
    @jax.custom_vjp
    def pool(x):
        return lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, window, strides, padding)

    def fwd(x):
        y, switches = _pool_fwd_impl(x, window, strides, padding)
        return y, (None if spread else switches)

    def bwd(switches, g):
        if spread:
            return (_unpool_impl(jnp.abs(g), None, input_shape, window, strides, padding, spread=True),)
        return (_unpool_impl(g, switches, input_shape, window, strides, padding),)

    pool.defvjp(fwd, bwd)
    return pool


def _check_pool_input(x, window, strides, padding):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`x` must have a floating dtype, got {x.dtype}")
    return (x,) + _validate_pool(x.shape, window, strides, padding)


def max_pool_switched(x, window: Sequence[int], strides: Sequence[int], padding="VALID"):
    """Max pooling whose VJP unpools through switches recorded in the forward pass.

    Same value and same VJP as ``lax.reduce_window(x, -inf, lax.max, window, strides,
    padding)`` (hence ``flax.linen.max_pool``), ties to the first maximum; the VJP keeps only
    the switches (``int8`` when the window has at most 127 positions).

    Args:
        x: floating array of any rank.
        window, strides, padding: per dimension of ``x``, as for :func:`pool_with_switches`.

    Returns:
        The pooled array.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0, 2.0, 2.0, 1.0, 0.0]])
        >>> jax.grad(lambda v: max_pool_switched(v, (1, 3), (1, 2)).sum())(x)
        Array([[0., 1., 1., 0., 0.]], dtype=float32)
    """
    x, window, strides, padding = _check_pool_input(x, window, strides, padding)
    return _switched_pool(tuple(x.shape), window, strides, padding, False)(x)


def max_pool_spread(x, window: Sequence[int], strides: Sequence[int], padding="VALID"):
    """Max pooling whose VJP sends ``|g|`` to every position of each window (the :data:`FOOTPRINT` rule).

    The forward value is the max pool's; the backward pass is the transpose of a sum pool of
    ``|g|`` (:func:`unpool` with ``spread=True``), so every input position a pooled unit can
    read receives a positive signal: what finds a unit's receptive field, not a saliency map.

    Args:
        x: floating array of any rank.
        window, strides, padding: per dimension of ``x``, as for :func:`pool_with_switches`.

    Returns:
        The pooled array.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0, 2.0, 2.0, 1.0, 0.0]])
        >>> jax.grad(lambda v: max_pool_spread(v, (1, 3), (1, 2)).sum())(x)
        Array([[1., 1., 2., 1., 1.]], dtype=float32)
    """
    x, window, strides, padding = _check_pool_input(x, window, strides, padding)
    return _switched_pool(tuple(x.shape), window, strides, padding, True)(x)
