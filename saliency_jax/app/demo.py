"""The demo: the shipped model on a few generated test images, every method, panels and a gallery.

``saliency-jax demo`` calls :func:`run_demo`. For each image it writes the raw maps
(``.npy`` float32), a JSON sidecar (settings, prediction, scores, whether each map's peak falls on
the ground-truth object) and a panel like the original write-up's figure — image | crop heatmap |
occlusion heatmap | deconvnet projection — then a static ``index.html`` gallery. Every file is
written to a temporary name and renamed, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.model import checkpoint, data
from saliency_jax._io import atomic_write, atomic_write_text
from saliency_jax.app.explain import DEFAULT_METHODS, ExplainSettings, compute_maps, render_image

__all__ = ["run_demo"]




def run_demo(
    out: str | os.PathLike = "saliency-demo",
    *,
    n: int = 6,
    model: str | os.PathLike | None = None,
    window: int = 32,
    stride: int = 4,
    seed: int = 0,
) -> dict:
    """Explain ``n`` generated test images with the shipped (or given) model; write the results.

    Every map explains the predicted class's logit (a saturated softmax would flatten the
    occlusion map); the captions give the probability.

    Args:
        out: the output folder (created; existing files of a previous demo are replaced).
        n: number of images (``>= 1``).
        model: a checkpoint name or directory for :func:`saliency_jax.model.checkpoint.load`;
            ``None`` is the shipped model.
        window: occlusion window side in pixels.
        stride: occlusion stride in pixels.
        seed: the generated test split's seed.

    Returns:
        The summary written to ``out/summary.json``: per image the label, prediction,
        probabilities and whether the occlusion / crop / deconvnet peaks fall on the object.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` (={n!r}) must be a positive int")
    loaded = checkpoint.load(model)
    classes = loaded.classes
    size = loaded.input_size[0]
    gen = data.generate(n, split="test", seed=seed, size=size)
    x = jnp.asarray(data.preprocess(gen.images))
    apply_fn = loaded.apply_fn
    probs = np.asarray(jax.nn.softmax(apply_fn(loaded.params, x), axis=-1))
    pred = probs.argmax(-1)
    explain_settings = ExplainSettings(
        methods=DEFAULT_METHODS, window=(window, window), stride=(stride, stride), fill=0.0, target="predicted",
        formats=("png", "npy"), cmap="jet", signed_cmap="RdBu_r", alpha=0.5, colorbar=False,
    )
    maps = compute_maps(apply_fn, loaded.params, x, jnp.asarray(pred, jnp.int32), explain_settings)
    occ, crop, deconv = maps["occlusion"], maps["crop"], maps["deconvnet"]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"window": window, "stride": stride, "fill": 0.0, "score": "logit", "seed": seed}
    rows = []
    for k in range(n):
        name = f"test_{k:03d}"
        mask = gen.masks[k]
        deconv_abs = np.abs(deconv[k]).max(-1)
        peaks = {
            "occlusion": bool(mask.flat[np.nanargmax(occ[k])]),
            "crop": bool(mask.flat[np.nanargmax(crop[k])]),
            "deconvnet": bool(mask.flat[np.argmax(deconv_abs)]),
        }
        label, guess = classes[int(gen.labels[k])], classes[int(pred[k])]
        panel, _ = render_image(gen.images[k].astype(np.float32) / 255.0, {m: v[k] for m, v in maps.items()},
                                classes, [int(pred[k])], probs[k], explain_settings,
                                title=f"{label}: P({guess})={probs[k, pred[k]]:.2f}")
        for method, arr in (("occlusion", occ[k]), ("crop", crop[k]), ("deconvnet", deconv[k])):
            atomic_write(out / f"{name}_{method}.npy", lambda p, a=arr: np.save(p, a.astype(np.float32)))
        atomic_write(out / f"{name}.png", lambda p, im=panel: im.save(p, format="PNG"))
        row = {
            "image": name,
            "label": label,
            "prediction": guess,
            "probabilities": {c: float(p) for c, p in zip(classes, probs[k])},
            "peak_on_object": peaks,
            "settings": settings,
            "model": str(loaded.path),
        }
        atomic_write_text(out / f"{name}.json", json.dumps(row, indent=2))
        rows.append(row)

    summary = {
        "model": str(loaded.path),
        "classes": list(classes),
        "settings": settings,
        "accuracy": float(np.mean(pred == gen.labels)),
        "peak_on_object_rate": {m: float(np.mean([r["peak_on_object"][m] for r in rows])) for m in ("occlusion", "crop", "deconvnet")},
        "images": rows,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    cards = "\n".join(
        f'<figure><img src="{html.escape(r["image"])}.png" alt="{html.escape(r["image"])}">'
        f'<figcaption>{html.escape(r["image"])}: {html.escape(r["label"])} → {html.escape(r["prediction"])}; '
        f'peak on object: {", ".join(m for m, hit in r["peak_on_object"].items() if hit) or "none"}</figcaption></figure>'
        for r in rows
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>saliency_jax demo</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{margin:1em 0}img{image-rendering:pixelated}</style>"
        f"</head><body><h1>saliency_jax demo</h1><p>Model: {html.escape(str(loaded.path))}; window {window}, stride {stride}. "
        "Panels: image | crop heatmap (the window alone, resized: its logit for the predicted class) | occlusion "
        "heatmap (drop in that logit when the window is filled with 0, mid-grey after preprocessing; red = supports the class) | deconvnet "
        "projection of the logit.</p>"
        f"{cards}</body></html>"
    )
    atomic_write_text(out / "index.html", page)
    return summary
