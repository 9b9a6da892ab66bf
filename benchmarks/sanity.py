"""Model-randomisation sanity check in the style of Adebayo et al. (2018), per backward rule.

Cascading randomisation: starting from the logits and moving down to ``conv1``, the weights
of one more layer at a time are replaced by a fresh initialisation (another seed, the same
initialisers), and the maps of the same images for the same target (the original model's
predicted class) are compared with the original maps by Spearman rank correlation, for
``gradient``, ``deconvnet`` and ``guided``, both on ``|map|`` (summed over channels, the
variant Adebayo et al. emphasise) and on the signed map (summed over channels). A method
that explains what the weights compute should decorrelate quickly; one that mostly reflects
the input and the architecture stays correlated.

The "original" weights here are the models' own random initialisations (no trained
checkpoint is used), so the numbers measure sensitivity to the weights of a randomly
initialised network of each architecture. Images are simple generated scenes (discs and
bars on a gradient), the same for every step.

Usage: ``python benchmarks/sanity.py [--images 4]``; writes ``benchmarks/results/sanity.json``
and ``sanity.md``.
"""

from __future__ import annotations

import argparse
import sys
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from saliency_jax import backprop
from saliency_jax.model import data
from saliency_jax.model.checkpoint import load
from saliency_jax.model.architectures import get_model

RESULTS = Path(__file__).parent / "results"
RULES = ("gradient", "deconvnet", "guided")


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), np.float64)
    sorted_a = a[order]
    starts = np.r_[0, np.flatnonzero(sorted_a[1:] != sorted_a[:-1]) + 1, len(a)]
    for s, e in zip(starts[:-1], starts[1:]):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def scenes(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Simple generated images: a colour gradient with 3 discs and 2 bars, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = (rng.uniform(0.2, 0.6, 3) * (1 - yy[..., None]) + rng.uniform(0.2, 0.6, 3) * xx[..., None])
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
        for _ in range(2):
            y0, x0 = rng.uniform(0.1, 0.7, 2)
            h, w = (rng.uniform(0.03, 0.08), rng.uniform(0.2, 0.4))[:: 1 if rng.uniform() < 0.5 else -1]
            img[(yy > y0) & (yy < y0 + h) & (xx > x0) & (xx < x0 + w)] = rng.uniform(0, 1, 3)
        out.append(img + rng.normal(0, 0.02, img.shape))
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def cascade(model_name: str, n_images: int):
    if model_name == "shipped":  # trained weights, on held-out generated test images
        loaded = load()
        model = loaded.module
        images = jnp.asarray(data.preprocess(data.generate(n_images, split="test").images))
        original = loaded.params
    else:  # a random initialisation, on simple generated scenes
        model = get_model(model_name)
        images = jnp.asarray(scenes(n_images, model.input_size[0]))
        original = jax.jit(model.init)(jax.random.key(0), images[:1])
    fresh = jax.jit(model.init)(jax.random.key(1), images[:1])
    target = jnp.argmax(model.apply(original, images), axis=-1)
    maps_fn = {r: jax.jit(lambda p, x, t, r=r: backprop.saliency_maps(model.apply, p, x, t, rule=r)) for r in RULES}
    base = {r: np.asarray(maps_fn[r](original, images, target)) for r in RULES}
    layers = [name for name in reversed(model.layer_names) if name in original["params"]]
    rows = []
    params = jax.tree_util.tree_map(lambda a: a, original)
    for layer in layers:
        params = {"params": {**params["params"], layer: fresh["params"][layer]}}
        row = {"randomised_down_to": layer}
        for r in RULES:
            m = np.asarray(maps_fn[r](params, images, target))
            row[f"{r}_abs"] = float(np.mean([spearman(np.abs(base[r][i]).sum(-1), np.abs(m[i]).sum(-1))
                                             for i in range(n_images)]))
            row[f"{r}_signed"] = float(np.mean([spearman(base[r][i].sum(-1), m[i].sum(-1))
                                                for i in range(n_images)]))
        rows.append(row)
        print(model_name, row, flush=True)
    return dict(model=model_name, input_size=list(model.input_size), images=n_images,
                targets=np.asarray(target).tolist(), rows=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--models", nargs="+", default=["shipped", "small", "zf"],
                    help="'shipped' = the trained checkpoint; 'small' / 'zf' = random initialisations")
    args = ap.parse_args()
    provenance = _provenance.start(script=__file__)
    t0 = time.perf_counter()
    results = [cascade(m, args.images) for m in args.models]
    out = dict(benchmark="cascading randomisation (Adebayo et al. 2018), Spearman rank correlation with the "
                         "original maps", weights="shipped: the trained checkpoint; small/zf: random initialisations (seed 0); replacements: seed 1",
               results=results, seconds=time.perf_counter() - t0, jax=jax.__version__, cpu_count=os.cpu_count(),
               provenance=_provenance.finish(provenance))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sanity.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# Sanity check: cascading randomisation (Spearman rank correlation with the original maps)", "",
             "Weights: `shipped` is the trained checkpoint (images: held-out generated test images); `small` and "
             "`zf` start from random initialisations (seed 0; images: simple generated scenes). Each step replaces one "
             "more layer, from the logits down, by a seed-1 initialisation. Mean over "
             f"{args.images} generated images; target = the original model's predicted class. "
             "`abs`: |map| summed over channels; `signed`: map summed over channels. 1 = unchanged, 0 = unrelated.",
             ""]
    for res in results:
        lines += [f"## `{res['model']}` ({'×'.join(map(str, res['input_size']))})", "",
                  "| randomised down to | " + " | ".join(f"{r} abs | {r} signed" for r in RULES) + " |",
                  "|---|" + "---:|" * (2 * len(RULES))]
        for row in res["rows"]:
            lines.append(f"| {row['randomised_down_to']} | " + " | ".join(
                f"{row[f'{r}_abs']:.2f} | {row[f'{r}_signed']:.2f}" for r in RULES) + " |")
        lines.append("")
    lines += [_provenance.markdown_line(out["provenance"]), ""]
    (RESULTS / "sanity.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
