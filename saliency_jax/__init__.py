"""saliency_jax: what a convnet looks at, fast.

Two flows, one house:

* :mod:`saliency_jax.occlude` — occlusion sensitivity: every window at once with ``vmap``, the
  jitted model over fixed-size chunks, sharded over local devices, exact incremental re-inference;
* :mod:`saliency_jax.backprop` — deconvnet, guided backprop and gradients for any JAX function
  (custom-VJP rules, max-pool switches), unit projections;
* :mod:`saliency_jax.metrics` — are the maps right? pointing games, ranks, pixel AUC, deletion
  and insertion curves, and model-free baselines;
* :mod:`saliency_jax.model` — the Zeiler & Fergus family of convnets, generated data (with masks
  and a spurious-cue option), training, evaluation and checkpoints;
* :mod:`saliency_jax.app` — the folder job (local or on Ray), rendering, the demo, the
  faithfulness report, the spurious-cue audit and the command line.

Names are re-exported lazily (PEP 562): ``import saliency_jax`` loads jax, numpy and flax only;
optax, orbax and matplotlib load with the first name that needs them.

Example:
    >>> import saliency_jax as sj
    >>> model = sj.load()                                  # the shipped checkpoint
    >>> x = sj.data.preprocess(sj.generate(2, split="test").images)
    >>> sj.occlusion(model.apply_fn, model.params, x, window=32, stride=8, target=1).shape
    (2, 128, 128)
"""

from __future__ import annotations

from saliency_jax._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> (module, attribute); attribute None re-exports the module itself.
_EXPORTS: dict[str, tuple[str, str | None]] = {
    # the flows (subpackages) and the shared interpreter
    "occlude": ("saliency_jax.occlude", None),
    "backprop": ("saliency_jax.backprop", None),
    "metrics": ("saliency_jax.metrics", None),
    "model": ("saliency_jax.model", None),
    "app": ("saliency_jax.app", None),
    "jaxpr": ("saliency_jax.jaxpr", None),
    # modules under their short names (as used in the README)
    "data": ("saliency_jax.model.data", None),
    "render": ("saliency_jax.app.render", None),
    "incremental": ("saliency_jax.occlude.incremental", None),
    # the method registry and its one generic entry
    "methods": ("saliency_jax.methods", None),
    "attribute": ("saliency_jax.methods", "attribute"),
    # occlusion
    "occlusion": ("saliency_jax.occlude.engine", "occlusion"),
    "tune_chunk_size": ("saliency_jax.occlude.tune", "tune_chunk_size"),
    "DEFAULT_CHUNK_SIZE": ("saliency_jax.occlude.engine", "DEFAULT_CHUNK_SIZE"),
    "EXECUTIONS": ("saliency_jax.occlude.options", "EXECUTIONS"),
    "OcclusionOptions": ("saliency_jax.occlude.options", "OcclusionOptions"),
    "flop_report": ("saliency_jax.occlude.flops", "flop_report"),
    "capped_occlusion": ("saliency_jax.occlude.capped", "capped_occlusion"),
    "DrillDown": ("saliency_jax.occlude.drill_down", "DrillDown"),
    "DrillDownRecord": ("saliency_jax.occlude.drill_down", "DrillDownRecord"),
    "drill_down_occlusion": ("saliency_jax.occlude.drill_down", "drill_down_occlusion"),
    "window_grid": ("saliency_jax.occlude.windows", "window_grid"),
    "coverage": ("saliency_jax.occlude.windows", "coverage"),
    # the perturbation family (masked evaluation)
    "evaluate_masks": ("saliency_jax.occlude.engine", "evaluate_masks"),
    "feature_ablation": ("saliency_jax.occlude.perturbation", "feature_ablation"),
    "shapley_values": ("saliency_jax.occlude.perturbation", "shapley_values"),
    "shapley_sampling": ("saliency_jax.occlude.perturbation", "shapley_sampling"),
    "kernel_shap": ("saliency_jax.occlude.perturbation", "kernel_shap"),
    "rise": ("saliency_jax.occlude.perturbation", "rise"),
    "segments": ("saliency_jax.occlude.segments", "segments"),
    # backprop
    "deconvnet": ("saliency_jax.backprop.methods", "deconvnet"),
    "guided_backprop": ("saliency_jax.backprop.methods", "guided_backprop"),
    "gradient": ("saliency_jax.backprop.methods", "gradient"),
    "saliency_maps": ("saliency_jax.backprop.methods", "saliency_maps"),
    "project_units": ("saliency_jax.backprop.methods", "project_units"),
    "top_activations": ("saliency_jax.backprop.methods", "top_activations"),
    # the gradient family
    "integrated_gradients": ("saliency_jax.backprop.gradients", "integrated_gradients"),
    "input_x_gradient": ("saliency_jax.backprop.gradients", "input_x_gradient"),
    "smooth_grad": ("saliency_jax.backprop.gradients", "smooth_grad"),
    "blur_baseline": ("saliency_jax.backprop.gradients", "blur_baseline"),
    "grad_cam": ("saliency_jax.backprop.grad_cam", "grad_cam"),
    "guided_grad_cam": ("saliency_jax.backprop.grad_cam", "guided_grad_cam"),
    # model
    "get_model": ("saliency_jax.model.architectures", "get_model"),
    "generate": ("saliency_jax.model.generated", "generate"),
    "to_model_input": ("saliency_jax.model.image_input", "to_model_input"),
    "load": ("saliency_jax.model.hub", "load"),
    "LoadedModel": ("saliency_jax.model.checkpoint", "LoadedModel"),
    "CheckpointError": ("saliency_jax.model.checkpoint", "CheckpointError"),
    "CheckpointMismatchError": ("saliency_jax.model.checkpoint", "CheckpointMismatchError"),
    # a real ImageNet model and real photos (issue 21)
    "load_efficientnet": ("saliency_jax.model.imagenet", "load_efficientnet"),
    "sample_photos": ("saliency_jax.model.photos", "sample_photos"),
    # app
    "explain_paths": ("saliency_jax.app.explain", "explain_paths"),
    "ExplainResult": ("saliency_jax.app.explain", "ExplainResult"),
    "OutputBusyError": ("saliency_jax.app.explain", "OutputBusyError"),
    "OutputNotWritableError": ("saliency_jax.app.explain", "OutputNotWritableError"),
    "OutputWriteError": ("saliency_jax.app.explain", "OutputWriteError"),
    "run_demo": ("saliency_jax.app.demo", "run_demo"),
    "faithfulness_report": ("saliency_jax.app.faithfulness", "faithfulness_report"),
    "audit": ("saliency_jax.app.audit", "audit"),
}

# Old name -> its replacement; reading the old one warns (DeprecationWarning). Kept for one release.
_DEPRECATED = {"METHODS": "EXECUTIONS"}

__all__, __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS, _DEPRECATED)
