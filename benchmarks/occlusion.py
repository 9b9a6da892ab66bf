"""Occlusion throughput, everything measured in one run on one machine.

For the ZF-style 224 model (window 64, stride 8: 441 windows) and the small 128 model:
  * saliency_jax.occlude.engine at several chunk sizes (windows per second, trace+compile apart);
  * (a) a naive loop: one jitted model call per occluded image;
  * (b) the model's plain forward throughput at the same batch sizes;
  * optional: Captum's Occlusion on the same weights (when torch and captum are installed);
  * achieved GFLOP/s against a float32 matmul peak measured in the same run.
Every timed map is checked against the naive loop's map beside its timing. Then a memory run
in a child process: a 1024×1024 image, window 32, stride 4 (62,001 windows), peak RSS recorded.

Usage:  python benchmarks/occlusion.py [--quick] [--skip-memory] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saliency_jax as sj  # noqa: E402
from benchmarks import _provenance  # noqa: E402
from benchmarks._timing import timed, timed_with_compile  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402


def matmul_peak(n=2048, repeats=7):
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    _, t, _ = timed(lambda: f(a, b), repeats)
    return 2 * n**3 / t / 1e9


def forward_flops(apply_fn, params, shape):
    compiled = jax.jit(apply_fn).lower(params, jnp.zeros((1, *shape), jnp.float32)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def naive_map(forward_one, params, image, window, stride, target):
    """One jitted call per occluded image, accumulated in numpy (Captum's grid, mean)."""
    h, w, _ = image.shape
    grid = sj.window_grid((h, w), window, stride)
    base = float(forward_one(params, image)[target])
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    host = np.asarray(image)
    for oy, ey in zip(grid.origins_y, grid.extents_y):
        for ox, ex in zip(grid.origins_x, grid.extents_x):
            occluded = host.copy()
            occluded[oy : oy + ey, ox : ox + ex] = 0.0
            drop = base - float(forward_one(params, jnp.asarray(occluded))[target])
            total[oy : oy + ey, ox : ox + ex] += drop
            count[oy : oy + ey, ox : ox + ex] += 1
    return total / count


def captum_time(model, variables, image, window, stride, target, chunk, repeats):
    try:
        import torch
        from captum.attr import Occlusion

        from tests.torch_port import port
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    net = port(model, variables)
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(image)[None], (0, 3, 1, 2))))
    occ = Occlusion(net)

    def run():
        with torch.no_grad():
            return occ.attribute(
                x, sliding_window_shapes=(3, *window), strides=(3, *stride), baselines=0.0,
                target=target, perturbations_per_eval=chunk,
            )[0, 0].numpy()

    first, median, out = timed(run, repeats)
    return {"seconds": median, "first_call_s": first, "map": out, "perturbations_per_eval": chunk}


