"""Images per second of the folder job on Ray against the local engine, on the same images.

The shipped model on ``--images`` generated test images written as PNG files (methods
occlusion + deconvnet, the explain defaults for a 128×128 model: window 32, stride 8; raw maps
and rendered PNGs written; batch ``--batch-size``). Every configuration runs in a child process
of its own, so its CPU affinity and XLA thread settings are set before JAX starts:

* **local**: ``explain_paths(engine="local")``, every core this process may use, XLA's
  default threads;
* **ray, 1 worker**: ``engine="ray", workers=1`` on a Ray instance started in the child with
  every core (the actor reserves them all and runs XLA with as many threads);
* **local, 1 core**: the local engine with its process pinned to core 0
  (``os.sched_setaffinity`` before JAX starts, as ``taskset -c 0`` would) and XLA single-threaded
  (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, what each actor uses);
* **ray, 1 worker, 1 core** and **ray, 2 workers, 1 core each**: a Ray instance with as many
  CPUs as workers; each actor pinned to its own core by ``RayEngine(pin_cpus=True)`` (actor
  ``i`` on core ``i``; ``explain_paths`` builds its engine through ``ray_engine.RayEngine``, which
  the child replaces by the pinning variant) and single-threaded XLA. The driver and Ray's own
  processes float over both cores in both.

Every call of ``explain_paths(engine="ray")`` starts its actors and compiles once in each (a
fixed cost per run), while the local engine compiles once per process. So the per-image cost is
measured warm on both sides: the local engine as the median of ``--repeats`` runs of
``explain_paths`` after a first, compiling run; Ray as the median of as many runs of the same
steps (hash the inputs, :meth:`RayEngine.run <saliency_jax.app.ray_engine.RayEngine.run>`) on an
open engine whose actors compiled in a first run. A "fresh run" (one whole ``explain_paths``
call on the running Ray instance) shows the fixed cost. The **scheduling overhead** is the
median round trip of a Ray actor call carrying one batch of
:class:`~saliency_jax.app.worker.Item` out and as many outcomes back (an actor that does
nothing else), per image. Each configuration's raw maps are compared with the local engine's.

Results: benchmarks/results/scale_out.{json,md}.

Usage:  python benchmarks/scale_out.py [--images 64] [--batch-size 8] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

#: name -> (engine, workers, cores of the child (None: all), Ray CPUs, pin the actors)
CONFIGS = {
    "local": ("local", None, None, None, False),
    "ray, 1 worker": ("ray", 1, None, None, False),
    "local, 1 core": ("local", None, [0], None, False),
    "ray, 1 worker, 1 core": ("ray", 1, None, 1, True),
    "ray, 2 workers, 1 core each": ("ray", 2, None, 2, True),
}


# --------------------------------------------------------------------------- one configuration (child)


class Echo:
    """An actor that returns a finished outcome for each item: Ray's cost per batch and nothing else."""

    def run(self, items):
        from saliency_jax.app.worker import Outcome

        return [Outcome(str(i.path), "done", None, Path(f"{i.path}.json")) for i in items]


def scheduling_overhead(ray, folder: Path, batch_size: int, calls: int = 200) -> float:
    """Median seconds of one actor call with a batch of items out and outcomes back."""
    from saliency_jax.app.worker import Item

    batch = [Item(p, p.name, "0" * 64) for p in sorted(folder.glob("*.png"))[:batch_size]]
    actor = ray.remote(num_cpus=0)(Echo).remote()
    ray.get(actor.run.remote(batch))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        ray.get(actor.run.remote(batch))
        times.append(time.perf_counter() - start)
    ray.kill(actor)
    return statistics.median(times)


