"""One XLA CPU device using every core, or the CPU split into one host device per core?

The occlusion engine shards windows over local devices, so splitting a CPU with
``--xla_force_host_platform_device_count=N`` turns intra-op parallelism (threads inside each
small convolution) into inter-op parallelism (one chunk per core). This measures the shipped
model's occlusion (6 generated test images, window 32, stride 4: 3,750 windows) both ways, for
``method="auto"`` (incremental) and ``method="full"``, each in a fresh process, and checks that
the maps agree. Results: benchmarks/results/host_devices.{json,md}.

Usage:  python benchmarks/host_devices.py [--devices 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402

CHILD = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
import saliency_jax as sj
from benchmarks._timing import timed_with_compile
m = sj.load()
x = jnp.asarray(sj.data.preprocess(sj.generate(6, split="test").images))
out = {"devices": len(jax.devices()), "methods": {}}
for method in ("auto", "full"):
    run = lambda: sj.occlusion(m.apply_fn, m.params, x, window=32, stride=4, target=1, method=method)
    first, t, compile_s, heat = timed_with_compile(run, 5)
    np.save(sys.argv[1] + f"_{method}.npy", np.asarray(heat))
    out["methods"][method] = {"seconds": t, "windows_per_s": 6 * 625 / t, "first_call_s": first, "trace_compile_s": compile_s}
print(json.dumps(out))
"""


def run(n_devices: int, tag: str) -> dict:
    env = dict(os.environ)
    if n_devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    else:
        env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, tag], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    provenance = _provenance.start(script=__file__)
    tmp = Path(tempfile.gettempdir()) / f"host_devices_{os.getpid()}"
    one, many = run(1, f"{tmp}_1"), run(args.devices, f"{tmp}_n")
    rows = []
    for method in ("auto", "full"):
        a, b = np.load(f"{tmp}_1_{method}.npy"), np.load(f"{tmp}_n_{method}.npy")
        err = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12))
        rows.append({
            "method": method, "one_device_windows_per_s": one["methods"][method]["windows_per_s"],
            "split_windows_per_s": many["methods"][method]["windows_per_s"],
            "speedup": one["methods"][method]["seconds"] / many["methods"][method]["seconds"], "max_rel_err": err,
        })
    result = {"cpus": os.cpu_count(), "devices": many["devices"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "workload": "shipped model, 6 generated test images, window 32, stride 4 (3,750 windows), target 1",
              "rows": rows, "raw": {"one": one, "split": many},
              "provenance": _provenance.finish(provenance)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host_devices.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Splitting the CPU into XLA host devices",
        "",
        f"{result['workload']}; {result['cpus']} CPU cores; {result['date']}. Median of 5 after a warm-up, each setting in a fresh process.",
        "",
        f"| method | 1 device (win/s) | {many['devices']} host devices (win/s) | speed-up | max rel. err |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['method']} | {r['one_device_windows_per_s']:.0f} | {r['split_windows_per_s']:.0f} | **{r['speedup']:.2f}×** | {r['max_rel_err']:.1e} |" for r in rows]
    lines += ["", _provenance.markdown_line(result["provenance"])]
    (args.out / "host_devices.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
