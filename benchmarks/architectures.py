"""Occlusion on the architectures people use: naive loop, full, incremental and auto, same run.

Models (random weights, BatchNorm in inference form with calibrated statistics, from
:mod:`benchmarks.zoo`): ResNet-18, ResNet-50, MobileNetV2, VGG16, the ZF-style model, and a
channels-first Equinox CNN (NCHW activations, OIHW kernels, NHWC images transposed at its input;
skipped without equinox) beside its NHWC twin (the same weights, NHWC/HWIO). 224² images,
window 16 stride 4 (Krypton's setting) and window 32 stride 8, fill 0, one target logit.

Per model and setting:

* the counted FLOP ratio (``saliency_jax.occlude.incremental.flop_report``) of the real grid;
* windows/s of the naive loop (one jitted call per occluded image, the ``jax.jit`` a user
  writes first), of ``sj.occlusion(method="full")``, ``"incremental"`` and ``"auto"`` (and what
  auto chose, from ``saliency_jax.occlude.engine.auto_decisions``);
* incremental's speed-up over full as a share of the FLOP ratio;
* every method's map (or scores) against full: max abs difference over the largest |value|.

Timing on a subset. The real grids have 2809 (w16 s4) and 625 (w32 s8) windows; a ResNet-50
over 2809 windows takes minutes per method on 2 cores. Every method is therefore timed on the
same subset: the windows of the real grid whose origins are every k-th origin along each axis,
borders included (``subset_stride``: the multiple of the stride, at least the window so that
windows do not overlap, dividing ``224 − window``, giving about ``--per-axis`` windows per axis;
25 windows here), passed to ``sj.occlusion`` as ``stride = k × stride``. Every subset window is a
full window of the real grid, so the per-window work of every method is the real grid's. The
incremental engine's cache pass (one forward pass of the unoccluded image) runs once per call,
i.e. per 25 windows here instead of per 2809 or 625: its measured rate is the pessimistic one;
the "amortised" column charges the cache pass (estimated as one naive call) once per real map:
``N / (t_fwd + N × (t_subset − t_fwd) / n)``. Medians of ``--repeats`` timed calls after a
warm-up call (which compiles and, for auto, measures), ``block_until_ready``; compile time apart.

Usage:  python benchmarks/architectures.py [--smoke] [--out DIR] [--models a,b] [--repeats R]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saliency_jax as sj  # noqa: E402
from saliency_jax._io import atomic_write_text  # noqa: E402
from benchmarks import zoo  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks._timing import timed  # noqa: E402
from saliency_jax.occlude import engine  # noqa: E402
from saliency_jax.occlude import incremental  # noqa: E402
from saliency_jax.occlude.incremental import flop_report  # noqa: E402
from saliency_jax.occlude.windows import window_grid  # noqa: E402

__all__ = ["MODELS", "SETTINGS", "equinox_twins", "subset_stride", "naive_scores", "run_model", "main"]

MODELS = {  # label → builder key
    "ResNet-18": "resnet18",
    "ResNet-50": "resnet50",
    "MobileNetV2": "mobilenet_v2",
    "VGG16": "vgg16",
    "ZF-style": "zf",
    "Equinox CNN (NCHW)": "eqx_nchw",
    "its NHWC twin": "eqx_nhwc",
}
SETTINGS = ((16, 4), (32, 8))
TARGET = 3


# --------------------------------------------------------------------------------------------
# the channels-first model and its twin


def equinox_twins(size: int, num_classes: int = 10, seed: int = 0):
    """``((apply_nchw, params_nchw), (apply_nhwc, params_nhwc))``: an Equinox CNN that works in
    NCHW with OIHW kernels (images ``(N, H, W, 3)`` transposed at its input, as users wrap
    PyTorch-style models) and the same network written NHWC/HWIO with the same weights.

    conv 7×7/2 (64) → ReLU → max-pool 3/2 → conv 3×3 (128) → ReLU → max-pool 2/2 → conv 3×3
    (256) → ReLU → conv 3×3 (256) → ReLU → global mean → linear. ``None`` without equinox.
    """
    try:
        import equinox as eqx
    except ImportError:
        return None
    k = jax.random.split(jax.random.key(seed), 5)

    class CNN(eqx.Module):
        convs: tuple
        head: eqx.nn.Linear

        def __call__(self, x):  # (3, H, W)
            c1, c2, c3, c4 = self.convs
            x = jax.nn.relu(c1(x))
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)))
            x = jax.nn.relu(c2(x))
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2), (1, 2, 2), "VALID")
            x = jax.nn.relu(c4(jax.nn.relu(c3(x))))
            return self.head(jnp.mean(x, axis=(1, 2)))

    convs = (eqx.nn.Conv2d(3, 64, 7, stride=2, padding=3, key=k[0]),
             eqx.nn.Conv2d(64, 128, 3, padding=1, key=k[1]),
             eqx.nn.Conv2d(128, 256, 3, padding=1, key=k[2]),
             eqx.nn.Conv2d(256, 256, 3, padding=1, key=k[3]))
    model = CNN(convs, eqx.nn.Linear(256, num_classes, key=k[4]))
    params, static = eqx.partition(model, eqx.is_array)

    def apply_nchw(params, x):
        return jax.vmap(eqx.combine(params, static))(jnp.transpose(x, (0, 3, 1, 2)))

    strides = [tuple(c.stride) for c in convs]
    pads = [tuple(tuple(p) for p in c.padding) for c in convs]
    nhwc_params = {"k": [c.weight.transpose(2, 3, 1, 0) for c in convs],  # OIHW → HWIO
                   "b": [c.bias.reshape(-1) for c in convs], "w": model.head.weight.T, "c": model.head.bias}

    def conv(x, p, i):
        y = lax.conv_general_dilated(x, p["k"][i], strides[i], pads[i], dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + p["b"][i])

    def apply_nhwc(p, x):
        x = conv(x, p, 0)
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = conv(x, p, 1)
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = conv(conv(x, p, 2), p, 3)
        return jnp.mean(x, axis=(1, 2)) @ p["w"] + p["c"]

    return (apply_nchw, params), (apply_nhwc, nhwc_params)


def build(key: str, size: int):
    """``(apply_fn, variables)`` of model ``key`` at ``size``², or ``None`` when its library is absent."""
    if key.startswith("eqx_"):
        twins = equinox_twins(size)
        return None if twins is None else twins[0 if key == "eqx_nchw" else 1]
    return zoo.build(key, size)


# --------------------------------------------------------------------------------------------
# measuring


def subset_stride(size: int, window: int, stride: int, per_axis: int) -> int:
    """The subset's stride: a multiple of ``stride``, at least ``window``, dividing ``size − window``
    (every subset window is then a full window of the real grid), with the number of windows per
    axis closest to ``per_axis`` (the larger on a tie)."""
    span = size - window
    options = [m for m in range(stride, span + 1, stride) if m >= window and span % m == 0]
    if not options:
        raise ValueError(f"no subset stride for size {size}, window {window}, stride {stride}")
    return min(options, key=lambda m: (abs(span // m + 1 - per_axis), m))


def naive_scores(apply_fn, variables, image, window: int, origins):
    """The naive loop: one jitted call per occluded image; returns ``(fn, scores)`` where ``fn()``
    runs the loop (``(n,)`` differences ``f(x)[t] − f(x_occluded)[t]``)."""
    patch = jnp.zeros((window, window, image.shape[-1]), image.dtype)

    @jax.jit
    def one(variables, image, oy, ox):
        occluded = lax.dynamic_update_slice(image, patch, (oy, ox, jnp.int32(0)))
        return apply_fn(variables, occluded[None])[0, TARGET]

    base = float(jax.jit(apply_fn)(variables, image[None])[0, TARGET])

    def run():
        outs = [one(variables, image, jnp.int32(oy), jnp.int32(ox)) for oy, ox in origins]
        return base - jnp.stack(outs)

    return run


def _error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def per_axis_for(gflop: float, per_axis: int, budget: float) -> int:
    """Timed windows per axis: ``per_axis`` where a timed call of ``per_axis²`` full windows stays
    under ``budget`` GFLOP, fewer (at least 2) for heavier models."""
    return max(2, min(per_axis, int(math.sqrt(budget / max(gflop, 1e-9)))))


def cache_seconds(apply_fn, variables, image, window, stride, repeats) -> float:
    """The incremental engine's cache pass alone (``incremental.prepare``, jitted), median seconds."""
    grid = window_grid(image.shape[:2], window, stride)
    prep = jax.jit(lambda v, x: incremental.prepare(apply_fn, v, x[None], grid))
    return timed(lambda: prep(variables, image), repeats)[1]


