"""Exact incremental occlusion against full re-inference, same run, same machine.

Settings (issue 6): the ZF-style 224 model with window 64 stride 8 and with window 16 stride 4
(Krypton's setting), and a VGG16-style 224 model with window 16 stride 4. For each:

  * the counted FLOPs per window of full and incremental re-inference (their ratio is the
    ceiling on the speed-up), from ``saliency_jax.occlude.incremental.flop_report``;
  * windows per second of full re-inference (``method="full"``, at the faster of chunks 16 and
    32, both reported) and of incremental re-inference (``method="incremental"``, its default
    chunk), both with the engine's own code path: variants / caches built inside one jit, the
    model run over fixed-size chunks with lax.map, compiled with the engine's compile options
    (``saliency_jax._compile.cpu_compiler_options``: XLA's own CPU convolutions instead of
    YNNPACK's); ``--library-defaults`` compiles both with jaxlib's defaults instead;
  * the two score sets checked equal (max abs difference, relative to the largest score).

Where a whole map takes too long at full re-inference, a fixed, evenly spread sample of
windows (borders included) stands in for it: both methods score the same sample, the cache
pass of the incremental method is timed apart and charged once per image, and the whole-map
rate is ``windows / (cache time + windows × per-window time)``. The results say which
settings were sampled. Trace + compile time is reported apart; timings are medians of repeats
after a warm-up, with ``block_until_ready``.

``--dag`` (issue 15) runs the DAG models of :mod:`benchmarks.zoo` instead (Flax ResNet-18,
ResNet-50, MobileNetV2; random weights, BatchNorm in inference form) at 224² with window 16
stride 4 (Krypton's setting) on a sample of windows, and writes ``incremental-dag.{json,md}``:
the counted FLOP ratio, the ratio the geometry allows with no layer sent full by
``FULL_LAYER_FRACTION`` (every region merged by its bounding box), the reasons the computation
turns full, the per-layer arithmetic (``flop_report(...).table()``) and the measured speed-up.

Usage:  python benchmarks/incremental.py [--quick] [--out DIR] [--library-defaults] [--dag]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saliency_jax as sj  # noqa: E402
from benchmarks._timing import timed  # noqa: E402
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from saliency_jax.occlude import incremental as inc  # noqa: E402
from saliency_jax._compile import cpu_compiler_options  # noqa: E402
from saliency_jax.model.architectures import ConvNet, ConvSpec, PoolSpec, get_model  # noqa: E402
from saliency_jax.occlude.engine import DEFAULT_CHUNK_SIZE  # noqa: E402

FULL_CHUNKS = (DEFAULT_CHUNK_SIZE, 2 * DEFAULT_CHUNK_SIZE)
"""Full re-inference is timed at each of these chunks and the faster one is its figure."""
OPTIONS: dict = {}
"""Compile options of both methods' jits (set in main: the engine's, or {} for jaxlib's defaults)."""


def vgg16(num_classes: int = 1000) -> ConvNet:
    """VGG16 (configuration D): 13 3×3 SAME convolutions with ReLU in five blocks, each block
    closed by a 2×2/2 max-pool, then fc 4096, 4096 and the classifier; 224×224×3."""
    layers, n = [], 0
    for block, (width, reps) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for r in range(reps):
            n += 1
            layers.append(ConvSpec(f"conv{block}_{r + 1}", width, 3, 1, "SAME"))
        layers.append(PoolSpec(f"pool{block}", 2, 2, "VALID"))
    return ConvNet(layers=tuple(layers), hidden=(4096, 4096), num_classes=num_classes, input_size=(224, 224, 3))


def _flat_windows(grid, ts):
    n_cols = grid.shape[1]
    return ts // n_cols, ts % n_cols


def full_scores_fn(apply_fn, grid, size, chunk):
    """Jitted ``(params, image, ts) -> (len(ts), K)``: full re-inference of the windows ``ts``,
    the engine's way (variants by vmap, fixed-size chunks through lax.map)."""
    h, w = size
    oy, ox = jnp.asarray(grid.origins_y), jnp.asarray(grid.origins_x)
    ey, ex = jnp.asarray(grid.extents_y), jnp.asarray(grid.extents_x)

    @functools.partial(jax.jit, compiler_options=OPTIONS or None)
    def run(params, image, ts):
        rows, cols = jnp.arange(h), jnp.arange(w)

        def variant(t):
            i, j = _flat_windows(grid, t)
            inside = ((rows >= oy[i]) & (rows < oy[i] + ey[i]))[:, None, None] & (
                (cols >= ox[j]) & (cols < ox[j] + ex[j])
            )[None, :, None]
            return jnp.where(inside, 0.0, image)

        out = jax.lax.map(lambda c: apply_fn(params, jax.vmap(variant)(c)), ts.reshape(-1, chunk))
        return out.reshape(ts.shape[0], -1)

    return run


