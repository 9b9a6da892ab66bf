"""How ``sj.occlusion`` executes its chunks, against a naive loop, on small pure-JAX models.

Issue 15 item 2: an Equinox-style NCHW model ran 5× slower inside ``sj.occlusion`` than a naive
one-jitted-call-per-window loop. The cause is XLA:CPU's: a convolution whose operands are laid
out channels-first (``('NCHW', 'OIHW', 'NCHW')``) is not rewritten to its fast channels-last
form when it sits inside a loop body (``lax.map`` is a ``while`` loop), and runs an order of
magnitude slower there (jax-ml/jax#12868, open). The same model outside a loop is fine.

So the engine now drives its chunks from Python, one jitted call per chunk, wherever its
arguments are concrete and it runs on one device (``host loop``); ``lax.map`` remains for
calls traced inside a caller's ``jit``/``vmap`` and for several devices. This script measures,
per model, in one run (warm-up apart, median of repeats, every map checked against the naive
loop's):

* ``naive``: one jitted ``occlude + forward`` call per window, the map accumulated in numpy;
* ``lax.map``: ``sj.occlusion(method="full")`` traced inside ``jax.jit`` (the old execution);
* ``full``, ``incremental``, ``auto``: ``sj.occlusion`` as a user calls it (the host loop).

Models (random weights, 128×128×3 images, window 16 stride 8: 225 windows): two 3×3
convolutions with HWIO kernels (``nhwc``), the same with OIHW kernels and the input transposed
to NCHW (``nchw``, as Equinox and PyTorch ports do), and a MobileNet-style stack of depthwise
and pointwise convolutions with ReLU6 (``depthwise``); each also ``-centred`` (each image's mean
subtracted first, so the incremental engine has nothing to save and ``auto`` must pick among
full re-inference's batch sizes).

Usage:  python benchmarks/execution.py [--repeats 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saliency_jax as sj  # noqa: E402
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks._timing import timed  # noqa: E402

SIZE, WINDOW, STRIDE, TARGET = 128, 16, 8, 3
NHWC = ("NHWC", "HWIO", "NHWC")


def centred(x):
    """Subtract each image's mean: every pixel then depends on every window, so the incremental
    engine has nothing to save and ``method="auto"`` must choose among full re-inference's ways."""
    return x - x.mean(axis=(1, 2, 3), keepdims=True)


def two_conv(layout: str, c1=16, c2=32, k=10, centre=False):
    r = jax.random.split(jax.random.key(0), 3)
    if layout == "nchw":
        params = {"w1": jax.random.normal(r[0], (c1, 3, 3, 3)) * 0.2, "w2": jax.random.normal(r[1], (c2, c1, 3, 3)) * 0.1}
    else:
        params = {"w1": jax.random.normal(r[0], (3, 3, 3, c1)) * 0.2, "w2": jax.random.normal(r[1], (3, 3, c1, c2)) * 0.1}
    params["d"] = jax.random.normal(r[2], (c2, k)) * 0.3

    def apply(p, x):  # x: (B, H, W, C)
        x = centred(x) if centre else x
        if layout == "nchw":
            dn, axes = ("NCHW", "OIHW", "NCHW"), (2, 3)
            x = jnp.transpose(x, (0, 3, 1, 2))
        else:
            dn, axes = NHWC, (1, 2)
        x = jax.nn.relu(lax.conv_general_dilated(x, p["w1"], (1, 1), "SAME", dimension_numbers=dn))
        x = jax.nn.relu(lax.conv_general_dilated(x, p["w2"], (1, 1), "SAME", dimension_numbers=dn))
        return x.mean(axis=axes) @ p["d"]

    return apply, params


def depthwise(c=64, blocks=3, k=10, centre=False):
    r = jax.random.split(jax.random.key(0), 2 + 2 * blocks)
    params = {"stem": jax.random.normal(r[0], (3, 3, 3, c)) * 0.2, "d": jax.random.normal(r[1], (c, k)) * 0.3,
              "dw": [jax.random.normal(r[2 + 2 * b], (3, 3, 1, c)) * 0.3 for b in range(blocks)],
              "pw": [jax.random.normal(r[3 + 2 * b], (1, 1, c, c)) * 0.2 for b in range(blocks)]}

    def apply(p, x):
        x = centred(x) if centre else x
        x = jax.nn.relu6(lax.conv_general_dilated(x, p["stem"], (2, 2), "SAME", dimension_numbers=NHWC))
        for dw, pw in zip(p["dw"], p["pw"]):
            y = jax.nn.relu6(lax.conv_general_dilated(x, dw, (1, 1), "SAME", dimension_numbers=NHWC,
                                                      feature_group_count=c))
            x = x + lax.conv_general_dilated(y, pw, (1, 1), "SAME", dimension_numbers=NHWC)
        return x.mean(axis=(1, 2)) @ p["d"]

    return apply, params


MODELS = {"nhwc": lambda: two_conv("nhwc"), "nchw": lambda: two_conv("nchw"), "depthwise": depthwise,
          "nhwc-centred": lambda: two_conv("nhwc", centre=True), "nchw-centred": lambda: two_conv("nchw", centre=True),
          "depthwise-centred": lambda: depthwise(centre=True)}


