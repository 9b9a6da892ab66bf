"""One set of argument checks, shared by every entry point (occlusion, backprop, the folder job).

Each check runs at the Python boundary, before any tracing, and raises ``TypeError`` (wrong kind
of value) or ``ValueError`` (right kind, bad value) with a message that names the argument, the
value received and what is accepted. The same bad input gets the same error from every entry
point: ``tests/test_validate.py`` checks that.

Example:
    >>> import numpy as np
    >>> from saliency_jax import _validate
    >>> x, batched = _validate.image(np.zeros((8, 8, 3), np.float32))
    >>> x.shape, batched
    ((1, 8, 8, 3), False)
    >>> _validate.target("all", n=1, num_classes=2)[0]
    'all'
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_int",
    "is_concrete",
    "integer",
    "boolean",
    "pair",
    "choice",
    "hashable",
    "apply_fn",
    "image",
    "target",
    "num_classes",
    "params",
    "signature",
]


def is_int(value) -> bool:
    """True for a Python or numpy integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_concrete(x) -> bool:
    """True unless ``x`` is a tracer (inside ``jit``/``vmap``, values cannot be checked)."""
    return not isinstance(x, jax.core.Tracer)


def integer(name: str, value, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]`` (either bound optional)."""
    if not is_int(value):
        raise TypeError(f"`{name}` (={value!r}) must be an int")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise ValueError(f"`{name}` (={value!r}) must be {span}")
    return int(value)


def boolean(name: str, value) -> bool:
    """``value`` if it is a bool (``0``/``1`` and other truthy values are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` (={value!r}) must be a bool")
    return value


def pair(name: str, value, *, lo: int = 1) -> tuple[int, int]:
    """``value`` as a ``(rows, cols)`` pair of ints ``>= lo``; one int means both axes."""
    if is_int(value):
        vals = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        vals = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"`{name}` (={value!r}) must be an int or a pair of ints (rows, cols)")
    if min(vals) < lo:
        raise ValueError(f"`{name}` (={value!r}) must be >= {lo} along both axes")
    return vals


def choice(name: str, value, allowed: tuple) -> Any:
    """``value`` if it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"`{name}` (={value!r}) must be one of {allowed}")
    return value


def hashable(name: str, fn: Callable) -> Callable:
    """``fn`` if it is hashable: a function passed to a method keys its compilation cache."""
    try:
        hash(fn)
    except TypeError:
        raise TypeError(
            f"`{name}` (={fn!r}) must be hashable (it keys the compilation cache); pass a plain function "
            "or a functools.partial over hashable arguments, and the arrays as `params`"
        ) from None
    return fn


def apply_fn(fn) -> Callable:
    """``fn`` if it is callable and hashable (it keys the compilation cache of every method)."""
    if not callable(fn):
        raise TypeError(f"`apply_fn` (={fn!r}) must be callable as apply_fn(params, images (B, H, W, C)) -> (B, K)")
    return hashable("apply_fn", fn)


def image(value) -> tuple[jax.Array, bool]:
    """``(batch (N, H, W, C), batched)`` from one image ``(H, W, C)`` or a batch ``(N, H, W, C)``.

    The pixels must be floating point and, where concrete, finite (NaN or inf pixels would give
    maps that look clean but mean nothing).
    """
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"`image` must be an array (H, W, C) or (N, H, W, C), got {type(value).__name__}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"`image` (dtype={value.dtype}) must be a floating-point array (float32); "
            "convert integer pixels with the model's preprocessing first"
        )
    if value.ndim not in (3, 4):
        raise ValueError(f"`image` (shape={tuple(value.shape)}) must have rank 3 (H, W, C) or 4 (N, H, W, C)")
    if 0 in value.shape:
        raise ValueError(f"`image` (shape={tuple(value.shape)}) must not have an empty axis")
    if is_concrete(value) and not np.isfinite(np.asarray(value)).all():
        raise ValueError("`image` contains non-finite values (NaN or inf); only finite pixels are accepted")
    batched = value.ndim == 4
    x = jnp.asarray(value)
    return (x if batched else x[None]), batched


def target(value, *, n: int, num_classes: int) -> tuple[str, jax.Array]:
    """``(kind, targets (n,) int32)`` with kind ``"predicted"``, ``"all"`` or ``"index"``.

    Accepted: ``None`` (the predicted class), ``"all"``, an int class index, or one int per image
    (a list or an integer array of shape ``(n,)``, traced or concrete). Concrete indices must lie
    in ``[0, num_classes)``. For ``"predicted"`` and ``"all"`` the targets are zeros.
    """
    accepted = (f"None (the predicted class), 'all', an int class index or one int per image "
                f"(shape ({n},)), each in [0, {num_classes})")
    if value is None or (isinstance(value, str) and value == "all"):
        return ("predicted" if value is None else "all"), jnp.zeros((n,), jnp.int32)
    if isinstance(value, bool) or isinstance(value, str):
        raise (TypeError if isinstance(value, bool) else ValueError)(f"`target` (={value!r}) must be {accepted}")
    if is_int(value):
        arr = jnp.full((n,), int(value), jnp.int32)
    elif hasattr(value, "shape") or isinstance(value, (list, tuple)):
        arr = value if isinstance(value, jax.core.Tracer) else jnp.asarray(np.asarray(value))
        if not jnp.issubdtype(arr.dtype, jnp.integer):
            raise TypeError(f"`target` (={value!r}, dtype={arr.dtype}) must be {accepted}")
        if arr.ndim == 0:
            arr = jnp.broadcast_to(arr, (n,))
        elif arr.shape != (n,):
            raise ValueError(f"`target` (={value!r}, shape={tuple(arr.shape)}) must be {accepted}")
        arr = arr.astype(jnp.int32)
    else:
        raise TypeError(f"`target` (={value!r}) must be {accepted}")
    if is_concrete(arr):
        t = np.asarray(arr)
        if t.min() < 0 or t.max() >= num_classes:
            raise ValueError(f"`target` (={np.asarray(value).tolist()!r}) must be {accepted}")
    return "index", arr


def signature(tree: Any) -> tuple:
    """What a compiled function depends on in ``tree``: its structure and each leaf's shape and dtype.

    Hashable; a cache key for per-model work (output shapes here, ``tune_chunk_size``,
    ``flop_report``). A leaf without a dtype (a Python scalar, a string) counts by its type.

    Example:
        >>> import numpy as np
        >>> from saliency_jax._validate import signature
        >>> signature({"w": np.zeros((2, 3), np.float32)})[1]
        (((2, 3), 'float32'),)
    """
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves))


@functools.lru_cache(maxsize=256)
def _output_shape(fn, params_signature, batch_shape, dtype) -> tuple[int, ...]:
    treedef, leaves = params_signature
    abstract = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])
    out = jax.eval_shape(fn, abstract, jax.ShapeDtypeStruct(batch_shape, dtype))
    if not hasattr(out, "shape"):
        raise ValueError(f"`apply_fn` must return one array of scores (B, K); it returned {type(out).__name__}")
    return tuple(out.shape)


def params(value) -> Any:
    """``value`` if every leaf of the pytree is a numeric array or a number (what ``jit`` can take).

    A leaf of another kind (a string, ``object``, a function) is refused with a ``TypeError``
    that names ``params`` and the leaf's path, instead of an error from deep inside JAX.

    Example:
        >>> import numpy as np
        >>> try:
        ...     params({"dense": {"w": np.zeros(2), "name": "fc"}})
        ... except TypeError as err:
        ...     print(err)
        `params` leaf ['dense']['name'] (='fc', type str) must be a numeric array or a number; move non-array settings into apply_fn (e.g. a functools.partial)
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
        if isinstance(leaf, jax.core.Tracer) or _array_like(leaf):
            continue
        shown = repr(leaf) if len(repr(leaf)) <= 60 else repr(leaf)[:57] + "..."
        raise TypeError(
            f"`params` leaf {jax.tree_util.keystr(path)} (={shown}, type {type(leaf).__name__}) must be a numeric "
            "array or a number; move non-array settings into apply_fn (e.g. a functools.partial)")
    return value


def _array_like(leaf) -> bool:
    """A leaf ``jit`` takes: a number, or an array of a numeric, bool or JAX-extended (keys) dtype."""
    if isinstance(leaf, (numbers.Number, np.bool_)):
        return True
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or not hasattr(leaf, "shape"):
        return False
    try:
        return bool(jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
                    or jnp.issubdtype(dtype, jax.dtypes.extended))
    except TypeError:
        return False


_check_params = params


def num_classes(fn, params, images) -> int:
    """K, from ``fn(params, images (B, H, W, C)) -> (B, K)`` traced abstractly (cached per shape).

    ``params`` is checked first (:func:`params`): every entry point that takes a model counts
    its classes here, so each refuses a non-array leaf with the same error.
    """
    _check_params(params)
    shape = _output_shape(fn, signature(params), tuple(images.shape), images.dtype)
    if len(shape) != 2 or shape[0] != images.shape[0]:
        raise ValueError(
            f"`apply_fn` must map a batch (B, H, W, C) to scores (B, K); on a batch of shape "
            f"{tuple(images.shape)} it returned shape {shape}"
        )
    return shape[1]