def incremental_fns(apply_fn, grid, chunk):
    """Jitted cache pass ``(params, image) -> caches`` and window pass
    ``(params, image, caches, ts) -> (len(ts), K)`` (what ``method="incremental"`` runs)."""

    @functools.partial(jax.jit, compiler_options=OPTIONS or None)
    def prepare(params, image):
        return inc.prepare(apply_fn, params, image[None], grid)

    @functools.partial(jax.jit, compiler_options=OPTIONS or None)
    def windows(params, image, caches, ts):
        images = image[None]
        fills = jnp.zeros_like(images)

        def one(t):
            i, j = _flat_windows(grid, t)
            return inc.window_outputs(apply_fn, params, images, fills, grid, caches, jnp.int32(0), i, j)[0]

        out = jax.lax.map(lambda c: jax.vmap(one)(c), ts.reshape(-1, chunk))
        return out.reshape(ts.shape[0], -1)

    return prepare, windows


def padded(ts, chunk):
    ts = np.asarray(ts, np.int32)
    pad = (-len(ts)) % chunk
    return jnp.asarray(np.concatenate([ts, np.full(pad, ts[-1], np.int32)])), len(ts)


def run_setting(name, model, window, stride, *, sample, chunk_inc, repeats, seed=0):
    size = model.input_size
    image = jax.random.uniform(jax.random.key(seed + 1), size, jnp.float32)
    params = model.init(jax.random.key(seed), image[None])
    apply_fn = model.apply
    grid = sj.window_grid(size[:2], window, stride)
    total = grid.size
    report = inc.flop_report(apply_fn, params, size, window=window, stride=stride)
    if sample is None or sample >= total:
        ts_np, sampled = np.arange(total), False
    else:
        ts_np, sampled = np.unique(np.linspace(0, total - 1, sample).round().astype(np.int32)), True
    result = dict(
        setting=name, window=window, stride=stride, windows=total, sampled=sampled, sample_windows=len(ts_np),
        full_gflop_per_window=report.full_flops / 1e9, incremental_gflop_per_window=report.incremental_flops / 1e9,
        flop_ratio=report.ratio, saved_fraction=report.saved_fraction,
        incremental_chunk=chunk_inc,
    )
    # full re-inference, at each chunk of FULL_CHUNKS; the fastest per window counts
    per_chunk = {}
    for chunk in FULL_CHUNKS:
        ts_full, n = padded(ts_np, chunk)
        full = full_scores_fn(apply_fn, grid, size[:2], chunk)
        c, t, s = timed(lambda: full(params, image, ts_full), repeats)
        per_chunk[chunk] = (c, t / len(ts_full), np.asarray(s)[:n])
        print(f"  full, chunk {chunk}: {1e3 * t / len(ts_full):.1f} ms/window", flush=True)
    best = min(per_chunk, key=lambda k: per_chunk[k][1])
    c_full, per_full, s_full = per_chunk[best]
    t_full = per_full * len(ts_np)
    # incremental re-inference
    prep, win = incremental_fns(apply_fn, grid, chunk_inc)
    ts_inc, n = padded(ts_np, chunk_inc)
    c_prep, t_prep, caches = timed(lambda: prep(params, image), repeats)
    c_win, t_win, s_inc = timed(lambda: win(params, image, caches, ts_inc), repeats)
    s_inc = np.asarray(s_inc)[:n]
    per_inc = t_win / len(ts_inc)
    map_full = per_full * total
    map_inc = t_prep + per_inc * total
    scale = float(np.abs(s_full).max())
    diff = float(np.abs(s_full - s_inc).max())
    result.update(
        full_chunk=best, full_ms_per_window_by_chunk={str(k): 1e3 * v[1] for k, v in per_chunk.items()},
        full_first_call_s=c_full, full_median_s=t_full,
        incremental_cache_first_call_s=c_prep, incremental_cache_median_s=t_prep,
        incremental_windows_first_call_s=c_win, incremental_windows_median_s=t_win,
        full_windows_per_s=total / map_full, incremental_windows_per_s=total / map_inc,
        speedup=map_full / map_inc, speedup_over_flop_ratio=(map_full / map_inc) / report.ratio,
        max_abs_diff=diff, max_abs_score=scale, scores_equal=bool(diff <= 1e-4 * max(scale, 1.0)),
    )
    if not sampled:  # the whole map: the public engine both ways, maps compared
        kw = dict(window=window, stride=stride, target=0)
        first_f, t_f, heat_f = timed(lambda: sj.occlusion(apply_fn, params, image, method="full", **kw), 1)
        first_i, t_i, heat_i = timed(lambda: sj.occlusion(apply_fn, params, image, method="incremental", **kw), 1)
        heat_f, heat_i = np.asarray(heat_f), np.asarray(heat_i)
        result.update(
            engine_full_first_call_s=first_f, engine_full_s=t_f, engine_incremental_first_call_s=first_i,
            engine_incremental_s=t_i, engine_speedup=t_f / t_i,
            engine_map_max_abs_diff=float(np.abs(heat_f - heat_i).max()),
            engine_map_max_abs=float(np.abs(heat_f).max()),
        )
    return result