def naive_map(apply, params, image):
    """One jitted occlude-and-forward call per window (all windows are whole here)."""
    hole = jnp.zeros((1, WINDOW, WINDOW, image.shape[-1]), image.dtype)
    one = jax.jit(lambda p, x, y, z: apply(p, lax.dynamic_update_slice(x, hole, (0, y, z, 0)))[0, TARGET])
    base = float(jax.jit(apply)(params, image[None])[0, TARGET])
    starts = range(0, SIZE - WINDOW + 1, STRIDE)
    scores = {(y, z): one(params, image[None], y, z) for y in starts for z in starts}
    total, count = np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE))
    for (y, z), s in scores.items():
        total[y:y + WINDOW, z:z + WINDOW] += base - float(s)
        count[y:y + WINDOW, z:z + WINDOW] += 1
    return total / count


def bench(name, repeats):
    apply, params = MODELS[name]()
    image = jax.random.uniform(jax.random.key(1), (SIZE, SIZE, 3))
    kw = dict(window=WINDOW, stride=STRIDE, target=TARGET)
    runs = {
        "naive": lambda: naive_map(apply, params, image),
        "lax.map": lambda: jax.jit(lambda p, x: sj.occlusion(apply, p, x, method="full", **kw))(params, image),
        "full": lambda: sj.occlusion(apply, params, image, method="full", **kw),
        "incremental": lambda: sj.occlusion(apply, params, image, method="incremental", **kw),
        "auto": lambda: sj.occlusion(apply, params, image, **kw),
    }
    report = sj.flop_report(apply, params, image.shape, window=WINDOW, stride=STRIDE)
    n_windows = ((SIZE - WINDOW) // STRIDE + 1) ** 2
    known = len(sj.occlude.engine.auto_decisions())
    out = {"model": name, "windows": n_windows, "runs": {}, "flop_ratio": report.ratio,
           "gflop_per_forward": report.full_flops / 1e9}
    ref = None
    for label, fn in runs.items():
        first, median, heat = timed(fn, repeats)
        heat = np.asarray(heat, np.float64)
        ref = heat if ref is None else ref
        err = float(np.abs(heat - ref).max() / max(np.abs(ref).max(), 1e-12))
        out["runs"][label] = {"windows_per_s": n_windows / median, "first_call_s": first, "max_rel_err_vs_naive": err}
        print(f"{name:10s} {label:12s} {n_windows / median:9.1f} windows/s  (first call {first:.2f} s, "
              f"rel. err {err:.1e})", flush=True)
    decisions = sj.occlude.engine.auto_decisions()[known:]
    decision = decisions[-1] if decisions else None
    out["auto_choice"] = decision._asdict() if decision else "rule (nothing measured)"
    best_other = max(out["runs"][k]["windows_per_s"] for k in ("naive", "lax.map"))
    out["auto_over_best_of_naive_and_lax_map"] = out["runs"]["auto"]["windows_per_s"] / best_other
    out["auto_over_best_of_naive_and_full"] = out["runs"]["auto"]["windows_per_s"] / max(
        out["runs"][k]["windows_per_s"] for k in ("naive", "full"))
    return out


def write_markdown(res, path):
    lines = [
        "# Execution of the occlusion chunks: host loop vs lax.map vs a naive loop",
        "",
        f"{res['machine']}; {res['date']}. {SIZE}×{SIZE}×3 images, window {WINDOW} stride {STRIDE} "
        f"({res['models'][0]['windows']} windows), windows/s (median of {res['repeats']} after a warm-up; "
        "every map checked against the naive loop's: column `err` is the largest relative error).",
        "",
        "| model | FLOP ratio | naive loop | lax.map (old full) | full (host loop) | incremental | auto | auto / best of naive, lax.map | auto / best of naive, full | max err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in res["models"]:
        r = m["runs"]
        err = max(v["max_rel_err_vs_naive"] for v in r.values())
        lines.append(f"| {m['model']} | {m['flop_ratio']:.2f} | " + " | ".join(f"{r[k]['windows_per_s']:.1f}" for k in
                                                       ("naive", "lax.map", "full", "incremental", "auto"))
                     + f" | {m['auto_over_best_of_naive_and_lax_map']:.2f}× | {m['auto_over_best_of_naive_and_full']:.2f}×"
                     + f" | {err:.1e} |")
    lines += ["", "What `auto` chose (measured candidates, seconds per window):", ""]
    for m in res["models"]:
        lines.append(f"- {m['model']}: {m['auto_choice']}")
    lines += ["", "Produced by `python benchmarks/execution.py`; see its docstring for the cause (jax-ml/jax#12868)."]
    if "provenance" in res:
        lines += ["", _provenance.markdown_line(res["provenance"])]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    provenance = _provenance.start(script=__file__)
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, backend "
                      f"{jax.default_backend()}", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "repeats": args.repeats, "models": [bench(m, args.repeats) for m in args.models]}
    res["provenance"] = _provenance.finish(provenance)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "execution.json.tmp"
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, args.out / "execution.json")
    write_markdown(res, args.out / "execution.md")


if __name__ == "__main__":
    with machine_lock(exclusive=True):
        main()
