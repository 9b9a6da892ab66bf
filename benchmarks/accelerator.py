"""The headline workloads on whatever backend JAX sees, in one command (issue 13).

Workloads (each in its own child process, so its peak device memory is its own and a failure or
time-out loses only that workload):

* **peak**: a square matmul, f32 (``precision=DEFAULT``: what the models run at; on NVIDIA
  Ampere and later JAX may use TF32 for it), f32 at ``precision=HIGHEST`` and bf16; every
  achieved FLOP/s below is quoted against the first (and bf16 runs against the bf16 peak).
* **occlusion**: ZF-224 (random weights) window 64 stride 8 and window 16 stride 4; the shipped
  model (``saliency_jax.load()``) window 32 stride 8; a ResNet-18 (``benchmarks/zoo.py``) at
  224² window 16 stride 4. Each with ``method="full"``, ``"incremental"`` and ``"auto"``:
  windows/s, counted FLOPs per window (``flop_report``) and achieved FLOP/s against the peak,
  the first call (trace + compile + run) apart, the incremental map checked against the full
  one. ``compute_dtype=jnp.bfloat16`` where ``sj.occlusion`` offers it (reported as missing
  otherwise): speed gain and map error against f32 (max relative error, Spearman rank
  correlation, both in numpy).
* **units**: deconvnet unit projections (``sj.project_units``, conv5, top 9) of ZF-224.
* **folder**: ``sj.explain_paths`` (occlusion + deconvnet, PNG and npy) on generated test images
  written as PNG files: the first run (compiles) and a warm run into a fresh folder.
* **drill-down** (APPROXIMATE, ``saliency_jax.occlude.drill_down``): S1 = 16, S2 = 4, r = 0.25,
  window 16, on ZF-224 and on the shipped model, over generated test images: Krypton's
  theoretical speed-up, the measured one against exact incremental occlusion at stride 4 (both
  ``method="incremental"``), and the map error against the exact map (max abs error, SSIM in
  numpy; the error on the pixels the record marks refined must be ~0).

Every timing is the median of repeats after a warm-up call, with ``block_until_ready``; peak
device memory is ``device.memory_stats()["peak_bytes_in_use"]`` of the workload's process where
the backend reports it, else "n/a". The whole run holds ``benchmarks._lock.machine_lock``.

Runs on a bare accelerator machine with jax, flax, optax, orbax-checkpoint, numpy, pillow and
matplotlib (no install, no network):

    PYTHONPATH=. python benchmarks/accelerator.py            # full sizes, < 8 min on one H100
    PYTHONPATH=. python benchmarks/accelerator.py --smoke    # every code path, tiny sizes (CPU, < 2 min)
    PYTHONPATH=. python benchmarks/accelerator.py --drill-down-only   # writes drill_down.{json,md}

Writes ``benchmarks/results/accelerator-<backend>.{json,md}`` (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saliency_jax as sj  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks import _provenance  # noqa: E402
from benchmarks._timing import timed, timed_with_compile  # noqa: E402
from saliency_jax._io import atomic_write_text  # noqa: E402
from saliency_jax.occlude import incremental  # noqa: E402
from saliency_jax.occlude.drill_down import DrillDown, drill_down_occlusion  # noqa: E402

__all__ = ["Settings", "FULL", "SMOKE", "spearman", "ssim", "main"]


# --------------------------------------------------------------------------------------------
# Settings: the full run and its tiny smoke variant
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one run. ``occlusion``: ``(name, model, window, stride)``; models are ``"zf"``,
    ``"shipped"`` and ``"resnet18"``."""

    name: str
    zf: dict  # get_model("zf", **zf)
    zf_size: int
    resnet_size: int
    occlusion: tuple
    drill: tuple  # (name, model, window, S2, S1, r)
    matmul_n: int
    repeats: int
    images: int  # images per occlusion call
    drill_images: int
    folder_images: int
    units_images: int
    budget_s: float  # the whole run; workloads past it are skipped (said so)
    child_timeout_s: float