def bench_model(name, window, stride, chunks, repeats, peak):
    model = sj.get_model(name, num_classes=2 if name == "small" else 1000)
    shape = model.input_size
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    image = jax.random.uniform(jax.random.key(1), shape)
    target = 1
    grid = sj.window_grid(shape[:2], window, stride)
    n_windows = grid.size
    flops = forward_flops(model.apply, variables, shape)
    print(f"[{name}] {shape} window {window} stride {stride}: {n_windows} windows, {flops / 1e9:.3f} GFLOP/forward", flush=True)

    forward = jax.jit(model.apply)
    fwd = {}
    for b in sorted(set([1, *chunks])):
        x = jnp.broadcast_to(image, (b, *shape))
        first, t, compile_s, _ = timed_with_compile(lambda: forward(variables, x), repeats * 2)
        fwd[b] = {"images_per_s": b / t, "gflops": b * flops / t / 1e9, "compile_s": compile_s, "first_call_s": first}
    print(f"  forward images/s by batch: { {b: round(v['images_per_s'], 1) for b, v in fwd.items()} }", flush=True)

    forward_one = jax.jit(lambda p, x: model.apply(p, x[None])[0])
    first, t_naive, ref = timed(lambda: naive_map(forward_one, variables, image, window, stride, target), max(1, repeats - 1))
    naive = {"seconds": t_naive, "windows_per_s": n_windows / t_naive, "first_call_s": first}
    print(f"  naive loop: {naive['windows_per_s']:.1f} windows/s", flush=True)

    ours = {}
    for c in chunks:
        run = lambda: sj.occlusion(model.apply, variables, image, window=window, stride=stride, target=target, chunk_size=c, method="full")  # noqa: E731
        first, t, compile_s, heat = timed_with_compile(run, repeats)
        err = float(np.max(np.abs(np.asarray(heat) - ref)) / max(np.max(np.abs(ref)), 1e-12))
        ours[c] = {
            "seconds": t,
            "windows_per_s": n_windows / t,
            "first_call_s": first,
            "trace_compile_s": compile_s,
            "gflops": (n_windows + 1) * flops / t / 1e9,
            "share_of_matmul_peak": (n_windows + 1) * flops / t / 1e9 / peak,
            "speedup_vs_naive": t_naive / t,
            "max_rel_err_vs_naive": err,
        }
        print(f"  ours chunk {c}: {n_windows / t:.1f} windows/s ({t_naive / t:.2f}× naive), "
              f"compile {compile_s:.2f}s, rel err {err:.1e}", flush=True)
        if err > 1e-4:
            raise SystemExit(f"map mismatch at chunk {c}: relative error {err}")
    best = min(ours, key=lambda c: ours[c]["seconds"])
    run = lambda: sj.occlusion(model.apply, variables, image, window=window, stride=stride, target=target)  # noqa: E731
    first, t, compile_s, heat = timed_with_compile(run, repeats)
    err = float(np.max(np.abs(np.asarray(heat) - ref)) / max(np.max(np.abs(ref)), 1e-12))
    auto = {"seconds": t, "windows_per_s": n_windows / t, "first_call_s": first, "trace_compile_s": compile_s,
            "speedup_vs_naive": t_naive / t,
            "speedup_vs_full_best": ours[best]["seconds"] / t, "max_rel_err_vs_naive": err,
            "flop_ratio": sj.flop_report(model.apply, variables, shape, window=window, stride=stride).ratio}
    print(f"  ours default (method='auto' → incremental): {n_windows / t:.1f} windows/s ({t_naive / t:.2f}× naive, "
          f"{auto['speedup_vs_full_best']:.2f}× full), rel err {err:.1e}", flush=True)
    if err > 1e-4:
        raise SystemExit(f"map mismatch with method='auto': relative error {err}")
    cap = captum_time(model, variables, image, window, stride, target, best, max(1, repeats - 1))
    if cap is not None:
        cap_err = float(np.max(np.abs(cap.pop("map") - ref)) / max(np.max(np.abs(ref)), 1e-12))
        cap.update(windows_per_s=n_windows / cap["seconds"], max_rel_err_vs_naive=cap_err,
                   ours_speedup=cap["seconds"] / ours[best]["seconds"], ours_auto_speedup=cap["seconds"] / auto["seconds"])
        print(f"  captum: {cap['windows_per_s']:.1f} windows/s, ours {cap['ours_speedup']:.2f}× faster, rel err {cap_err:.1e}", flush=True)
    return {
        "model": name, "input": list(shape), "window": list(window), "stride": list(stride),
        "windows": n_windows, "gflop_per_forward": flops / 1e9, "forward_by_batch": fwd,
        "naive": naive, "ours_by_chunk": ours, "best_chunk": best, "ours_auto": auto, "captum": cap,
    }


def devices_child(name, window, stride, chunks, repeats):
    """Ours only, in a process whose CPU is split into several XLA host devices."""
    model = sj.get_model(name, num_classes=2 if name == "small" else 1000)
    shape = model.input_size
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    image = jax.random.uniform(jax.random.key(1), shape)
    n_windows = sj.window_grid(shape[:2], window, stride).size
    ref = sj.occlusion(model.apply, variables, image, window=window, stride=stride, target=1, devices=jax.devices()[:1], method="full")
    out = {}
    for c in chunks:
        run = lambda: sj.occlusion(model.apply, variables, image, window=window, stride=stride, target=1, chunk_size=c, method="full")  # noqa: E731
        first, t, compile_s, heat = timed_with_compile(run, repeats)
        err = float(np.max(np.abs(np.asarray(heat) - np.asarray(ref))) / max(float(np.max(np.abs(ref))), 1e-12))
        out[c] = {"seconds": t, "windows_per_s": n_windows / t, "first_call_s": first, "trace_compile_s": compile_s,
                  "max_rel_err_vs_one_device": err}
    print(json.dumps({"devices": len(jax.devices()), "by_chunk": out}))


