"""Occlusion sensitivity: the window grid, the engine, exact incremental re-inference.

* :mod:`~saliency_jax.occlude.windows` — window grid geometry, per-pixel coverage and the per-pixel
  mean / sum of window scores (shared by every engine);
* :mod:`~saliency_jax.occlude.options` — the options of a call: one frozen, validated record
  (:class:`~saliency_jax.occlude.options.OcclusionOptions`), the fill and chunk checks, the
  counted-FLOP rule of ``method="auto"``;
* :mod:`~saliency_jax.occlude.engine` — ``occlusion``: every window at once with ``vmap``, the
  jitted model over fixed-size chunks (``lax.map``), sharded over local devices;
* :mod:`~saliency_jax.occlude.incremental` — exact incremental re-inference (only the region a
  window changes is recomputed);
* :mod:`~saliency_jax.occlude.flops` — counted FLOPs of full and incremental re-inference
  (``flop_report``);
* :mod:`~saliency_jax.occlude.drill_down` and :mod:`~saliency_jax.occlude.capped` — the two
  APPROXIMATE modes, side by side: fewer windows (adaptive drill-down), or less recomputed per
  window (a capped projective field);
* :mod:`~saliency_jax.occlude.tune` — what ``method="auto"`` and ``chunk_size="auto"`` measure
  and choose;
* :mod:`saliency_jax._compile` — how the engines compile and run: the CPU compile
  options, the one jit policy, fixed-size chunks.

Example:
    >>> import jax.numpy as jnp
    >>> from saliency_jax.occlude import occlusion
    >>> f = lambda p, x: x.sum(axis=(1, 2))                   # (B, H, W, C) -> (B, C)
    >>> occlusion(f, None, jnp.ones((4, 4, 2)), window=2, stride=2, target=0).shape
    (4, 4)
"""

from saliency_jax._lazy import deprecated_aliases
from saliency_jax.occlude.capped import capped_occlusion
from saliency_jax.occlude.engine import DEFAULT_CHUNK_SIZE, occlusion
from saliency_jax.occlude.flops import FlopReport, flop_report
from saliency_jax.occlude.options import EXECUTIONS, OcclusionOptions
from saliency_jax.occlude.tune import tune_chunk_size
from saliency_jax.occlude.windows import PLACEMENTS, WindowGrid, coverage, window_grid

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EXECUTIONS",
    "PLACEMENTS",
    "FlopReport",
    "OcclusionOptions",
    "WindowGrid",
    "capped_occlusion",
    "coverage",
    "flop_report",
    "occlusion",
    "tune_chunk_size",
    "window_grid",
]

__getattr__ = deprecated_aliases(__name__, {"METHODS": ("EXECUTIONS", EXECUTIONS)})
