"""Rendering helpers. For now: display normalisation of saliency maps.

Zeiler & Fergus (2014) show their projections without saying how they were scaled. We
choose, and document, two normalisations; both are per map, robust to a few extreme
pixels, and send an all-zero map to a constant image instead of dividing by zero:

* ``"signed"`` (for deconvnet / guided / gradient maps shown as images, the paper's look):
  ``0.5 + 0.5 · m / s`` clipped to ``[0, 1]``, where ``s`` is the ``percentile``-th percentile
  of ``|m|`` over the whole map (all pixels and channels). Zero is mid-grey, the sign and the
  colour of the signal are kept, and one scale is shared by the channels so hues are not
  distorted.
* ``"abs"`` (a heat map, as in Simonyan et al.'s saliency maps): ``max_c |m|`` divided by
  the ``percentile``-th percentile of that ``(H, W)`` map, clipped to ``[0, 1]``.

The maps of one figure are normalised independently (each map's own scale), since their
magnitudes differ by orders of magnitude between layers and units; compare magnitudes
with the raw maps, not the rendered ones.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["normalize_map", "NORMALIZATIONS"]

NORMALIZATIONS: tuple[str, ...] = ("signed", "abs")


def normalize_map(m, *, method: str = "signed", percentile: float = 99.5, eps: float = 1e-12):
    """Scale saliency maps to ``[0, 1]`` for display.

    Args:
        m: ``(..., H, W, C)`` maps (any leading axes; each ``(H, W, C)`` map is scaled alone),
            floating dtype.
        method: ``"signed"`` → ``(..., H, W, C)`` with zero at 0.5; ``"abs"`` → ``(..., H, W)``
            channel-wise maximum of ``|m|``.
        percentile: the percentile of ``|m|`` mapped to full scale (``100`` = the maximum).
        eps: floor for the scale (an all-zero map renders as 0.5 / 0).

    Returns:
        float32 array in ``[0, 1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> normalize_map(jnp.array([[[-2.0], [1.0]]]), percentile=100.0)[..., 0]
        Array([[0.  , 0.75]], dtype=float32)
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"`method` (={method!r}) must be one of {NORMALIZATIONS}")
    if not isinstance(percentile, (int, float)) or not 0.0 < percentile <= 100.0:
        raise ValueError(f"`percentile` (={percentile!r}) must be a number in (0, 100]")
    m = jnp.asarray(m)
    if m.ndim < 3:
        raise ValueError(f"`m` (shape {m.shape}) must be (..., H, W, C)")
    if not jnp.issubdtype(m.dtype, jnp.floating):
        raise TypeError(f"`m` (dtype {m.dtype}) must have a floating dtype")
    m = m.astype(jnp.float32)
    if method == "abs":
        a = jnp.max(jnp.abs(m), axis=-1)  # (..., H, W)
        lead = a.shape[:-2]
        s = jnp.percentile(a.reshape(lead + (-1,)), percentile, axis=-1)
        s = jnp.maximum(s, eps)
        return jnp.clip(a / s[..., None, None], 0.0, 1.0)
    lead = m.shape[:-3]
    s = jnp.percentile(jnp.abs(m).reshape(lead + (-1,)), percentile, axis=-1)
    s = jnp.maximum(s, eps)
    return jnp.clip(0.5 + 0.5 * m / s[..., None, None, None], 0.0, 1.0)