def run_devices_child(name, window, stride, chunks, repeats, n_devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    cmd = [sys.executable, __file__, "--devices-child", json.dumps([name, window, stride, chunks, repeats])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["by_chunk"] = {int(c): v for c, v in result["by_chunk"].items()}
    return result


def memory_child():
    """1024×1024×3, window 32, stride 4 → 249² = 62,001 windows, on a cheap strided-conv model."""
    import flax.linen as nn

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (8, 8), strides=(8, 8), padding="VALID")(x))
            return nn.Dense(2)(x.mean(axis=(1, 2)))

    model = Tiny()
    image = jax.random.uniform(jax.random.key(0), (1024, 1024, 3))
    variables = model.init(jax.random.key(1), image[None])
    start = time.perf_counter()
    heat = sj.occlusion(model.apply, variables, image, window=32, stride=4, target=0, chunk_size=8, method="full")
    heat = np.asarray(heat)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "image": [1024, 1024, 3], "window": 32, "stride": 4,
        "windows": sj.window_grid((1024, 1024), 32, 4).size, "chunk_size": 8,
        "seconds": seconds, "peak_rss_gib": peak_kib / 2**20, "finite": bool(np.isfinite(heat).all()),
    }))


def write_markdown(results, path):
    lines = [
        "# Occlusion throughput",
        "",
        f"{results['machine']['platform']}, {results['machine']['cpus']} CPU cores, jax {results['machine']['jax']}, "
        f"devices {results['machine']['devices']}; {results['machine']['date']}. "
        f"float32 matmul peak measured in the same run: **{results['matmul_peak_gflops']:.0f} GFLOP/s**.",
        "",
        "| model | windows | naive loop (win/s) | forward b=1 (img/s) | best forward (img/s) | saliency_jax full (win/s) | × naive | GFLOP/s | % matmul peak | trace+compile (s) | Captum (win/s) | × Captum | max rel. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["models"]:
        best = r["ours_by_chunk"][r["best_chunk"]]
        fwd_best = max(v["images_per_s"] for v in r["forward_by_batch"].values())
        cap = r["captum"]
        lines.append(
            f"| {r['model']} {tuple(r['input'])}, w{r['window'][0]} s{r['stride'][0]} | {r['windows']} "
            f"| {r['naive']['windows_per_s']:.1f} | {r['forward_by_batch'][1]['images_per_s']:.1f} | {fwd_best:.1f} "
            f"| **{best['windows_per_s']:.1f}** (chunk {r['best_chunk']}) | **{best['speedup_vs_naive']:.2f}×** "
            f"| {best['gflops']:.1f} | {100 * best['share_of_matmul_peak']:.0f}% | {best['trace_compile_s']:.2f} "
            f"| {cap['windows_per_s']:.1f} | {cap['ours_speedup']:.2f}× | {best['max_rel_err_vs_naive']:.1e} |"
            if cap else
            f"| {r['model']} {tuple(r['input'])}, w{r['window'][0]} s{r['stride'][0]} | {r['windows']} "
            f"| {r['naive']['windows_per_s']:.1f} | {r['forward_by_batch'][1]['images_per_s']:.1f} | {fwd_best:.1f} "
            f"| **{best['windows_per_s']:.1f}** (chunk {r['best_chunk']}) | **{best['speedup_vs_naive']:.2f}×** "
            f"| {best['gflops']:.1f} | {100 * best['share_of_matmul_peak']:.0f}% | {best['trace_compile_s']:.2f} | – | – "
            f"| {best['max_rel_err_vs_naive']:.1e} |"
        )
    lines += ["", "The default `method='auto'` (exact incremental re-inference where counted FLOPs say it is cheaper):", "",
              "| model | FLOP ratio | saliency_jax auto (win/s) | × naive | × full (best chunk) | × Captum | trace+compile (s) | max rel. err |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        a, cap = r["ours_auto"], r["captum"]
        vs_captum = f"{cap['ours_auto_speedup']:.1f}×" if cap else "–"
        lines.append(f"| {r['model']} w{r['window'][0]} s{r['stride'][0]} | {a['flop_ratio']:.2f}× | **{a['windows_per_s']:.1f}** "
                     f"| **{a['speedup_vs_naive']:.2f}×** | {a['speedup_vs_full_best']:.2f}× | {vs_captum} "
                     f"| {a['trace_compile_s']:.2f} | {a['max_rel_err_vs_naive']:.1e} |")
    lines += ["", "Windows per second by chunk size (saliency_jax, method='full') and forward images per second by batch:", ""]
    for r in results["models"]:
        by_chunk = ", ".join(f"{c}: {v['windows_per_s']:.1f}" for c, v in r["ours_by_chunk"].items())
        by_batch = ", ".join(f"{b}: {v['images_per_s']:.1f}" for b, v in r["forward_by_batch"].items())
        lines.append(f"- {r['model']}: chunks {{{by_chunk}}}; forward {{{by_batch}}}")
        split = r.get("host_devices")
        if split:
            by_split = ", ".join(f"{c}: {v['windows_per_s']:.1f}" for c, v in split["by_chunk"].items())
            err = max(v["max_rel_err_vs_one_device"] for v in split["by_chunk"].values())
            lines.append(f"  - CPU split into {split['devices']} XLA host devices (windows sharded over them): chunks "
                         f"{{{by_split}}}; best **{split['speedup_vs_naive']:.2f}× naive**; max rel. err vs one device {err:.1e}")
    mem = results.get("memory")
    if mem:
        lines += ["", f"Memory: {mem['image'][0]}×{mem['image'][1]} image, window {mem['window']}, stride {mem['stride']} "
                  f"({mem['windows']:,} windows, chunk {mem['chunk_size']}, a one-conv model): peak RSS "
                  f"**{mem['peak_rss_gib']:.2f} GiB** (whole process), {mem['seconds']:.0f} s."]
    lines += ["", "Timings: median of repeats after a warm-up call, `block_until_ready`; trace+compile = the seconds JAX "
              "reports tracing, lowering and compiling during the first call (`jax.monitoring` events, overlaps counted "
              "once). Every map is checked against the naive loop's map in the same run (max rel. err)."]
    prov = results.get("provenance")
    if prov:
        lines += ["", _provenance.markdown_line(prov)]
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check that the script runs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices-child", help=argparse.SUPPRESS)
    parser.add_argument("--host-devices", type=int, default=2, help="also time ours with the CPU split into N XLA devices")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.memory_child:
        return memory_child()
    if args.devices_child:
        name, window, stride, chunks, repeats = json.loads(args.devices_child)
        return devices_child(name, tuple(window), tuple(stride), chunks, repeats)

    provenance = _provenance.start(script=__file__)
    results = {
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "matmul_peak_gflops": matmul_peak(),
    }
    print(f"matmul peak: {results['matmul_peak_gflops']:.1f} GFLOP/s", flush=True)
    if args.quick:
        settings = [("small", (64, 64), (32, 32), (2, 4), 1)]
    else:
        settings = [("small", (32, 32), (8, 8), (1, 2, 4, 8, 16), 5), ("zf", (64, 64), (8, 8), (1, 2, 4, 8, 16), 3)]
    results["models"] = []
    for n, w, s, c, r in settings:
        entry = bench_model(n, w, s, c, r, results["matmul_peak_gflops"])
        if args.host_devices > 1:
            split = run_devices_child(n, w, s, c, r, args.host_devices)
            best = min(split["by_chunk"], key=lambda k: split["by_chunk"][k]["seconds"])
            split.update(best_chunk=best, speedup_vs_naive=entry["naive"]["seconds"] / split["by_chunk"][best]["seconds"])
            entry["host_devices"] = split
            print(f"  ours on {args.host_devices} host devices: {split['by_chunk'][best]['windows_per_s']:.1f} windows/s "
                  f"(chunk {best}, {split['speedup_vs_naive']:.2f}× naive)", flush=True)
        results["models"].append(entry)
    if not args.skip_memory and not args.quick:
        proc = subprocess.run([sys.executable, __file__, "--memory-child"], capture_output=True, text=True, check=True)
        results["memory"] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"memory: {results['memory']}", flush=True)
    results["provenance"] = _provenance.finish(provenance)  # torch and captum versions where Captum ran
    name = "occlusion_quick" if args.quick else "occlusion"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, args.out / f"{name}.md")
    print((args.out / f"{name}.md").read_text())


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
