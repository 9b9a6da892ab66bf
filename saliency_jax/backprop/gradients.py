"""Integrated gradients, input × gradient and SmoothGrad / SmoothGrad² / VarGrad over any gradient method.

Every method explains **logits** of ``apply_fn(params, batch (B, H, W, C)) -> (B, K)`` (any JAX
function that treats images independently), takes one image ``(H, W, C)`` or a batch
``(N, H, W, C)`` and the target forms of :func:`saliency_jax.backprop.saliency_maps` (``None``:
each image's predicted class; an int; one int per image; ``"all"``: every class, maps
``(N, K, H, W, C)``). Maps follow the one dtype rule (float32, float64 for a float64 image).

**Memory is bounded by the chunk, never by ``n_steps`` or ``n_samples``.** The interpolation
points of integrated gradients (every image × class × baseline × step) and the noisy copies of
SmoothGrad (every image × sample) are laid out as one flat list of items and run through the
model ``chunk_size`` items at a time, the last chunk padded to the same size (padding items
carry weight 0): one trace per shape, and the working set is one chunk's batch plus the
accumulated maps. With concrete arguments the chunks are driven from Python, one jitted call
per chunk (as the occlusion engine's host loop); under a caller's ``jit``/``vmap`` they run in
one ``lax.scan``. The backward pass is :func:`saliency_jax.backprop.receptive_field.vjp`'s
(switch unpooling, sub-pixel transposes of strided convolutions): the gradient, at about a
third of ``jax.vjp``'s cost on XLA:CPU. ``chunk_size=None`` takes :data:`CPU_CHUNK` on the CPU
and the engine's default elsewhere.

Integrated gradients (Sundararajan et al. 2017) follows Captum's ``IntegratedGradients``: the
same quadratures (:data:`QUADRATURES`, Captum's step points and weights, see
:func:`quadrature`), ``attribution = (x − b) · Σ_s w_s ∇f(b + α_s (x − b))`` and
``return_delta`` its completeness gap ``Σ attribution − (f(x) − f(b))``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> apply_fn = lambda p, x: jnp.stack([jnp.sum(x ** 2, axis=(1, 2, 3)), jnp.sum(x, axis=(1, 2, 3))], -1)
    >>> x = jnp.full((2, 2, 1), 3.0)
    >>> ig, delta = integrated_gradients(apply_fn, None, x, target=0, return_delta=True)
    >>> ig[..., 0].round(4).tolist(), abs(float(delta)) < 1e-4          # x² from 0 to 3: 9 per pixel
    ([[9.0, 9.0], [9.0, 9.0]], True)
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from saliency_jax import _validate
from saliency_jax._filters import blur_matrix
from saliency_jax._dtypes import cast_floating, check_compute_dtype, map_dtype
from saliency_jax.backprop import receptive_field as field
from saliency_jax.backprop.methods import deconvnet, gradient, guided_backprop
from saliency_jax._compile import backend_kind, chunk_indices, default_chunk_size, jit_with_policy

__all__ = ["QUADRATURES", "SMOOTHING", "GRADIENT_METHODS", "CPU_CHUNK", "LIBRARY_DEFAULTS", "quadrature", "integrated_gradients",
           "input_x_gradient", "smooth_grad", "blur_baseline"]

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
"""The quadratures of :func:`integrated_gradients` (Captum's names and rules)."""

SMOOTHING = ("smoothgrad", "smoothgrad_sq", "vargrad")
"""The ``kind`` of :func:`smooth_grad` (Captum's ``NoiseTunnel`` types)."""

DEFAULT_STEPS = 50
DEFAULT_SAMPLES = 50


# --------------------------------------------------------------------------------------------
# quadrature


def _torch_linspace_f32(start: float, end: float, n: int) -> np.ndarray:
    """``torch.linspace(start, end, n)`` (float32) as torch's CPU kernel computes it: a float32
    step, then ``start + step·i`` for the first half and ``end − step·(n − 1 − i)`` for the
    second, each a fused multiply-add (one rounding; emulated here in float64, exact for the
    step counts used)."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    out = np.where(i < n // 2, np.float64(start32) + step * i, np.float64(end32) - step * (n - 1 - i))
    return out.astype(np.float32)


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.polynomial.legendre.leggauss(n)`` mapped from [-1, 1] to [0, 1]: float64 points and weights."""
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1 + x), 0.5 * w


