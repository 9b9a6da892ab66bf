"""Occlusion on the architectures people use: naive loop, full, incremental and auto, same run.

Models (random weights, BatchNorm in inference form with calibrated statistics, from
:mod:`benchmarks.zoo`): ResNet-18, ResNet-50, MobileNetV2, VGG16, the ZF-style model, and a
channels-first Equinox CNN (NCHW activations, OIHW kernels, NHWC images transposed at its input;
skipped without equinox) beside its NHWC twin (the same weights, NHWC/HWIO). 224² images,
window 16 stride 4 (Krypton's setting) and window 32 stride 8, fill 0, one target logit.

Per model and setting:

* the counted FLOP ratio (``saliency_jax.occlude.incremental.flop_report``) of the real grid;
* windows/s of the naive loop (one jitted call per occluded image, the ``jax.jit`` a user
  writes first), of full re-inference as the engine runs it (``full@16``: 16 occluded images per
  jitted call, the CPU default chunk, compiled with the engine's ``jit_with_policy``; ``full@1``
  where ``method="auto"`` would consider it), and of the exact incremental engine
  (``incremental@32``: ``incremental.prepare`` once per image, ``incremental.window_outputs``
  vmapped over 32 windows per jitted call);
* ``method="auto"`` timed end to end: ``sj.occlusion(method="auto")`` over the real grid (all
  its windows), the median of ``--auto-repeats`` calls after a first call; the first call (trace,
  compile and, where auto has several candidates, its one-off measurement of them) is reported
  apart, and the choice is the engine's own (``engine.auto_decisions``, or the FLOP rule's single
  candidate). Its windows/s are per window of the real grid, the others' per window of the subset
  (both are per-window rates of the same grid);
* incremental's speed-up over full as a share of the FLOP ratio;
* every method's scores against full re-inference: max abs difference over the largest |score|.

Timing on a subset. The real grids have 2809 (w16 s4) and 625 (w32 s8) windows; a ResNet-50
over 2809 windows takes minutes per method on 2 cores, and ``sj.occlusion`` cannot be given a
subset (its stride may not exceed the window). Every method therefore scores the same subset:
``--windows`` (64) windows of the real grid, evenly spread over its flat index (first and last
included), 32 for models whose 64 full forward passes would exceed ``--budget`` GFLOP. Windows/s
are per window of the subset; the incremental engine's cache pass is timed alone and charged
once per real map: ``N / (t_cache + N × t_windows / n)``. Medians of ``--repeats`` timed calls
after a warm-up call, ``block_until_ready``; the warm-up (trace, compile, first run) apart.
Every map of ``sj.occlusion`` with ``method="incremental"`` / ``"auto"`` equal to ``"full"`` is
checked by the tests (``tests/clients``, ``tests/occlude``), not here.

Usage:  python benchmarks/architectures.py [--smoke] [--out DIR] [--models a,b] [--repeats R]
"""

from __future__ import annotations

import argparse
import datetime
import json
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

from saliency_jax._io import atomic_write_text  # noqa: E402
import saliency_jax as sj  # noqa: E402
from benchmarks import zoo  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks import _provenance  # noqa: E402
from benchmarks._timing import timed, timed_with_compile  # noqa: E402
from saliency_jax.occlude import engine  # noqa: E402
from saliency_jax.occlude import incremental  # noqa: E402
from saliency_jax.occlude.incremental import flop_report  # noqa: E402
from saliency_jax._compile import default_chunk_size, jit_with_policy  # noqa: E402
from saliency_jax.occlude.windows import window_grid  # noqa: E402

__all__ = ["MODELS", "SETTINGS", "equinox_twins", "subset", "method_runs", "run_setting", "run_model", "main"]

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


def subset(n_total: int, n: int) -> np.ndarray:
    """``n`` flat window indices of the real grid, evenly spread, first and last included."""
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(np.int32))


def _occluder(window: int, channels: int):
    patch = jnp.zeros((window, window, channels), jnp.float32)
    return lambda image, oy, ox: lax.dynamic_update_slice(image, patch, (oy, ox, jnp.int32(0)))


def _name(method: str, chunk: int, compiler: str = "policy") -> str:
    return f"{method}@{chunk}" + ("" if compiler == "policy" else f"/{compiler}")


