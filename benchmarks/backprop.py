"""Unit projections per second from one forward pass: our engine against the default JAX VJP.

On the ZF-style 224×224×3 model (``get_model("zf")``, random weights scaled by 1/sqrt(fan-in)),
project the ``U`` strongest ``conv5`` activations of one image back to pixels with the
deconvnet rule: one forward pass, the backward pass vmapped over the ``U`` units. Variants,
timed in the same run:

* **default VJP** (the baseline): ``jax.vjp`` of the deconvnet-rule model with JAX's own
  ``reduce_window_max`` VJP (select-and-scatter over the saved float input), vmapped over the
  units' cotangents — what a JAX user would write (``project_units(switches=False,
  receptive_field=False)``);
* **switches**: max pools unpooled through switches recorded in the forward pass (int8
  residual), still ``jax.vjp`` over the full feature maps;
* **receptive field**: each unit's backward pass restricted to its receptive field
  (``saliency_jax.backprop.receptive_field``), with the default max-pool VJP on the regions;
* **switches + receptive field, XLA transposes**: both, with XLA's own transposed strided
  convolutions (the sub-pixel form switched off);
* **engine** (the default of ``project_units``): switches + receptive field + sub-pixel
  transposed strided convolutions.

The maps of every variant are checked against the baseline next to the timings (switches
alone: bit-identical; receptive field: max |diff| reported, allclose required). Compile time
is measured apart (AOT ``lower().compile()``); each timing is the median of ``--repeats`` runs
after one warm-up, with ``block_until_ready``.

Usage: ``python benchmarks/backprop.py [--units 9 64] [--repeats 5]``; writes
``benchmarks/results/backprop.json`` and ``backprop.md``.
"""

from __future__ import annotations

import argparse
import sys
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import flax.linen as nn
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from saliency_jax import backprop
from saliency_jax.backprop import receptive_field as local, rules
from saliency_jax.model.architectures import get_model

RESULTS = Path(__file__).parent / "results"


