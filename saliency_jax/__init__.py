"""saliency_jax: what a convnet looks at, fast.

Occlusion sensitivity (every window at once, chunked, sharded over local devices), deconvnet,
guided backprop and gradients for any JAX function (custom-VJP rules, max-pool switches), and
the Zeiler & Fergus family of convnets to run them on.

Example:
    >>> import saliency_jax as sj
    >>> model = sj.load()                                  # the shipped checkpoint
    >>> x = sj.data.preprocess(sj.generate(2, split="test").images)
    >>> sj.occlusion(model.apply_fn, model.params, x, window=32, stride=8, target=1).shape
    (2, 128, 128)
"""

from saliency_jax import backprop as backprop
from saliency_jax import checkpoint as checkpoint
from saliency_jax import data as data
from saliency_jax import explain as explain
from saliency_jax import evaluate as evaluate
from saliency_jax import incremental as incremental
from saliency_jax import jaxpr as jaxpr
from saliency_jax import models as models
from saliency_jax import render as render
from saliency_jax import train as train
from saliency_jax import windows as windows
from saliency_jax.backprop import deconvnet as deconvnet
from saliency_jax.backprop import gradient as gradient
from saliency_jax.backprop import guided_backprop as guided_backprop
from saliency_jax.backprop import project_units as project_units
from saliency_jax.backprop import saliency_maps as saliency_maps
from saliency_jax.backprop import top_activations as top_activations
from saliency_jax.models import get_model as get_model
from saliency_jax.checkpoint import CheckpointError as CheckpointError
from saliency_jax.checkpoint import CheckpointMismatchError as CheckpointMismatchError
from saliency_jax.checkpoint import LoadedModel as LoadedModel
from saliency_jax.checkpoint import load as load
from saliency_jax.data import generate as generate
from saliency_jax.data import to_model_input as to_model_input
from saliency_jax.demo import run_demo as run_demo
from saliency_jax.explain import ExplainResult as ExplainResult
from saliency_jax.explain import explain_paths as explain_paths
from saliency_jax.incremental import flop_report as flop_report
from saliency_jax.occlusion import DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE
from saliency_jax.occlusion import METHODS as METHODS
from saliency_jax.occlusion import occlusion as occlusion
from saliency_jax.occlusion import tune_chunk_size as tune_chunk_size
from saliency_jax.windows import coverage as coverage
from saliency_jax.windows import window_grid as window_grid

__version__ = "0.1.0"
