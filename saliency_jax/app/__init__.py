"""The applications: the folder job, rendering, the demo and the command line.

* :mod:`~saliency_jax.app.explain` — ``explain_paths``: heat maps for files and folders, with
  raw arrays, overlays, panels, sidecars and a gallery; reruns skip finished images;
* :mod:`~saliency_jax.app.render` — colour maps, overlays and panels;
* :mod:`~saliency_jax.app.demo` — the demo on the shipped checkpoint;
* :mod:`~saliency_jax.app.cli` — ``saliency-jax`` (also ``python -m saliency_jax``).

Example:
    >>> from saliency_jax import app
    >>> sorted(app.__all__)[:2]
    ['ExplainResult', 'cli']
"""

from saliency_jax._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(globals(), {
    "explain": ("saliency_jax.app.explain", None),
    "render": ("saliency_jax.app.render", None),
    "demo": ("saliency_jax.app.demo", None),
    "cli": ("saliency_jax.app.cli", None),
    "explain_paths": ("saliency_jax.app.explain", "explain_paths"),
    "ExplainResult": ("saliency_jax.app.explain", "ExplainResult"),
    "run_demo": ("saliency_jax.app.demo", "run_demo"),
})
