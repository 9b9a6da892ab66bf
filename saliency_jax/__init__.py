"""saliency_jax: what a convnet looks at, fast."""
from saliency_jax import models as models
from saliency_jax.models import get_model as get_model

__version__ = "0.1.0"