def method_runs(apply_fn, variables, image, grid, window, ts, candidates):
    """Zero-argument timed callables, each scoring the windows ``ts`` of ``grid`` (``(n,)`` target
    logits of the occluded images), the way each method runs them:

    * ``naive``: one jitted call per occluded image (what a user writes first);
    * ``full@c``: the engine's full re-inference, ``c`` occluded images per jitted call (compiled
      with the engine's policy, ``jit_with_policy``; ``full@c/xla``: with XLA's defaults);
    * ``incremental@c`` (windows only) and ``cache``: the exact incremental engine
      (``incremental.prepare`` once per image, then ``incremental.window_outputs`` vmapped over
      ``c`` windows per jitted call).
    """
    occlude = _occluder(window, image.shape[-1])
    oy, ox = np.asarray(grid.origins_y), np.asarray(grid.origins_x)
    n_cols = len(ox)
    rows, cols = ts // n_cols, ts % n_cols

    def padded(a, c):
        return np.concatenate([a, np.full((-len(a)) % c, a[-1], a.dtype)]).reshape(-1, c)

    def full_chunk(v, img, oys, oxs):
        return apply_fn(v, jax.vmap(lambda a, b: occlude(img, a, b))(oys, oxs))[:, TARGET]

    one = jax.jit(lambda v, img, a, b: apply_fn(v, occlude(img, a, b)[None])[0, TARGET])
    fills = jnp.zeros((1, *image.shape), image.dtype)

    def prepare(v, img):
        return incremental.prepare(apply_fn, v, img[None], grid)

    prep = jit_with_policy(prepare, args=(variables,))

    def inc_chunk(v, img, caches, iys, ixs):
        def w(i, j):
            return incremental.window_outputs(apply_fn, v, img[None], fills, grid, caches, jnp.int32(0), i, j)[0, TARGET]
        return jax.vmap(w)(iys, ixs)

    caches = jax.block_until_ready(prep(variables, image))
    runs = {"naive": lambda: jnp.stack([one(variables, image, jnp.int32(oy[i]), jnp.int32(ox[j]))
                                        for i, j in zip(rows, cols)]),
            "cache": lambda: prep(variables, image)}
    for method, c, compiler in candidates:
        xla = compiler != "policy"
        if method == "full":
            fn = jit_with_policy(full_chunk, args=(variables,), library_defaults=xla)
            ys, xs = padded(oy[rows].astype(np.int32), c), padded(ox[cols].astype(np.int32), c)
            run = lambda fn=fn, ys=ys, xs=xs: jnp.concatenate(  # noqa: E731
                [fn(variables, image, jnp.asarray(a), jnp.asarray(b)) for a, b in zip(ys, xs)])[:len(ts)]
        else:
            fn = jit_with_policy(inc_chunk, args=(variables,), library_defaults=xla)
            ys, xs = padded(rows.astype(np.int32), c), padded(cols.astype(np.int32), c)
            run = lambda fn=fn, ys=ys, xs=xs: jnp.concatenate(  # noqa: E731
                [fn(variables, image, caches, jnp.asarray(a), jnp.asarray(b)) for a, b in zip(ys, xs)])[:len(ts)]
        runs[_name(method, c, compiler)] = run
    return runs


