"""Unit projections per second from one forward pass: switch max-pool vs. the default max-pool VJP.

On the ZF-style 224×224×3 model (``get_model("zf")``, random weights scaled by 1/sqrt(fan-in)),
project the ``U`` strongest ``conv5`` activations of one image back to pixels with the
deconvnet rule: one forward pass, the backward pass vmapped over the ``U`` units. Two
variants differ only in the max-pool backward: ``switches=True`` (switches recorded in the
forward pass, int8 residual) and ``switches=False`` (JAX's default ``reduce_window_max`` VJP,
select-and-scatter over the saved float input). The maps of both are checked equal next to
the timings. Compile time is measured apart (AOT ``lower().compile()``); each timing is
the median of ``--repeats`` runs after one warm-up, with ``block_until_ready``.

Usage: ``python benchmarks/backprop.py [--units 9 64] [--repeats 5]``; writes
``benchmarks/results/backprop.json`` and ``backprop.md``.
"""

from __future__ import annotations

import argparse
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
from saliency_jax import backprop
from saliency_jax.backprop import rules
from saliency_jax.models import get_model

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
    results = [run_model(name, args) for name in args.models]
    (RESULTS / "backprop.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = []
    for result in results:
        lines += markdown(result)
    (RESULTS / "backprop.md").write_text("\n".join(lines))
    print("\n".join(lines))


def run_model(model_name, args):
    model = get_model(model_name)
    shape = (1,) + tuple(model.input_size)
    params = random_params(model, shape)
    image = jnp.asarray(np.random.default_rng(1).normal(size=shape[1:]).astype(np.float32))

    rows = []
    for u in args.units:
        out = {}
        for switches in (True, False):
            fn = jax.jit(functools.partial(backprop.project_units, model.apply, layer=args.layer, top_k=u,
                                           switches=switches))
            t0 = time.perf_counter()
            compiled = fn.lower(params, image).compile()
            compile_s = time.perf_counter() - t0
            med, times = timed(compiled, params, image, repeats=args.repeats)
            out[switches] = dict(compile_s=compile_s, median_s=med, times_s=times,
                                 result=jax.device_get(compiled(params, image)))
        a, b = out[True]["result"], out[False]["result"]
        equal = bool(np.array_equal(a.maps, b.maps))
        max_diff = float(np.abs(a.maps - b.maps).max())
        scale = float(np.abs(b.maps).max())
        if not np.allclose(a.maps, b.maps, rtol=1e-5, atol=1e-6 * scale) or not np.array_equal(a.units, b.units):
            raise SystemExit(f"maps differ for U={u}: max |diff| {max_diff} (scale {scale})")
        rows.append(dict(
            units=u,
            switch_median_s=out[True]["median_s"], default_median_s=out[False]["median_s"],
            switch_per_s=u / out[True]["median_s"], default_per_s=u / out[False]["median_s"],
            speedup=out[False]["median_s"] / out[True]["median_s"],
            switch_compile_s=out[True]["compile_s"], default_compile_s=out[False]["compile_s"],
            switch_times_s=out[True]["times_s"], default_times_s=out[False]["times_s"],
            maps_bit_identical=equal, maps_max_abs_diff=max_diff, maps_max_abs=scale,
        ))
        print(f"{model_name} U={u}: switches {u / out[True]['median_s']:.1f}/s, default {u / out[False]['median_s']:.1f}/s, "
              f"speed-up {rows[-1]['speedup']:.2f}x, maps identical: {equal} (max diff {max_diff:.3g})")

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
        layer=args.layer, rule="deconvnet", repeats=args.repeats, rows=rows,
        residual_bytes_network=dict(switches=residuals[True], default=residuals[False]),
        residual_bytes_pool1=dict(switches=pool_switch, default=pool_default),
        device=str(jax.devices()[0]), jax=jax.__version__, cpu_count=os.cpu_count(),
        machine=platform.machine(), load_average=os.getloadavg(),
        note=("Both variants ran back to back under the same conditions; the load average above says "
              "whether other work shared the CPU (the run-to-run spread of the speed-up is large here)."),
    )
    for r in rows:
        r.pop("result", None)
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
        f"median of {result['repeats']} runs after a warm-up; compile time apart.",
        "",
        "| units | switch pool (proj/s) | default VJP (proj/s) | speed-up | compile switch / default (s) | maps equal |",
        "|---:|---:|---:|---:|---:|:---|",
    ]
    for r in rows:
        eq = "bit-identical" if r["maps_bit_identical"] else f"allclose (max diff {r['maps_max_abs_diff']:.2g})"
        lines.append(f"| {r['units']} | {r['switch_per_s']:.1f} | {r['default_per_s']:.1f} | {r['speedup']:.2f}× | "
                     f"{r['switch_compile_s']:.1f} / {r['default_compile_s']:.1f} | {eq} |")
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
    main()
