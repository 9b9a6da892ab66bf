"""The demo: the shipped model on a few generated test images, every method, panels and a gallery.

With a model of other classes (``--model efficientnet-lite0``, or any checkpoint or factory whose
classes are not the generated task's), the demo is :func:`run_photo_demo` instead: the real
photos bundled with installed packages (:func:`saliency_jax.sample_photos`) through every
registered method, by the folder job, into a gallery.

``saliency-jax demo`` calls :func:`run_demo`. For each image it writes the raw maps
(``.npy`` float32), a JSON sidecar (settings, prediction, scores, whether each map's peak falls on
the ground-truth object) and a panel like the original write-up's figure — image | crop heatmap |
occlusion heatmap | deconvnet projection — then a static ``index.html`` gallery. Every file is
written to a temporary name and renamed, so an interrupted run leaves no half-written file.

"Peak on the object" is the **tolerant pointing game** (:func:`saliency_jax.metrics.pointing_game`,
15 px): a strict mask hit on a thin ring or cross counts a peak in the ring's hole, or two pixels off
the stroke, as a miss. The strict hit is kept beside it (``peak_on_object``) for comparison;
:func:`summary_line` is the one-line summary the command prints.

Example:
    >>> summary_line({"images": [{}] * 6, "accuracy": 1.0, "pointing_game_tolerance": 15,
    ...               "pointing_game_rate": {"occlusion": 1.0, "crop": 0.5, "deconvnet": 5 / 6}})
    '6 images, accuracy 100%; pointing game (15 px tolerance): occlusion 100%, crop 50%, deconvnet 83%'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saliency_jax import methods as registry, metrics
from saliency_jax._io import atomic_write, atomic_write_text
from saliency_jax.app import gallery, models
from saliency_jax.app.maps import explain_batch
from saliency_jax.app.panels import render_image
from saliency_jax.app.render import from_uint8
from saliency_jax.app.settings import ExplainSettings, check_methods
from saliency_jax.model import checkpoint, data

__all__ = ["run_demo", "run_photo_demo", "summary_line", "POINTING_TOLERANCE"]

#: The pointing game's tolerance in pixels for the demo's "peak on the object".
POINTING_TOLERANCE = metrics.DEFAULT_TOLERANCE


def run_demo(
    out: str | os.PathLike = "saliency-demo",
    *,
    n: int = 6,
    model: str | os.PathLike | None = None,
    window: int | None = None,
    stride: int | None = None,
    seed: int = 0,
    methods: str | Sequence[str] | None = None,
) -> dict:
    """Explain ``n`` generated test images with the shipped (or given) model; write the results.

    Every map explains the predicted class's logit (a saturated softmax would flatten the
    occlusion map); the captions give the probability.

    Args:
        out: the output folder (created; existing files of a previous demo are replaced).
        n: number of images (``>= 1``).
        model: a checkpoint name or directory, a pretrained name or a ``package.module:function``
            factory (:func:`saliency_jax.app.models.load_model`); ``None`` is the shipped model. A
            model whose classes are not the generated task's runs :func:`run_photo_demo`.
        window: occlusion window side in pixels (default 32; for the photo demo, the model's
            default, a quarter of the input side).
        stride: occlusion stride in pixels (default 4; photo demo: a quarter of the window).
        seed: the generated test split's seed.
        methods: registered methods (a sequence or a comma-separated string), ``"all"`` (every
            method of the registry, :func:`saliency_jax.methods.names`, each at its defaults; several
            minutes on a 2-core CPU: RISE and KernelSHAP evaluate thousands of masked copies), or
            ``None``: the default selection (``names(default=True)``; the photo demo: all).

    Returns:
        The summary written to ``out/summary.json``: per image the label, prediction,
        probabilities and, per map (occlusion / crop / deconvnet), ``pointing_game`` (the peak
        within 15 px of the object) and ``peak_on_object`` (the peak on the object's pixels);
        overall ``pointing_game_rate`` and ``peak_on_object_rate``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` (={n!r}) must be a positive int")
    loaded = models.load_model(model)
    if tuple(loaded.classes) != tuple(data.CLASSES):
        return run_photo_demo(out, model=loaded, window=window, stride=stride, methods=methods)
    window = 32 if window is None else window
    stride = 4 if stride is None else stride
    classes = loaded.classes
    gen = data.generate(n, split="test", seed=seed, size=loaded.input_size[0])
    chosen = registry.names(default=True) if methods is None else registry.names() if methods == "all" else methods
    explain_settings = ExplainSettings.request(methods=chosen, window=window, stride=stride).complete(
        loaded.input_size, classes)
    shown = registry.report_order(explain_settings.methods)
    batch = explain_batch(loaded.apply_fn, loaded.params, gen.images, explain_settings)
    probs, pred = batch.probs, batch.logits.argmax(-1)
    pointing = {m: np.asarray(metrics.pointing_game(batch.maps[m], gen.masks, POINTING_TOLERANCE)) == 1.0
                for m in shown}

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"window": window, "stride": stride, "fill": 0.0, "score": "logit", "seed": seed}
    rows = []
    for k in range(n):
        name = f"test_{k:03d}"
        per = {m: v[k] for m, v in batch.maps.items()}
        label, guess = classes[int(gen.labels[k])], classes[int(pred[k])]
        panel, _ = render_image(from_uint8(gen.images[k]), per, classes, [int(pred[k])], probs[k],
                                explain_settings, title=f"{label}: P({guess})={probs[k, pred[k]]:.2f}")
        for method in shown:
            atomic_write(out / f"{name}_{method}.npy", lambda p, a=per[method]: np.save(p, a.astype(np.float32)))
        atomic_write(out / f"{name}.png", lambda p, im=panel: im.save(p, format="PNG"))
        row = {
            "image": name,
            "label": label,
            "prediction": guess,
            "probabilities": {c: float(p) for c, p in zip(classes, probs[k])},
            "pointing_game": {m: bool(pointing[m][k]) for m in shown},
            "peak_on_object": {m: _peak_on_object(gen.masks[k], per[m], registry.get(m).kind) for m in shown},
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
        "pointing_game_tolerance": POINTING_TOLERANCE,
        "pointing_game_rate": {m: float(np.mean(pointing[m])) for m in shown},
        "peak_on_object_rate": {m: float(np.mean([r["peak_on_object"][m] for r in rows])) for m in shown},
        "images": rows,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    _write_gallery(out, rows, loaded.path, window, stride)
    return summary


def run_photo_demo(out: str | os.PathLike = "saliency-demo", *, model=None, window: int | None = None,
                   stride: int | None = None, methods: str | Sequence[str] | None = None) -> dict:
    """The bundled real photos through every registered method of ``model``, into a gallery.

    The photos (:func:`saliency_jax.sample_photos`: scikit-image's and matplotlib's) are written
    to ``out/photos/`` as PNG and explained by the folder job (:func:`saliency_jax.explain_paths`,
    every method of :func:`saliency_jax.methods.names`) into ``out/maps/``, whose ``index.html``
    is the gallery: per photo the panel at the model's input, the maps over the whole photo and
    the top-5 classes.

    Args:
        out: the output folder. model: as for :func:`run_demo` (default the ImageNet
            ``efficientnet-lite0``). window, stride: occlusion and crop (default the model's).
            methods: as for :func:`run_demo` (default every registered method).

    Returns:
        The summary written to ``out/summary.json``: ``kind`` (``"photos"``), ``model``,
        ``methods``, ``gallery`` and per photo its top-5 classes.

    Raises:
        ImportError: no sample photos are installed (scikit-image or matplotlib), or the model's
            weight wheel is missing.
    """
    from saliency_jax.app.explain import explain_paths
    from saliency_jax.app.sidecar import read_sidecar
    from saliency_jax.model import photos as photos_lib
    from PIL import Image

    loaded = models.load_model("efficientnet-lite0" if model is None else model)
    photos = photos_lib.sample_photos()
    if not photos:
        raise ImportError("the photo demo needs the photos of scikit-image or matplotlib; neither is installed")
    out = Path(out)
    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in photos.items():
        atomic_write(folder / f"{name}.png", lambda p, a=rgb: Image.fromarray(a).save(p, format="PNG"))
    chosen = check_methods(registry.names() if methods in (None, "all") else methods)
    result = explain_paths([folder], out / "maps", model=loaded, methods=chosen, window=window,
                           stride=stride, progress=False)
    rows = []
    for side_path in result.sidecars:
        side = read_sidecar(side_path)
        rows.append({"image": side["input"]["name"], "top5": side["prediction"]["top5"]})
    summary = {"kind": "photos", "model": str(loaded.path), "methods": list(chosen),
               "gallery": "maps/index.html", "failed": [list(f) for f in result.failed], "images": rows}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def summary_line(summary: dict) -> str:
    """The demo's one-line summary: image count, accuracy and the tolerant pointing game per map
    (the photo demo: photo count, methods and each photo's top class)."""
    if summary.get("kind") == "photos":
        tops = ", ".join(f"{r['image']}: {r['top5'][0]['class']} ({r['top5'][0]['probability']:.2f})"
                         for r in summary["images"])
        return f"{len(summary['images'])} photos, methods {', '.join(summary['methods'])}; {tops}"
    rates = ", ".join(f"{m} {100 * r:.0f}%" for m, r in summary["pointing_game_rate"].items())
    return (f"{len(summary['images'])} images, accuracy {100 * summary['accuracy']:.0f}%; "
            f"pointing game ({summary['pointing_game_tolerance']:g} px tolerance): {rates}")


def _peak_on_object(mask: np.ndarray, m: np.ndarray, kind: str) -> bool:
    """Whether the map's peak (an rgb map's: of ``max_c |m|``) lies on the object's ``(H, W)`` mask (strict)."""
    if kind == "rgb":
        return bool(mask.flat[np.argmax(np.abs(m).max(-1))])
    return bool(mask.flat[np.nanargmax(m)])


def _write_gallery(out: Path, rows: list[dict], model_path, window: int, stride: int) -> None:
    """``out/index.html``: every image's panel, captioned with its label, prediction and peak hits."""
    figures = [
        gallery.Figure(f"{r['image']}.png", r["image"],
                       f"{r['image']}: {r['label']} → {r['prediction']}; peak within {POINTING_TOLERANCE} px of the "
                       f"object: {', '.join(m for m, hit in r['pointing_game'].items() if hit) or 'none'}")
        for r in rows
    ]
    intro = (
        f"Model: {model_path}; window {window}, stride {stride}. "
        "Panels: image | crop heatmap (the window alone, resized: its logit for the predicted class) | occlusion "
        "heatmap (drop in that logit when the window is filled with 0, mid-grey after preprocessing; red = supports "
        "the class) | deconvnet projection of the logit."
    )
    gallery.write_gallery(out / "index.html", "demo", intro, figures, separator="\n")