def _error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run_setting(label, apply_fn, variables, size, window, stride, n_timed, repeats, budget=1e9, auto_repeats=1):
    """One model at one window/stride: the row of the results table (see the module docstring)."""
    image = jax.random.normal(jax.random.key(1), (size, size, 3), jnp.float32)
    start = time.perf_counter()
    report = flop_report(apply_fn, variables, (size, size, 3), window=window, stride=stride)
    count_s = time.perf_counter() - start
    grid = window_grid((size, size), window, stride)
    n_total = len(grid.origins_y) * len(grid.origins_x)
    gflop = report.full_flops / 1e9
    n = 32 * max(1, min(n_timed // 32, int(budget / max(gflop, 1e-9)) // 32))
    ts = subset(n_total, n)
    plan = engine.auto_plan(ratio=report.ratio, full_flops=report.full_flops, platform=jax.default_backend(),
                            chunk_size=None, measurable=True)
    plan = [tuple(p) + ("policy",) * (3 - len(p)) for p in plan]  # (method, chunk, compiler)
    base_cands = [("full", default_chunk_size("full"), "policy"), ("incremental", default_chunk_size("incremental"), "policy")]
    candidates = base_cands + [p for p in plan if p not in base_cands]
    runs = method_runs(apply_fn, variables, image, grid, window, ts, candidates)
    seconds, compile_s, scores = {}, {}, {}
    for name, fn in runs.items():
        compile_s[name], seconds[name], scores[name] = timed(fn, repeats)
    base = float(jax.jit(apply_fn)(variables, image[None])[0, TARGET])
    n = len(ts)
    per_s = {name: n / seconds[name] for name in runs if name != "cache"}
    for name in list(per_s):  # the incremental engine pays its cache pass once per image: over the real map
        if name.startswith("incremental"):
            per_s[name] = n_total / (seconds["cache"] + n_total * seconds[name] / n)
    full_name, inc_name = _name(*base_cands[0]), _name(*base_cands[1])
    candidates = [_name(*p) for p in plan]
    auto_e2e = time_auto(apply_fn, variables, image, window, stride, n_total, auto_repeats)
    auto = auto_e2e["choice"] or candidates[0]
    reference = scores[full_name]
    row = dict(model=label, window=window, stride=stride, windows=n_total, timed_windows=n,
               gflop_full=gflop, gflop_incremental=report.incremental_flops / 1e9, flop_ratio=report.ratio,
               reasons=list(report.reasons), count_seconds=count_s, cache_pass_s=seconds["cache"],
               windows_per_s=per_s, compile_s=compile_s, auto_candidates=candidates, auto_choice=auto,
               auto_end_to_end=auto_e2e,
               error={name: _error(scores[name], reference) for name in runs if name != "cache"},
               max_abs_score=float(np.abs(base - np.asarray(reference)).max()))
    row["speedup"] = per_s[inc_name] / per_s[full_name]
    row["share_of_ratio"] = row["speedup"] / report.ratio
    best = max(per_s[full_name], per_s["naive"])
    row["auto_vs_best_of_full_naive"] = auto_e2e["windows_per_s"] / best
    print(f"{label} w{window} s{stride}: ratio {report.ratio:.2f}x; win/s " + ", ".join(
        f"{m} {v:.1f}" for m, v in per_s.items()) + f"; auto → {auto}, end to end {auto_e2e['windows_per_s']:.1f} "
        f"(first call {auto_e2e['first_call_s']:.1f} s)", flush=True)
    return row


def time_auto(apply_fn, variables, image, window, stride, n_total, repeats) -> dict:
    """``sj.occlusion(method="auto")`` end to end over the real grid: windows/s of the median of
    ``repeats`` calls after a first call; the first call (trace, compile and auto's one-off
    measurement of its candidates) apart; the engine's choice (``None`` when it measured nothing:
    the FLOP rule left one candidate)."""
    known = len(engine.auto_decisions())
    run = lambda: sj.occlusion(apply_fn, variables, image, window=window, stride=stride, target=TARGET,  # noqa: E731
                               method="auto")
    first, median, compile_s, _ = timed_with_compile(run, repeats)
    decisions = engine.auto_decisions()[known:]
    choice = _name(decisions[-1].method, decisions[-1].chunk_size, decisions[-1].compiler) if decisions else None
    return {"windows": n_total, "seconds": median, "windows_per_s": n_total / median, "first_call_s": first,
            "trace_compile_s": compile_s, "repeats": repeats, "choice": choice,
            "measured": [list(t) for t in decisions[-1].seconds_per_window] if decisions else None}


def run_model(label, key, size, settings, n_timed, repeats, budget, auto_repeats=1):
    """Every setting of one model (built once); ``[]`` when its library is absent."""
    built = build(key, size)
    if built is None:
        print(f"{label}: skipped (library not installed)", flush=True)
        return []
    apply_fn, variables = built
    return [run_setting(label, apply_fn, variables, size, w, s, n_timed, repeats, budget, auto_repeats)
            for w, s in settings]


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


def _auto_rate(row) -> str:
    e2e = row.get("auto_end_to_end")
    return f"{e2e['windows_per_s']:.2f}" if e2e else "not timed end to end"


def markdown(meta, rows) -> str:
    lines = [
        "# Occlusion on the architectures people use: naive loop, full, incremental, auto",
        "",
        f"Machine: {meta['machine']}, {meta['cpus']} CPU cores (load average before the run "
        f"{meta['load_before']}, after {meta['load_after']}), jax {meta['jax']}, {meta['backend']}, {meta['date']}. "
        f"`{meta.get('command', 'python benchmarks/architectures.py')}`, {meta['wall_s']:.0f} s wall. "
        f"Images {meta['size']}², fill 0, target logit {TARGET}, random weights (BatchNorm statistics "
        "calibrated on a random batch, inference form). Median of "
        f"{meta['repeats']} timed calls after a warm-up call; compile time apart.",
        "",
        f"**Timed on a subset**, the same for every method: {meta['windows']} windows of the real grid evenly "
        "spread over its flat index (first and last included; 32 where 64 full forward passes exceed "
        f"{meta['budget_gflop']:g} GFLOP). *full@16*: the engine's full re-inference, 16 occluded images per "
        "jitted call (`jit_with_policy`, the CPU default chunk); *incr.*: the exact incremental engine, 32 "
        "windows per jitted call, its cache pass (timed alone) charged once per real map, "
        "`N / (t_cache + N × t_windows / n)`; *naive*: one jitted call per occluded image. *auto*: `sj.occlusion(method=\"auto\")` timed end to end over "
        "the real grid (all its windows; `sj.occlusion` cannot score a subset), median of "
        f"{meta.get('auto_repeats', 1)} call(s) after a first call that is reported apart (trace, compile and "
        "auto's one-off measurement of its candidates); its choice is the engine's. Its maps for incremental "
        "and auto equal full in the tests.",
        "",
        "| model | window/stride | windows (timed) | GFLOP/window full → incr. | FLOP ratio | naive win/s | "
        "full@16 win/s | incr. win/s | auto: choice, win/s | incr./full | share of FLOP ratio | "
        "auto (end to end) / best of full, naive | max error vs full@16: incr., naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wps, e = r["windows_per_s"], r["error"]
        full, inc = "full@16", "incremental@32"
        lines.append(
            f"| {r['model']} | {r['window']}/{r['stride']} | {r['windows']} ({r['timed_windows']}) | "
            f"{r['gflop_full']:.3f} → {r['gflop_incremental']:.3f} | {r['flop_ratio']:.2f}× | "
            f"{wps['naive']:.2f} | {wps[full]:.2f} | {wps[inc]:.2f} | {r['auto_choice']}, {_auto_rate(r)} | "
            f"{r['speedup']:.2f}× | {100 * r['share_of_ratio']:.0f}% | {r['auto_vs_best_of_full_naive']:.2f} | "
            f"{e[inc]:.1e}, {e['naive']:.1e} |")
    if meta.get("twins_logit_error") is not None:
        lines += ["", f"The Equinox NCHW model and its NHWC twin compute the same logits (max relative "
                  f"difference {meta['twins_logit_error']:.1e})."]
    lines += ["", "Errors: max |scores − full@16 scores| / max |full@16 scores| over the timed windows (target "
              "logit of the occluded image).", "",
              "Where the computation turns full (`flop_report(...).reasons`), auto's candidates, every timing "
              "(win/s) and the warm-up seconds (trace + compile + first run):", "",
              "| model | window/stride | reasons | auto candidates | win/s | warm-up s | auto end to end: first call s, "
              "trace + compile s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        reasons = "; ".join(r["reasons"]) or "none (incremental to the end)"
        wps = ", ".join(f"{k} {v:.1f}" for k, v in r["windows_per_s"].items())
        warm = ", ".join(f"{k} {v:.1f}" for k, v in r["compile_s"].items())
        e2e = r.get("auto_end_to_end")
        first = f"{e2e['first_call_s']:.1f}, {e2e['trace_compile_s']:.1f}" if e2e else "not timed"
        lines.append(f"| {r['model']} | {r['window']}/{r['stride']} | {reasons} | {', '.join(r['auto_candidates'])} | "
                     f"{wps} | {warm} | {first} |")
    if "load_before" in meta.get("provenance", {}):
        lines += ["", _provenance.markdown_line(meta["provenance"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="64² images, ResNet-18 and the Equinox twins, one repeat")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; a temp folder for --smoke)")
    ap.add_argument("--models", default=None, help="comma-separated builder keys: " + ", ".join(MODELS.values()))
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--windows", type=int, default=64, help="timed windows (a multiple of 32; fewer for heavy models)")
    ap.add_argument("--auto-repeats", type=int, default=1,
                    help="timed calls of sj.occlusion(method='auto') over the real grid, after its first call")
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
        meta = dict(command=" ".join(["python benchmarks/architectures.py", *(argv if argv is not None else sys.argv[1:])]),
                    machine=platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                    backend=jax.default_backend(), load_before=", ".join(f"{v:.1f}" for v in os.getloadavg()),
                    date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    size=size, repeats=repeats, smoke=args.smoke, windows=args.windows,
                    budget_gflop=args.budget or (5.0 if args.smoke else 80.0), auto_repeats=args.auto_repeats)
        provenance = _provenance.start(argv, script=__file__)
        meta["command"] = provenance["command"]
        if "eqx_nchw" in keys and "eqx_nhwc" in keys:
            meta["twins_logit_error"] = twins_difference(size)
        start = time.perf_counter()
        rows = []
        for label, key in MODELS.items():
            if key in keys:
                rows += run_model(label, key, size, settings, args.windows, repeats, meta["budget_gflop"],
                                  meta["auto_repeats"])
        meta["wall_s"] = time.perf_counter() - start
        meta["load_after"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        provenance = _provenance.finish(provenance)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "architectures.json",
                      json.dumps({"meta": meta, "rows": rows, "provenance": provenance}, indent=1))
    atomic_write_text(out / "architectures.md", markdown({**meta, "provenance": provenance}, rows))
    print(f"wrote {out / 'architectures.md'}")


if __name__ == "__main__":
    main()