def chunk_sweep(model, window, stride, chunks, sample, repeats):
    size = model.input_size
    image = jax.random.uniform(jax.random.key(1), size, jnp.float32)
    params = model.init(jax.random.key(0), image[None])
    grid = sj.window_grid(size[:2], window, stride)
    ts_np = np.unique(np.linspace(0, grid.size - 1, sample).round().astype(np.int32))
    rows = []
    for chunk in chunks:
        prep, win = incremental_fns(model.apply, grid, chunk)
        caches = prep(params, image)
        ts, n = padded(ts_np, chunk)
        first, t, _ = timed(lambda: win(params, image, caches, ts), repeats)
        rows.append(dict(chunk=chunk, per_window_ms=1e3 * t / n, first_call_s=first))
        print(f"  chunk {chunk}: {1e3 * t / n:.2f} ms/window (first call {first:.1f}s)", flush=True)
    return rows


def _place_onehot(base, origin, patch, pstart, psize, axes):
    """Splice formulation B: the patch moved into place by one-hot matrix products (exact)."""
    val, mask = patch, None
    for a, o, ps, r in zip(axes, origin, pstart, psize):
        n = base.shape[a]
        pos = jnp.arange(n, dtype=jnp.int32)
        onehot = (pos[:, None] - (ps - o) == jnp.arange(r)[None, :]).astype(val.dtype)
        val = jnp.moveaxis(jnp.tensordot(onehot, jnp.moveaxis(val, a, 0), axes=1), 0, a)
        m = ((pos >= ps - o) & (pos < ps - o + r)).reshape([n if d == a else 1 for d in range(base.ndim)])
        mask = m if mask is None else mask & m
    return jnp.where(mask, val, base)


def _place_dus(base, origin, patch, pstart, psize, axes):
    """Splice formulation C: dynamic_update_slice (a scatter under vmap). NOT exact in general:
    where the patch overhangs the read region the index is clamped and the patch shifts."""
    idx = [jnp.zeros((), jnp.int32)] * base.ndim
    for a, o, ps in zip(axes, origin, pstart):
        idx[a] = ps - o
    return jax.lax.dynamic_update_slice(base, patch, idx)


def formulations(model, window, stride, chunk, sample, repeats):
    """Per-window time of the window pass with each way of splicing a patch into a region."""
    size = model.input_size
    image = jax.random.uniform(jax.random.key(1), size, jnp.float32)
    params = model.init(jax.random.key(0), image[None])
    grid = sj.window_grid(size[:2], window, stride)
    ts_np = np.unique(np.linspace(0, grid.size - 1, sample).round().astype(np.int32))
    ts, n = padded(ts_np, chunk)
    rows, reference_scores = [], None
    original = inc._place
    try:
        for label, place in (("gather + select (kept)", original), ("one-hot matmul + select", _place_onehot),
                             ("dynamic_update_slice (scatter; inexact in general)", _place_dus)):
            inc._place = place
            prep, win = incremental_fns(model.apply, grid, chunk)
            caches = prep(params, image)
            first, t, scores = timed(lambda: win(params, image, caches, ts), repeats)
            scores = np.asarray(scores)[:n]
            reference_scores = scores if reference_scores is None else reference_scores
            diff = float(np.abs(scores - reference_scores).max())
            rows.append(dict(formulation=label, per_window_ms=1e3 * t / n, max_abs_diff_vs_kept=diff))
            print(f"  {label}: {1e3 * t / n:.2f} ms/window", flush=True)
    finally:
        inc._place = original
    return rows