def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Step points ``alphas`` and weights of ``method`` with ``n_steps`` points: two float32 ``(n_steps,)``.

    Exactly Captum's ``approximation_parameters`` (``captum.attr._utils.approximation_methods``):

    * ``gausslegendre``: ``numpy.polynomial.legendre.leggauss(n)`` mapped from [-1, 1] to
      [0, 1] (points ``(1 + x) / 2``, weights ``w / 2``); ``n_steps >= 1``;
    * ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: points
      ``torch.linspace(0, 1 − 1/n, n)`` / ``linspace(1/n, 1, n)`` /
      ``linspace(1/(2n), 1 − 1/(2n), n)`` (float32, as torch computes them), weights ``1/n``;
    * ``riemann_trapezoid``: points ``linspace(0, 1, n)``, weights ``1/n`` with the first and
      last halved (Captum's rule: they sum to ``1 − 1/n``, not 1).

    Riemann rules need ``n_steps >= 2`` (as in Captum).

    Example:
        >>> a, w = quadrature("riemann_trapezoid", 3)
        >>> a.tolist(), w.tolist()
        ([0.0, 0.5, 1.0], [0.1666666716337204, 0.3333333432674408, 0.1666666716337204])
    """
    _validate.choice("method", method, QUADRATURES)
    n = _validate.integer("n_steps", n_steps, lo=1 if method == "gausslegendre" else 2)
    if method == "gausslegendre":
        a, w = _gauss_legendre(n)
        return a.astype(np.float32), w.astype(np.float32)
    weights = np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = _torch_linspace_f32(0.0, 1.0, n)
    elif method == "riemann_left":
        alphas = _torch_linspace_f32(0.0, 1 - 1 / n, n)
    elif method == "riemann_middle":
        alphas = _torch_linspace_f32(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = _torch_linspace_f32(1 / n, 1.0, n)
    return alphas, weights.astype(np.float32)


# --------------------------------------------------------------------------------------------
# shared checks


CPU_CHUNK = 25
"""Interpolation points / noisy copies per model call on the CPU when ``chunk_size`` is not given.

Measured on ZF-224 (2-core x86, shared, informal runs interleaved in rounds, fastest of 3–4):
integrated gradients with 50 steps took 3.48 / 3.28 / 3.21 / 2.76 s at chunks of 5 / 10 / 16 /
25 (XLA's defaults), and 2.70 / 2.55 s at 25 / 50. 25 is the smallest chunk that reached the
fastest group; the working set grows with the chunk, so no larger. On a GPU or TPU the engine's
default (:func:`saliency_jax._compile.default_chunk_size`, ``"full"``) applies."""

LIBRARY_DEFAULTS = True
"""Compile the chunk step with XLA's defaults (YNNPACK on, on XLA:CPU) rather than the engine's
policy (off). With the receptive-field backward pass, YNNPACK on was faster in 4 of 5 paired
informal comparisons on ZF-224 (e.g. 50 steps at chunk 10: 3.28 s on, 3.87 s off) and within
the machine's noise in the fifth."""


def _chunk(chunk_size) -> int:
    if chunk_size is None:
        return CPU_CHUNK if backend_kind() == "cpu" else default_chunk_size("full")
    return _validate.integer("chunk_size", chunk_size, lo=1)


def _targets(apply_fn, params, x, target):
    """``(kind, targets (N,), K)`` as :func:`saliency_jax._validate.target` reads ``target``."""
    k = _validate.num_classes(apply_fn, params, x)
    kind, targets = _validate.target(target, n=x.shape[0], num_classes=k)
    return kind, targets, k


def _rows(kind, targets, n, k):
    """Each output row's image and class: two int32 ``(R,)`` (``R = N``, or ``N·K`` for ``"all"``)."""
    if kind == "all":
        return jnp.repeat(jnp.arange(n, dtype=jnp.int32), k), jnp.tile(jnp.arange(k, dtype=jnp.int32), n)
    return jnp.arange(n, dtype=jnp.int32), targets


def _resolve_predicted(apply_fn, params, x, kind, targets, compute):
    """The targets with ``"predicted"`` replaced by each image's argmax (on the clean image)."""
    if kind != "predicted":
        return targets
    logits = apply_fn(cast_floating(params, compute), cast_floating(x, compute))
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _flat_chunks(total: int, chunk: int):
    """``(items, valid)``: item indices ``(n_chunks, c)`` (padding repeats the last item) and
    whether each position is a real item (``c <= chunk``; see ``chunk_indices``)."""
    idx = chunk_indices(total, chunk)[0]
    pos = jnp.arange(idx.size, dtype=jnp.int32).reshape(idx.shape)
    return idx, pos < total


def blur_baseline(images, sigma: float) -> jax.Array:
    """A Gaussian blur of ``images`` ``(N, H, W, C)`` over H and W: the ``baseline="blur"`` copy.

    Separable, truncated at ``ceil(3σ)``, symmetric edges (``numpy.pad(mode="symmetric")``),
    each 1-D kernel normalised to sum 1. Same shape and dtype as ``images``.

    Example:
        >>> import jax.numpy as jnp
        >>> blur_baseline(jnp.ones((1, 5, 5, 1)), 1.0).sum().round(4).item()
        25.0
    """

    def matrix(size):  # the one blur matrix (saliency_jax._filters), as occlusion's fill="blur"
        return jnp.asarray(blur_matrix(size, sigma))

    x = jnp.asarray(images)
    out = jnp.einsum("hi,wj,nijc->nhwc", matrix(x.shape[1]), matrix(x.shape[2]), x.astype(jnp.float32))
    return out.astype(x.dtype)


def _baselines(baseline, baselines, x, blur_sigma, dtype=jnp.float32):
    """``(Nb, B, H, W, C)`` baselines of ``dtype`` (``Nb`` 1 or N) from ``baseline`` / ``baselines``."""
    shape = tuple(x.shape)
    if baselines is not None:
        if not (isinstance(baseline, numbers.Real) and float(baseline) == 0.0):
            raise ValueError(f"`baseline` (={baseline!r}) and `baselines` exclude each other: pass one "
                             "(`baselines` (B, H, W, C) are averaged over, `baseline` is one per image)")
        if not hasattr(baselines, "shape") or len(baselines.shape) != 4 or tuple(baselines.shape[1:]) != shape[1:]:
            raise ValueError(f"`baselines` (shape={getattr(baselines, 'shape', type(baselines).__name__)}) must be "
                             f"several baseline images (B, H, W, C) = (B, {', '.join(map(str, shape[1:]))})")
        b = _finite("baselines", baselines)
        return b.astype(dtype)[None]
    if isinstance(baseline, str) or (isinstance(baseline, tuple) and baseline and baseline[0] == "blur"):
        if isinstance(baseline, tuple):
            if len(baseline) != 2 or not isinstance(baseline[1], numbers.Real) or not baseline[1] > 0:
                raise ValueError(f"`baseline` (={baseline!r}) must be ('blur', sigma) with sigma > 0 pixels")
            sigma = float(baseline[1])
        else:
            _validate.choice("baseline", baseline, ("blur",))
            sigma = blur_sigma if blur_sigma is not None else 0.1 * max(shape[1], shape[2])
        return blur_baseline(x.astype(dtype), sigma)[:, None]
    if isinstance(baseline, bool) or not (isinstance(baseline, numbers.Real) or hasattr(baseline, "shape")):
        raise TypeError(f"`baseline` (={baseline!r}) must be a number, an array that broadcasts to the image "
                        f"{shape[1:]} or the batch {shape}, 'blur' or ('blur', sigma)")
    b = _finite("baseline", baseline)
    try:
        if b.ndim == 4 and b.shape[0] == shape[0]:
            return jnp.broadcast_to(b, shape).astype(dtype)[:, None]
        return jnp.broadcast_to(b, shape[1:]).astype(dtype)[None, None]
    except ValueError:
        raise ValueError(f"`baseline` (shape={tuple(b.shape)}) must broadcast to the image {shape[1:]} or to the "
                         f"batch {shape}; for several baselines averaged over, pass `baselines=` (B, H, W, C)") from None


def _finite(name, value):
    arr = value if isinstance(value, jax.core.Tracer) else jnp.asarray(np.asarray(value))
    if not jnp.issubdtype(arr.dtype, jnp.floating) and not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"`{name}` (dtype={arr.dtype}) must hold numbers")
    if _validate.is_concrete(arr) and not np.isfinite(np.asarray(arr)).all():
        raise ValueError(f"`{name}` contains non-finite values (NaN or inf); only finite values are accepted")
    return arr


# --------------------------------------------------------------------------------------------
# the chunk loop and the fast backward pass


def _run_chunks(step, static, args, carry, total: int, chunk: int):
    """Fold ``step(*static, args, carry, items (c,), valid (c,)) -> carry`` over ``total`` items in
    fixed-size chunks (:func:`_flat_chunks`).

    With concrete arguments (and one device) the chunks are driven from Python, one jitted call
    of ``step`` per chunk under the engine's compile policy (the occlusion engine's host loop):
    on XLA:CPU a convolution inside a loop body ran about 2× slower than the same convolution
    at the top level of a program (``benchmarks/results/gradients.md``). Under a caller's
    ``jit``/``vmap`` (traced arguments) it is one ``lax.scan``. Either way one trace per shape
    and a working set of one chunk.
    """
    items, valid = _flat_chunks(total, chunk)
    fold = functools.partial(step, *static, args)
    if all(_validate.is_concrete(a) for a in jax.tree.leaves((args, carry))):
        run = jit_with_policy(step, tuple(range(len(static))), args=(args, carry), library_defaults=LIBRARY_DEFAULTS)
        items, valid = np.asarray(items), np.asarray(valid)
        for i, ok in zip(items, valid):
            carry = run(*static, args, carry, i, ok)
        return carry
    return lax.scan(lambda c, iv: (fold(c, *iv), None), carry, (items, valid))[0]


def _input_cotangent(apply_fn, rule, params, images, cotangent):
    """The cotangent of ``images`` ``(B, H, W, C)`` for the logits' ``cotangent`` ``(B, K)`` (or
    ``(S, B, K)``, one backward pass per leading signal) under ``rule``, and the logits.

    One forward pass, then :func:`saliency_jax.backprop.receptive_field.vjp`'s backward pass:
    max pools unpooled through switches recorded in the forward pass (the first maximum,
    PyTorch's rule) and strided convolutions transposed in the sub-pixel form (no multiply by
    the dilation zeros); ``"gradient"`` is the gradient (ReLU ``g·[x > 0]``), as
    :func:`~saliency_jax.backprop.gradient`. Measured on XLA:CPU, ZF-224 at a batch of 10, it
    ran the forward and backward pass about 2–3× faster than ``jax.vjp`` of the model.
    """
    logits, back = field.vjp(apply_fn, params, images, rule=rule, switches=True)
    if cotangent.ndim == 3:
        return logits, jax.vmap(back)(cotangent.astype(logits.dtype))
    return logits, back(cotangent.astype(logits.dtype))


def _rule_maps(rule, apply_fn, params, images, *, target, compute_dtype=None):
    """:func:`~saliency_jax.backprop.saliency_maps` ``(B, ...)`` of a batch under ``rule`` (``target`` an
    int array ``(B,)`` or ``"all"``) with :func:`_input_cotangent`'s backward pass."""
    compute = check_compute_dtype(compute_dtype)
    params, x = cast_floating(params, compute), cast_floating(images, compute)
    k = jax.eval_shape(lambda v: apply_fn(params, v), x).shape[-1]
    if isinstance(target, str):
        cot = jnp.broadcast_to(jnp.eye(k)[:, None, :], (k, x.shape[0], k))
        logits, g = _input_cotangent(apply_fn, rule, params, x, cot)
        g, score = jnp.swapaxes(g, 0, 1), logits
    else:
        logits, g = _input_cotangent(apply_fn, rule, params, x, jax.nn.one_hot(target, k))
        score = jnp.take_along_axis(logits, jnp.asarray(target)[:, None], axis=1)[:, 0]
    ok = jnp.isfinite(score).reshape(score.shape + (1,) * (g.ndim - score.ndim))
    return jnp.where(ok, g.astype(jnp.float32), jnp.nan)


#: The fast maps of the named ReLU-rule methods (one function object each: they key compilations).
_FAST = {name: functools.partial(_rule_maps, rule) for name, rule in
         (("gradient", "gradient"), ("deconvnet", "deconvnet"), ("guided_backprop", "guided"), ("guided", "guided"))}


# --------------------------------------------------------------------------------------------
# integrated gradients


def _ig_step(apply_fn, kind, k, multiply_late, run_dtype, args, acc, i, ok):
    """Add the weighted gradients of one chunk of (row, baseline, step) items to ``acc`` ``(R, H, W, C)``."""
    params, xf, bases, alphas, weights, rows_img, rows_t = args
    b_count, s_count = bases.shape[1], alphas.shape[0]
    r, b, s = i // (b_count * s_count), (i // s_count) % b_count, i % s_count
    img = rows_img[r]
    xi, bi = xf[img], bases[img if bases.shape[0] > 1 else jnp.zeros_like(img), b]
    pts = (bi + alphas[s][:, None, None, None] * (xi - bi)).astype(run_dtype)
    w = jnp.where(ok, weights[s] / b_count, 0.0)
    cot = jax.nn.one_hot(rows_t[r], k, dtype=acc.dtype) * w[:, None]
    g = _input_cotangent(apply_fn, "gradient", params, pts, cot)[1].astype(acc.dtype)
    g = g if multiply_late else g * (xi - bi)
    return acc.at[r].add(jnp.where(ok[:, None, None, None], g, 0.0))


def _ig_finish(apply_fn, kind, multiply_late, delta, chunk, run_dtype, out, args, acc):
    """The maps from the accumulated gradients (Captum's order of products), NaN where the
    target logit is not finite, and the completeness gap."""
    params, xf, bases, _, _, rows_img, rows_t = args
    nb = bases.shape[0]
    if multiply_late:  # one baseline per image: (x − b) · Σ w ∇f, Captum's order
        acc = acc * (xf[rows_img] - (bases[rows_img, 0] if nb > 1 else bases[0, 0][None]))
    logits_x = apply_fn(params, xf.astype(run_dtype)).astype(acc.dtype)
    score_x = logits_x[rows_img, rows_t]
    acc = jnp.where(jnp.isfinite(score_x)[:, None, None, None], acc, jnp.nan)
    gap = None
    if delta:
        flat = bases.reshape((-1,) + bases.shape[2:]).astype(run_dtype)
        logits_b = lax.map(lambda v: apply_fn(params, v[None])[0], flat, batch_size=chunk).astype(acc.dtype)
        logits_b = logits_b.reshape(nb, bases.shape[1], -1)
        score_b = jnp.mean(logits_b[rows_img if nb > 1 else 0, :, rows_t], axis=-1)
        gap = jnp.sum(acc, axis=(1, 2, 3)) - (score_x - score_b)
    return acc.astype(out), (None if gap is None else gap.astype(out))


def _shape_rows(a, kind, n, k, batched):
    """Rows ``(R, ...)`` to ``(N, ...)`` / ``(N, K, ...)``, the batch axis dropped for one image."""
    a = a.reshape((n, k) + a.shape[1:]) if kind == "all" else a
    return a if batched else a[0]


def integrated_gradients(apply_fn: Callable, params: Any, image, *, target=None, baseline=0.0, baselines=None,
                         n_steps: int = DEFAULT_STEPS, method: str = "gausslegendre", chunk_size: int | None = None,
                         return_delta: bool = False, blur_sigma: float | None = None, compute_dtype=None):
    """Integrated gradients (Sundararajan et al. 2017) of the target logit, as Captum computes them.

    ``attribution = (x − b) · Σ_s w_s ∇f_t(b + α_s (x − b))`` with the points ``α_s`` and
    weights ``w_s`` of :func:`quadrature`. With several ``baselines`` the attributions of each
    are averaged (expected gradients, Erion et al. 2021, with the baselines given rather than
    sampled). All interpolation points run in fixed-size chunks (see the module).

    Args:
        apply_fn: ``apply_fn(params, batch (B, H, W, C)) -> (B, K)`` logits; hashable.
        params: its parameters (any pytree).
        image: ``(H, W, C)`` or ``(N, H, W, C)``, floating dtype, finite.
        target: ``None`` (predicted class), an int, one int per image ``(N,)``, or ``"all"``.
        baseline: one baseline per image: a number, an array that broadcasts to the image
            ``(H, W, C)`` (e.g. per-channel ``(C,)``) or to the batch ``(N, H, W, C)`` (one
            per image), ``"blur"`` (a Gaussian blur of each image, σ = ``blur_sigma``, default
            10 % of the image's larger side) or ``("blur", sigma)``. Default 0 (black).
        baselines: several baselines ``(B, H, W, C)``, each used for every image, whose
            attributions are averaged (expected gradients). Excludes ``baseline``. A batch
            of baselines is told from per-image ones by the keyword, never by its shape.
        n_steps: quadrature points per baseline (``>= 1``; ``>= 2`` for the Riemann rules).
        method: one of :data:`QUADRATURES`.
        chunk_size: interpolated images per model call (default :data:`CPU_CHUNK` on the CPU).
        return_delta: also return the completeness gap per map, Captum's convergence delta:
            ``Σ attribution − (f_t(x) − mean_b f_t(b))``.
        blur_sigma: σ in pixels for ``baseline="blur"``.
        compute_dtype: run the model in this floating dtype (maps keep the dtype rule).

    Returns:
        Maps ``(H, W, C)`` / ``(N, H, W, C)`` (``target="all"``: ``(K, H, W, C)`` /
        ``(N, K, H, W, C)``), float32 (float64 for a float64 image); with ``return_delta``
        also the gap ``()`` / ``(N,)`` (``(K,)`` / ``(N, K)``). A map whose target logit at
        the image is not finite is NaN.

    Raises:
        TypeError, ValueError: naming the argument, before tracing: ``n_steps < 1`` (or
            ``< 2`` for a Riemann rule), an unknown ``method``, a baseline that does not
            broadcast to the image, non-finite pixels or baselines, bad targets.

    Example:
        >>> import jax.numpy as jnp
        >>> apply_fn = lambda p, x: jnp.sum(x * p, axis=(1, 2))      # linear: IG = (x - b) * w
        >>> integrated_gradients(apply_fn, jnp.array([2.0, -1.0]), jnp.ones((1, 1, 2)), target=1, n_steps=4)
        Array([[[ 0., -1.]]], dtype=float32)
    """
    _validate.apply_fn(apply_fn)
    alphas, weights = quadrature(method, n_steps)
    _validate.boolean("return_delta", return_delta)
    if blur_sigma is not None and (isinstance(blur_sigma, bool) or not isinstance(blur_sigma, numbers.Real)
                                   or not blur_sigma > 0):
        raise ValueError(f"`blur_sigma` (={blur_sigma!r}) must be a number of pixels > 0")
    chunk = _chunk(chunk_size)
    compute = check_compute_dtype(compute_dtype)
    x, batched = _validate.image(image)
    kind, targets, k = _targets(apply_fn, params, x, target)
    wide = map_dtype(x.dtype)  # the sums' dtype: float32, float64 for a float64 image
    if wide == jnp.float64 and method == "gausslegendre":  # the points and weights in float64 too
        alphas, weights = _gauss_legendre(n_steps)
    bases = _baselines(baseline, baselines, x, blur_sigma, wide)
    targets = _resolve_predicted(apply_fn, params, x, kind, targets, compute)
    kind = "index" if kind == "predicted" else kind
    run_dtype = jnp.dtype(compute or x.dtype).name
    params = cast_floating(params, compute)
    rows_img, rows_t = _rows(kind, targets, x.shape[0], k)
    multiply_late = bases.shape[1] == 1
    args = (params, x.astype(wide), bases, jnp.asarray(alphas, wide), jnp.asarray(weights, wide), rows_img, rows_t)
    total = rows_img.shape[0] * bases.shape[1] * alphas.shape[0]
    acc = jnp.zeros((rows_img.shape[0],) + x.shape[1:], wide)
    acc = _run_chunks(_ig_step, (apply_fn, kind, k, multiply_late, run_dtype), args, acc, total, chunk)
    finish = jit_with_policy(_ig_finish, tuple(range(7)), args=(args, acc))
    maps, gap = finish(apply_fn, kind, multiply_late, return_delta, chunk, run_dtype, map_dtype(x.dtype).name,
                       args, acc)
    maps = _shape_rows(maps, kind, x.shape[0], k, batched)
    return (maps, _shape_rows(gap, kind, x.shape[0], k, batched)) if return_delta else maps


# --------------------------------------------------------------------------------------------
# input x gradient


def _ixg_step(apply_fn, kind, compute, args, acc, i, ok):
    """Write one chunk of images' input × gradient maps into ``acc`` (padding repeats an image)."""
    params, x, targets = args
    xi = x[i]
    g = _rule_maps("gradient", apply_fn, params, xi, target="all" if kind == "all" else targets[i],
                   compute_dtype=compute)
    return acc.at[i].set(g * (xi[:, None] if kind == "all" else xi).astype(jnp.float32))


def input_x_gradient(apply_fn: Callable, params: Any, image, *, target=None, chunk_size: int | None = None,
                     compute_dtype=None):
    """Input × gradient (Shrikumar et al. 2016): the image times :func:`~saliency_jax.backprop.gradient`.

    Captum's ``InputXGradient``. Args, target forms and returned shapes as
    :func:`~saliency_jax.backprop.saliency_maps` (``"all"``: each class's gradient times the
    image); ``chunk_size`` images per model call (default: the module's, see
    :func:`integrated_gradients`).

    Example:
        >>> import jax.numpy as jnp
        >>> apply_fn = lambda p, x: jnp.sum(x ** 2, axis=(1, 2))
        >>> input_x_gradient(apply_fn, None, jnp.full((1, 2, 1), 3.0), target=0)[..., 0].tolist()
        [[18.0, 18.0]]
    """
    _validate.apply_fn(apply_fn)
    chunk = _chunk(chunk_size)
    compute = check_compute_dtype(compute_dtype)
    x, batched = _validate.image(image)
    kind, targets, k = _targets(apply_fn, params, x, target)
    targets = _resolve_predicted(apply_fn, params, x, kind, targets, compute)
    kind = "index" if kind == "predicted" else kind
    shape = (x.shape[0],) + ((k,) if kind == "all" else ()) + x.shape[1:]
    acc = _run_chunks(_ixg_step, (apply_fn, kind, compute), (params, x, targets), jnp.zeros(shape, jnp.float32),
                      x.shape[0], chunk)
    out = acc.astype(map_dtype(x.dtype))
    return out if batched else out[0]


# --------------------------------------------------------------------------------------------
# smooth grad


GRADIENT_METHODS: dict[str, Callable] = {
    "gradient": gradient, "deconvnet": deconvnet, "guided_backprop": guided_backprop, "guided": guided_backprop,
    "integrated_gradients": integrated_gradients, "input_x_gradient": input_x_gradient,
}
"""The methods :func:`smooth_grad` takes by name (a callable of the same form works too)."""


def _method(method) -> Callable:
    if isinstance(method, str):
        _validate.choice("method", method, tuple(GRADIENT_METHODS))
        return GRADIENT_METHODS[method]
    if not callable(method):
        raise TypeError(f"`method` (={method!r}) must be one of {tuple(GRADIENT_METHODS)} or a callable "
                        "method(apply_fn, params, images (B, H, W, C), target=..., **options) -> maps")
    return _validate.hashable("method", method)


def _split_options(options: dict) -> tuple[tuple, dict]:
    """Static (hashable, not arrays) and array-valued method options."""
    static, arrays = [], {}
    for name, value in sorted(options.items()):
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            arrays[name] = value
        else:
            try:
                hash(value)
            except TypeError:
                raise TypeError(f"method option `{name}` (={value!r}) must be hashable or an array") from None
            static.append((name, value))
    return tuple(static), arrays


def _noisy_maps(fn, apply_fn, kind, n_samples, static_options, args, i):
    """The maps ``(c, ...)`` float32 of the noisy copies ``i`` (flat ``image · n_samples + sample``)
    and their images ``(c,)``."""
    params, x, sigma, key, noise, targets, array_options = args
    img, s = i // n_samples, i % n_samples
    xf = x.astype(jnp.float32)
    if noise is None:
        eps = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(key, j), x.shape[1:], jnp.float32))(i)
        eps = eps * sigma[img][:, None, None, None]
    else:
        eps = noise[img if noise.shape[0] > 1 else jnp.zeros_like(img), s].astype(jnp.float32)
    noisy = (xf[img] + eps).astype(x.dtype)
    t = "all" if kind == "all" else targets[img]
    return img, fn(apply_fn, params, noisy, target=t, **dict(static_options), **array_options).astype(jnp.float32)