FULL = Settings(
    name="full", zf=dict(num_classes=1000), zf_size=224, resnet_size=224,
    occlusion=(("ZF-224 w64 s8", "zf", 64, 8), ("ZF-224 w16 s4", "zf", 16, 4),
               ("shipped-128 w32 s8", "shipped", 32, 8), ("ResNet-18-224 w16 s4", "resnet18", 16, 4)),
    drill=(("ZF-224 w16", "zf", 16, 4, 16, 0.25), ("shipped-128 w16", "shipped", 16, 4, 16, 0.25)),
    matmul_n=8192, repeats=5, images=1, drill_images=8, folder_images=256, units_images=8,
    budget_s=450.0, child_timeout_s=240.0,
)
SMOKE = Settings(
    name="smoke", zf=dict(num_classes=10, fc=(32,), width=0.0625), zf_size=224, resnet_size=32,
    occlusion=(("ZF-224 (width 1/16) w64 s32", "zf", 64, 32), ("shipped-128 w32 s16", "shipped", 32, 16),
               ("ResNet-18-32 w8 s8", "resnet18", 8, 8)),
    drill=(("ZF-224 (width 1/16) w32", "zf", 32, 16, 32, 0.25),),
    matmul_n=1024, repeats=1, images=1, drill_images=1, folder_images=3, units_images=1,
    budget_s=110.0, child_timeout_s=90.0,
)
DRILL_CPU = dataclasses.replace(
    FULL, name="drill-down (CPU)", drill=(("ZF-224 w16", "zf", 16, 4, 16, 0.25), ("shipped-128 w16", "shipped", 16, 4,
                                                                                   16, 0.25)),
    drill_images=2, repeats=2, budget_s=400.0, child_timeout_s=380.0,
)


# --------------------------------------------------------------------------------------------
# Numpy metrics: Spearman rank correlation and SSIM
# --------------------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0 … n−1 of a flat array, ties given their mean rank."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation of two arrays (flattened; ties get their mean rank).

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 3)
        0.8
    """
    ra, rb = _ranks(np.ravel(np.asarray(a, np.float64))), _ranks(np.ravel(np.asarray(b, np.float64)))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _gauss_filter(x: np.ndarray, sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    n = 2 * radius + 1
    rows = sum(taps[k] * x[k : x.shape[0] - n + 1 + k] for k in range(n))
    return sum(taps[k] * rows[:, k : x.shape[1] - n + 1 + k] for k in range(n))


def ssim(x, ref) -> float:
    """Mean SSIM (Wang et al. 2004) of map ``x`` against ``ref`` (2-D): 11-tap Gaussian window,
    σ = 1.5, valid region only, K1 = 0.01, K2 = 0.03, data range = ``ref.max() − ref.min()``.

    Example:
        >>> r = np.random.default_rng(0).normal(size=(32, 32))
        >>> ssim(r, r), ssim(r, r + 0.5) < 1
        (1.0, True)
    """
    x, y = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    span = float(y.max() - y.min()) or 1.0
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    mx, my = _gauss_filter(x), _gauss_filter(y)
    vx = _gauss_filter(x * x) - mx * mx
    vy = _gauss_filter(y * y) - my * my
    cxy = _gauss_filter(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return round(float(s.mean()), 12)


def map_error(ours, ref) -> dict:
    """Max abs error, max relative error (over ``max |ref|``) and Spearman ρ of two maps."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    err = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    return {"max_abs_error": err, "max_rel_error": err / scale, "spearman": spearman(ours, ref)}


# --------------------------------------------------------------------------------------------
# Models, images, device facts
# --------------------------------------------------------------------------------------------


def build_model(name: str, s: Settings):
    """``(apply_fn, params, size)`` of ``"zf"``, ``"shipped"`` or ``"resnet18"``."""
    if name == "shipped":
        model = sj.load()
        return model.apply_fn, model.params, model.input_size[0]
    if name == "zf":
        net = sj.get_model("zf", **s.zf)
        params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, s.zf_size, s.zf_size, 3)))
        return net.apply, params, s.zf_size
    from benchmarks import zoo  # clients' module; a missing file is reported, not faked

    apply_fn, params = zoo.build(name, s.resnet_size, num_classes=10, seed=0)
    return apply_fn, params, s.resnet_size


def generated_images(n: int, size: int) -> jax.Array:
    """``n`` generated test images at ``size``², preprocessed to model input ``(n, size, size, 3)``."""
    from saliency_jax.model import data

    gen = data.generate(n, split="test", seed=0, size=size)
    return jnp.asarray(data.preprocess(gen.images))


