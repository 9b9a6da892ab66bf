"""Are the maps right? The faithfulness table of the shipped model, with the sanity result beside it.

Calls :func:`saliency_jax.app.faithfulness.faithfulness_report` on the generated test split (exact
object masks) and writes ``benchmarks/results/faithfulness.{json,md}`` and
``faithfulness.curves.png``. The cascading-randomisation result comes from
``benchmarks/results/sanity.json`` (``benchmarks/sanity.py``); ``--rerun-sanity`` recomputes the
shipped model's part with that script's :func:`benchmarks.sanity.cascade`.

Default: 200 images, 16 deletion/insertion steps — about 5 minutes on a quiet 2-core CPU
(the issue asks for 500 images from the command line, ``saliency-jax faithfulness --n 500``; that
takes about 2.5× as long). The markdown ends with the checks of the issue's target (occlusion
beats every baseline on the tolerant pointing game and on deletion AUC) and the diagnostics
used to tell a model fault from a method fault, all computed from this run.

Usage: ``python benchmarks/faithfulness.py [--n 200] [--steps 16] [--smoke]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402
from saliency_jax.app import faithfulness as fa  # noqa: E402
from saliency_jax.model import checkpoint, data  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: How to read the diagnostics (the figures they rest on are computed above them in the same file).
READING = [
    "### Reading (of the default run: seed 0, 200 images)", "",
    "- *The deletion score of the `mask` row is a metric artefact, not a model fault.* Greying out exactly the "
    "object's pixels leaves a grey silhouette of the ring or cross, and this shape classifier still reads the "
    "shape: compare 'object greyed out' with 'box greyed out' (the object's bounding box, a shape-free hole) "
    "and 'only the object kept' in the table above. The model depends on the object; a map whose top pixels "
    "include the object's outline and surroundings deletes the class faster than the mask itself does.",
    "- *Crop fails because its premise fails on this model, not because the object is hard to find.* The crop "
    "view classifies each window enlarged to the full input; the model was trained on objects 32–52 px across "
    "and is not scale invariant: the 'crop … centred on the object' rows show the true class fading as the "
    "enlargement grows, down to below chance. A 32 px window is enlarged 4×, so the crop map measures the "
    "model's failure at that scale. Occlusion keeps the image at its trained scale.",
    "- *No method beats the colour/edge filter on relevance rank, and occlusion-16 does not beat it on pixel AUC.* "
    "These two "
    "metrics reward pixel-exact outlines of a thin object (about 5 % of the image); the filter marks every "
    "coloured stroke — the object and the distractors alike — at pixel resolution, while occlusion maps are "
    "a mean over 16 or 32 px windows at stride 8. That is the method's resolution, not a wrong location: the "
    "pointing game and the deletion AUC, which ask where the evidence is and whether removing it changes the "
    "decision, put occlusion ahead of every floor.",
    "- Deconvnet and guided backprop point at the object about as often as occlusion-16, yet the sanity table "
    "shows their maps stay correlated with the trained model's while the layers above them are random (guided "
    "most), where the signed gradient decorrelates at once: they largely reconstruct the image's edges, "
    "which here happen to include the object. Their deletion AUC does not beat the gradient's.", "",
]
OCCLUSION = ("occlusion-16", "occlusion-32")


def _verdict(report: dict) -> list[str]:
    """The issue's target, checked on this run."""
    lines = ["## The target: occlusion beats every baseline on the pointing game and on deletion AUC", ""]
    for m in OCCLUSION:
        if m not in report["results"]:
            continue
        for metric in ("pointing", "deletion_auc"):
            lost = report["fails_to_beat"].get(m, {}).get(metric, [])
            label = fa.METRICS[metric][0]
            lines.append(f"- {m}, {label}: " + ("**met** (beats " + ", ".join(report["baselines"]) + ")"
                                                 if not lost else f"**not met**: does not beat {', '.join(lost)}"))
    return lines + [""]


def _by_correctness(report: dict) -> list[str]:
    """Pointing game and deletion AUC on correctly vs wrongly classified images (a model fault shows here)."""
    labels = np.asarray(report["per_image"]["labels"])
    right = labels == np.asarray(report["per_image"]["predicted"])
    rows = ["| method | pointing, correct | pointing, wrong | deletion AUC, correct | deletion AUC, wrong |",
            "|---|---:|---:|---:|---:|"]
    for m in [*OCCLUSION, "gradient", "centre", "mask"]:
        if m not in report["per_image"]:
            continue
        v = {k: np.asarray(report["per_image"][m][k], float) for k in ("pointing", "deletion_auc")}

        def mean(a, sel):
            return f"{np.nanmean(a[sel]):.3f}" if sel.any() else "—"
        rows.append(f"| {m} | {mean(v['pointing'], right)} | {mean(v['pointing'], ~right)} | "
                    f"{mean(v['deletion_auc'], right)} | {mean(v['deletion_auc'], ~right)} |")
    return [f"### By correctness ({int(right.sum())} correct, {int((~right).sum())} wrong)", "", *rows, ""]


def _occlusion_vs_mask(report: dict) -> list[str]:
    """Per image: does greying out the object first (the mask's order) drop the class faster than occlusion's order?"""
    lines = []
    mask = np.asarray(report["per_image"]["mask"]["deletion_auc"], float)
    for m in OCCLUSION:
        if m not in report["per_image"]:
            continue
        occ = np.asarray(report["per_image"][m]["deletion_auc"], float)
        ok = np.isfinite(occ) & np.isfinite(mask)
        lines.append(f"- {m}: deletion AUC below the mask's on {np.mean(occ[ok] < mask[ok]):.0%} of images "
                     f"(mean {np.mean(occ[ok]):.3f} vs {np.mean(mask[ok]):.3f}).")
    return lines


