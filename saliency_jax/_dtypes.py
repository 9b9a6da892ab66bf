"""Dtypes shared by every entry point: the one output-dtype rule and the ``compute_dtype`` option.

Every map (occlusion, deconvnet, guided, gradient, unit projections) is float32 whatever the
image's floating dtype, and float64 for a float64 image (which exists only with
``jax_enable_x64``); ``compute_dtype`` runs the model in another floating dtype (e.g. bfloat16:
image and floating params cast) without changing the maps' dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["map_dtype", "check_compute_dtype", "cast_floating"]


def map_dtype(image_dtype) -> jnp.dtype:
    """The dtype of every map (occlusion and backprop alike) for an image of ``image_dtype``.

    float32 for float16, bfloat16 and float32 images; float64 for a float64 image (which
    exists only with ``jax_enable_x64``). ``compute_dtype`` never changes it.

    Example:
        >>> import jax.numpy as jnp
        >>> map_dtype(jnp.bfloat16), map_dtype(jnp.float32)
        (dtype('float32'), dtype('float32'))
    """
    return jnp.dtype(jnp.float64) if jnp.dtype(image_dtype) == jnp.float64 else jnp.dtype(jnp.float32)


def check_compute_dtype(compute_dtype) -> str | None:
    """``compute_dtype`` validated: ``None`` or the name of a floating dtype (``"bfloat16"`` …).

    Raises:
        TypeError: naming ``compute_dtype`` for anything but ``None`` or a floating dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> check_compute_dtype(jnp.bfloat16), check_compute_dtype(None)
        ('bfloat16', None)
    """
    if compute_dtype is None:
        return None
    accepted = "None (the image's dtype) or a floating dtype such as jnp.bfloat16, jnp.float16 or jnp.float32"
    try:
        dtype = None if isinstance(compute_dtype, (bool, int, float)) else jnp.dtype(compute_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`compute_dtype` (={compute_dtype!r}) must be {accepted}")
    return dtype.name


def cast_floating(tree: Any, dtype) -> Any:
    """``tree`` with every floating-point leaf cast to ``dtype`` (``None``: unchanged); other
    leaves (integers, step counters, keys) as they are.

    Example:
        >>> import jax.numpy as jnp
        >>> out = cast_floating({"w": jnp.ones(2), "step": jnp.int32(3)}, jnp.bfloat16)
        >>> out["w"].dtype, out["step"].dtype
        (dtype(bfloat16), dtype('int32'))
    """
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)