def child(args) -> dict:
    engine, workers, cores, ray_cpus, pin = CONFIGS[args.child]
    if cores is not None:
        os.sched_setaffinity(0, cores)
    if cores is not None or pin:  # the local engine on one core runs XLA as an actor does
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip()
    import numpy as np

    from saliency_jax.app import explain, inputs, ray_engine
    from saliency_jax.app.worker import Item
    from saliency_jax.model import checkpoint

    model = checkpoint.load()
    record = {"cores": sorted(os.sched_getaffinity(0)), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    folder = Path(args.work) / "images"
    tag = args.child.replace(" ", "").replace(",", "-")
    out, fresh = Path(args.work) / tag / "steady", Path(args.work) / tag / "fresh"
    options = dict(model=model, methods=args.methods, window=args.window, stride=args.stride,
                   batch_size=args.batch_size, force=True, progress=False)
    if engine == "local":
        def run():  # what `saliency-jax explain` does (hashing, the run, index.html), warm after the first call
            r = explain.explain_paths(folder, out, **options)
            assert len(r.done) == args.images and not r.failed, r.failed
    else:
        import ray

        if pin:
            class Pinned(ray_engine.RayEngine):
                def __init__(self, *a, **k):
                    super().__init__(*a, pin_cpus=True, **k)

            ray_engine.RayEngine = Pinned  # explain_paths looks the class up when it runs
        start = time.perf_counter()
        ray.init(address="local", num_cpus=ray_cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
        record["ray_init_s"] = time.perf_counter() - start
        record["overhead_per_batch_s"] = scheduling_overhead(ray, folder, args.batch_size)
        start = time.perf_counter()  # a whole run as `explain_paths` does it: actors started and compiled for it
        r = explain.explain_paths(folder, fresh, engine="ray", workers=workers, **options)
        record["fresh_run_s"] = time.perf_counter() - start
        assert len(r.done) == args.images and not r.failed, r.failed
        info = explain.run_info(model, methods=args.methods, window=args.window, stride=args.stride)
        engine_ = ray_engine.RayEngine(workers=workers).__enter__()  # uses the instance above; actors stay warm

        def run():  # the same steps on warm actors: hash the inputs, run the batches
            items = [Item(p, p.name, inputs.sha256_file(p)) for p in sorted(folder.glob("*.png"))]
            got = []
            engine_.run(items, out=out, info=info, loaded=model, batch_size=args.batch_size, on_outcome=got.append)
            assert len(got) == args.images and all(o.status == "done" for o in got)

    start = time.perf_counter()
    run()
    record["first_run_s"] = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    record["times_s"], record["median_s"] = times, statistics.median(times)
    diff = 0.0
    if args.reference:
        for f in sorted(out.glob("*.npy")):
            diff = max(diff, float(np.max(np.abs(np.load(f) - np.load(Path(args.reference) / f.name)))))
    record["max_abs_diff_vs_local"] = diff
    record["out"] = str(out)
    return record


# --------------------------------------------------------------------------- the benchmark (parent)


def run_child(name: str, args, work: Path, reference: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--images", str(args.images),
           "--batch-size", str(args.batch_size), "--repeats", str(args.repeats),
           "--methods", args.methods, "--window", str(args.window), "--stride", str(args.stride)]
    if reference:
        cmd += ["--reference", reference]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(rows: dict, args) -> dict:
    for r in rows.values():
        r["per_image_s"] = r["median_s"] / args.images
        r["images_per_s"] = args.images / r["median_s"]
        if "overhead_per_batch_s" in r:
            r["overhead_per_image_s"] = r["overhead_per_batch_s"] / args.batch_size

    def cost(name):
        return rows[name]["per_image_s"]

    return {
        "ray1_vs_local_per_image": cost("ray, 1 worker") / cost("local"),
        "ray1_1core_vs_local_1core_per_image": cost("ray, 1 worker, 1 core") / cost("local, 1 core"),
        "ray2_vs_ray1_speedup_1core_each": cost("ray, 1 worker, 1 core") / cost("ray, 2 workers, 1 core each"),
        "ray2_vs_local_1core_speedup": cost("local, 1 core") / cost("ray, 2 workers, 1 core each"),
        "ray2_vs_local_all_cores_speedup": cost("local") / cost("ray, 2 workers, 1 core each"),
    }


def projection(rows: dict, args) -> list[str]:
    c1 = rows["ray, 1 worker, 1 core"]["per_image_s"]
    o = rows["ray, 1 worker"]["overhead_per_batch_s"]
    ceiling = args.batch_size / o
    return [
        "## Projection on paper: N machines × G GPUs",
        "",
        f"Measured here: one worker on one CPU core costs {c1 * 1e3:.0f} ms per image in steady state; Ray's round "
        f"trip for one batch of {args.batch_size} items out and outcomes back costs {o * 1e3:.2f} ms "
        f"({o / args.batch_size * 1e3:.3f} ms per image). Ray's documentation (Ray Core, \"Optimizing "
        "Performance\", \"Small tasks\") says each task carries some overhead and that tasks shorter than about "
        "ten milliseconds are unlikely to speed up; one of our batches lasts hundreds of milliseconds.",
        "",
        "* Workers are independent (a batch of paths goes out, outcomes come back; each worker writes its files "
        "into the shared output folder), so throughput ≈ N·G / c_gpu images/s, c_gpu being one worker's "
        "per-image cost on one GPU (not measured here: this machine has no GPU). On CPUs: N machines × C cores "
        f"≈ N·C / {c1:.3f} s = N·C × {1 / c1:.1f} images/s.",
        f"* The shared part is the driver's `ray.wait` loop: about {o * 1e3:.1f} ms of Ray per batch caps it near "
        f"{ceiling:,.0f} images/s at batch {args.batch_size} (linear in the batch size), before hashing the "
        "inputs (the driver reads every input once) and recording outcomes.",
        f"* Example: were a GPU 50× one core here (c_gpu ≈ {c1 / 50 * 1e3:.1f} ms, an assumption, not a "
        f"measurement), 4 machines × 8 GPUs would reach ≈ {32 / (c1 / 50):,.0f} images/s, "
        f"{'under' if 32 / (c1 / 50) < ceiling else 'above'} that ceiling at batch {args.batch_size}; batches "
        "of 64 raise the ceiling 8×.",
        "* Fixed costs per run (column \"fresh run\" minus a steady run): starting the actors, fetching the model "
        "from the object store and compiling once per actor, paid in parallel on every worker.",
    ]


def write(rows: dict, ratios: dict, args, out_dir: Path, provenance: dict) -> None:
    import jax

    rows = _provenance.relative(rows)  # each configuration's output folder, named without this machine's paths
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}; "
                   f"load average at the end {os.getloadavg()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "images": args.images, "batch_size": args.batch_size, "repeats": args.repeats,
        "methods": args.methods, "window": args.window, "stride": args.stride, "smoke": args.smoke,
        "configs": rows, "ratios": ratios,
        "targets": {"ray1_per_image_at_most_1.15x_local": ratios["ray1_vs_local_per_image"] <= 1.15,
                    "ray2_at_least_1.7x_ray1_1core_each": ratios["ray2_vs_ray1_speedup_1core_each"] >= 1.7},
        "provenance": _provenance.finish(provenance),
    }
    name = "scale_out-smoke" if args.smoke else "scale_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# The folder job on Ray against the local engine (`benchmarks/scale_out.py`)",
        "",
        f"Machine: {result['machine']}. {result['date']}. The shipped model (128×128), {args.images} generated test "
        f"images as PNG files, methods {args.methods}, window {args.window}, stride {args.stride}, batch "
        f"{args.batch_size}, PNG + npy written. Each configuration in a process of its own; median of "
        f"{args.repeats} warm runs (local: `explain_paths` after a first, compiling run; Ray: the same inputs hashed "
        "and run on an open `RayEngine` whose actors compiled in a first run). \"Fresh run\": one `explain_paths("
        "engine='ray')` call on the running Ray instance, actors started and compiled for it. The machine is "
        "shared with other work (see the load average): absolute figures are noisy; compare the ratios.",
        "",
        "| configuration | cores | images/s (warm) | per image (ms) | first run (s) | fresh run (s) | "
        "Ray round trip per image (ms) | max abs diff vs local |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in rows.items():
        over = f"{r['overhead_per_image_s'] * 1e3:.3f}" if "overhead_per_image_s" in r else "–"
        fresh = f"{r['fresh_run_s']:.1f}" if "fresh_run_s" in r else "–"
        cores = r.get("pinned") or ",".join(map(str, r["cores"]))
        lines.append(f"| {n} | {cores} | {r['images_per_s']:.2f} | {r['per_image_s'] * 1e3:.1f} | "
                     f"{r['first_run_s']:.1f} | {fresh} | {over} | {r['max_abs_diff_vs_local']:.1e} |")
    t = result["targets"]
    lines += [
        "",
        "## Against the targets",
        "",
        f"* Ray with 1 worker costs **{ratios['ray1_vs_local_per_image']:.2f}×** the local engine per image (both on "
        f"every core; target ≤ 1.15×: {'met' if t['ray1_per_image_at_most_1.15x_local'] else 'NOT met'}); "
        f"on one core each: **{ratios['ray1_1core_vs_local_1core_per_image']:.2f}×**.",
        f"* 2 workers, one core each, give **{ratios['ray2_vs_ray1_speedup_1core_each']:.2f}×** one worker on one "
        f"core (target ≥ 1.7×: {'met' if t['ray2_at_least_1.7x_ray1_1core_each'] else 'NOT met'}); "
        f"{ratios['ray2_vs_local_1core_speedup']:.2f}× the local engine pinned to one core, "
        f"{ratios['ray2_vs_local_all_cores_speedup']:.2f}× the local engine on both cores.",
        "* A fresh run pays Ray's fixed cost (actor start, model fetch, one compile per actor) once: it pays off "
        "on folders where per-image work dominates, and on more cores or machines than one process can use.",
        "",
        *projection(rows, args),
        "",
        _provenance.markdown_line(result["provenance"]),
        "",
    ]
    (out_dir / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def make_images(work: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    from saliency_jax.model import data

    folder = work / "images"
    folder.mkdir()
    for i, im in enumerate(data.generate(n, split="test", seed=1).images):
        Image.fromarray(np.asarray(im)).save(folder / f"im{i:03d}.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="occlusion,deconvnet")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="8 images, batch 2, one repeat, 4 windows")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke and not args.child:
        args.images, args.batch_size, args.repeats = 8, 2, 1
        args.methods, args.window, args.stride = "occlusion", 64, 64
    if args.child:
        print(json.dumps(child(args)))
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("scale_out needs two cores (one per worker)")
    with machine_lock(exclusive=True):
        provenance = _provenance.start(script=__file__)
        work = Path(tempfile.mkdtemp(prefix="sj-bench-scale-"))
        make_images(work, args.images)
        rows, reference = {}, None
        for name, (engine, workers, cores, ray_cpus, pin) in CONFIGS.items():
            rows[name] = run_child(name, args, work, reference)
            if pin:
                rows[name]["pinned"] = "actor i on core i"
            reference = reference or rows[name]["out"]
            r = rows[name]
            print(f"{name:30s} median {r['median_s']:.2f} s  (first run {r['first_run_s']:.1f} s)", file=sys.stderr, flush=True)
        write(rows, summarize(rows, args), args, args.out, provenance)


if __name__ == "__main__":
    main()