def run_setting(label, apply_fn, variables, size, window, stride, per_axis, repeats, budget=1e9):
    """One model at one window/stride: the row of the results table (see the module docstring)."""
    image = jax.random.normal(jax.random.key(1), (size, size, 3), jnp.float32)
    start = time.perf_counter()
    report = flop_report(apply_fn, variables, (size, size, 3), window=window, stride=stride)
    count_s = time.perf_counter() - start
    sub = subset_stride(size, window, stride, per_axis_for(report.full_flops / 1e9, per_axis, budget))
    starts = list(range(0, size - window + 1, sub))
    origins = [(oy, ox) for oy in starts for ox in starts]
    n, n_full = len(origins), (math.ceil((size - window) / stride) + 1) ** 2
    sub_report = flop_report(apply_fn, variables, (size, size, 3), window=window, stride=sub)
    row = dict(model=label, window=window, stride=stride, windows=n_full, subset_stride=sub, timed_windows=n,
               gflop_full=report.full_flops / 1e9, gflop_incremental=report.incremental_flops / 1e9,
               flop_ratio=report.ratio, subset_flop_ratio=sub_report.ratio, reasons=list(report.reasons),
               count_seconds=count_s)
    kw = dict(window=window, stride=sub, target=TARGET)
    maps, seconds, compile_s = {}, {}, {}
    before = len(engine.auto_decisions())
    for method in ("full", "incremental", "auto"):
        fn = lambda m=method: sj.occlusion(apply_fn, variables, image, method=m, **kw)  # noqa: E731
        compile_s[method], seconds[method], maps[method] = timed(fn, repeats)
    decisions = engine.auto_decisions()[before:]
    row["auto_choice"] = (f"{decisions[-1].method}, chunk {decisions[-1].chunk_size}" if decisions
                          else "counted-FLOP rule (nothing measured)")
    naive = naive_scores(apply_fn, variables, image, window, origins)
    compile_s["naive"], seconds["naive"], scores = timed(naive, repeats)
    full_at_origins = np.asarray(maps["full"])[tuple(np.array(origins).T)]  # windows do not overlap
    row["error"] = {m: _error(maps[m], maps["full"]) for m in ("incremental", "auto")}
    row["error"]["naive"] = _error(scores, full_at_origins)
    row["max_abs_full"] = float(np.abs(np.asarray(maps["full"])).max())
    row["windows_per_s"] = {m: n / seconds[m] for m in seconds}
    row["compile_s"] = compile_s
    t_cache = cache_seconds(apply_fn, variables, image, window, sub, repeats)
    row["cache_pass_s"] = t_cache
    per_window = max(seconds["incremental"] - t_cache, 1e-9) / n
    row["incremental_amortised_per_s"] = n_full / (t_cache + n_full * per_window)
    speedup = row["windows_per_s"]["incremental"] / row["windows_per_s"]["full"]
    row["speedup"] = speedup
    row["share_of_ratio"] = speedup / sub_report.ratio
    row["share_of_ratio_amortised"] = row["incremental_amortised_per_s"] / row["windows_per_s"]["full"] / report.ratio
    best = max(row["windows_per_s"]["full"], row["windows_per_s"]["naive"])
    row["auto_vs_best_of_full_naive"] = row["windows_per_s"]["auto"] / best
    print(f"{label} w{window} s{stride}: ratio {report.ratio:.2f}x; win/s " + ", ".join(
        f"{m} {v:.1f}" for m, v in row["windows_per_s"].items()) + f"; auto → {row['auto_choice']}", flush=True)
    return row


