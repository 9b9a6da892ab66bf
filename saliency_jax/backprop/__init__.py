"""Backprop saliency: ReLU rules and switch pooling as custom VJPs, for any JAX function.

* :mod:`~saliency_jax.backprop.rules` — ``relu_rule("gradient" | "deconvnet" | "guided")``
  and max pooling with recorded switches (``max_pool_switched``, ``pool_with_switches``,
  ``unpool``);
* :mod:`~saliency_jax.backprop.matcher` — ``match(eqn)``: what one jaxpr equation is to the
  rules (a rectifier, a named activation, a max pool, a custom-derivative call …), the one
  classification the modules below share;
* :mod:`~saliency_jax.backprop.rewrite` — ``with_rule(fn, rule)`` rewrites any function's
  jaxpr so its ReLUs and max pools use them (one :mod:`saliency_jax.jaxpr` handler,
  ``RuleHandler``);
* :mod:`~saliency_jax.backprop.findings` — ``report(fn, *args)`` lists what the rewrite
  replaces and what it does not cover (strict mode's refusals); softmax heads at the output are
  accepted (:mod:`~saliency_jax.backprop.heads`);
* :mod:`~saliency_jax.backprop.receptive_field` — one forward pass, then backward passes that
  stay in a unit's receptive field (what ``project_units`` and ``top_activations`` use);
* :mod:`~saliency_jax.backprop.methods` — ``deconvnet``, ``guided_backprop``, ``gradient``,
  ``project_units`` and the dataset-level ``top_activations`` ("top 9");
* :mod:`~saliency_jax.backprop.gradients` — ``integrated_gradients``, ``input_x_gradient``,
  ``smooth_grad`` (SmoothGrad, SmoothGrad², VarGrad over any gradient method), in fixed-size chunks;
* :mod:`~saliency_jax.backprop.grad_cam` — ``grad_cam`` and ``guided_grad_cam``;
* :mod:`~saliency_jax.backprop.display` — ``normalize_map`` (display scaling of maps) and
  ``top_grid`` / ``top_figure`` (the paper's figure blocks of a "top 9").

Example:
    >>> import jax, jax.numpy as jnp
    >>> from saliency_jax import backprop
    >>> f = backprop.with_rule(lambda x: jax.nn.relu(x) @ jnp.array([1.0, -1.0]), "deconvnet")
    >>> jax.grad(f)(jnp.array([1.0, 2.0]))
    Array([1., 0.], dtype=float32)
"""

from saliency_jax.backprop.display import normalize_map as normalize_map
from saliency_jax.backprop.display import top_figure as top_figure
from saliency_jax.backprop.display import top_grid as top_grid
from saliency_jax.backprop.methods import TopActivations as TopActivations
from saliency_jax.backprop.methods import UnitProjections as UnitProjections
from saliency_jax.backprop.methods import deconvnet as deconvnet
from saliency_jax.backprop.methods import gradient as gradient
from saliency_jax.backprop.methods import guided_backprop as guided_backprop
from saliency_jax.backprop.methods import layer_features as layer_features
from saliency_jax.backprop.methods import project_units as project_units
from saliency_jax.backprop.methods import saliency_maps as saliency_maps
from saliency_jax.backprop.methods import top_activations as top_activations
from saliency_jax.backprop.rules import FOOTPRINT as FOOTPRINT
from saliency_jax.backprop.rules import RULES as RULES
from saliency_jax.backprop.rules import max_pool_spread as max_pool_spread
from saliency_jax.backprop.rules import max_pool_switched as max_pool_switched
from saliency_jax.backprop.rules import pool_with_switches as pool_with_switches
from saliency_jax.backprop.rules import clip_rule as clip_rule
from saliency_jax.backprop.rules import relu_rule as relu_rule
from saliency_jax.backprop.rules import unpool as unpool
from saliency_jax.backprop.findings import Finding as Finding
from saliency_jax.backprop.findings import Report as Report
from saliency_jax.backprop.findings import report as report
from saliency_jax.backprop.rewrite import RuleHandler as RuleHandler
from saliency_jax.backprop.rewrite import with_rule as with_rule
# the gradient family
from saliency_jax.backprop.gradients import GRADIENT_METHODS as GRADIENT_METHODS
from saliency_jax.backprop.gradients import QUADRATURES as QUADRATURES
from saliency_jax.backprop.gradients import SMOOTHING as SMOOTHING
from saliency_jax.backprop.gradients import blur_baseline as blur_baseline
from saliency_jax.backprop.gradients import input_x_gradient as input_x_gradient
from saliency_jax.backprop.gradients import integrated_gradients as integrated_gradients
from saliency_jax.backprop.gradients import quadrature as quadrature
from saliency_jax.backprop.gradients import smooth_grad as smooth_grad
from saliency_jax.backprop.grad_cam import INTERPOLATIONS as INTERPOLATIONS
from saliency_jax.backprop.grad_cam import grad_cam as grad_cam
from saliency_jax.backprop.grad_cam import guided_grad_cam as guided_grad_cam
from saliency_jax.backprop.grad_cam import last_spatial_layer as last_spatial_layer
from saliency_jax.backprop.grad_cam import layer_outputs as layer_outputs
from saliency_jax.backprop.grad_cam import upsample_map as upsample_map

__all__ = [
    # methods
    "saliency_maps", "deconvnet", "guided_backprop", "gradient", "layer_features",
    "UnitProjections", "project_units", "TopActivations", "top_activations",
    # display
    "normalize_map", "top_grid", "top_figure",
    # rules
    "RULES", "FOOTPRINT", "relu_rule", "clip_rule", "max_pool_switched", "max_pool_spread", "pool_with_switches", "unpool",
    # rewrite
    "with_rule", "RuleHandler", "report", "Report", "Finding",
    # the gradient family
    "integrated_gradients", "input_x_gradient", "smooth_grad", "quadrature", "blur_baseline", "QUADRATURES",
    "SMOOTHING", "GRADIENT_METHODS", "grad_cam", "guided_grad_cam", "last_spatial_layer", "layer_outputs",
    "upsample_map", "INTERPOLATIONS",
]
