"""benchmarks/accelerator.py (issue 13 item 1): the smoke run exercises every workload and writes
its results; its numpy metrics (Spearman ρ, SSIM) against independent references."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks import accelerator

ROOT = Path(__file__).resolve().parents[1]


def test_spearman_against_hand_computed_and_scipy():
    # ranks of b: 0, 1, 3, 2 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert accelerator.spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(9, 7)).astype(float)  # many ties
    b = a + rng.normal(size=a.shape)
    assert accelerator.spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)


def test_ssim_against_a_scipy_gaussian_filter_reference():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(30, 26))
    x = ref + 0.3 * rng.normal(size=ref.shape)

    def filt(v):  # 11 taps (radius 5, sigma 1.5), then keep the valid region only
        return ndimage.gaussian_filter(v, 1.5, truncate=5 / 1.5, mode="constant")[5:-5, 5:-5]

    span = ref.max() - ref.min()
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    mx, my = filt(x), filt(ref)
    vx, vy, cxy = filt(x * x) - mx**2, filt(ref * ref) - my**2, filt(x * ref) - mx * my
    expected = (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()
    assert accelerator.ssim(x, ref) == pytest.approx(expected, rel=1e-9)
    assert accelerator.ssim(ref, ref) == pytest.approx(1.0)


@pytest.mark.slow
def test_accelerator_smoke_run_exercises_every_workload(tmp_path):
    # --budget-s: no time budget here (no wall-clock limit in a test); the smoke run's own is for humans.
    # The test session holds the machine lock shared; the child inherits that and does not lock again.
    proc = subprocess.run(
        [sys.executable, "benchmarks/accelerator.py", "--smoke", "--out", str(tmp_path), "--budget-s", "0"],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    backend = jax.default_backend()
    report = json.loads((tmp_path / f"accelerator-{backend}.json").read_text())
    results = report["results"]
    assert report["settings"]["name"] == "smoke"
    kinds = [k.split(":")[0] for k in results]
    assert kinds.count("occlusion") == len(accelerator.SMOKE.occlusion) and kinds.count("drill-down") == 1
    assert {"peak", "units", "folder"} <= set(results)
    assert not [k for k, v in results.items() if "error" in v]

    assert results["peak"]["f32"]["flops_per_s"] > 0 and results["peak"]["bf16"]["flops_per_s"] > 0
    for key, v in results.items():
        if key.startswith("occlusion"):
            assert set(v["methods"]) == {"full", "incremental", "auto"}
            assert v["check_incremental_vs_full"]["max_rel_error"] < 1e-4
            assert v["check_auto_vs_full"]["max_rel_error"] < 1e-4
            assert v["methods"]["full"]["windows_per_s"] > 0
        if key.startswith("drill-down"):
            assert v["max_abs_error_on_refined"] <= 1e-4 * max(p["max_abs_exact"] for p in v["per_image"])
            assert v["theoretical_speedup"] == pytest.approx(32**2 / (16**2 + 0.25 * 32**2))
            assert -1 <= v["mean_ssim"] <= 1
    assert results["folder"]["check_all_done"] and results["units"]["check_finite"]

    md = (tmp_path / f"accelerator-{backend}.md").read_text()
    assert "SMOKE RUN" in md
    if backend == "cpu":
        assert "No accelerator was available" in md
