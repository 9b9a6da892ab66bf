"""The fence of ``receptive_field.vjp`` on and off, in one process, on the same inputs.

``receptive_field.vjp`` passes what its elementwise backward steps read through a conditional, so
that XLA:CPU materialises it instead of fusing its producer into every backward consumer (see
``_fence_elementwise_inputs``). This times the methods that run on that backward pass with
``FENCE`` on and off: integrated gradients (50 Gauss–Legendre points) and SmoothGrad (50 samples)
on EfficientNet-Lite0 (``coffee``, its predicted class) and on the ZF-224 model (random weights,
a random image, target 3). Each timing is the median of ``--repeats`` calls after a warm-up call
(compile), with the compile caches cleared between the two settings; the maps of the two
settings are compared next to the timings (they must be equal).

Usage: ``python benchmarks/fence.py`` (about 5 min on 2 cores) → ``benchmarks/results/fence.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from benchmarks._timing import timed  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def run(repeats: int) -> list[dict]:
    import saliency_jax as sj
    from benchmarks.backprop import random_params
    from benchmarks.imagenet import on_coffee
    from saliency_jax.backprop import receptive_field as field
    from saliency_jax.model.architectures import get_model

    eff, image, target = on_coffee()
    zf = get_model("zf")
    zp = random_params(zf, (1, 224, 224, 3))
    zimg = np.random.default_rng(1).normal(size=(224, 224, 3)).astype(np.float32)
    key = jax.random.key(0)
    cases = [
        ("efficientnet-lite0", "integrated_gradients",
         lambda: sj.integrated_gradients(eff.apply_fn, eff.params, image, target=target, n_steps=50)),
        ("efficientnet-lite0", "smoothgrad",
         lambda: sj.smooth_grad("gradient", eff.apply_fn, eff.params, image, target=target, n_samples=50, key=key)),
        ("zf-224", "integrated_gradients", lambda: sj.integrated_gradients(zf.apply, zp, zimg, target=3, n_steps=50)),
        ("zf-224", "smoothgrad",
         lambda: sj.smooth_grad("gradient", zf.apply, zp, zimg, target=3, n_samples=50, key=key)),
    ]
    rows = []
    for model, method, fn in cases:
        row = {"model": model, "method": method}
        maps = {}
        for fence in (False, True):
            field.FENCE = fence
            jax.clear_caches()
            _, row["fenced_s" if fence else "unfenced_s"], out = timed(fn, repeats)
            maps[fence] = np.asarray(out)
        field.FENCE = True
        row["speedup"] = row["unfenced_s"] / row["fenced_s"]
        row["max_abs_difference"] = float(np.abs(maps[True] - maps[False]).max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = ["# receptive_field.vjp's fence on and off (one process, same inputs)", "",
             f"Median of {report['repeats']} calls after a warm-up call, seconds per image.", "",
             "| model | method | unfenced s | fenced s | speed-up | max abs difference of the maps |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['method']} | {r['unfenced_s']:.2f} | {r['fenced_s']:.2f} | {r['speedup']:.2f}× | "
              f"{r['max_abs_difference']:.2g} |" for r in report["rows"]]
    return "\n".join(lines + ["", _provenance.markdown_line(report["provenance"]), ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    with machine_lock(exclusive=True):
        provenance = _provenance.start(script=__file__)
        report = {"repeats": args.repeats, "rows": run(args.repeats)}
        report["provenance"] = _provenance.finish(provenance)
    print(_provenance.write_results(args.out, "fence", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