def diagnostics(n: int, seed: int = 0, crop_sides=(128, 96, 64, 32)) -> dict:
    """Mean probability of the true class on the report's images when the object or its box is greyed out or
    kept alone, and on square crops centred on the object, resized to the input size (the crop view's premise)."""
    model = checkpoint.load()
    gen = data.generate(n, split="test", seed=seed, size=model.input_size[0])
    x = jnp.asarray(data.preprocess(gen.images))
    size = x.shape[1]
    rows = np.arange(n)

    def prob(images):
        out = [jax.nn.softmax(model.apply_fn(model.params, images[s:s + 50]), axis=-1) for s in range(0, n, 50)]
        return np.asarray(jnp.concatenate(out))[rows, gen.labels]

    box = np.zeros_like(gen.masks)
    centres = []
    for k, mk in enumerate(gen.masks):
        r, c = np.nonzero(mk)
        box[k, r.min():r.max() + 1, c.min():c.max() + 1] = True
        centres.append((int(r.mean()), int(c.mean())))
    grey = 0.0
    masks = {"object": gen.masks[..., None], "box": box[..., None]}
    out = {"unperturbed": prob(x)}
    for name, m in masks.items():
        out[f"{name} greyed out"] = prob(jnp.where(m, grey, x))
        out[f"only the {name} kept"] = prob(jnp.where(m, x, grey))
    for side in crop_sides:
        crops = []
        for k, (cy, cx) in enumerate(centres):
            y0, x0 = (int(np.clip(v - side // 2, 0, size - side)) for v in (cy, cx))
            crops.append(jax.image.resize(x[k, y0:y0 + side, x0:x0 + side], x.shape[1:], "bilinear"))
        out[f"crop {side} px centred on the object, resized to {size}"] = prob(jnp.stack(crops))
    return {k: {"mean_probability": float(v.mean()), "share_classified_right": float((v > 0.5).mean())}
            for k, v in out.items()}


def _diagnostic_lines(diag: dict) -> list[str]:
    lines = ["### What the model needs (probability of the true class, same images)", "",
             "| input | mean probability | classified right |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['mean_probability']:.3f} | {100 * v['share_classified_right']:.0f} % |"
              for k, v in diag.items()]
    return lines + [""]


def notes(report: dict) -> str:
    """The markdown appended below the table: the target and the model-or-method diagnostics."""
    e = report["endpoints"]
    lines = _verdict(report) + [
        "## Model or method? Diagnostics from this run", "",
        f"- Greying out **all** pixels leaves the true class at probability {e['probability_all_grey']:.3f}; the "
        f"blurred insertion start at {e['probability_blurred']:.3f}; unperturbed images at "
        f"{e['probability_unperturbed']:.3f}.",
        "- The `mask` row deletes exactly the object's pixels first. How often occlusion's order removes the "
        "class faster (see *Reading* below for why it can):",
        *_occlusion_vs_mask(report), "", *_by_correctness(report),
        *(_diagnostic_lines(report["diagnostics"]) if report.get("diagnostics") else []),
        *READING,
    ]
    return "\n".join(lines)


def _sanity(rerun: bool, images: int) -> dict | None:
    if rerun:
        from benchmarks.sanity import cascade

        return {"benchmark": "cascading randomisation (rerun for faithfulness)", "results": [cascade("shipped", images)]}
    path = RESULTS / "sanity.json"
    return json.loads(path.read_text()) if path.exists() else None


def _closing(report: dict) -> str:
    b, s = report["benchmark"], report["settings"]
    return notes(report) + (f"\n\nTotal {b['seconds_total']:.0f} s on {b['device']} ({b['cpu_count']} CPUs), jax "
                            f"{b['jax']}, {s['n']} images, {s['steps']} steps (the default run: 200 images, 16 steps, "
                            "about 5 minutes on a 2-core CPU).\n") + (
        f"\n{_provenance.markdown_line(report['provenance'])}\n" if "load_before" in report.get("provenance", {}) else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="generated test images (default 200)")
    ap.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    ap.add_argument("--methods", default=",".join(fa.METHODS))
    ap.add_argument("--rerun-sanity", action="store_true", help="recompute the shipped model's sanity rows")
    ap.add_argument("--smoke", action="store_true", help="4 images, 2 steps, written to a temporary folder")
    ap.add_argument("--rewrite", action="store_true",
                    help="rewrite faithfulness.md and the plot from the existing faithfulness.json (text changes only)")
    args = ap.parse_args()
    if args.rewrite:
        report = json.loads((RESULTS / "faithfulness.json").read_text())
        fa.write_report(report, RESULTS, notes=_closing(report))
        print((RESULTS / "faithfulness.md").read_text())
        return
    n, steps = (4, 2) if args.smoke else (args.n, args.steps)
    out = Path(tempfile.mkdtemp(prefix="faithfulness-smoke-")) if args.smoke else RESULTS
    provenance = _provenance.start(script=__file__)
    start = time.perf_counter()
    report = fa.faithfulness_report(None, n=n, methods=args.methods, steps=steps,
                                    sanity=_sanity(args.rerun_sanity, 4),
                                    log=lambda line: print(line, flush=True))
    report["diagnostics"] = diagnostics(n)
    report["benchmark"] = {"seconds_total": time.perf_counter() - start, "jax": jax.__version__,
                           "cpu_count": os.cpu_count(), "device": str(jax.devices()[0])}
    report["provenance"] = _provenance.finish(provenance)
    paths = fa.write_report(report, out, notes=_closing(report))
    print((out / "faithfulness.md").read_text())
    print("wrote", *paths.values())


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside a timing
        main()
