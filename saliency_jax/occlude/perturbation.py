"""The perturbation family on the masked-evaluation core: feature ablation, Shapley values, KernelSHAP, RISE.

Each method evaluates the model on many masked copies ``x·(1 − m) + fill·m`` of one image —
the occlusion engine's job (:func:`saliency_jax.occlude.engine.evaluate_masks`: chunks of fixed
size, sharded over devices, exact incremental re-inference where a mask's support is compact) —
and combines the scores:

* :func:`feature_ablation` — each feature (segment) replaced by the baseline alone; every pixel
  gets its segment's score drop (Captum ``FeatureAblation`` with ``feature_mask``);
* :func:`shapley_values` — exact Shapley values over all ``2^F`` coalitions of the features
  (refused above :data:`MAX_EXACT_FEATURES`);
* :func:`shapley_sampling` — Shapley values estimated over random permutations (Captum
  ``ShapleyValueSampling``); every permutation when ``n_samples >= F!`` (then exact);
* :func:`kernel_shap` — Lundberg & Lee's KernelSHAP: coalitions weighted by the Shapley kernel,
  weighted least squares under the efficiency constraint; every coalition when
  ``n_samples >= 2^F`` (then exact);
* :func:`rise` — Petsiuk et al. (2018): random binary grids upsampled bilinearly with random
  shifts; the saliency is ``Σᵢ scoreᵢ·Mᵢ / (N·p)``.

Features are integer ids ``0 … F − 1`` per pixel, ``(H, W)`` shared by every image or ``(N, H, W)``
per image (:func:`saliency_jax.occlude.segments.segments` makes them). Ids with gaps are
accepted: ``F`` is the largest id plus one and an absent id is a feature without pixels (its
value is 0; for the Shapley methods it still counts in ``F``). A feature is *present* when it
keeps the image's pixels and *absent* when they are replaced by ``baseline``.

The Shapley methods and feature ablation give one value per feature; the maps spread it over
the feature's pixels: ``(H, W)`` signed maps (positive = the feature supports the class).

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> import saliency_jax as sj
    >>> f = lambda p, x: x.sum(axis=(1, 2))                          # (B, H, W, C) -> (B, C): additive
    >>> seg = np.repeat(np.arange(2), 2)[None].repeat(4, 0)          # (4, 4): left half 0, right half 1
    >>> image = jnp.arange(16.0).reshape(4, 4, 1)
    >>> sj.shapley_values(f, None, image, seg, target=0)[0].tolist()  # additive model: φ = each half's sum
    [52.0, 52.0, 68.0, 68.0]
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax.occlude import masked
from saliency_jax.occlude.engine import evaluate_masks

__all__ = ["MAX_EXACT_FEATURES", "feature_ablation", "shapley_values", "shapley_sampling", "kernel_shap", "rise",
           "check_feature_mask", "shapley_weights"]

MAX_EXACT_FEATURES = 16
"""The most features :func:`shapley_values` accepts: ``2^16 = 65,536`` model evaluations per image
(about 50 s of a 224² ZF-style model on a 2-core CPU, or a minute of a ResNet-50 on a GPU). Above it,
use :func:`shapley_sampling` or :func:`kernel_shap`."""


# --------------------------------------------------------------------------------------------
# Checks (Python boundary, before tracing)
# --------------------------------------------------------------------------------------------


def check_feature_mask(feature_mask, images_shape) -> tuple[np.ndarray, int]:
    """``(segments (N, H, W) int32, F)``: ``feature_mask`` checked against images ``(N, H, W, C)``.

    Accepted: concrete integer ids ``>= 0``, shaped ``(H, W)`` (shared) or ``(N, H, W)``; gaps in
    the ids are accepted (``F`` = largest id + 1).

    Example:
        >>> check_feature_mask(np.array([[0, 2], [2, 0]]), (1, 2, 2, 3))[1]
        3
    """
    n, h, w, _ = images_shape
    if isinstance(feature_mask, jax.core.Tracer):
        raise TypeError("`feature_mask` must be concrete (a numpy or jax array outside jit): the number of "
                        "features F sets the number of model evaluations")
    if not hasattr(feature_mask, "shape") and not isinstance(feature_mask, (list, tuple)):
        raise TypeError(f"`feature_mask` (={type(feature_mask).__name__}) must be an integer array (H, W) or (N, H, W)")
    arr = np.asarray(feature_mask)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`feature_mask` (dtype={arr.dtype}) must hold integer feature ids 0..F-1")
    if arr.shape == (h, w):
        arr = np.broadcast_to(arr, (n, h, w))
    elif arr.shape != (n, h, w):
        raise ValueError(f"`feature_mask` (shape={arr.shape}) must be ({h}, {w}) or ({n}, {h}, {w}) for images "
                         f"of shape {tuple(images_shape)}")
    if arr.min() < 0:
        raise ValueError(f"`feature_mask` (smallest id {int(arr.min())}) must hold ids >= 0")
    return np.ascontiguousarray(arr, np.int32), int(arr.max()) + 1


def _images(apply_fn, image):
    _validate.apply_fn(apply_fn)
    return _validate.image(image)


def _samples(name: str, value) -> int:
    return _validate.integer(name, value, lo=1)


def _key(key):
    if key is None:
        return jax.random.key(0)
    if not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                            or (key.dtype == jnp.uint32 and key.shape == (2,)))):
        raise TypeError(f"`key` (={key!r}) must be a jax.random key (jax.random.key(0)) or None")
    return key


def _engine_options(chunk_size, devices, method, compute_dtype) -> dict:
    return dict(chunk_size=chunk_size, devices=devices, method=method, compute_dtype=compute_dtype)


def _spread(values, segments, batched: bool, target) -> jax.Array:
    """Per-feature values ``(N, F, K')`` onto the pixels: ``(N, K', H, W)`` → the documented shapes."""
    out = jnp.take_along_axis(values[:, None, None, :, :], jnp.asarray(segments)[:, :, :, None, None], axis=3)
    out = jnp.moveaxis(out[:, :, :, 0, :], -1, 1)  # (N, K', H, W)
    if not (isinstance(target, str) and target == "all"):
        out = out[:, 0]
    return out if batched else out[0]


def _with_class_axis(scores, target):
    return scores if isinstance(target, str) and target == "all" else scores[..., None]


# --------------------------------------------------------------------------------------------
# Feature ablation
# --------------------------------------------------------------------------------------------


def feature_ablation(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    feature_mask,
    *,
    target: int | Sequence[int] | jax.Array | str | None = None,
    baseline: float | jax.Array | str = 0.0,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
) -> jax.Array:
    """Feature ablation (Captum ``FeatureAblation`` with ``feature_mask``): each feature replaced
    by ``baseline`` alone; every pixel gets its feature's score drop ``f(x)[t] − f(x_ablated)[t]``.

    Args:
        apply_fn, params: the model, as for :func:`saliency_jax.occlusion`.
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating point, finite.
        feature_mask: integer feature ids ``0 … F − 1``, ``(H, W)`` or ``(N, H, W)`` (gaps accepted).
        target: an int, one per image ``(N,)``, ``None`` (predicted) or ``"all"``.
        baseline: what an ablated pixel becomes: a number, a per-channel ``(C,)``, a baseline image,
            ``"mean"`` or ``"blur"`` (occlusion's fills).
        chunk_size, devices, method, compute_dtype: the engine's, as for :func:`saliency_jax.occlusion`;
            ``method="auto"`` runs compact segments incrementally where the counted FLOPs say so.

    Returns:
        float32 signed map ``(H, W)`` / ``(N, H, W)`` (``(K, H, W)`` / ``(N, K, H, W)`` for ``"all"``).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> f = lambda p, x: x.sum(axis=(1, 2))
        >>> seg = np.array([[0, 0, 1, 1]] * 2)
        >>> feature_ablation(f, None, jnp.ones((2, 4, 1)), seg, target=0).tolist()
        [[4.0, 4.0, 4.0, 4.0], [4.0, 4.0, 4.0, 4.0]]
    """
    images, batched = _images(apply_fn, image)
    segments, n_features = check_feature_mask(feature_mask, images.shape)
    masks = masked.coalition_masks(np.eye(n_features, dtype=bool), segments)
    drops = evaluate_masks(apply_fn, params, images, masks, target=target, fill=baseline, score="difference",
                           **_engine_options(chunk_size, devices, method, compute_dtype))  # (N, F[, K])
    return _spread(_with_class_axis(drops, target), segments, batched, target)


# --------------------------------------------------------------------------------------------
# Shapley values: exact, sampled permutations, KernelSHAP
# --------------------------------------------------------------------------------------------


def shapley_weights(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """``(off (2^F, F) bool, weights (2^F, F) float64)``: every coalition (row ``s``: feature ``i``
    present where bit ``i`` of ``s`` is set, ``off`` its complement) and the weights that turn the
    coalitions' values into exact Shapley values, ``φ = v @ weights``.

    Example:
        >>> off, wts = shapley_weights(2)
        >>> wts.tolist()   # φ₀ = ½(v{0} − v{}) + ½(v{0,1} − v{1})
        [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    """
    f = n_features
    present = ((np.arange(2 ** f)[:, None] >> np.arange(f)[None]) & 1).astype(bool)
    size = present.sum(1)
    fact = [math.factorial(k) for k in range(f + 1)]
    w_in = np.array([fact[s - 1] * fact[f - s] / fact[f] if s > 0 else 0.0 for s in size])  # i ∈ S, |S∖i| = s−1
    w_out = np.array([fact[s] * fact[f - s - 1] / fact[f] if s < f else 0.0 for s in size])  # i ∉ S
    weights = np.where(present, w_in[:, None], -w_out[:, None])
    return ~present, weights


def shapley_values(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    feature_mask,
    *,
    target: int | Sequence[int] | jax.Array | str | None = None,
    baseline: float | jax.Array | str = 0.0,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
) -> jax.Array:
    """Exact Shapley values of the features: all ``2^F`` coalitions evaluated (absent features
    replaced by ``baseline``), ``φᵢ = Σ_{S ∌ i} |S|!(F − |S| − 1)!/F! · (v(S ∪ i) − v(S))``.

    Args:
        apply_fn, params, image, feature_mask, target, baseline, chunk_size, devices, method,
            compute_dtype: as for :func:`feature_ablation`; at most :data:`MAX_EXACT_FEATURES`
            features.

    Returns:
        float32 signed map, shaped as :func:`feature_ablation`'s; the features' values sum to
        ``f(x)[t] − f(baseline)[t]`` (efficiency).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> f = lambda p, x: x.prod(axis=(1, 2))            # v(S) = 1 only with both features present
        >>> seg = np.array([[0, 1]])
        >>> shapley_values(f, None, jnp.ones((1, 2, 1)), seg, target=0).tolist()
        [[0.5, 0.5]]
    """
    images, batched = _images(apply_fn, image)
    segments, n_features = check_feature_mask(feature_mask, images.shape)
    if n_features > MAX_EXACT_FEATURES:
        raise ValueError(f"`feature_mask` has F={n_features} features; exact Shapley values evaluate 2^F "
                         f"coalitions and accept at most F={MAX_EXACT_FEATURES}: use shapley_sampling or kernel_shap")
    off, weights = shapley_weights(n_features)
    values = evaluate_masks(apply_fn, params, images, masked.coalition_masks(off, segments), target=target,
                            fill=baseline, **_engine_options(chunk_size, devices, method, compute_dtype))
    phi = jnp.einsum("npk,pf->nfk", _with_class_axis(values, target), jnp.asarray(weights, jnp.float32),
                     precision=jax.lax.Precision.HIGHEST)
    return _spread(phi, segments, batched, target)


def _permutations(n_features: int, n_samples: int, key) -> np.ndarray:
    """``(n, F)`` permutations: all ``F!`` when ``n_samples >= F!``, else ``n_samples`` random ones."""
    if n_features <= 10 and n_samples >= math.factorial(n_features):
        return np.asarray(list(itertools.permutations(range(n_features))), np.int64).reshape(-1, n_features)
    keys = jax.random.split(key, n_samples)
    return np.asarray(jax.vmap(lambda k: jax.random.permutation(k, n_features))(keys), np.int64)


def shapley_sampling(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    feature_mask,
    *,
    target: int | Sequence[int] | jax.Array | str | None = None,
    baseline: float | jax.Array | str = 0.0,
    n_samples: int = 25,
    key: jax.Array | None = None,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
) -> jax.Array:
    """Shapley values estimated over random permutations of the features (Captum
    ``ShapleyValueSampling``): along each permutation the features are added one at a time, and
    each gets the score change it makes; the mean over the permutations.

    ``n_samples·(F − 1) + 2`` evaluations (the empty and full coalitions are shared by every
    permutation). When ``n_samples >= F!`` every permutation is enumerated once and the values
    are exact. Along each permutation the changes telescope, so the values sum to
    ``f(x)[t] − f(baseline)[t]`` whatever ``n_samples``.

    Args:
        apply_fn, params, image, feature_mask, target, baseline, chunk_size, devices, method,
            compute_dtype: as for :func:`feature_ablation`.
        n_samples: permutations, ``>= 1``.
        key: a ``jax.random`` key (default ``jax.random.key(0)``); one set of permutations serves
            every image of a batch.

    Returns:
        float32 signed map, shaped as :func:`feature_ablation`'s.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> f = lambda p, x: x.prod(axis=(1, 2))
        >>> shapley_sampling(f, None, jnp.ones((1, 2, 1)), np.array([[0, 1]]), target=0, n_samples=2).tolist()
        [[0.5, 0.5]]
    """
    images, batched = _images(apply_fn, image)
    segments, f = check_feature_mask(feature_mask, images.shape)
    n_samples = _samples("n_samples", n_samples)
    perms = _permutations(f, n_samples, _key(key))  # (n, F)
    n = perms.shape[0]
    # coalition rows: 0 = empty (all off), 1 = full (none off), then per permutation the F − 1 in between
    off = np.ones((2 + n * max(f - 1, 0), f), bool)
    off[1] = False
    index = np.empty((n, f + 1), np.int64)  # row of coalition k of permutation j (first k features present)
    index[:, 0], index[:, f] = 0, 1
    for j, perm in enumerate(perms):
        for k in range(1, f):
            row = 2 + j * (f - 1) + (k - 1)
            off[row, perm[:k]] = False
            index[j, k] = row
    values = evaluate_masks(apply_fn, params, images, masked.coalition_masks(off, segments), target=target,
                            fill=baseline, **_engine_options(chunk_size, devices, method, compute_dtype))
    values = _with_class_axis(values, target)  # (N, P, K')
    steps = values[:, index[:, 1:]] - values[:, index[:, :-1]]  # (N, n, F, K'): the change of adding perm[j, k]
    onehot = np.zeros((n, f, f), np.float32)
    onehot[np.arange(n)[:, None], np.arange(f)[None], perms] = 1.0
    phi = jnp.einsum("njkc,jkf->nfc", steps, jnp.asarray(onehot), precision=jax.lax.Precision.HIGHEST) / n
    return _spread(phi, segments, batched, target)


def _kernel_coalitions(f: int, n_samples: int, key) -> tuple[np.ndarray, np.ndarray]:
    """``(present (P, F) bool, weights (P,))``: all ``2^F − 2`` proper coalitions with their Shapley
    kernel weights when ``n_samples >= 2^F``, else ``n_samples`` drawn from the kernel (size
    ``s`` with probability ∝ ``(F − 1)/(s(F − s))``, then a uniform subset), weight 1 each."""
    if f <= 20 and n_samples >= 2 ** f:
        present = ((np.arange(1, 2 ** f - 1)[:, None] >> np.arange(f)[None]) & 1).astype(bool)
        s = present.sum(1)
        weights = (f - 1) / (np.array([math.comb(f, k) for k in s]) * s * (f - s))
        return present, weights
    sizes = np.arange(1, f)
    prob = (f - 1) / (sizes * (f - sizes))
    k1, k2 = jax.random.split(key)
    drawn = np.asarray(jax.random.choice(k1, sizes, (n_samples,), p=jnp.asarray(prob / prob.sum())))
    scores = np.asarray(jax.random.uniform(k2, (n_samples, f)))
    ranks = scores.argsort(1).argsort(1)
    return ranks < drawn[:, None], np.ones(n_samples)


def kernel_shap(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    feature_mask,
    *,
    target: int | Sequence[int] | jax.Array | str | None = None,
    baseline: float | jax.Array | str = 0.0,
    n_samples: int = 1000,
    key: jax.Array | None = None,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
) -> jax.Array:
    """KernelSHAP (Lundberg & Lee 2017): coalitions weighted by the Shapley kernel
    ``π(S) = (F − 1) / (C(F, |S|)·|S|·(F − |S|))``, and the linear model ``v(S) ≈ φ₀ + Σ_{i∈S} φᵢ``
    fitted by weighted least squares under the efficiency constraint ``Σφᵢ = v(all) − v(∅)``
    (``φ₀ = v(∅)``).

    ``n_samples`` coalitions are drawn from the kernel (plus the empty and the full one); when
    ``n_samples >= 2^F`` every proper coalition is enumerated once with its kernel weight and the
    values equal the exact Shapley values. The values sum to ``f(x)[t] − f(baseline)[t]``
    whatever ``n_samples``.

    Args:
        apply_fn, params, image, feature_mask, target, baseline, chunk_size, devices, method,
            compute_dtype: as for :func:`feature_ablation`.
        n_samples: coalitions, ``>= 1``.
        key: a ``jax.random`` key (default ``jax.random.key(0)``), shared by a batch's images.

    Returns:
        float32 signed map, shaped as :func:`feature_ablation`'s.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> f = lambda p, x: x.prod(axis=(1, 2))
        >>> kernel_shap(f, None, jnp.ones((1, 2, 1)), np.array([[0, 1]]), target=0, n_samples=4).tolist()
        [[0.5, 0.5]]
    """
    images, batched = _images(apply_fn, image)
    segments, f = check_feature_mask(feature_mask, images.shape)
    n_samples = _samples("n_samples", n_samples)
    present, weights = (np.zeros((0, f), bool), np.zeros(0)) if f == 1 else _kernel_coalitions(f, n_samples, _key(key))
    off = np.concatenate([np.ones((1, f), bool), np.zeros((1, f), bool), ~present])
    values = evaluate_masks(apply_fn, params, images, masked.coalition_masks(off, segments), target=target,
                            fill=baseline, **_engine_options(chunk_size, devices, method, compute_dtype))
    values = _with_class_axis(values, target)  # (N, P, K')
    empty, total = values[:, 0], values[:, 1] - values[:, 0]  # (N, K')
    if f == 1:
        return _spread(total[:, None], segments, batched, target)
    # eliminate φ_F = total − Σ_{i<F} φᵢ: (z_{<F} − z_F) φ_{<F} ≈ v(S) − v(∅) − z_F·total
    z = present.astype(np.float64)
    design = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(weights)[:, None]
    y = values[:, 2:] - empty[:, None] - jnp.asarray(z[:, -1], jnp.float32)[None, :, None] * total[:, None]
    solve = jnp.asarray(np.linalg.pinv(design * sw) * sw.T, jnp.float32)  # (F − 1, P): least squares
    head = jnp.einsum("fp,npk->nfk", solve, y, precision=jax.lax.Precision.HIGHEST)
    phi = jnp.concatenate([head, (total - head.sum(1))[:, None]], axis=1)
    return _spread(phi, segments, batched, target)


# --------------------------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------------------------


def rise(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    *,
    target: int | Sequence[int] | jax.Array | str | None = None,
    n_masks: int = 4000,
    cell: int = 7,
    p: float = 0.5,
    key: jax.Array | None = None,
    masks=None,
    fill: float | jax.Array | str = 0.0,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    compute_dtype: Any = None,
) -> jax.Array:
    """RISE (Petsiuk et al. 2018): ``Σᵢ scoreᵢ·Mᵢ / (N·p)``, ``scoreᵢ = f(x·Mᵢ + fill·(1 − Mᵢ))[t]``.

    Each mask ``Mᵢ`` (1 = keep) is a random ``cell × cell`` grid of cells kept with probability
    ``p``, upsampled bilinearly to ``(cell + 1)·⌈H/cell⌉`` (and likewise for ``W``) and cropped
    to ``(H, W)`` at a random shift in ``[0, ⌈H/cell⌉) × [0, ⌈W/cell⌉)``. The masks are built
    per chunk, never all at once: memory does not grow with ``n_masks``.

    Args:
        apply_fn, params, image, target: as for :func:`saliency_jax.occlusion`.
        n_masks: ``N``, the number of random masks (``>= 1``; ignored with ``masks``).
        cell: the grid size ``s`` (``1 <= s <= min(H, W)``; ignored with ``masks``).
        p: the probability a cell is kept, in ``(0, 1]``; also the normaliser.
        key: a ``jax.random`` key (default ``jax.random.key(0)``), shared by a batch's images.
        masks: ``None`` or explicit masks ``(N, H, W)`` in ``[0, 1]`` (1 = keep).
        fill: what a removed pixel becomes (occlusion's fills; default 0, the paper's).
        chunk_size, devices, compute_dtype: as for :func:`saliency_jax.occlusion`.

    Returns:
        float32 heat map ``(H, W)`` / ``(N, H, W)`` (``(K, H, W)`` / ``(N, K, H, W)`` for ``"all"``).

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda p, x: x.sum(axis=(1, 2))
        >>> m = jnp.stack([jnp.ones((2, 2)), jnp.zeros((2, 2))])       # keep all, keep nothing
        >>> rise(f, None, jnp.ones((2, 2, 1)), target=0, masks=m, p=0.5).tolist()   # (4·1 + 0·0) / (2·0.5)
        [[4.0, 4.0], [4.0, 4.0]]
    """
    images, batched = _images(apply_fn, image)
    n, h, w, _ = images.shape
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"`p` (={p!r}) must be a probability in (0, 1]")
    if masks is None:
        cell = _validate.integer("cell", cell, lo=1, hi=min(h, w))
        n_masks = _samples("n_masks", n_masks)
        k1, k2, k3 = jax.random.split(_key(key), 3)
        cells = jax.random.bernoulli(k1, p, (n_masks, cell, cell)).astype(jnp.float32)
        shifts = jnp.stack([jax.random.randint(k2, (n_masks,), 0, math.ceil(h / cell)),
                            jax.random.randint(k3, (n_masks,), 0, math.ceil(w / cell))], 1)
        spec = masked.cell_masks(cells, shifts)
        keep = lambda i: masked.rise_mask(cells[i], shifts[i], (h, w))  # noqa: E731
    else:
        spec, kept = _explicit_keep(masks, (h, w))
        keep = lambda i: kept[i]  # noqa: E731
    scores = evaluate_masks(apply_fn, params, images, spec, target=target, fill=fill, method="full",
                            chunk_size=chunk_size, devices=devices, compute_dtype=compute_dtype)
    scores = _with_class_axis(scores, target)  # (N, P, K')
    heat = _weighted_sum(scores, keep, spec[0].n_masks, (h, w)) / (spec[0].n_masks * p)  # (N, K', H, W)
    if not (isinstance(target, str) and target == "all"):
        heat = heat[:, 0]
    return heat if batched else heat[0]


def _explicit_keep(masks, size):
    """RISE's explicit masks ``(N, H, W)`` (1 = keep) checked: ``((spec, data) of the core's masks
    1 − M, M as float32)``."""
    if not hasattr(masks, "shape"):
        raise TypeError(f"`masks` (={type(masks).__name__}) must be an array (N, H, W) in [0, 1]")
    arr = jnp.asarray(masks)
    if arr.ndim != 3 or tuple(arr.shape[1:]) != tuple(size) or arr.shape[0] < 1:
        raise ValueError(f"`masks` (shape={tuple(arr.shape)}) must be (N, {size[0]}, {size[1]}) with N >= 1")
    if arr.dtype != jnp.bool_ and not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`masks` (dtype={arr.dtype}) must be real-valued in [0, 1]")
    if _validate.is_concrete(arr):
        a = np.asarray(arr, np.float64)
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise ValueError(f"`masks` (values in [{a.min()}, {a.max()}]) must lie in [0, 1]")
    kept = arr.astype(jnp.float32)
    return masked.explicit_masks(1.0 - kept), kept


def _weighted_sum(scores, keep: Callable, n_masks: int, size, chunk: int = 64) -> jax.Array:
    """``Σᵢ scores[:, i] · keep(i)``: ``(N, K', H, W)``, the masks rebuilt ``chunk`` at a time."""
    n_chunks = -(-n_masks // chunk)
    idx = jnp.minimum(jnp.arange(n_chunks * chunk), n_masks - 1).reshape(n_chunks, chunk)
    valid = (jnp.arange(n_chunks * chunk) < n_masks).reshape(n_chunks, chunk).astype(jnp.float32)

    def body(total, args):
        ids, ok = args
        m = jax.vmap(keep)(ids) * ok[:, None, None]  # (chunk, H, W)
        return total + jnp.einsum("nik,iyx->nkyx", scores[:, ids], m, precision=jax.lax.Precision.HIGHEST), None

    zero = jnp.zeros((scores.shape[0], scores.shape[2], *size), jnp.float32)
    return jax.lax.scan(body, zero, (idx, valid))[0]
