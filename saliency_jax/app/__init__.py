"""The applications: the folder job, rendering, the demo and the command line.

* :mod:`~saliency_jax.app.explain` — ``explain_paths``: heat maps for files and folders, with
  raw arrays, overlays, panels, sidecars and a gallery; reruns skip finished images. It runs
  the steps of its own modules:

  * :mod:`~saliency_jax.app.settings` — the options that decide the outputs, and their checks;
  * :mod:`~saliency_jax.app.inputs` — finding image files, naming their outputs, hashing, reading;
  * :mod:`~saliency_jax.app.maps` — the library calls on one batch (prediction and every method);
  * :mod:`~saliency_jax.app.panels` — one image's tiles and panel;
  * :mod:`~saliency_jax.app.sidecar` — output names, the JSON sidecar and the rule for "done";
  * :mod:`~saliency_jax.app.gallery` — the ``index.html`` gallery (also the demo's);

  * :mod:`~saliency_jax.app.worker` — one batch start to finish (read, compute, write), shared
    by the local engine and :mod:`~saliency_jax.app.ray_engine` (Ray actors, the ``ray`` extra);

* :mod:`~saliency_jax.app.faithfulness` — every map method and the baselines scored against
  the generated test split's masks;
* :mod:`~saliency_jax.app.audit` — the spurious-cue audit (the original write-up's lesson);
* :mod:`~saliency_jax.app.render` — colour maps, overlays and panels;
* :mod:`~saliency_jax.app.demo` — the demo on the shipped checkpoint;
* :mod:`~saliency_jax.app.cli` — ``saliency-jax`` (also ``python -m saliency_jax``); each
  subcommand's options and run in :mod:`~saliency_jax.app.commands`, one module each.

Example:
    >>> from saliency_jax import app
    >>> app.render.to_uint8([[0.0, 0.5, 1.0]]).tolist()    # names load on first use
    [[0, 128, 255]]
"""

from saliency_jax._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(globals(), {
    "explain": ("saliency_jax.app.explain", None),
    "settings": ("saliency_jax.app.settings", None),
    "inputs": ("saliency_jax.app.inputs", None),
    "maps": ("saliency_jax.app.maps", None),
    "panels": ("saliency_jax.app.panels", None),
    "sidecar": ("saliency_jax.app.sidecar", None),
    "gallery": ("saliency_jax.app.gallery", None),
    "worker": ("saliency_jax.app.worker", None),
    "ray_engine": ("saliency_jax.app.ray_engine", None),
    "faithfulness": ("saliency_jax.app.faithfulness", None),
    "audit": ("saliency_jax.app.audit", None),
    "render": ("saliency_jax.app.render", None),
    "demo": ("saliency_jax.app.demo", None),
    "cli": ("saliency_jax.app.cli", None),
    "commands": ("saliency_jax.app.commands", None),
    "explain_paths": ("saliency_jax.app.explain", "explain_paths"),
    "ExplainResult": ("saliency_jax.app.explain", "ExplainResult"),
    "run_demo": ("saliency_jax.app.demo", "run_demo"),
})