def peak_memory():
    """Peak bytes in use on the first local device in this process, or "n/a"."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if not stats or "peak_bytes_in_use" not in stats:
        return "n/a"
    return int(stats["peak_bytes_in_use"])


def has_compute_dtype(fn) -> bool:
    """Whether ``fn`` offers ``compute_dtype=`` (issue 13 item 3, another helper's work)."""
    return "compute_dtype" in inspect.signature(fn).parameters


# --------------------------------------------------------------------------------------------
# The workloads (each runs in a child process; returns a JSON-able dict)
# --------------------------------------------------------------------------------------------


def work_peak(s: Settings, _peaks) -> dict:
    out = {}
    for label, dtype, precision in (("f32", jnp.float32, None), ("f32_highest", jnp.float32, "highest"),
                                    ("bf16", jnp.bfloat16, None)):
        n = s.matmul_n if jax.default_backend() != "cpu" else min(s.matmul_n, 2048)  # 2·8192³ FLOP: 20 s on 2 cores
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        f = jax.jit(lambda x, y, p=precision: jnp.matmul(x, y, precision=p))
        first, t, c = timed(lambda: f(a, b), max(3, s.repeats))
        check = float(jnp.abs(c[:2, :2].astype(jnp.float32) - (a[:2].astype(jnp.float32) @ b[:, :2].astype(
            jnp.float32))).max())
        out[label] = {"n": n, "seconds": t, "flops_per_s": 2 * n**3 / t, "first_call_s": first,
                      "check_max_abs_diff_2x2": check}
    return out


def _method_run(apply_fn, params, images, kw, method, repeats, **extra):
    first, t, compile_s, heat = timed_with_compile(
        lambda: sj.occlusion(apply_fn, params, images, method=method, **kw, **extra), repeats)
    return first, t, compile_s, np.asarray(heat, np.float64)


def work_occlusion(s: Settings, peaks, title: str, model: str, window: int, stride: int) -> dict:
    apply_fn, params, size = build_model(model, s)
    images = generated_images(s.images, size)
    windows = sj.window_grid((size, size), window, stride).size * s.images
    rep = incremental.flop_report(apply_fn, params, (size, size, 3), window=window, stride=stride)
    flops = {"full": rep.full_flops, "incremental": rep.incremental_flops}
    kw = dict(window=window, stride=stride, target=None)
    res = {"title": title, "windows": windows, "image_size": size, "flops_per_window": flops, "flop_ratio": rep.ratio,
           "methods": {}}
    maps = {}
    for method in ("full", "incremental", "auto"):
        first, t, compile_s, maps[method] = _method_run(apply_fn, params, images, kw, method, s.repeats)
        row = {"seconds": t, "first_call_s": first, "trace_compile_s": compile_s,
               "windows_per_s": windows / t}
        if method in flops:
            row["flops_per_s"] = flops[method] * windows / t
            row["fraction_of_f32_peak"] = row["flops_per_s"] / peaks["f32"]["flops_per_s"]
        res["methods"][method] = row
    res["check_incremental_vs_full"] = map_error(maps["incremental"], maps["full"])
    res["check_auto_vs_full"] = map_error(maps["auto"], maps["full"])
    res["auto_over_full_time"] = res["methods"]["auto"]["seconds"] / res["methods"]["full"]["seconds"]
    res["bf16"] = _bf16_occlusion(apply_fn, params, images, kw, maps, res, s, peaks, flops, windows)
    res["peak_memory_bytes"] = peak_memory()
    return res


def _bf16_occlusion(apply_fn, params, images, kw, maps, res, s, peaks, flops, windows):
    if not has_compute_dtype(sj.occlusion):
        return "missing: sj.occlusion has no compute_dtype argument in this tree"
    out = {}
    for method in ("full", "incremental"):
        first, t, _, heat = _method_run(apply_fn, params, images, kw, method, s.repeats, compute_dtype=jnp.bfloat16)
        out[method] = {"seconds": t, "first_call_s": first, "speed_gain_vs_f32": res["methods"][method]["seconds"] / t,
                       "flops_per_s": flops[method] * windows / t,
                       "fraction_of_bf16_peak": flops[method] * windows / t / peaks["bf16"]["flops_per_s"],
                       **map_error(heat, maps[method])}
    return out


def work_units(s: Settings, _peaks) -> dict:
    apply_fn, params, size = build_model("zf", s)
    images = generated_images(s.units_images, size)
    first, t, proj = timed(lambda: sj.project_units(apply_fn, params, images, layer="conv5", top_k=9), s.repeats)
    maps = np.asarray(proj.maps)
    res = {"title": f"ZF-{size} conv5 top 9, {s.units_images} image(s)", "seconds": t, "first_call_s": first,
           "projections_per_s": 9 * s.units_images / t, "check_finite": bool(np.isfinite(maps).all()),
           "check_nonzero": bool(np.abs(maps).max() > 0)}
    if has_compute_dtype(sj.project_units):
        f16, t16, p16 = timed(lambda: sj.project_units(apply_fn, params, images, layer="conv5", top_k=9,
                                                       compute_dtype=jnp.bfloat16), s.repeats)
        res["bf16"] = {"seconds": t16, "first_call_s": f16, "speed_gain_vs_f32": t / t16,
                       "same_units": bool(np.array_equal(np.asarray(p16.units), np.asarray(proj.units))),
                       **map_error(np.asarray(p16.maps), maps)}
    else:
        res["bf16"] = "missing: sj.project_units has no compute_dtype argument in this tree"
    res["peak_memory_bytes"] = peak_memory()
    return res


def work_folder(s: Settings, _peaks) -> dict:
    from PIL import Image

    from saliency_jax.model import data

    work = Path(tempfile.mkdtemp(prefix="sj-accel-folder-"))
    src = work / "images"
    src.mkdir()
    gen = data.generate(s.folder_images, split="test", seed=1)
    for i, im in enumerate(gen.images):
        Image.fromarray(im).save(src / f"im{i:03d}.png")
    model = sj.load()

    def run(out):
        t0 = time.perf_counter()
        r = sj.explain_paths([src], work / out, model=model, methods=("occlusion", "deconvnet"), progress=False)
        return time.perf_counter() - t0, r

    cold, r1 = run("out-cold")
    warm, r2 = run("out-warm")
    ok = r1.ok and r2.ok and len(r1.done) == len(r2.done) == s.folder_images
    a = np.load(next((work / "out-cold").rglob("*occlusion*.npy")))
    b = np.load(work / "out-warm" / next((work / "out-cold").rglob("*occlusion*.npy")).relative_to(work / "out-cold"))
    return {"title": f"explain_paths, {s.folder_images} generated PNGs, occlusion + deconvnet, png + npy",
            "images": s.folder_images, "first_run_s": cold, "warm_run_s": warm,
            "images_per_s_warm": s.folder_images / warm, "check_all_done": ok,
            "check_runs_agree_max_abs": float(np.abs(a - b).max()), "peak_memory_bytes": peak_memory()}


def timed_alternating(fa, fb, repeats):
    """:func:`benchmarks._timing.timed` for two functions, their timed calls alternating (a load
    change on a shared machine then hits both): ``((first, median, out) of fa, (…) of fb)``."""
    firsts, outs, times = [], [], ([], [])
    for f in (fa, fb):
        t0 = time.perf_counter()
        outs.append(jax.block_until_ready(f()))
        firsts.append(time.perf_counter() - t0)
    for _ in range(repeats):
        for f, ts in zip((fa, fb), times):
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            ts.append(time.perf_counter() - t0)
    return tuple((firsts[i], float(np.median(times[i])), outs[i]) for i in range(2))


def _top_area_errors(approx, coarse, exact, r: float) -> dict:
    """Mean abs error of the drill-down and of the coarse-only map on the exact map's top-``r`` area."""
    top = exact >= np.quantile(exact, 1 - r)
    return {"top_area_mean_abs_error": float(np.abs(approx - exact)[top].mean()),
            "coarse_only_top_area_mean_abs_error": float(np.abs(coarse - exact)[top].mean())}


def work_drill(s: Settings, _peaks, title: str, model: str, window: int, stride: int, coarse: int, r: float) -> dict:
    apply_fn, params, size = build_model(model, s)
    images = generated_images(s.drill_images, size)
    kw = dict(window=window, stride=stride, target=None, method="incremental")
    dd = DrillDown(coarse_stride=coarse, fraction=r)
    exact_fn = lambda: sj.occlusion(apply_fn, params, images, **kw)  # noqa: E731
    drill_fn = lambda: drill_down_occlusion(apply_fn, params, images, drill_down=dd, **kw)  # noqa: E731
    (f_exact, t_exact, exact), (f_drill, t_drill, (approx, rec)) = timed_alternating(exact_fn, drill_fn, s.repeats)
    f_coarse, t_coarse, coarse_map = timed(lambda: sj.occlusion(apply_fn, params, images, **{**kw, "stride": coarse}),
                                       s.repeats)
    exact, approx, coarse_map = (np.asarray(m, np.float64) for m in (exact, approx, coarse_map))
    refined = np.asarray(rec.refined)
    per_image = [{"max_abs_error": float(np.abs(approx[i] - exact[i]).max()),
                  "max_abs_exact": float(np.abs(exact[i]).max()),
                  "ssim": ssim(approx[i], exact[i]), "spearman": spearman(approx[i], exact[i]),
                  "refined_share": float(refined[i].mean()),
                  "max_abs_error_on_refined": float(np.abs(approx[i] - exact[i])[refined[i]].max(initial=0.0)),
                  **_top_area_errors(approx[i], coarse_map[i], exact[i], r),
                  "coarse_only_max_abs_error": float(np.abs(coarse_map[i] - exact[i]).max()),
                  "coarse_only_ssim": ssim(coarse_map[i], exact[i])}
                 for i in range(len(exact))]
    return {"title": title, "images": s.drill_images, "image_size": size, "window": window, "fine_stride": stride,
            "coarse_stride": coarse, "fraction": r, "theoretical_speedup": rec.theoretical_speedup,
            "window_speedup": rec.window_speedup, "coarse_windows": rec.coarse_windows,
            "fine_windows": rec.fine_windows, "fine_grid_windows": rec.fine_grid_windows,
            "exact_seconds": t_exact, "drill_seconds": t_drill, "measured_speedup": t_exact / t_drill,
            "exact_first_call_s": f_exact, "drill_first_call_s": f_drill, "per_image": per_image,
            "max_abs_error": max(p["max_abs_error"] for p in per_image),
            "mean_ssim": float(np.mean([p["ssim"] for p in per_image])),
            "min_ssim": float(np.min([p["ssim"] for p in per_image])),
            "coarse_only_seconds": t_coarse, "coarse_only_first_call_s": f_coarse,
            "coarse_only_mean_ssim": float(np.mean([p["coarse_only_ssim"] for p in per_image])),
            "coarse_only_max_abs_error": max(p["coarse_only_max_abs_error"] for p in per_image),
            "top_area_mean_abs_error": float(np.mean([p["top_area_mean_abs_error"] for p in per_image])),
            "coarse_only_top_area_mean_abs_error": float(np.mean([p["coarse_only_top_area_mean_abs_error"]
                                                                  for p in per_image])),
            "max_abs_error_on_refined": max(p["max_abs_error_on_refined"] for p in per_image),
            "peak_memory_bytes": peak_memory()}


WORKS = {"peak": work_peak, "occlusion": work_occlusion, "units": work_units, "folder": work_folder,
         "drill": work_drill}


def plan(s: Settings, drill_only: bool) -> list[tuple[str, str, list]]:
    """``(key, work, args)`` in priority order (a run out of time drops the tail)."""
    items = [("peak", "peak", [])]
    if not drill_only:
        items += [(f"occlusion: {o[0]}", "occlusion", list(o)) for o in s.occlusion]
        items += [("units", "units", []), ("folder", "folder", [])]
    items += [(f"drill-down: {d[0]}", "drill", list(d)) for d in s.drill]
    return items


# --------------------------------------------------------------------------------------------
# Parent: children, budget, results
# --------------------------------------------------------------------------------------------


def run_child(settings_name: str, work: str, args: list, peaks, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="sj-accel-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps([work, args]),
               "--settings", settings_name, "--peaks", json.dumps(peaks), "--child-out", str(out)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}",
                    "stderr_tail": proc.stderr[-2000:]}
        result = json.loads(out.read_text())
        result["process_wall_s"] = wall
        return result


