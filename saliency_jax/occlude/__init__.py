"""Occlusion sensitivity: the window grid, the engine, exact incremental re-inference.

* :mod:`~saliency_jax.occlude.windows` — window grid geometry, per-pixel coverage and the per-pixel
  mean / sum of window scores (shared by every engine);
* :mod:`~saliency_jax.occlude.engine` — ``occlusion``: every window at once with ``vmap``, the
  jitted model over fixed-size chunks (``lax.map``), sharded over local devices;
* :mod:`~saliency_jax.occlude.incremental` — exact incremental re-inference (only the region a
  window changes is recomputed), its FLOP report, and the approximate capped mode;
* :mod:`~saliency_jax.occlude.compile` — how the engines compile and run: the CPU compile
  options, the one jit policy, fixed-size chunks.

Example:
    >>> import jax.numpy as jnp
    >>> from saliency_jax.occlude import occlusion
    >>> f = lambda p, x: x.sum(axis=(1, 2))                   # (B, H, W, C) -> (B, C)
    >>> occlusion(f, None, jnp.ones((4, 4, 2)), window=2, stride=2, target=0).shape
    (4, 4)
"""

from saliency_jax.occlude.engine import DEFAULT_CHUNK_SIZE, METHODS, occlusion, tune_chunk_size
from saliency_jax.occlude.incremental import FlopReport, capped_occlusion, flop_report
from saliency_jax.occlude.windows import PLACEMENTS, WindowGrid, coverage, window_grid

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "METHODS",
    "PLACEMENTS",
    "FlopReport",
    "WindowGrid",
    "capped_occlusion",
    "coverage",
    "flop_report",
    "occlusion",
    "tune_chunk_size",
    "window_grid",
]