def approx_runs(model, window, stride, caps, repeats):
    """APPROXIMATE capped projective field: whole-map time and error against the exact map."""
    size = model.input_size
    image = jax.random.uniform(jax.random.key(1), size, jnp.float32)
    params = model.init(jax.random.key(0), image[None])
    kw = dict(window=window, stride=stride, target=0)
    first, t_exact, exact = timed(lambda: sj.occlusion(model.apply, params, image, method="incremental", **kw), repeats)
    exact = np.asarray(exact, np.float64)
    scale = float(np.abs(exact).max())
    rows = [dict(cap=None, flop_ratio=inc.flop_report(model.apply, params, size, window=window, stride=stride).ratio,
                 map_s=t_exact, first_call_s=first, max_abs_error_rel=0.0, mean_abs_error_rel=0.0)]
    for cap in caps:
        report = inc.flop_report(model.apply, params, size, window=window, stride=stride, cap=cap)
        first, t, heat = timed(lambda: inc.capped_occlusion(model.apply, params, image, cap=cap, **kw), repeats)
        err = np.abs(np.asarray(heat, np.float64) - exact)
        rows.append(dict(cap=cap, flop_ratio=report.ratio, map_s=t, first_call_s=first,
                         max_abs_error_rel=float(err.max() / scale), mean_abs_error_rel=float(err.mean() / scale)))
        print(f"  cap {cap}: {t:.2f} s/map, FLOP ratio {report.ratio:.2f}, max err {err.max() / scale:.3f}", flush=True)
    return rows


class ZooModel:
    """A :mod:`benchmarks.zoo` model with the interface ``run_setting`` uses (``init``, ``apply``,
    ``input_size``): ``init`` returns the zoo's variables (calibrated BatchNorm statistics)."""

    def __init__(self, name: str, size: int = 224):
        from benchmarks import zoo

        self.name = name
        self.apply, self.variables = zoo.build(name, size)
        self.input_size = (size, size, 3)

    def init(self, key, x):
        del key, x
        return self.variables


def dag_counts(model: ZooModel, window: int, stride: int) -> dict:
    """Counted FLOP ratios of one zoo model: as run (the default ``FULL_LAYER_FRACTION``) and what
    bounding-box merging allows when no layer is sent full by that rule."""
    size = model.input_size
    report = inc.flop_report(model.apply, model.variables, size, window=window, stride=stride)
    default = inc.FULL_LAYER_FRACTION
    try:
        inc.FULL_LAYER_FRACTION = 1.01
        bound = inc.flop_report(model.apply, model.variables, size, window=window, stride=stride)
    finally:
        inc.FULL_LAYER_FRACTION = default
    return dict(model=model.name, window=window, stride=stride, flop_ratio=report.ratio,
                full_gflop_per_window=report.full_flops / 1e9,
                incremental_gflop_per_window=report.incremental_flops / 1e9,
                geometry_bound_ratio=bound.ratio, reasons=list(report.reasons), table=report.table())