SETTINGS = {"full": FULL, "smoke": SMOKE, "drill-cpu": DRILL_CPU}


def machine() -> dict:
    dev = jax.local_devices()[0]
    return {"backend": jax.default_backend(), "device_kind": getattr(dev, "device_kind", str(dev)),
            "device_count": jax.local_device_count(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "time_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_all(settings_name: str, drill_only: bool, budget_s: float | None = None) -> dict:
    s = SETTINGS[settings_name]
    if budget_s is not None:  # 0: no budget, no child time-out
        s = dataclasses.replace(s, budget_s=budget_s or math.inf, child_timeout_s=budget_s or math.inf)
    provenance = _provenance.start(script=__file__)
    start = time.perf_counter()
    results, peaks = {}, None
    for key, work, args in plan(s, drill_only):
        left = s.budget_s - (time.perf_counter() - start)
        if left < 5:
            results[key] = {"error": f"skipped: the run's time budget ({s.budget_s:.0f} s) was spent"}
            continue
        print(f"[accelerator] {key} …", file=sys.stderr, flush=True)
        timeout = min(left, s.child_timeout_s)
        results[key] = run_child(settings_name, work, args, peaks, None if math.isinf(timeout) else timeout)
        if work == "peak":
            if "error" in results[key]:
                raise SystemExit(f"the matmul peak failed: {results[key]['error']}")
            peaks = {k: v for k, v in results[key].items() if isinstance(v, dict)}
    return {"settings": dataclasses.asdict(s), "machine": machine(), "wall_s": time.perf_counter() - start,
            "bf16_available": has_compute_dtype(sj.occlusion), "results": results,
            "provenance": _provenance.finish(provenance)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, every code path (CPU, < 2 min)")
    p.add_argument("--drill-down-only", action="store_true", help="only the drill-down workloads -> drill_down.*")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--budget-s", type=float, help="the whole run's time budget in seconds; 0: none (default: the settings')")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--peaks", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        work, args = json.loads(a.child)
        settings = SETTINGS[a.settings]
        result = WORKS[work](settings, json.loads(a.peaks), *args)
        Path(a.child_out).write_text(json.dumps(result))
        return 0
    if a.smoke:
        name = "smoke"
    elif a.drill_down_only:
        name = "drill-cpu" if jax.default_backend() == "cpu" else "full"
    else:
        name = "full"
    with machine_lock(exclusive=True):
        report = run_all(name, a.drill_down_only, a.budget_s)
        paths = write_results(report, a.out, a.drill_down_only)
    print("\n".join(str(x) for x in paths))
    failed = [k for k, v in report["results"].items() if "error" in v]
    if failed:
        print(f"workloads without a result: {failed}", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# Results: JSON as measured, and a Markdown summary
# --------------------------------------------------------------------------------------------


def _f(x, fmt="{:.3g}"):
    return fmt.format(x) if isinstance(x, (int, float)) else str(x)


def _mem(x):
    return f"{x / 2**20:.0f} MiB" if isinstance(x, int) else str(x)


def _header(report, drill_only: bool) -> list[str]:
    m, s = report["machine"], report["settings"]
    title = "Adaptive drill-down (APPROXIMATE) against exact incremental occlusion" if drill_only else \
        f"Accelerator benchmark: {m['backend']}"
    lines = [f"# {title}", ""]
    if s["name"] == "smoke":
        lines += ["**SMOKE RUN** (`--smoke`): tiny sizes (a ZF-style model at width 1/16, few windows, 1 repeat) "
                  "to exercise every code path; these figures say nothing about the full workloads.", ""]
    if m["backend"] == "cpu":
        lines += ["**No accelerator was available**: JAX saw only the CPU backend in this run. The GPU figures "
                  "the issue asks for have not been measured; run `PYTHONPATH=. python benchmarks/accelerator.py` "
                  "on a GPU machine to get them.", ""]
    lines += [f"Machine: {m['device_kind']} × {m['device_count']} ({m['backend']}), {m['cpu_count']} CPU cores, "
              f"load average {m['load_average']}, {m['platform']}, jax {m['jax']}, {m['time_utc']}. "
              f"Settings `{s['name']}`; whole run {report['wall_s']:.0f} s. Medians of {s['repeats']} timed calls "
              "after a warm-up call (first call = trace + compile + run, reported apart); each workload in its own "
              "process (peak memory = that process's `peak_bytes_in_use`, n/a where the backend has no memory "
              "statistics).", ""]
    return lines


def _peak_lines(r) -> list[str]:
    if "error" in r:
        return [f"Matmul peak: {r['error']}", ""]
    lines = ["## Matmul peak (same run)", "", "| dtype | n | GFLOP/s | check |", "|---|---|---|---|"]
    for k, v in r.items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {v['n']} | {v['flops_per_s'] / 1e9:.1f} | {v['check_max_abs_diff_2x2']:.1e} |")
    return lines + ["", "`f32` is `precision=DEFAULT` (what the models run at; TF32 on NVIDIA Ampere+), the "
                    "reference for the f32 percentages below; `bf16` for the bf16 runs.", ""]


def _occlusion_lines(results) -> list[str]:
    rows = [(k, v) for k, v in results.items() if k.startswith("occlusion:")]
    if not rows:
        return []
    lines = ["## Occlusion: full, incremental, auto", "",
             "| workload | windows | method | s / map | windows/s | GFLOP/window | achieved GFLOP/s | % of f32 peak "
             "| first call s | peak memory |", "|---|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for key, v in rows:
        if "error" in v:
            lines.append(f"| {key[11:]} | | | {v['error']} | | | | | | |")
            continue
        for method, m in v["methods"].items():
            gf = v["flops_per_window"].get(method)
            lines.append(f"| {v['title']} | {v['windows']} | {method} | {m['seconds']:.3g} | {m['windows_per_s']:.1f} | "
                         f"{_f(gf / 1e9 if gf else 'n/a')} | {_f(m.get('flops_per_s', 0) / 1e9 or 'n/a')} | "
                         f"{_f(100 * m['fraction_of_f32_peak'], '{:.1f} %') if 'fraction_of_f32_peak' in m else 'n/a'} | "
                         f"{m['first_call_s']:.1f} | {_mem(v['peak_memory_bytes'])} |")
        c = v["check_incremental_vs_full"]
        checks.append(f"- {v['title']}: incremental vs full max rel. error {c['max_rel_error']:.1e}; auto took "
                      f"{v['auto_over_full_time']:.2f}× the time of full (auto vs full max rel. error "
                      f"{v['check_auto_vs_full']['max_rel_error']:.1e}); counted FLOP ratio {v['flop_ratio']:.2f}×.")
    lines += ["", "Auto's FLOPs are not attributed (it runs one of the two methods). Checks beside the timings:", ""]
    lines += checks + ["", "### bf16 (`compute_dtype=jnp.bfloat16`) against f32", ""]
    bf = [(v["title"], v["bf16"]) for _, v in rows if "error" not in v]
    if bf and all(isinstance(b, str) for _, b in bf):
        return lines + [f"Not measured: {bf[0][1]} (issue 13 item 3 had not landed when this ran).", ""]
    lines += ["| workload | method | s / map | speed gain vs f32 | % of bf16 peak | max rel. error | Spearman ρ |",
              "|---|---|---|---|---|---|---|"]
    for title, b in bf:
        if isinstance(b, str):
            lines.append(f"| {title} | | {b} | | | | |")
            continue
        for method, m in b.items():
            lines.append(f"| {title} | {method} | {m['seconds']:.3g} | {m['speed_gain_vs_f32']:.2f}× | "
                         f"{100 * m['fraction_of_bf16_peak']:.1f} % | {m['max_rel_error']:.2e} | {m['spearman']:.4f} |")
    return lines + [""]


def _units_folder_lines(results) -> list[str]:
    lines = []
    u = results.get("units")
    if u is not None:
        lines += ["## Deconvnet unit projections", ""]
        if "error" in u:
            lines += [f"units: {u['error']}", ""]
        else:
            bf = u["bf16"] if isinstance(u["bf16"], str) else (
                f"bf16: speed gain {u['bf16']['speed_gain_vs_f32']:.2f}× over f32, max rel. error {u['bf16']['max_rel_error']:.2e},"
                f" same units {u['bf16']['same_units']}")
            lines += [f"{u['title']}: {u['seconds']:.3g} s per call, {u['projections_per_s']:.1f} projections/s, first "
                      f"call {u['first_call_s']:.1f} s, peak memory {_mem(u['peak_memory_bytes'])}; maps finite "
                      f"{u['check_finite']}, non-zero {u['check_nonzero']}. {bf}", ""]
    f = results.get("folder")
    if f is not None:
        lines += ["## Folder job", ""]
        if "error" in f:
            lines += [f"folder: {f['error']}", ""]
        else:
            lines += [f"{f['title']}: first run {f['first_run_s']:.1f} s (compiles), warm run {f['warm_run_s']:.1f} s "
                      f"= {f['images_per_s_warm']:.2f} images/s; all done {f['check_all_done']}, the two runs' "
                      f"occlusion maps differ by {f['check_runs_agree_max_abs']:.1e}; peak memory "
                      f"{_mem(f['peak_memory_bytes'])}.", ""]
    return lines


def _drill_lines(results) -> list[str]:
    rows = [(k, v) for k, v in results.items() if k.startswith("drill-down:")]
    if not rows:
        return []
    lines = ["## Adaptive drill-down (APPROXIMATE) vs exact incremental at the fine stride", "",
             "| workload | images | S1 / S2 / r | windows: coarse + fine (of exact) | theoretical speed-up | "
             "measured speed-up | exact s | drill s | max abs error (max abs exact) | SSIM mean (min) | refined share | "
             "max error on refined | mean abs error on the exact top-r area |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    context = []
    for key, v in rows:
        if "error" in v:
            lines.append(f"| {key[12:]} | {v['error']} | | | | | | | | | | | |")
            continue
        scale = max(p["max_abs_exact"] for p in v["per_image"])
        share = float(np.mean([p["refined_share"] for p in v["per_image"]]))
        lines.append(f"| {v['title']} | {v['images']} | {v['coarse_stride']} / {v['fine_stride']} / {v['fraction']} | "
                     f"{v['coarse_windows']} + {v['fine_windows']} ({v['fine_grid_windows']}) | "
                     f"{v['theoretical_speedup']:.2f}× (windows {v['window_speedup']:.2f}×) | "
                     f"**{v['measured_speedup']:.2f}×** | {v['exact_seconds']:.2f} | {v['drill_seconds']:.2f} | "
                     f"{v['max_abs_error']:.3g} ({scale:.3g}) | {v['mean_ssim']:.3f} ({v['min_ssim']:.3f}) | "
                     f"{100 * share:.1f} % | {v['max_abs_error_on_refined']:.1e} | {v['top_area_mean_abs_error']:.3g} |")
        context.append(f"- {v['title']}: the coarse pass alone (`sj.occlusion` at stride {v['coarse_stride']}, "
                       f"{v['coarse_only_seconds']:.2f} s): max abs error {v['coarse_only_max_abs_error']:.3g}, SSIM "
                       f"{v['coarse_only_mean_ssim']:.3f}, mean abs error on the exact top-r area "
                       f"{v['coarse_only_top_area_mean_abs_error']:.3g}.")
    return lines + ["", "Both sides use `method=\"incremental\"` on the same batch of generated test images (target: "
                    "each image's predicted class); times are per batch. Theoretical speed-up: Krypton's "
                    "S1²/(S2² + r·S1²); 'windows': the counted ratio for these grids. The map is exact on the refined "
                    "pixels (every fine window covering them was scored); elsewhere the fine window scores are "
                    "interpolated from the coarse pass. SSIM: 11-tap Gaussian window (σ 1.5), data range of the exact "
                    "map, numpy. Exact top-r area: the pixels at or above the exact map's (1 − r) quantile.", "",
                    "For context, the same error measures for the coarse map alone (what drill-down refines):", ""] + \
        context + [""]


def write_results(report, out_dir: Path, drill_only: bool) -> list[Path]:
    """Write ``accelerator-<backend>.{json,md}`` (or ``drill_down.{json,md}``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "drill_down" if drill_only else f"accelerator-{report['machine']['backend']}"
    res = report["results"]
    md = _header(report, drill_only) + _peak_lines(res["peak"]) + _occlusion_lines(res) + _units_folder_lines(res)
    md += _drill_lines(res)
    if "provenance" in report:
        md += ["", _provenance.markdown_line(report["provenance"])]
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    atomic_write_text(paths[0], json.dumps(report, indent=1, default=str) + "\n")
    atomic_write_text(paths[1], "\n".join(md).rstrip() + "\n")
    return paths


if __name__ == "__main__":
    raise SystemExit(main())
