"""APPROXIMATE adaptive drill-down occlusion (after Krypton, Nakandala et al. 2019).

Exact occlusion at a fine stride ``S2`` scores every window of the fine grid. Drill-down scores
far fewer and is **approximate** outside the region it refines:

1. **coarse pass**: every window of the grid at the coarse stride ``S1`` (same window size);
2. **ranking**: each window of the fine grid (stride ``S2``) gets an estimate of its score,
   interpolated (bilinear, over window centres) from the coarse windows' scores; the top
   ``fraction`` ``r`` of the fine windows by that estimate (``ceil(r · n_fine)`` per image: the
   top-``r`` share of the map's area by coarse score) are selected;
3. **fine pass**: only the selected fine windows run through the model (full re-inference or the
   exact incremental engine, :func:`saliency_jax.occlude.incremental.window_outputs`);
4. **splice**: the measured fine scores replace their estimates, and each pixel gets the usual
   mean (or sum) over the fine windows covering it (:func:`saliency_jax.occlude.windows.accumulate`).

A pixel all of whose covering fine windows were selected (the record's ``refined`` mask) has
exactly the value of exact occlusion at stride ``S2``; elsewhere the map mixes measured scores
with estimates from the coarse pass. With ``fraction=1`` the map is exact everywhere.

The theoretical speed-up over exact occlusion at ``S2`` (counting windows, as Krypton does) is
``S1² / (S2² + r · S1²)`` (per axis: ``S1y·S1x / (S2y·S2x + r·S1y·S1x)``): 3.2× for ``S1 = 16``,
``S2 = 4``, ``r = 0.25``. The record also gives the counted ratio for the actual grids.

Example:
    >>> import jax.numpy as jnp
    >>> from saliency_jax.occlude.drill_down import DrillDown, drill_down_occlusion
    >>> f = lambda p, x: x[:, 8:12, 8:12, :].sum(axis=(1, 2))    # only rows/cols 8..11 matter
    >>> heat, record = drill_down_occlusion(f, None, jnp.ones((16, 16, 1)), window=4, stride=2, target=0,
    ...                                     drill_down=DrillDown(coarse_stride=4, fraction=0.25))
    >>> heat.shape, record.coarse_windows, record.fine_grid_windows, record.fine_windows
    ((16, 16), 16, 49, 13)
    >>> bool(record.refined[9, 9]), float(heat[9, 9])   # refined, so exact: the mean of drops 4, 8, 8, 16
    (True, 9.0)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax._dtypes import cast_floating
from saliency_jax.occlude import incremental
from saliency_jax.occlude import options as opt
from saliency_jax._compile import chunk_indices, jit_with_policy
from saliency_jax.occlude.tune import plan
from saliency_jax.occlude.windows import WindowGrid, accumulate, coverage, window_grid, window_mask

__all__ = ["DrillDown", "DrillDownRecord", "drill_down_occlusion", "theoretical_speedup"]


@dataclasses.dataclass(frozen=True)
class DrillDown:
    """Settings of an APPROXIMATE adaptive drill-down (see the module docstring).

    Attributes:
        coarse_stride: stride ``S1`` of the coarse pass, an int or ``(rows, cols)``; at least the
            fine ``stride`` and at most the ``window`` along each axis (checked per call).
        fraction: ``r`` in ``(0, 1]``: the share of the fine windows (the map's area) refined.

    Example:
        >>> DrillDown(coarse_stride=16, fraction=0.25).fraction
        0.25
        >>> DrillDown(fraction=0.0)
        Traceback (most recent call last):
        ...
        ValueError: `fraction` (=0.0) must be a number in (0, 1]
    """

    coarse_stride: int | tuple[int, int] = 16
    fraction: float = 0.25

    def __post_init__(self):
        _validate.pair("coarse_stride", self.coarse_stride)
        r = self.fraction
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            raise TypeError(f"`fraction` (={r!r}) must be a number in (0, 1]")
        if not (math.isfinite(r) and 0 < r <= 1):
            raise ValueError(f"`fraction` (={r!r}) must be a number in (0, 1]")


@dataclasses.dataclass(frozen=True, eq=False)
class DrillDownRecord:
    """What a drill-down computed (a pytree: the arrays are its leaves, the rest static).

    Attributes:
        coarse_stride, fine_stride: ``S1`` and ``S2`` as ``(rows, cols)``.
        fraction: ``r``.
        coarse_windows: windows scored by the coarse pass, per image.
        fine_grid_windows: windows of the exact map at stride ``S2``, per image.
        fine_windows: fine windows scored, per image (``ceil(r · fine_grid_windows)``).
        theoretical_speedup: ``S1² / (S2² + r · S1²)`` (:func:`theoretical_speedup`).
        window_speedup: the counted ratio ``fine_grid_windows / (coarse_windows + fine_windows)``.
        method: the engine that scored the windows, ``"full"`` or ``"incremental"``.
        selected: bool ``(n_rows, n_cols)`` (``(N, n_rows, n_cols)`` for a batch): the fine
            windows scored.
        refined: bool ``(H, W)`` (``(N, H, W)``): pixels all of whose covering fine windows were
            scored; the map equals exact occlusion at ``S2`` there.
        refined_share: float32 ``()`` (``(N,)``): the share of the pixels refined.
    """

    coarse_stride: tuple[int, int]
    fine_stride: tuple[int, int]
    fraction: float
    coarse_windows: int
    fine_grid_windows: int
    fine_windows: int
    theoretical_speedup: float
    window_speedup: float
    method: str
    selected: jax.Array
    refined: jax.Array
    refined_share: jax.Array


jax.tree_util.register_dataclass(
    DrillDownRecord,
    data_fields=["selected", "refined", "refined_share"],
    meta_fields=["coarse_stride", "fine_stride", "fraction", "coarse_windows", "fine_grid_windows", "fine_windows",
                 "theoretical_speedup", "window_speedup", "method"],
)


def theoretical_speedup(coarse_stride, stride, fraction: float) -> float:
    """Krypton's window-count speed-up of drill-down over exact occlusion at ``stride``.

    ``S1y·S1x / (S2y·S2x + r·S1y·S1x)``: the coarse pass costs ``1/S1²`` of the windows of a
    stride-1 grid, the fine pass ``r/S2²``, exact occlusion ``1/S2²``.

    Example:
        >>> theoretical_speedup(16, 4, 0.25)
        3.2
    """
    s1y, s1x = _validate.pair("coarse_stride", coarse_stride)
    s2y, s2x = _validate.pair("stride", stride)
    return (s1y * s1x) / (s2y * s2x + fraction * s1y * s1x)


@dataclasses.dataclass(frozen=True)
class _Config:
    """Everything static about one drill-down computation (the jit cache key, with shapes)."""

    window: tuple[int, int]
    stride: tuple[int, int]
    coarse_stride: tuple[int, int]
    fraction: float
    placement: str
    combine: str
    method: str
    chunk_size: int
    target_kind: str  # "index" or "predicted"


# --------------------------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------------------------


def _interp_matrix(fine: WindowGrid, coarse: WindowGrid, axis: int) -> np.ndarray:
    """``(n_fine, n_coarse)`` linear interpolation weights over window centres along one axis."""
    f_centre = fine[axis] + fine[axis + 2] / 2.0
    c_centre = coarse[axis] + coarse[axis + 2] / 2.0
    eye = np.eye(len(c_centre))
    return np.stack([np.interp(f_centre, c_centre, eye[j]) for j in range(len(c_centre))], axis=1).astype(np.float32)


def _window_scores(apply_fn, params, images, fills, grid, caches, img, iy, ix, drop_ref, targets, cfg):
    """Score drops ``(T,)`` of the windows ``(img[t], iy[t], ix[t])``, in fixed-size chunks."""
    h, w = images.shape[1:3]
    rows, cols = jnp.arange(h), jnp.arange(w)

    def one_full(i, y, x):
        return jnp.where(window_mask(grid, y, x, rows, cols)[:, :, None], fills[i], images[i])

    def run_chunk(ts):  # (chunk,) positions in the flat window list
        i, y, x = img[ts], iy[ts], ix[ts]
        if cfg.method == "incremental":
            one = lambda a, b, c: incremental.window_outputs(apply_fn, params, images, fills, grid, caches, a, b, c)[0]
            out = jax.vmap(one)(i, y, x)
        else:
            out = apply_fn(params, jax.vmap(one_full)(i, y, x))
        out = jnp.take_along_axis(out.astype(jnp.float32), targets[i][:, None], axis=1)[:, 0]
        return drop_ref[i] - out

    total = img.shape[0]
    scores = jax.lax.map(run_chunk, chunk_indices(total, cfg.chunk_size)[0])
    return scores.reshape(-1)[:total]


def _all_windows(n: int, grid: WindowGrid):
    t = jnp.arange(n * grid.size, dtype=jnp.int32)
    p = t % grid.size
    return t // grid.size, p // grid.shape[1], p % grid.shape[1]


def _drill_fn(apply_fn, params, images, fills, targets, cfg: _Config):
    """The whole computation: ``(map (N, H, W), selected (N, rows, cols), refined (N, H, W))``."""
    n, h, w, _ = images.shape
    coarse = window_grid((h, w), cfg.window, cfg.coarse_stride, cfg.placement)
    fine = window_grid((h, w), cfg.window, cfg.stride, cfg.placement)
    base = apply_fn(params, images).astype(jnp.float32)  # (N, K)
    if cfg.target_kind == "predicted":
        targets = jnp.argmax(base, axis=-1).astype(jnp.int32)
    drop_ref = jnp.take_along_axis(base, targets[:, None], axis=1)[:, 0]  # (N,)

    def scores(grid, img, iy, ix):
        caches = incremental.prepare(apply_fn, params, images, grid) if cfg.method == "incremental" else None
        return _window_scores(apply_fn, params, images, fills, grid, caches, img, iy, ix, drop_ref, targets, cfg)

    coarse_scores = scores(coarse, *_all_windows(n, coarse)).reshape(n, *coarse.shape)
    hi = jax.lax.Precision.HIGHEST
    ay, ax = jnp.asarray(_interp_matrix(fine, coarse, 0)), jnp.asarray(_interp_matrix(fine, coarse, 1))
    estimate = jnp.einsum("ai,nij,bj->nab", ay, coarse_scores, ax, precision=hi)  # (N, rows, cols)

    k = math.ceil(cfg.fraction * fine.size)
    _, chosen = jax.lax.top_k(estimate.reshape(n, fine.size), k)  # (N, k) flat fine-window indices
    img = jnp.repeat(jnp.arange(n, dtype=jnp.int32), k)
    flat = chosen.reshape(-1).astype(jnp.int32)
    iy, ix = flat // fine.shape[1], flat % fine.shape[1]
    measured = scores(fine, img, iy, ix)

    spliced = estimate.at[img, iy, ix].set(measured)
    heat = accumulate(spliced[..., None], fine, (h, w), cfg.combine)[:, 0]
    selected = jnp.zeros((n, *fine.shape), bool).at[img, iy, ix].set(True)
    covered = accumulate(selected.astype(jnp.float32)[..., None], fine, (h, w), "sum")[:, 0]
    count = coverage(fine, (h, w))[None]  # (1, H, W)
    refined = (covered == jnp.asarray(count, jnp.float32)) & jnp.asarray(count > 0)
    return heat, selected, refined


# --------------------------------------------------------------------------------------------
# The public function: validation at the boundary, then one jitted computation
# --------------------------------------------------------------------------------------------


def drill_down_occlusion(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    image: jax.Array,
    *,
    window: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    drill_down: DrillDown,
    target: int | Sequence[int] | jax.Array | None = None,
    mode: str = "occlude",
    fill: float | jax.Array | str | None = None,
    score: str | None = None,
    combine: str = "mean",
    placement: str = "clip",
    blur_sigma: float | None = None,
    chunk_size: int | str | None = None,
    devices: Sequence[Any] | None = None,
    method: str = "auto",
    compute_dtype: Any = None,
) -> tuple[jax.Array, DrillDownRecord]:
    """APPROXIMATE occlusion map at ``stride`` by adaptive drill-down, and a record of the work.

    The arguments mirror :func:`saliency_jax.occlusion` (which dispatches here when given
    ``drill_down=``); the map approximates ``occlusion(..., stride=stride)`` and equals it on
    ``record.refined`` (everywhere with ``fraction=1``). See the module docstring for the steps.

    Args:
        apply_fn: ``apply_fn(params, images (B, H, W, C)) -> scores (B, K)``; hashable.
        params: its first argument (traced).
        image: ``(H, W, C)`` or ``(N, H, W, C)`` float32, finite.
        window: ``(h, w)`` or an int.
        stride: the fine stride ``S2``, ``(sh, sw)`` or an int; ``None`` means ``window``.
        drill_down: a :class:`DrillDown`; its ``coarse_stride`` must lie between ``stride`` and
            ``window`` along each axis.
        target: an int, one int per image ``(N,)``, or ``None`` (each image's predicted class).
            ``"all"`` is not accepted: the ranking needs one class.
        mode: ``"occlude"`` only (a crop's windows are not ranked by a score drop).
        fill: a number (default ``0.0``), a per-channel vector ``(C,)``, a baseline image
            ``(H, W, C)`` or ``(N, H, W, C)``, or ``"mean"`` (each image's per-channel mean).
        score: ``None`` or ``"difference"`` (``f(x)[t] − f(variant)[t]``; the windows with the
            largest drop are refined).
        combine: ``"mean"`` or ``"sum"`` over the fine windows covering a pixel.
        placement: ``"clip"`` or ``"valid"``, for both grids.
        blur_sigma: must be ``None`` (``fill="blur"`` is not offered here).
        chunk_size: windows per model call: an int, or ``None``/``"auto"`` for the method's default
            on the device's backend (:func:`saliency_jax._compile.default_chunk_size`).
        devices: ``None`` (the default device) or a sequence of one device.
        method: ``"full"``, ``"incremental"`` (exact incremental re-inference of each window) or
            ``"auto"``: incremental when its counted FLOPs at the fine grid are at least
            :data:`saliency_jax.occlude.options.AUTO_MIN_RATIO` times fewer (the counted-FLOP
            rule alone: nothing is timed).

        compute_dtype: ``None`` (the model runs in the dtype of ``image`` and ``params`` as given)
            or a floating dtype such as ``jnp.bfloat16``: the image and every floating leaf of
            ``params`` are cast to it. Scores, estimates and the map are float32 either way.

    Returns:
        ``(heatmap, record)``: float32 ``(H, W)`` (``(N, H, W)`` for a batch) and a
        :class:`DrillDownRecord`.

    Raises:
        TypeError, ValueError: for a malformed argument, before anything is traced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from saliency_jax.occlude.drill_down import DrillDown, drill_down_occlusion
        >>> apply_fn = lambda w, x: jnp.einsum("bhwc,hwck->bk", x, w)     # a linear "model", K = 2
        >>> w = jax.random.normal(jax.random.key(0), (64, 64, 3, 2))
        >>> images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
        >>> heat, rec = drill_down_occlusion(apply_fn, w, images, window=16, stride=4, target=1,
        ...                                  drill_down=DrillDown(coarse_stride=16, fraction=0.25))
        >>> heat.shape, rec.selected.shape, rec.coarse_windows, rec.fine_windows, rec.theoretical_speedup
        ((2, 64, 64), (2, 13, 13), 16, 43, 3.2)
    """
    if blur_sigma is not None or (isinstance(fill, str) and fill == "blur"):
        raise ValueError(f"`fill` (={fill!r}) / `blur_sigma` (={blur_sigma!r}): fill='blur' is not offered with "
                         "drill_down; use a number, a vector (C,), a baseline image or 'mean'")
    options = opt.OcclusionOptions(window=window, stride=stride, placement=placement, mode=mode, fill=fill, score=score,
                                   combine=combine, chunk_size=chunk_size, devices=devices, method=method,
                                   compute_dtype=compute_dtype)
    cfg, images, fills, targets, batched, device = _configure(options, apply_fn, params, image, target, drill_down)
    params, images, fills = cast_floating((params, images, fills), options.compute_dtype)
    if device is not None:
        images, fills, targets = jax.device_put((images, fills, targets), device)
    run = jit_with_policy(_drill_fn, (0, 5), args=(params, images, fills, targets))
    heat, selected, refined = run(apply_fn, params, images, fills, targets, cfg)
    record = _record(cfg, images.shape[1:3], selected, refined)
    if not batched:
        heat = heat[0]
        record = dataclasses.replace(record, selected=selected[0], refined=refined[0],
                                     refined_share=record.refined_share[0])
    return heat, record


def _record(cfg: _Config, size, selected, refined) -> DrillDownRecord:
    coarse = window_grid(size, cfg.window, cfg.coarse_stride, cfg.placement).size
    fine = window_grid(size, cfg.window, cfg.stride, cfg.placement).size
    k = math.ceil(cfg.fraction * fine)
    return DrillDownRecord(
        coarse_stride=cfg.coarse_stride, fine_stride=cfg.stride, fraction=cfg.fraction, coarse_windows=coarse,
        fine_grid_windows=fine, fine_windows=k,
        theoretical_speedup=theoretical_speedup(cfg.coarse_stride, cfg.stride, cfg.fraction),
        window_speedup=fine / (coarse + k), method=cfg.method, selected=selected, refined=refined,
        refined_share=refined.mean(axis=(1, 2), dtype=jnp.float32),
    )


def _configure(options: opt.OcclusionOptions, apply_fn, params, image, target, drill_down):
    """The shared checks (:mod:`saliency_jax.occlude.options`) and drill-down's own: the options
    it does not offer, the coarse stride against the grid, one device; then the counted-FLOP
    rule for ``method="auto"``. ``(cfg, images, fills, targets, batched, device)``."""
    if not isinstance(drill_down, DrillDown):
        raise TypeError(f"`drill_down` (={drill_down!r}) must be a DrillDown(coarse_stride=..., fraction=...)")
    if options.mode != "occlude":
        raise ValueError(f"`mode` (={options.mode!r}) must be 'occlude' with drill_down (a crop's windows are not "
                         "ranked)")
    if options.score != "difference":
        raise ValueError(f"`score` (={options.score!r}) must be None or 'difference' with drill_down (windows are "
                         "ranked by their score drop)")
    devices = options.devices or (None,)
    if len(devices) != 1:
        raise ValueError(f"`devices` (={devices!r}) must be None or one device: drill_down runs on one device")
    got = opt.inputs(options, apply_fn, image, fill_names=("mean",))
    coarse_yx = _validate.pair("coarse_stride", drill_down.coarse_stride)
    if any(cs < s or cs > wd for cs, s, wd in zip(coarse_yx, options.stride_yx, options.window_yx)):
        raise ValueError(
            f"`drill_down.coarse_stride` (={drill_down.coarse_stride!r}) must lie between `stride` "
            f"(={options.stride_yx}) and `window` (={options.window_yx}) along both axes"
        )
    kind, targets = opt.targets(apply_fn, params, got.images, target)
    if kind == "all":
        raise ValueError("`target` (='all') is not accepted with drill_down: the ranking needs one class per image")
    device = devices[0]
    ((method, chunk, _),) = plan(options, apply_fn, params, got.images.shape[1:],
                                 platform=None if device is None else device.platform, measurable=False,
                                 tune_chunk=False)
    cfg = _Config(window=options.window_yx, stride=options.stride_yx, coarse_stride=coarse_yx,
                  fraction=float(drill_down.fraction), placement=options.placement, combine=options.combine,
                  method=method, chunk_size=chunk, target_kind=kind)
    return cfg, got.images, _fill_images(got, got.images), targets, got.batched, device


def _fill_images(got: opt.Inputs, images) -> jax.Array:
    """What an occluded pixel becomes, ``(N, H, W, C)`` in the images' dtype (the model's input
    dtype), built here, before the jitted computation."""
    if got.fill_kind == "mean":
        return jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
    return jnp.broadcast_to(got.fill.astype(images.dtype), images.shape)
