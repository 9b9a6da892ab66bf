"""Rank metrics: does the map rank the object's pixels above the rest?

* :func:`relevance_rank` (Arras et al. 2022, "CLEVR-XAI"): of the ``K = |mask|`` most relevant
  pixels, the share inside the mask.
* :func:`pixel_auc`: ROC-AUC of the map as a classifier of mask pixels — the probability that a
  random mask pixel outranks a random background pixel, ties counted ½ (as
  ``sklearn.metrics.roc_auc_score``). 0.5 is chance.

Maps are ``(N, H, W)`` (signed, used as they are) or ``(N, H, W, C)`` (``max_c |m|``); NaN pixels
rank below every number and tie with each other (:mod:`saliency_jax.metrics.checks`). A
constant map scores chance on both: the mask's area share and 0.5.

Example:
    >>> import numpy as np
    >>> from saliency_jax.metrics import ranking
    >>> maps = np.array([[[4.0, 3.0], [1.0, 2.0]]], np.float32)
    >>> masks = np.array([[[True, False], [False, True]]])
    >>> ranking.relevance_rank(maps, masks).tolist(), ranking.pixel_auc(maps, masks).tolist()
    ([0.5], [0.75])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from saliency_jax.metrics.checks import check_maps_masks, relevance

__all__ = ["relevance_rank", "pixel_auc"]


def _rank_one(rel, mask):
    """Expected share of mask pixels among the top ``K``, ties at the cut-off broken at random."""
    k = mask.sum()
    cut = jnp.sort(rel)[::-1][jnp.maximum(k, 1) - 1]  # the K-th largest value
    above, tied = rel > cut, rel == cut
    n_above, n_tied = above.sum(), tied.sum()
    in_above = (above & mask).sum()
    in_tied = (tied & mask).sum()
    share = (in_above + (k - n_above) * in_tied / n_tied) / jnp.maximum(k, 1)
    return jnp.where(k > 0, share, jnp.nan).astype(jnp.float32)


@jax.jit
def _relevance_rank(maps, masks):
    n = masks.shape[0]
    return jax.vmap(_rank_one)(relevance(maps).reshape(n, -1), masks.reshape(n, -1))


def relevance_rank(maps, masks) -> jax.Array:
    """Relevance-rank accuracy: the share of the ``K = |mask|`` top-ranked pixels inside the mask.

    Ties at the cut-off are shared out evenly (the expected value under random tie-breaking):
    with ``a`` pixels strictly above the ``K``-th largest value, ``a_in`` of them in the mask, and
    ``t`` pixels equal to it, ``t_in`` in the mask, the score is
    ``(a_in + (K − a) · t_in / t) / K``. A constant map scores ``K / (H·W)``, the chance level.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` floating point.
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N,) float32`` in ``[0, 1]``; NaN where the mask is empty.

    Example:
        >>> import numpy as np
        >>> maps = np.array([[[1.0, 1.0, 1.0, 0.0]]], np.float32)
        >>> masks = np.array([[[True, False, False, True]]])          # K = 2; 3-way tie for 2 places
        >>> relevance_rank(maps, masks).tolist()
        [0.3333333432674408]
    """
    check_maps_masks(maps, masks)
    return _relevance_rank(jnp.asarray(maps), jnp.asarray(masks))


def _auc_one(rel, mask):
    n_pos = mask.sum()
    n_neg = mask.size - n_pos
    negatives = jnp.sort(jnp.where(mask, jnp.inf, rel))  # background values first; mask pixels as +inf
    below = jnp.searchsorted(negatives, rel, side="left")  # background pixels strictly below
    not_above = jnp.searchsorted(negatives, rel, side="right")  # ... below or tied
    # Each mask pixel's share of background pixels it beats (ties ½); rel < +inf keeps both <= n_neg.
    wins = (below + not_above).astype(jnp.float32) / (2.0 * jnp.maximum(n_neg, 1).astype(jnp.float32))
    auc = jnp.where(mask, wins, 0.0).sum() / jnp.maximum(n_pos, 1).astype(jnp.float32)
    return jnp.where((n_pos > 0) & (n_neg > 0), auc, jnp.nan)


@jax.jit
def _pixel_auc(maps, masks):
    n = masks.shape[0]
    return jax.vmap(_auc_one)(relevance(maps).reshape(n, -1), masks.reshape(n, -1))


def pixel_auc(maps, masks) -> jax.Array:
    """ROC-AUC of each map as a pixel classifier of its mask (Mann–Whitney U, ties ½).

    ``AUC = P(m_object > m_background) + ½ P(m_object = m_background)`` over all pairs of one
    mask pixel and one background pixel — what ``sklearn.metrics.roc_auc_score(mask.ravel(),
    map.ravel())`` returns — computed in ``O(HW log HW)`` by sorting, not by pairs.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` floating point.
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N,) float32`` in ``[0, 1]``; NaN where the mask is empty or covers the whole image.

    Example:
        >>> import numpy as np
        >>> maps = np.array([[[2.0, 1.0, 1.0, 0.0]]], np.float32)
        >>> masks = np.array([[[True, True, False, False]]])   # pairs: 2>1, 2>0, 1=1 (½), 1>0
        >>> pixel_auc(maps, masks).tolist()
        [0.875]
    """
    check_maps_masks(maps, masks)
    return _pixel_auc(jnp.asarray(maps), jnp.asarray(masks))
