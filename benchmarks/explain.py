"""Images per second for the main job: ``explain_paths`` on a folder of generated images.

The shipped model on 64 generated test images written as PNG files, methods occlusion +
deconvnet (the explain defaults for a 128×128 model: window 32, stride 8, 169 windows), raw
maps and rendered PNGs written. Compared in the same run, same process:

* **batched**: ``explain_paths(folder, batch_size=16)`` — 16 images per model call;
* **one image per call**: the same function with ``batch_size=1``;
* **library loop**: what a user would write without it: per file, ``sj.to_model_input``,
  ``sj.occlusion`` and ``sj.deconvnet`` on the one image, ``np.save`` of both maps (no
  rendering, so this baseline does less work than the others).

The folder job is a pipeline (:meth:`saliency_jax.app.worker.BatchWorker.run`): the next batch
is read and the previous one rendered and written on threads while the model computes. Issue 13
item 5's target: the batched job with rendering takes at most 1.10× the library loop's time.

Each variant is warmed up on the same folder (compilation reported apart), then timed as the
median of ``--repeats`` full runs (``force=True``). Every variant's raw maps are checked
against the batched run's. One CPU device, as the ``saliency-jax`` command uses. Results: benchmarks/results/explain.{json,md}.

Usage:  python benchmarks/explain.py [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks._timing import compile_spans, union_seconds  # noqa: E402
import saliency_jax as sj
from saliency_jax.app.explain import explain_paths

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("occlusion", "deconvnet")


def library_loop(model, files, out: Path, window, stride):
    for f in files:
        x = sj.to_model_input(f)
        occ = sj.occlusion(model.apply_fn, model.params, x, window=window, stride=stride)
        dec = sj.deconvnet(model.apply_fn, model.params, x)
        np.save(out / f"{f.name}.occlusion.npy", np.asarray(occ, np.float32))
        np.save(out / f"{f.name}.deconvnet.npy", np.asarray(dec, np.float32))


def timed(run, repeats):
    """(first run s, median s, every timed run's s, trace + compile s of the first run from JAX's events)."""
    with compile_spans() as spans:
        t0 = time.perf_counter()
        run()
        first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), times, union_seconds(spans)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    provenance = _provenance.start(script=__file__)

    model = sj.load()
    work = Path(tempfile.mkdtemp(prefix="sj-bench-explain-"))
    src = work / "images"
    src.mkdir()
    gen = sj.generate(args.images, split="test", seed=1)
    for i, im in enumerate(gen.images):
        Image.fromarray(im).save(src / f"im{i:03d}.png")
    files = sorted(src.glob("*.png"))
    h = model.input_size[0]
    window, stride = h // 4, h // 16

    def explain(batch, formats=("png", "npy")):
        return lambda out: explain_paths(src, out, model=model, methods=METHODS, batch_size=batch, formats=formats,
                                         force=True, progress=False)

    variants = {
        "batched (batch 16)": explain(16),
        "one image per call (batch 1)": explain(1),
        "library loop (no rendering)": lambda out: library_loop(model, files, out, window, stride),
        "batched, raw maps only (no PNG)": explain(16, formats=("npy",)),
    }
    rows = {}
    for name, fn in variants.items():
        out = work / name.split()[0] / name.split()[-1].strip(")")
        out.mkdir(parents=True, exist_ok=True)
        first, med, times, compile_s = timed(lambda: fn(out), args.repeats)
        rows[name] = {"out": out, "first_s": first, "median_s": med, "times_s": times,
                      "images_per_s": args.images / med, "compile_s": compile_s}
        print(f"{name:34s} {args.images / med:7.2f} img/s  (median {med:.2f} s, first run {first:.2f} s)", flush=True)

    ref = rows["batched (batch 16)"]["out"]
    for name, r in rows.items():
        diff = 0.0
        for f in files:
            for m in METHODS:
                a = np.load(ref / f"{f.name}.{m}.npy")
                b = np.load(r["out"] / f"{f.name}.{m}.npy")
                diff = max(diff, float(np.max(np.abs(a - b))))
        r["max_abs_diff_vs_batched"] = diff
        r.pop("out")

    base = rows["one image per call (batch 1)"]["images_per_s"]
    loop = rows["library loop (no rendering)"]["images_per_s"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}; devices {len(jax.devices())} "
                   f"({jax.devices()[0].platform}); load average at the end {os.getloadavg()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "images": args.images, "methods": list(METHODS), "window": window, "stride": stride,
        "variants": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explain.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# `explain` throughput: a folder of generated images, occlusion + deconvnet",
        "",
        f"Machine: {result['machine']}. {result['date']}. The shipped model (128×128), {args.images} generated test "
        f"images as PNG files, window {window}, stride {stride} ({((h - window) // stride + 1) ** 2} windows), "
        f"predicted class. Median of {args.repeats} full runs after a warm-up run; the warm-up's trace + compile "
        "(the seconds JAX reports for them) is reported apart. Maps of every variant compared with the batched run's.",
        "",
        "| variant | images/s | vs one image per call | vs library loop | median run (s) | compile (s) | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f}× | {r['images_per_s'] / loop:.2f}× | "
            f"{r['median_s']:.2f} | {r['compile_s']:.1f} | {r['max_abs_diff_vs_batched']:.1e} |"
        )
    job = rows["batched (batch 16)"]["median_s"] / rows["library loop (no rendering)"]["median_s"]
    npy = rows["batched, raw maps only (no PNG)"]["median_s"] / rows["library loop (no rendering)"]["median_s"]
    result["job_time_vs_library_loop"] = job
    result["provenance"] = _provenance.finish(provenance)
    (args.out / "explain.json").write_text(json.dumps(result, indent=2))
    lines += [
        "",
        f"**The full job with rendering takes {job:.2f}× the library loop's time** (target ≤ 1.10×: "
        f"{'met' if job <= 1.10 else 'not met'}); without PNGs {npy:.2f}×. "
        f"{os.cpu_count()} CPUs: the rendering threads share them with XLA while the model computes.",
        "", _provenance.markdown_line(result["provenance"]),
    ]
    (args.out / "explain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