def random_params(model, shape, seed=0):
    """Random weights of the right shapes (N(0, 1/fan_in)), without compiling the initialisers."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))

    def leaf(s):
        fan_in = float(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 100.0
        return jnp.asarray(rng.standard_normal(s.shape, dtype=np.float32) / np.float32(np.sqrt(fan_in)))

    return jax.tree_util.tree_map(leaf, shapes)


def residual_bytes(fn, x) -> int:
    """Bytes of the arrays a ``jax.vjp`` of ``fn`` keeps for its backward pass (shape-only)."""
    leaves = jax.eval_shape(lambda v: jax.tree_util.tree_leaves(jax.vjp(fn, v)[1]), x)
    return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in leaves))


def timed(compiled, *args, repeats):
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="+", default=[9, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layer", default="conv5")
    ap.add_argument("--models", nargs="+", default=["zf", "small"])
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    provenance = _provenance.start(script=__file__)
    results = [run_model(name, args) for name in args.models]
    report = {"provenance": _provenance.finish(provenance), "models": results}
    (RESULTS / "backprop.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = []
    for result in results:
        lines += markdown(result)
    lines += ["", _provenance.markdown_line(report["provenance"]), ""]
    (RESULTS / "backprop.md").write_text("\n".join(lines))
    print("\n".join(lines))


#: (key, label, switches, receptive_field, sub-pixel transposes)
VARIANTS = (
    ("default", "default VJP (baseline)", False, False, True),
    ("switches", "switches", True, False, True),
    ("rf", "receptive field", False, True, True),
    ("switches_rf_xla", "switches + receptive field, XLA transposes", True, True, False),
    ("engine", "switches + receptive field + sub-pixel (engine default)", True, True, True),
)


def run_model(model_name, args):
    model = get_model(model_name)
    shape = (1,) + tuple(model.input_size)
    params = random_params(model, shape)
    image = jnp.asarray(np.random.default_rng(1).normal(size=shape[1:]).astype(np.float32))

    rows = []
    for u in args.units:
        out = {}
        for key, _, switches, rf, subpixel in VARIANTS:
            local._SUBPIXEL = subpixel
            jax.clear_caches()  # the flag is read at trace time
            fn = jax.jit(functools.partial(backprop.project_units, model.apply, layer=args.layer, top_k=u,
                                           switches=switches, receptive_field=rf))
            t0 = time.perf_counter()
            compiled = fn.lower(params, image).compile()
            compile_s = time.perf_counter() - t0
            local._SUBPIXEL = True
            med, times = timed(compiled, params, image, repeats=args.repeats)
            out[key] = dict(compile_s=compile_s, median_s=med, times_s=times,
                            result=jax.device_get(compiled(params, image)))
        base = out["default"]["result"]
        scale = float(np.abs(base.maps).max())
        row = dict(units=u, maps_max_abs=scale, variants={})
        for key, label, switches, rf, subpixel in VARIANTS:
            r = out[key]
            res = r.pop("result")
            diff = float(np.abs(res.maps - base.maps).max())
            if not np.array_equal(res.units, base.units) or not np.allclose(res.maps, base.maps, rtol=1e-5,
                                                                           atol=1e-6 * scale):
                raise SystemExit(f"{key} maps differ from the default VJP for U={u}: max |diff| {diff} (scale {scale})")
            if key == "switches" and diff != 0.0:
                raise SystemExit(f"switch pool maps are not bit-identical for U={u} (max |diff| {diff})")
            row["variants"][key] = dict(
                label=label, switches=switches, receptive_field=rf, subpixel=subpixel and rf,
                per_s=u / r["median_s"], speedup=out["default"]["median_s"] / r["median_s"],
                maps_bit_identical=bool(np.array_equal(res.maps, base.maps)), maps_max_abs_diff=diff, **r)
        rows.append(row)
        print(f"{model_name} U={u}: " + ", ".join(
            f"{k} {v['per_s']:.1f}/s ({v['speedup']:.2f}x, max diff {v['maps_max_abs_diff']:.2g})"
            for k, v in row["variants"].items()), flush=True)

    # residual memory of the projection's forward pass (shapes only, nothing is run)
    feats = backprop.layer_features(model.apply, args.layer)
    residuals = {}
    for switches in (True, False):
        f = backprop.with_rule(lambda p, v: feats(p, v[None])[0], "deconvnet", switches=switches, data_argnums=1)
        residuals[switches] = residual_bytes(lambda v: f(params, v), image)
    pool_in = jax.ShapeDtypeStruct(jax.eval_shape(backprop.layer_features(model.apply, "conv1"), params,
                                                  jax.ShapeDtypeStruct(shape, jnp.float32)).shape, jnp.float32)
    pool_default = residual_bytes(lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding="SAME"), pool_in)
    pool_switch = residual_bytes(lambda v: rules.max_pool_switched(v, (1, 3, 3, 1), (1, 2, 2, 1), "SAME"), pool_in)
    # pool1's backward alone, for U signals from one forward pass
    u = max(args.units)
    xin = jnp.asarray(np.random.default_rng(2).normal(size=pool_in.shape[1:]).astype(np.float32))
    pool_times = {}
    for switches in (True, False):
        pool = ((lambda v: rules.max_pool_switched(v, (3, 3, 1), (2, 2, 1), "SAME")) if switches
                else (lambda v: nn.max_pool(v[None], (3, 3), strides=(2, 2), padding="SAME")[0]))
        out_shape = jax.eval_shape(pool, xin).shape
        gs = jnp.asarray(np.random.default_rng(3).normal(size=(u,) + out_shape).astype(np.float32))
        fn = jax.jit(lambda v, g, pool=pool: jax.vmap(jax.vjp(pool, v)[1])(g)[0]).lower(xin, gs).compile()
        pool_times[switches] = timed(fn, xin, gs, repeats=args.repeats)[0]
        pool_times[f"result_{switches}"] = np.asarray(fn(xin, gs))
    if not np.array_equal(pool_times.pop("result_True"), pool_times.pop("result_False")):
        raise SystemExit("pool1 backward differs between switch pool and default VJP")

    result = dict(
        benchmark=f"unit projections from one forward pass, {model_name} model",
        model=model_name, input_size=list(model.input_size),
        pool1_backward=dict(units=u, switch_s=pool_times[True], default_s=pool_times[False],
                            speedup=pool_times[False] / pool_times[True], bit_identical=True),
        layer=args.layer, rule="deconvnet", repeats=args.repeats, rows=rows, date_utc=time.strftime(
            "%Y-%m-%d %H:%M UTC", time.gmtime()),
        residual_bytes_network=dict(switches=residuals[True], default=residuals[False]),
        residual_bytes_pool1=dict(switches=pool_switch, default=pool_default),
        device=str(jax.devices()[0]), jax=jax.__version__, cpu_count=os.cpu_count(),
        machine=platform.machine(), load_average=os.getloadavg(),
        note=("All variants ran back to back in one process; the load average above says whether other "
              "work shared the CPU. The default VJP is the baseline: jax.vjp of the deconvnet-rule model "
              "with JAX's own max-pool VJP, vmapped over the units' cotangents. 'receptive field' runs each "
              "unit's backward pass only over its receptive field (saliency_jax.backprop.receptive_field); "
              "'sub-pixel' computes the transposes of the strided convolutions as one stride-1 "
              "convolution over the stride phases instead of XLA's zero-dilated convolution."),
    )
    return result


def markdown(result):
    rows, layer = result["rows"], result["layer"]
    residuals = {True: result["residual_bytes_network"]["switches"], False: result["residual_bytes_network"]["default"]}
    pool_switch, pool_default = result["residual_bytes_pool1"]["switches"], result["residual_bytes_pool1"]["default"]
    pb = result["pool1_backward"]
    lines = [
        f"# Unit projections from one forward pass (`{result['model']}`, "
        f"{'×'.join(map(str, result['input_size']))}, `{layer}`, deconvnet)",
        "",
        f"Device: {result['device']} ({result['cpu_count']} cores, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in result['load_average'])}); jax {jax.__version__}; "
        f"{result['date_utc']}; median of {result['repeats']} runs after a warm-up; compile time apart.",
        "",
        "| units | variant | proj/s | speed-up vs default VJP | compile (s) | maps vs default VJP |",
        "|---:|:---|---:|---:|---:|:---|",
    ]
    for r in rows:
        for v in r["variants"].values():
            eq = ("bit-identical" if v["maps_bit_identical"]
                  else f"max abs diff {v['maps_max_abs_diff']:.1g} (maps up to {r['maps_max_abs']:.2g})")
            lines.append(f"| {r['units']} | {v['label']} | {v['per_s']:.1f} | {v['speedup']:.2f}× | "
                         f"{v['compile_s']:.1f} | {eq} |")
    mb = lambda n: n / 2 ** 20  # noqa: E731
    lines += [
        "",
        f"pool1's backward pass alone, {pb['units']} signals from one forward pass: {pb['switch_s'] * 1e3:.0f} ms "
        f"with switches, {pb['default_s'] * 1e3:.0f} ms with the default VJP ({pb['speedup']:.1f}×, bit-identical).",
        "",
        f"Residuals kept by the forward pass up to `{layer}`: {mb(residuals[True]):.1f} MiB with switches, "
        f"{mb(residuals[False]):.1f} MiB with the default VJP (weights included in both). "
        f"For pool1 alone: {mb(pool_switch):.2f} MiB (int8 switches) vs {mb(pool_default):.2f} MiB (float input).",
        "",
        result["note"],
        "",
    ]
    return lines


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