def dag_markdown(meta, counts, results):
    lines = [
        "# Incremental occlusion through DAGs (issue 15): ResNet-18, ResNet-50, MobileNetV2",
        "",
        f"Machine: {meta['machine']}, {meta['cpus']} CPU cores (load average {meta.get('load_average', 'n/a')}), "
        f"jax {meta['jax']}, {meta['date']}. Models from `benchmarks/zoo.py` (Flax linen, random weights, "
        "BatchNorm in inference form), 224×224×3, fill 0. Residual additions are merged on the bounding box "
        "of their operands' changed regions (Krypton); a convolution whose region would cover at least "
        f"FULL_LAYER_FRACTION = {inc.FULL_LAYER_FRACTION:g} of its output runs in full, and so does everything "
        "after it.",
        "",
        "Counted FLOPs per window (`flop_report`; the ratio is the ceiling on the speed-up). "
        "'Geometry bound': the ratio with no layer sent full by FULL_LAYER_FRACTION (every region computed "
        "on its bounding box up to the global mean), i.e. what bounding-box merging allows.",
        "",
        "| model | window / stride | GFLOP/window full | GFLOP/window incr. | FLOP ratio | geometry bound | "
        "where it turns full |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in counts:
        lines.append(f"| {c['model']} | w{c['window']} s{c['stride']} | {c['full_gflop_per_window']:.3f} "
                     f"| {c['incremental_gflop_per_window']:.3f} | {c['flop_ratio']:.2f}× "
                     f"| {c['geometry_bound_ratio']:.2f}× | {'; '.join(c['reasons'])} |")
    if results:
        lines += [
            "",
            f"Measured (median of {meta['repeats']} after a warm-up, compile apart; full re-inference at chunk "
            f"{meta['full_chunk']} (the engine's default), incremental at chunk {meta['incremental_chunk']}; "
            "the same evenly spread sample of windows for both, the cache pass charged once per image):",
            "",
            "| model | windows (timed) | FLOP ratio | full win/s | incr. win/s | speed-up | speed-up / FLOP ratio "
            "| max abs diff (max score) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            lines.append(
                f"| {r['setting']} w{r['window']} s{r['stride']} | {r['windows']} ({r['sample_windows']}) "
                f"| {r['flop_ratio']:.2f}× | {r['full_windows_per_s']:.2f} | {r['incremental_windows_per_s']:.2f} "
                f"| {r['speedup']:.2f}× | {100 * r['speedup_over_flop_ratio']:.0f}% "
                f"| {r['max_abs_diff']:.1e} ({r['max_abs_score']:.2f}) |")
    for c in counts:
        if (c["window"], c["stride"]) != (16, 4):
            continue
        lines += ["", f"Per-layer arithmetic, {c['model']} w{c['window']} s{c['stride']} (FLOPs per window, "
                  "full -> incremental; `#k` numbers the image-dependent equations):", "", "```", c["table"], "```"]
    return "\n".join(lines) + "\n"


def dag_main(args, repeats, meta, provenance):
    global FULL_CHUNKS
    FULL_CHUNKS = (DEFAULT_CHUNK_SIZE,)  # one full chunk: the sample is one chunk, and these models are slow
    meta["full_chunk"] = DEFAULT_CHUNK_SIZE
    names = ("resnet18", "resnet50", "mobilenet_v2")
    samples = dict.fromkeys(names, 32) if not args.quick else dict.fromkeys(names, 8)
    models = {n: ZooModel(n, 224 if not args.quick else 96) for n in names}
    counts = [dag_counts(models[n], w, s) for n in names for (w, s) in ((16, 4), (32, 8))]
    for c in counts:
        print(f"{c['model']} w{c['window']} s{c['stride']}: FLOP ratio {c['flop_ratio']:.2f}, "
              f"geometry bound {c['geometry_bound_ratio']:.2f}", flush=True)
    results = []
    if not args.counts_only:
        for n in names:
            print(f"{n} window 16 stride 4 (sample of {samples[n]}) …", flush=True)
            r = run_setting(n, models[n], 16, 4, sample=samples[n], chunk_inc=inc.DEFAULT_CHUNK_SIZE, repeats=repeats)
            print(json.dumps(r, indent=1), flush=True)
            results.append(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    provenance = _provenance.finish(provenance)
    (out / f"incremental-dag{suffix}.json").write_text(json.dumps(dict(meta=meta, counts=counts, results=results,
                                                                       provenance=provenance), indent=1))
    text = dag_markdown(meta, counts, results) + "\n" + _provenance.markdown_line(provenance) + "\n"
    (out / f"incremental-dag{suffix}.md").write_text(text)
    print(text)


def markdown(meta, results, sweep, forms=None, approx=None):
    lines = [
        "# Incremental occlusion vs full re-inference",
        "",
        f"Machine: {meta['machine']}, {meta['cpus']} CPU cores (load average {meta.get('load_average', 'n/a')}), "
        f"jax {meta['jax']}, {meta['date']}. One image, fill 0, Captum's clip placement. Compile options of "
        f"both methods: {meta['compile_options']}. Full re-inference at the faster of chunks "
        f"{', '.join(map(str, FULL_CHUNKS))} (per-chunk times below); incremental at its default chunk "
        f"({meta['incremental_chunk']}). Median of {meta['repeats']} runs after a warm-up; compile time apart.",
        "",
        "| setting | windows | timed on | GFLOP/window full | GFLOP/window incr. | FLOP ratio (ceiling) "
        "| full win/s | incr. win/s | speed-up | speed-up / FLOP ratio | max abs diff (max score) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        on = f"sample of {r['sample_windows']}" if r["sampled"] else "all"
        lines.append(
            f"| {r['setting']} w{r['window']} s{r['stride']} | {r['windows']} | {on} | {r['full_gflop_per_window']:.3f} "
            f"| {r['incremental_gflop_per_window']:.3f} | {r['flop_ratio']:.2f}× | {r['full_windows_per_s']:.2f} "
            f"| {r['incremental_windows_per_s']:.2f} | {r['speedup']:.2f}× | {100 * r['speedup_over_flop_ratio']:.0f}% "
            f"| {r['max_abs_diff']:.1e} ({r['max_abs_score']:.2f}) |"
        )
    lines += [
        "",
        "Incremental win/s charges the cache pass (one forward pass of the unoccluded image with its "
        "padded activations stored) once per image: `windows / (cache time + windows × per-window time)`. "
        "Sampled settings time both methods on the same evenly spread windows (borders included) and "
        "extrapolate per window; the scores of the sample are compared.",
        "",
        "Full re-inference per chunk (ms / window; the faster is used above), incremental cache pass "
        "(s / image) and compile + first call (s):",
        "",
        "| setting | " + " | ".join(f"full ms/win, chunk {c}" for c in FULL_CHUNKS)
        + " | incr. cache pass s | compile: full | compile: incr. cache pass | compile: incr. windows |",
        "|---|" + "---|" * (len(FULL_CHUNKS) + 4),
    ]
    for r in results:
        lines.append(
            f"| {r['setting']} w{r['window']} s{r['stride']} | "
            + " | ".join(f"{r['full_ms_per_window_by_chunk'][str(c)]:.1f}" for c in FULL_CHUNKS)
            + f" | {r['incremental_cache_median_s']:.3f} | {r['full_first_call_s']:.1f} "
            f"| {r['incremental_cache_first_call_s']:.1f} | {r['incremental_windows_first_call_s']:.1f} |"
        )
    for r in results:
        if "engine_full_s" in r:
            lines += ["", f"The public engine on the whole map ({r['setting']} w{r['window']} s{r['stride']}, "
                      f"{r['windows']} windows, one timed call after a warm-up): `sj.occlusion(method='full')` "
                      f"{r['engine_full_s']:.2f} s, `method='incremental'` {r['engine_incremental_s']:.2f} s "
                      f"({r['engine_speedup']:.2f}×); maps differ by at most {r['engine_map_max_abs_diff']:.1e} "
                      f"(largest |value| {r['engine_map_max_abs']:.3f})."]
    if sweep:
        lines += ["", f"Incremental chunk size ({sweep['setting']}, sample of {sweep['sample']} windows):", "",
                  "| chunk | ms / window |", "|---|---|"]
        lines += [f"| {row['chunk']} | {row['per_window_ms']:.2f} |" for row in sweep["rows"]]
    if forms:
        lines += ["", f"Splicing a patch into the region a layer reads ({forms['setting']}, chunk {forms['chunk']}, "
                  f"sample of {forms['sample']} windows):", "",
                  "| formulation | ms / window | max abs diff vs kept |", "|---|---|---|"]
        lines += [f"| {r['formulation']} | {r['per_window_ms']:.2f} | {r['max_abs_diff_vs_kept']:.1e} |"
                  for r in forms["rows"]]
    if approx:
        lines += ["", f"APPROXIMATE — capped projective field ({approx['setting']}, whole map, "
                  f"{approx['windows']} windows; exact = `method='incremental'`; errors relative to the "
                  "largest |value| of the exact map):", "",
                  "| cap | FLOP ratio vs full | s / map | speed-up vs exact incremental | max abs error | mean abs error |",
                  "|---|---|---|---|---|---|"]
        t0 = approx["rows"][0]["map_s"]
        for r in approx["rows"]:
            label = "exact" if r["cap"] is None else f"{r['cap']:.2f}"
            lines.append(f"| {label} | {r['flop_ratio']:.2f}× | {r['map_s']:.2f} | {t0 / r['map_s']:.2f}× "
                         f"| {100 * r['max_abs_error_rel']:.1f}% | {100 * r['mean_abs_error_rel']:.2f}% |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small samples, one repeat (a smoke run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--only", default=None, help="comma-separated setting indices (0, 1, 2)")
    ap.add_argument("--approx", action="store_true",
                    help="also time the APPROXIMATE capped projective field and measure its error")
    ap.add_argument("--library-defaults", action="store_true",
                    help="compile both methods with jaxlib's defaults (YNNPACK on) instead of the engine's options")
    ap.add_argument("--sweep", action="store_true",
                    help="also sweep the incremental chunk size and compare the splice formulations")
    ap.add_argument("--dag", action="store_true",
                    help="the DAG models of benchmarks/zoo.py (ResNet-18/50, MobileNetV2) at 224, w16 s4 (issue 15)")
    ap.add_argument("--counts-only", action="store_true", help="with --dag: counted FLOPs only, no timing")
    args = ap.parse_args()
    provenance = _provenance.start(script=__file__)
    repeats = 1 if args.quick else 3
    global OPTIONS
    OPTIONS = {} if args.library_defaults else cpu_compiler_options()
    if args.dag:
        meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                    load_average=", ".join(f"{x:.1f}" for x in os.getloadavg()),
                    date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), repeats=repeats,
                    incremental_chunk=inc.DEFAULT_CHUNK_SIZE, compile_options=repr(OPTIONS or "jaxlib defaults"))
        dag_main(args, repeats, meta, provenance)
        return
    zf, vgg = get_model("zf"), vgg16()
    settings = [
        ("ZF-style", zf, 64, 8, None if not args.quick else 32),
        ("ZF-style", zf, 16, 4, 256 if not args.quick else 32),
        ("VGG16-style", vgg, 16, 4, 48 if not args.quick else 16),
    ]
    only = range(len(settings)) if args.only is None else [int(i) for i in args.only.split(",") if i]
    meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                load_average=", ".join(f"{x:.1f}" for x in os.getloadavg()),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), repeats=repeats,
                incremental_chunk=inc.DEFAULT_CHUNK_SIZE, compile_options=repr(OPTIONS or "jaxlib defaults"))
    sweep = forms = None
    if args.sweep:
        print("chunk sweep (ZF-style w16 s4) …", flush=True)
        rows = chunk_sweep(zf, 16, 4, (8, 16, 32, 64), 96, repeats)
        sweep = dict(setting="ZF-style w16 s4", sample=96, rows=rows)
        print("splice formulations (ZF-style w16 s4) …", flush=True)
        forms = dict(setting="ZF-style w16 s4", chunk=inc.DEFAULT_CHUNK_SIZE, sample=96,
                     rows=formulations(zf, 16, 4, inc.DEFAULT_CHUNK_SIZE, 96, repeats))
    approx = None
    if args.approx:
        print("capped projective field (ZF-style w16 s4) …", flush=True)
        grid = sj.window_grid(zf.input_size[:2], 16, 4)
        approx = dict(setting="ZF-style w16 s4", windows=grid.size,
                      rows=approx_runs(zf, 16, 4, (0.75, 0.5, 0.4), 1 if args.quick else 2))
    results = []
    for k in only:
        name, model, window, stride, sample = settings[k]
        print(f"{name} window {window} stride {stride} …", flush=True)
        r = run_setting(name, model, window, stride, sample=sample, chunk_inc=inc.DEFAULT_CHUNK_SIZE, repeats=repeats)
        print(json.dumps(r, indent=1), flush=True)
        results.append(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + ("-library-defaults" if args.library_defaults else "")
    provenance = _provenance.finish(provenance)
    (out / f"incremental{suffix}.json").write_text(json.dumps(dict(meta=meta, results=results, sweep=sweep, formulations=forms,
                                                                   approx=approx, provenance=provenance), indent=1))
    text = markdown(meta, results, sweep, forms, approx) + "\n" + _provenance.markdown_line(provenance) + "\n"
    (out / f"incremental{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
