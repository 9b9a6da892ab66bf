"""One way to run a function over a collection in fixed-size batches: pad the last, drop the padding.

Every batch has the same shape, so a jitted ``fn`` compiles once per run; the last batch is
padded by repeating its last item (a real input, so the padding can raise no error an input
would not) and the padded rows are dropped from the result.

Example:
    >>> import numpy as np
    >>> [(idx.tolist(), real) for idx, real in padded_batches(5, 2)]
    [([0, 1], 2), ([2, 3], 2), ([4, 4], 1)]
    >>> in_batches(lambda a: {"twice": a * 2}, 5, 2, np.arange(5))["twice"].tolist()
    [0, 2, 4, 6, 8]
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np

__all__ = ["padded_batches", "in_batches"]


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(indices, real)`` for each batch of ``n`` items: ``min(batch_size, n)`` indices, the last
    batch's tail repeating item ``n − 1``, and how many of them are real (the first ``real``)."""
    if n < 1:
        return
    size = max(1, min(int(batch_size), n))
    for start in range(0, n, size):
        yield np.minimum(np.arange(start, start + size), n - 1), min(size, n - start)


def in_batches(fn: Callable[..., Any], n: int, batch_size: int, *arrays) -> Any:
    """``fn(*(a[indices] for a in arrays))`` over :func:`padded_batches`, concatenated along axis 0.

    ``fn`` returns an array or a pytree of arrays, each with the batch as its leading axis; the
    padded rows are dropped.
    """
    parts = [(fn(*(np.asarray(a)[idx] if isinstance(a, np.ndarray) else a[idx] for a in arrays)), real)
             for idx, real in padded_batches(n, batch_size)]
    if not parts:
        raise ValueError("`n` (=0) must be at least 1: there is nothing to run")
    return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(l)[:r] for l, (_, r) in zip(leaves, parts)]),
                        *(p for p, _ in parts))
