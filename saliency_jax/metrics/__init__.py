"""Faithfulness metrics: how well a saliency map points at what matters (issue 12).

Map-against-mask metrics (no model): :func:`pointing_game` (tolerant), :func:`energy_pointing_game`,
:func:`relevance_rank`, :func:`pixel_auc`. Model-calling metrics: :func:`deletion_curve`,
:func:`insertion_curve`. Baseline maps that any method should beat: :func:`random_map`,
:func:`centre_prior`, :func:`colour_edge_saliency`.

Maps are ``(N, H, W)`` (signed, used as they are) or ``(N, H, W, C)`` (reduced to ``max_c |m|``);
NaN pixels rank lowest (:mod:`saliency_jax.metrics.checks`). Masks are ``(N, H, W)`` bool.

Example:
    >>> import numpy as np
    >>> from saliency_jax import metrics
    >>> maps = np.zeros((1, 16, 16), np.float32); maps[0, 8, 8] = 1.0
    >>> masks = np.zeros((1, 16, 16), bool); masks[0, 8, 10] = True
    >>> metrics.pointing_game(maps, masks).tolist()
    [1.0]
"""

from saliency_jax.metrics.baselines import centre_prior, colour_edge_saliency, gaussian_blur, random_map
from saliency_jax.metrics.perturbation import Curve, deletion_curve, insertion_curve, pixel_ranks, trapezoid_auc
from saliency_jax.metrics.pointing import DEFAULT_TOLERANCE, energy_pointing_game, peak, pointing_game
from saliency_jax.metrics.ranking import pixel_auc, relevance_rank

__all__ = [
    "Curve",
    "DEFAULT_TOLERANCE",
    "centre_prior",
    "colour_edge_saliency",
    "deletion_curve",
    "energy_pointing_game",
    "gaussian_blur",
    "insertion_curve",
    "peak",
    "pixel_auc",
    "pixel_ranks",
    "pointing_game",
    "random_map",
    "relevance_rank",
    "trapezoid_auc",
]