def _smooth_step(fn, apply_fn, kind, n_samples, static_options, args, carry, i, ok):
    """Add one chunk of noisy copies' maps (and their squares) to ``carry``."""
    total, total_sq = carry
    img, m = _noisy_maps(fn, apply_fn, kind, n_samples, static_options, args, i)
    m = jnp.where(ok.reshape((-1,) + (1,) * (m.ndim - 1)), m, 0.0)
    return total.at[img].add(m), total_sq.at[img].add(m * m)


def _smooth_finish(smoothing, n_samples, out, carry):
    total, total_sq = carry
    mean, mean_sq = total * (1 / n_samples), total_sq * (1 / n_samples)
    result = {"smoothgrad": mean, "smoothgrad_sq": mean_sq, "vargrad": mean_sq - mean * mean}[smoothing]
    return result.astype(out)


def smooth_grad(method, apply_fn: Callable, params: Any, image, /, *, kind: str = "smoothgrad",
                n_samples: int | None = None, stdev: float = 0.15, relative: bool = True, key=None, noise=None,
                chunk_size: int | None = None, target=None, **method_options):
    """SmoothGrad (Smilkov et al. 2017), SmoothGrad² and VarGrad over any gradient method.

    Each image gets ``n_samples`` noisy copies ``x + ε_s``; ``method`` maps each (for the same
    target, resolved on the clean image) and the maps are reduced as Captum's ``NoiseTunnel``:
    ``smoothgrad`` the mean, ``smoothgrad_sq`` the mean of squares, ``vargrad`` the mean of
    squares minus the squared mean. The noisy copies run ``chunk_size`` at a time (noise drawn
    per chunk, never all at once), so memory does not grow with ``n_samples``.

    Args:
        method: ``"gradient"``, ``"deconvnet"``, ``"guided_backprop"`` (or ``"guided"``),
            ``"integrated_gradients"``, ``"input_x_gradient"``, or a hashable callable
            ``method(apply_fn, params, images (B, H, W, C), target=..., **options)`` returning
            maps ``(B, ...)`` (``target`` an int array ``(B,)`` or ``"all"``).
        apply_fn, params, image, target: as for :func:`integrated_gradients`.
        kind: one of :data:`SMOOTHING`.
        n_samples: noisy copies per image (``>= 1``; default 50, or the ``noise``'s count).
        stdev: the noise's standard deviation, ``>= 0``. **By default (``relative=True``) a
            fraction of each image's range** ``max(x) − min(x)`` (PAIR's ``stdev_spread``,
            default 0.15); with ``relative=False`` absolute, in pixel units (Captum's
            ``stdevs``).
        relative: see ``stdev``.
        key: a ``jax.random`` key for the noise (default ``jax.random.key(0)``). Sample ``s``
            of image ``n`` uses ``fold_in(key, n · n_samples + s)``, so the noise does not
            depend on ``chunk_size``.
        noise: explicit noise ``(n_samples, H, W, C)`` (the same for every image) or
            ``(N, n_samples, H, W, C)``, added as given (``stdev`` and ``key`` then unused),
            e.g. to compare with Captum on the same draws.
        chunk_size: noisy copies per call of ``method`` (default :data:`CPU_CHUNK` on the CPU).
        **method_options: passed to ``method`` for every noisy copy (e.g. ``n_steps``,
            ``baseline`` for integrated gradients: one image or a number, not per-image; its
            quadrature as ``method="riemann_trapezoid"``: the four leading arguments are
            positional-only, so this ``method`` keyword goes to the wrapped method).

    Returns:
        Maps of ``method``'s shape for the image(s) (``(H, W, C)`` / ``(N, H, W, C)``, with a
        class axis for ``"all"``), float32 (float64 for a float64 image).

    Raises:
        TypeError, ValueError: naming the argument, before tracing: an unknown ``method`` or
            ``kind``, ``n_samples < 1``, ``stdev < 0``, a ``noise`` of the wrong shape or
            non-finite, non-finite pixels, bad targets.

    Example:
        >>> import jax.numpy as jnp
        >>> apply_fn = lambda p, x: jnp.sum(x ** 2, axis=(1, 2))          # gradient 2x
        >>> noise = jnp.array([[[[1.0]]], [[[-1.0]]]])                    # two samples (2, 1, 1, 1)
        >>> smooth_grad("gradient", apply_fn, None, jnp.full((1, 1, 1), 3.0), noise=noise, target=0).tolist()
        [[[6.0]]]
        >>> smooth_grad("gradient", apply_fn, None, jnp.full((1, 1, 1), 3.0), noise=noise, target=0,
        ...             kind="vargrad").tolist()
        [[[4.0]]]
    """
    fn = _method(method)
    _validate.apply_fn(apply_fn)
    _validate.choice("kind", kind, SMOOTHING)
    _validate.boolean("relative", relative)
    if isinstance(stdev, bool) or not isinstance(stdev, numbers.Real) or not np.isfinite(stdev) or stdev < 0:
        raise ValueError(f"`stdev` (={stdev!r}) must be a finite number >= 0 (a fraction of each image's range "
                         "with relative=True, absolute pixel units with relative=False)")
    if fn is integrated_gradients and method_options.get("return_delta"):
        raise ValueError("`return_delta` (=True) is not available under smooth_grad: the maps are reduced")
    chunk = _chunk(chunk_size)
    x, batched = _validate.image(image)
    if noise is not None:
        nz = _finite("noise", noise)
        h_w_c = tuple(x.shape[1:])
        if nz.ndim == 4 and tuple(nz.shape[1:]) == h_w_c:
            nz = nz[None]
        if nz.ndim != 5 or tuple(nz.shape[2:]) != h_w_c or nz.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"`noise` (shape={tuple(np.shape(noise))}) must be (n_samples, {', '.join(map(str, h_w_c))}) "
                             f"or (N={x.shape[0]}, n_samples, {', '.join(map(str, h_w_c))})")
        if n_samples is not None and n_samples != nz.shape[1]:
            raise ValueError(f"`n_samples` (={n_samples!r}) must equal the samples of `noise` ({nz.shape[1]}) or be None")
        n_samples = int(nz.shape[1])
    n_samples = _validate.integer("n_samples", DEFAULT_SAMPLES if n_samples is None else n_samples, lo=1)
    if key is None:
        key = jax.random.key(0)
    kind_t, targets, k = _targets(apply_fn, params, x, target)
    targets = _resolve_predicted(apply_fn, params, x, kind_t, targets, None)
    kind_t = "index" if kind_t == "predicted" else kind_t
    xf = x.astype(jnp.float32)
    spread = jnp.max(xf, axis=(1, 2, 3)) - jnp.min(xf, axis=(1, 2, 3)) if relative else jnp.ones(x.shape[0])
    sigma = jnp.float32(stdev) * spread
    static_options, array_options = _split_options(method_options)
    if isinstance(method, str) and method in _FAST and not method_options:
        fn = _FAST[method]  # the same maps, with the fast backward pass (see _input_cotangent)
    args = (params, x, sigma, key, None if noise is None else nz, targets, array_options)
    static = (fn, apply_fn, kind_t, n_samples, static_options)
    if fn in _FAST.values() or fn in GRADIENT_METHODS.values():  # maps of the image's shape: no trace needed
        shape = ((k,) if kind_t == "all" else ()) + tuple(x.shape[1:])
    else:
        shape = jax.eval_shape(lambda i: _noisy_maps(*static, args, i)[1], jnp.zeros((1,), jnp.int32)).shape[1:]
    zeros = jnp.zeros((x.shape[0],) + shape, jnp.float32)
    carry = _run_chunks(_smooth_step, static, args, (zeros, zeros), x.shape[0] * n_samples, chunk)
    out = jit_with_policy(_smooth_finish, (0, 1, 2), args=carry)(kind, n_samples, map_dtype(x.dtype).name, carry)
    return out if batched else out[0]