def run_model(label, key, size, settings, per_axis, repeats, budget):
    """Every setting of one model (built once); ``[]`` when its library is absent."""
    built = build(key, size)
    if built is None:
        print(f"{label}: skipped (library not installed)", flush=True)
        return []
    apply_fn, variables = built
    return [run_setting(label, apply_fn, variables, size, w, s, per_axis, repeats, budget) for w, s in settings]


def twins_difference(size: int) -> float | None:
    """Max |logits NCHW − logits NHWC twin| / max |logits| on a random image (``None`` without equinox)."""
    twins = equinox_twins(size)
    if twins is None:
        return None
    x = jax.random.normal(jax.random.key(1), (1, size, size, 3))
    a, b = (np.asarray(jax.jit(f)(p, x)) for f, p in twins)
    return _error(a, b)


# --------------------------------------------------------------------------------------------
# output


def markdown(meta, rows) -> str:
    lines = [
        "# Occlusion on the architectures people use: naive loop, full, incremental, auto",
        "",
        f"Machine: {meta['machine']}, {meta['cpus']} CPU cores (load average before the run "
        f"{meta['load_before']}), jax {meta['jax']}, {meta['backend']}, {meta['date']}. "
        f"`python benchmarks/architectures.py{' --smoke' if meta['smoke'] else ''}`, {meta['wall_s']:.0f} s wall. "
        f"Images {meta['size']}², fill 0, target logit {TARGET}, random weights (BatchNorm statistics "
        "calibrated on a random batch, inference form). Median of "
        f"{meta['repeats']} timed calls after a warm-up call; compile time apart.",
        "",
        "**Timed on a subset** (same windows for every method): the real grid's windows whose "
        "origins are every k-th origin along each axis, borders included, i.e. `sj.occlusion(..., "
        "stride=k × stride)`; k × stride (the *subset stride*) is at least the window (no overlap, so "
        "the naive loop's scores are read off the full map) and divides the image side − window, "
        "so each timed window is a full window of the real grid; about "
        f"{meta['per_axis']} windows per axis, fewer (at least 2) where a timed call would exceed "
        f"{meta['budget_gflop']:g} GFLOP of full re-inference. The incremental engine's cache pass (one "
        "forward pass storing the activations) runs once per call, here once per subset: *incr. win/s* "
        "is therefore pessimistic; *amortised* charges the cache pass (timed alone: "
        "`incremental.prepare`, jitted) once per real map: `N / (t_cache + N × (t_subset − t_cache) / n)`.",
        "",
        "| model | window/stride | windows (timed, subset stride) | GFLOP/window full → incr. | FLOP ratio | naive win/s | "
        "full win/s | incr. win/s | incr. amortised | auto win/s (choice) | incr./full | share of FLOP ratio "
        "(amortised) | auto / best of full, naive | max error vs full: incr., auto, naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wps, e = r["windows_per_s"], r["error"]
        lines.append(
            f"| {r['model']} | {r['window']}/{r['stride']} | {r['windows']} ({r['timed_windows']}, "
            f"{r['subset_stride']}) | {r['gflop_full']:.3f} → {r['gflop_incremental']:.3f} | {r['flop_ratio']:.2f}× | "
            f"{wps['naive']:.2f} | {wps['full']:.2f} | {wps['incremental']:.2f} | "
            f"{r['incremental_amortised_per_s']:.2f} | {wps['auto']:.2f} ({r['auto_choice']}) | {r['speedup']:.2f}× | "
            f"{100 * r['share_of_ratio']:.0f}% ({100 * r['share_of_ratio_amortised']:.0f}%) | "
            f"{r['auto_vs_best_of_full_naive']:.2f} | {e['incremental']:.1e}, {e['auto']:.1e}, {e['naive']:.1e} |")
    if meta.get("twins_logit_error") is not None:
        lines += ["", f"The Equinox NCHW model and its NHWC twin compute the same logits (max relative "
                  f"difference {meta['twins_logit_error']:.1e})."]
    lines += ["", "Errors are max |map − full map| / max |full map| (naive: its scores against the full map at "
              "the window origins). *Share of FLOP ratio*: incr./full speed-up over the counted ratio of the "
              "timed (subset) grid; amortised: over the real grid's ratio.", "",
              "Where the computation turns full (`flop_report(...).reasons`, real grid) and compile + first "
              "call seconds:", "",
              "| model | window/stride | reasons | compile s: naive, full, incr., auto (auto: incl. its measurement) |",
              "|---|---|---|---|"]
    for r in rows:
        c = r["compile_s"]
        reasons = "; ".join(r["reasons"]) or "none (incremental to the end)"
        lines.append(f"| {r['model']} | {r['window']}/{r['stride']} | {reasons} | "
                     f"{c['naive']:.1f}, {c['full']:.1f}, {c['incremental']:.1f}, {c['auto']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="64² images, ResNet-18 and the Equinox twins, one repeat")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; a temp folder for --smoke)")
    ap.add_argument("--models", default=None, help="comma-separated builder keys: " + ", ".join(MODELS.values()))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--per-axis", type=int, default=5, help="timed windows per axis (about; fewer for heavy models)")
    ap.add_argument("--budget", type=float, default=None,
                    help="GFLOP of full re-inference per timed call; heavier models time fewer windows")
    args = ap.parse_args(argv)
    size = 64 if args.smoke else 224
    settings = ((16, 8),) if args.smoke else SETTINGS
    repeats = args.repeats or (1 if args.smoke else 3)
    keys = args.models.split(",") if args.models else (["resnet18", "eqx_nchw", "eqx_nhwc"] if args.smoke
                                                          else list(MODELS.values()))
    unknown = set(keys) - set(MODELS.values())
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {list(MODELS.values())}")
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.smoke else ROOT / "benchmarks" / "results")
    with machine_lock(exclusive=True):
        meta = dict(machine=platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                    backend=jax.default_backend(), load_before=", ".join(f"{v:.1f}" for v in os.getloadavg()),
                    date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    size=size, repeats=repeats, smoke=args.smoke, per_axis=args.per_axis,
                    budget_gflop=args.budget or (5.0 if args.smoke else 80.0))
        if "eqx_nchw" in keys and "eqx_nhwc" in keys:
            meta["twins_logit_error"] = twins_difference(size)
        start = time.perf_counter()
        rows = []
        for label, key in MODELS.items():
            if key in keys:
                rows += run_model(label, key, size, settings, args.per_axis, repeats, meta["budget_gflop"])
        meta["wall_s"] = time.perf_counter() - start
        meta["load_after"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "architectures.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write_text(out / "architectures.md", markdown(meta, rows))
    print(f"wrote {out / 'architectures.md'}")


if __name__ == "__main__":
    main()
