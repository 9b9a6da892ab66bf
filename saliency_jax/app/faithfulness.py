"""Are the maps right? Every method scored against the generated test split's exact object masks.

``saliency-jax faithfulness`` and ``benchmarks/faithfulness.py`` call :func:`faithfulness_report`:
for ``n`` generated test images (``saliency_jax.model.data.generate(n, split="test")``, whose
``masks`` are exactly the pixels of the object that decides the class) it computes each
method's maps **for the true class** and scores them with :mod:`saliency_jax.metrics`:

==================  ===================================================================  ======
column              what                                                                 better
==================  ===================================================================  ======
pointing            tolerant pointing game: the map's peak within 15 px of the object     higher
energy              share of the map's positive mass on the object                        higher
rank                relevance-rank accuracy: share of the top-``|mask|`` pixels on it     higher
pixel AUC           ROC-AUC of the map as a pixel classifier of the object (0.5 chance)   higher
deletion AUC        class probability as the top-ranked pixels are greyed out             lower
insertion AUC       class probability as they are pasted into a blurred image             higher
==================  ===================================================================  ======

Rows (:func:`rows`): every method of the registry (:mod:`saliency_jax.methods`), listed by
:func:`saliency_jax.methods.report_order` — occlusion at windows 16 and 32 (stride 8, fill 0 =
mid-grey, logit drop; rows ``occlusion-16``, ``occlusion-32``), crop (window 32, stride 8, the
window's own logit), deconvnet, guided backprop, the plain gradient — and the floors: the
registry's model-free baselines (:data:`saliency_jax.methods.BASELINES`: a random map, a centre
prior, the colour/edge filter after Fleck et al. (1996)) and the gradient, which a method that
claims more than the gradient must also beat. A method **fails to beat the baselines** on a
metric unless, against every baseline, the per-image paired difference is on the better side
with its 95 % interval (mean ± 1.96 standard errors) excluding zero. One more row, ``mask``
(the object mask itself used as a map), is a reference, not a method: it shows what a perfect
localiser scores, and its deletion/insertion AUCs show how much the *model* depends on the
object's pixels at all.

Beside the table goes the cascading-randomisation sanity result (``benchmarks/sanity.py``;
pass its JSON as ``sanity``): how much the backprop maps change when the weights are replaced.

Outputs (written atomically): ``faithfulness.json`` (the report, per-image values included),
``faithfulness.md`` (the tables) and ``faithfulness.curves.png`` (mean deletion and insertion
curves per method).

Example:
    >>> from saliency_jax.app.faithfulness import METHODS, BASELINES, rows
    >>> METHODS[:3], BASELINES
    (('occlusion-16', 'occlusion-32', 'feature_ablation'), ('random', 'centre', 'colour-edge', 'gradient'))
    >>> rows()[0]
    Row(label='occlusion-16', method='occlusion', options={'window': 16, 'stride': 8, 'fill': 0.0})
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate, methods as registry, metrics
from saliency_jax._batching import in_batches
from saliency_jax._io import atomic_write, atomic_write_text
from saliency_jax._plotting import pyplot
from saliency_jax.model import checkpoint, data

__all__ = [
    "Row", "rows", "METHODS", "BASELINES", "FLOOR_METHODS", "REFERENCE", "METRICS", "STRIDE", "FILL", "WINDOWS",
    "INSERTION_SIGMA", "faithfulness_report", "method_maps", "score_maps", "compare_to_baselines", "write_report",
    "results_table", "failures",
]

#: The windowed methods' options in this report: stride 8 px and fill 0.0 (mid-grey on the shipped
#: model's ``[-1, 1]`` input), for every method that takes them.
STRIDE = 8
FILL = 0.0
#: The windows a windowed method (one that takes a ``window``) is scored at, one row each, labelled
#: ``<method>-<window>`` when there are several: occlusion at two, to show what the window changes;
#: any other windowed method at 32 (a quarter of the shipped model's side).
WINDOWS: Mapping[str, tuple[int, ...]] = {"occlusion": (16, 32)}
_OTHER_WINDOWS = (32,)
#: Registered methods that are floors as well as rows: occlusion and the rules claim more than the gradient.
FLOOR_METHODS = ("gradient",)
#: The object mask used as a map: what a perfect localiser scores.
REFERENCE = "mask"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the report: a registered method with this report's options for it.

    Attributes:
        label: the row's name in the report (the method's, or ``<method>-<window>``).
        method: the registered method (:func:`saliency_jax.methods.get`).
        options: its options (:func:`saliency_jax.methods.attribute`).
    """

    label: str
    method: str
    options: dict


def rows() -> tuple[Row, ...]:
    """The method rows, one per registered method and window, in
    :func:`saliency_jax.methods.report_order`; a method registered later is a row from then on.

    Example:
        >>> [r.label for r in rows()][:4]
        ['occlusion-16', 'occlusion-32', 'feature_ablation', 'shapley_values']
    """
    out = []
    for name in registry.report_order(registry.names()):
        taken = registry.get(name).options
        if "window" not in taken:
            out.append(Row(name, name, {}))
            continue
        windows = WINDOWS.get(name, _OTHER_WINDOWS)
        shared = {k: v for k, v in (("stride", STRIDE), ("fill", FILL)) if k in taken}
        out += [Row(name if len(windows) == 1 else f"{name}-{w}", name, {"window": w, **shared}) for w in windows]
    return tuple(out)


#: The floors every explanation method must beat: the registry's model-free baselines
#: (:data:`saliency_jax.methods.BASELINES`) and :data:`FLOOR_METHODS`.
BASELINES = (*registry.BASELINES, *FLOOR_METHODS)
#: Every row of a default report (as registered when this module was imported), then the model-free baselines.
METHODS = (*(r.label for r in rows()), *registry.BASELINES)
#: Column -> (heading, higher is better).
METRICS = {
    "pointing": ("pointing game (15 px)", True),
    "energy": ("energy pointing game", True),
    "rank": ("relevance rank", True),
    "pixel_auc": ("pixel AUC", True),
    "deletion_auc": ("deletion AUC", False),
    "insertion_auc": ("insertion AUC", True),
}
#: σ of the insertion start image. RISE's 5 px keeps too much here: the shipped model still classifies
#: 66 % of 64 blurred test images right (mean probability 0.65); from 8 px on it is at chance (0.50).
INSERTION_SIGMA = 12.0


# ------------------------------------------------------------------------------------------ maps

def method_maps(method: str, apply_fn: Callable, params, x: jax.Array, images_uint8: np.ndarray, targets: jax.Array,
                masks: np.ndarray, *, seed: int = 0) -> jax.Array:
    """The maps of row ``method`` for ``targets`` on ``x (N, H, W, C)`` (model input): ``(N, H, W[, C])``.

    ``method`` is a row label (:func:`rows`: :func:`saliency_jax.methods.attribute` with the row's
    options), a model-free baseline (:func:`saliency_jax.methods.baseline_map` of ``images_uint8``,
    the same images as RGB 0..255; the random map's key is ``seed``) or :data:`REFERENCE`
    (``masks``, the object masks, as the map).

    Example:
        >>> import numpy as np, jax.numpy as jnp
        >>> method_maps("centre", None, None, jnp.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3), np.uint8),
        ...             None, None).shape
        (2, 8, 8)
    """
    row = next((r for r in rows() if r.label == method), None)
    if row is not None:
        return registry.attribute(row.method, apply_fn, params, x, targets, **row.options)
    if method in registry.BASELINES:
        return registry.baseline_map(method, images_uint8, jax.random.key(seed))
    if method == REFERENCE:
        return jnp.asarray(masks, jnp.float32)
    raise ValueError(f"`method` (={method!r}) must be one of {_names() + (REFERENCE,)}")


def score_maps(apply_fn: Callable, params, x: jax.Array, maps, masks: np.ndarray, targets: jax.Array, *,
               steps: int, tolerance: float = metrics.DEFAULT_TOLERANCE) -> dict:
    """Every metric of one method's maps: ``{metric: (N,) float32, "deletion"/"insertion": (N, steps+1)}``.

    Deletion greys pixels out (``0.0``, mid-grey on the shipped model's ``[-1, 1]`` input);
    insertion pastes them into a Gaussian blur of the image (σ :data:`INSERTION_SIGMA` = 12 px,
    where the shipped model is at chance); both follow the softmax probability of ``targets``.
    """
    masks = jnp.asarray(masks)
    dele = metrics.deletion_curve(apply_fn, params, x, maps, targets, steps=steps, baseline=FILL)
    ins = metrics.insertion_curve(apply_fn, params, x, maps, targets, steps=steps, blur_sigma=INSERTION_SIGMA)
    out = {
        "pointing": metrics.pointing_game(maps, masks, tolerance),
        "energy": metrics.energy_pointing_game(maps, masks),
        "rank": metrics.relevance_rank(maps, masks),
        "pixel_auc": metrics.pixel_auc(maps, masks),
        "deletion_auc": dele.auc,
        "insertion_auc": ins.auc,
        "deletion": dele.scores,
        "insertion": ins.scores,
        "fractions": dele.fractions,
    }
    return {k: np.asarray(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------ comparison

def _summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": 1.96 * sem, "n": int(v.size)}


def compare_to_baselines(per_image: dict, methods: Sequence[str], baselines: Sequence[str]) -> dict:
    """``{method: {metric: [baselines it does not beat]}}`` by paired per-image differences.

    A method beats a baseline on a metric when the mean of ``(method − baseline)`` over the
    images where both are finite (sign flipped for lower-is-better metrics) is positive with its
    95 % interval (± 1.96 standard errors) above zero. Baselines are not compared with themselves;
    a baseline missing from ``per_image`` is skipped.

    Example:
        >>> import numpy as np
        >>> per = {"a": {"pointing": np.array([1.0, 1, 1, 1, 0])}, "b": {"pointing": np.zeros(5)},
        ...        "c": {"pointing": np.array([1.0, 0, 1, 0, 0])}}
        >>> compare_to_baselines(per, ["a", "c"], ["b"])     # c: 2 hits of 5 is no clear gain over 0
        {'a': {}, 'c': {'pointing': ['b']}}
    """
    failures = {}
    for method in methods:
        row = {}
        for metric, (_, higher) in METRICS.items():
            if metric not in per_image.get(method, {}):
                continue
            lost = []
            for base in baselines:
                if base == method or base not in per_image:
                    continue
                d = per_image[method][metric] - per_image[base][metric]
                d = (d if higher else -d)[np.isfinite(d)]
                if d.size < 2 or not d.mean() - 1.96 * d.std(ddof=1) / np.sqrt(d.size) > 0:
                    lost.append(base)
            if lost:
                row[metric] = lost
        failures[method] = row
    return failures


# ---------------------------------------------------------------------------------------- report

def _names() -> tuple[str, ...]:
    """Every row label, then the model-free baselines (:data:`METHODS` as of now)."""
    return (*(r.label for r in rows()), *registry.BASELINES)


def _check_methods(methods) -> tuple[str, ...]:
    """Row labels and baselines; ``None`` is all of them, and a registered method's name stands for
    its rows (``occlusion``: ``occlusion-16, occlusion-32``)."""
    allowed = _names()
    if methods is None:
        return allowed
    if isinstance(methods, str):
        methods = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not isinstance(methods, (tuple, list)) or not methods:
        raise TypeError(f"`methods` (={methods!r}) must be a non-empty sequence of names from {allowed}")
    chosen = []
    for m in methods:
        labels = [r.label for r in rows() if r.method == m] if m in registry.REGISTRY else [m]
        if not set(labels) <= set(allowed):
            raise ValueError(f"`methods` (={tuple(methods)!r}): {m!r} is not one of {allowed} "
                             f"(or a registered method: {registry.names()})")
        chosen += labels
    return tuple(dict.fromkeys(chosen))


def _check_args(n, steps, batch_size, tolerance) -> None:
    _validate.integer("n", n, lo=1)
    _validate.integer("steps", steps, lo=1)
    _validate.integer("batch_size", batch_size, lo=1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < float("inf"):
        raise ValueError(f"`tolerance` (={tolerance!r}) must be a finite number of pixels >= 0")


def faithfulness_report(model=None, n: int = 500, methods: Sequence[str] | str | None = None, out=None, *,
                        steps: int = 16, tolerance: float = metrics.DEFAULT_TOLERANCE, seed: int = 0,
                        batch_size: int = 50, sanity: dict | str | os.PathLike | None = None,
                        log: Callable[[str], None] | None = None) -> dict:
    """Score every method on ``n`` generated test images; write the report to ``out`` if given.

    Args:
        model: a :class:`~saliency_jax.model.checkpoint.LoadedModel`, a checkpoint name or
            directory, or ``None`` (the shipped model).
        n: number of generated test images (``split="test"``, dataset ``seed``).
        methods: row labels and baselines from :data:`METHODS` (a sequence or a comma-separated
            string; a registered method's name stands for all its rows); ``None``: every row
            and baseline. The baselines among them are the floors the others are compared with.
        out: a folder for ``faithfulness.json``, ``.md`` and ``.curves.png``; ``None`` writes nothing.
        steps: deletion/insertion steps (``steps + 1`` model calls per image and curve).
        tolerance: the pointing game's tolerance in pixels.
        seed: the generated split's seed (and the random map's key).
        batch_size: images per batch of map and curve computations (the last padded).
        sanity: the cascading-randomisation result (``benchmarks/results/sanity.json`` or its
            loaded dict) to show beside the table; ``None`` leaves it out.
        log: called with one line per finished method (``None``: silent).

    Returns:
        The report (what ``faithfulness.json`` holds): settings, accuracy, per method and
        metric ``{"mean", "ci95", "n"}``, ``fails_to_beat``, mean curves, per-image values,
        seconds per method.
    """
    methods = _check_methods(methods)
    _check_args(n, steps, batch_size, tolerance)
    loaded = model if isinstance(model, checkpoint.LoadedModel) else checkpoint.load(model)
    gen = data.generate(n, split="test", seed=seed, size=loaded.input_size[0])
    x = np.asarray(data.preprocess(gen.images), np.float32)
    targets = gen.labels.astype(np.int32)
    apply_fn, params = loaded.apply_fn, loaded.params
    logits = np.concatenate([np.asarray(apply_fn(params, jnp.asarray(x[s:s + batch_size])))
                             for s in range(0, n, batch_size)])

    def one(method):
        fractions = []

        def run(xb, ub, tb, mb):
            xb, tb = jnp.asarray(xb), jnp.asarray(tb)
            maps = method_maps(method, apply_fn, params, xb, ub, tb, mb, seed=seed)
            scores = score_maps(apply_fn, params, xb, maps, mb, tb, steps=steps, tolerance=tolerance)
            fractions.append(scores.pop("fractions"))  # per curve step, not per image: the same in every batch
            return scores
        scores = in_batches(run, n, batch_size, x, gen.images, targets, gen.masks)
        return {**scores, "fractions": fractions[0]}

    per_image, seconds = {}, {}
    for method in methods + (REFERENCE,):
        start = time.perf_counter()
        per_image[method] = one(method)
        seconds[method] = time.perf_counter() - start
        if log:
            log(f"{method}: {seconds[method]:.1f} s; " + ", ".join(
                f"{k} {np.nanmean(per_image[method][k]):.3f}" for k in METRICS))
    report = _assemble(loaded, gen, logits, methods, per_image, seconds,
                       dict(n=n, steps=steps, tolerance=tolerance, seed=seed, stride=STRIDE, fill=FILL,
                            batch_size=batch_size), _load_sanity(sanity))
    if out is not None:
        write_report(report, out)
    return report


def _load_sanity(sanity) -> dict | None:
    if sanity is None or isinstance(sanity, dict):
        return sanity
    return json.loads(Path(sanity).read_text())


def _display_path(path) -> str:
    """``path`` relative to the working directory when it lies below it (reports stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _windows(method: str) -> str:
    """``"windows 16 and 32"`` / ``"window 32"``: the windows of ``method``'s rows, for the report's text."""
    ws = [str(r.options["window"]) for r in rows() if r.method == method]
    return f"windows {' and '.join(ws)}" if len(ws) > 1 else f"window {ws[0]}"


def _assemble(loaded, gen, logits, methods, per_image, seconds, settings, sanity) -> dict:
    baselines = [b for b in BASELINES if b in methods]
    compared = [m for m in methods if m not in BASELINES]
    fractions = next(iter(per_image.values()))["fractions"]
    return {
        "model": _display_path(loaded.path),
        "classes": list(loaded.classes),
        "data": {"split": "test", **{k: v for k, v in gen.info.items() if k in ("seed", "n", "size", "task")}},
        "settings": {**settings, "target": "the true label", "score": "softmax probability (deletion/insertion)",
                     "deletion_baseline": "0.0 (mid-grey)",
                     "insertion_baseline": f"Gaussian blur (sigma {INSERTION_SIGMA:g} px)",
                     "occlusion": f"{_windows('occlusion')}, stride {STRIDE}, fill {FILL}, logit drop, mean over windows",
                     "crop": f"{_windows('crop')}, stride {STRIDE}, the crop's own logit",
                     "channels": "backprop maps reduced to max_c |m|"},
        "accuracy": float(np.mean(logits.argmax(-1) == gen.labels)),
        "endpoints": {"probability_unperturbed": float(np.mean(per_image[REFERENCE]["deletion"][:, 0])),
                      "probability_all_grey": float(np.mean(per_image[REFERENCE]["deletion"][:, -1])),
                      "probability_blurred": float(np.mean(per_image[REFERENCE]["insertion"][:, 0]))},
        "metrics": {k: {"label": label, "higher_is_better": hi} for k, (label, hi) in METRICS.items()},
        "methods": list(methods),
        "baselines": baselines,
        "reference": REFERENCE,
        "results": {m: {k: _summary(v[k]) for k in METRICS} for m, v in per_image.items()},
        "fails_to_beat": compare_to_baselines(per_image, compared, baselines),
        "curves": {"fractions": fractions.tolist(),
                   **{m: {c: np.nanmean(v[c], axis=0).tolist() for c in ("deletion", "insertion")}
                      for m, v in per_image.items()}},
        "sanity": sanity,
        "seconds": seconds,
        "per_image": {"labels": gen.labels.tolist(), "predicted": logits.argmax(-1).tolist(),
                      **{m: {k: [None if not np.isfinite(a) else float(a) for a in v[k]] for k in METRICS}
                         for m, v in per_image.items()}},
    }


# ---------------------------------------------------------------------------------------- output

def _cell(stat: dict, failed: bool) -> str:
    if stat["mean"] is None:
        return "—"
    ci = "" if not np.isfinite(stat["ci95"]) else f" ± {stat['ci95']:.3f}"
    return f"{stat['mean']:.3f}{ci}" + (" ✗" if failed else "")


def results_table(report: dict) -> list[str]:
    """The markdown table of a report: one row per method, baseline and the reference."""
    heads = [f"{label} {'↑' if hi else '↓'}" for label, hi in METRICS.values()]
    lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(METRICS)]
    for m in report["methods"] + [report["reference"]]:
        fails = report["fails_to_beat"].get(m, {})
        name = (f"{m} (baseline)" if m in report["baselines"] else f"*{m}* (reference)" if m == report["reference"]
                else f"**{m}**")
        lines.append(f"| {name} | " + " | ".join(_cell(report["results"][m][k], k in fails) for k in METRICS) + " |")
    return lines


def failures(report: dict) -> list[str]:
    """Markdown bullets: which method does not beat which baselines on which metric."""
    lines = []
    for m, row in report["fails_to_beat"].items():
        for k, lost in row.items():
            lines.append(f"- **{m}** does not beat {', '.join(lost)} on {METRICS[k][0]}.")
    return lines or ["- Every method beats every baseline on every metric."]


def _sanity_lines(sanity: dict | None) -> list[str]:
    if not sanity:
        return []
    shipped = [r for r in sanity.get("results", []) if r.get("model") == "shipped"]
    if not shipped:
        return []
    res = shipped[0]
    rules = [k[:-len("_abs")] for k in res["rows"][0] if k.endswith("_abs")]  # the maps the sanity run measured
    lines = ["## Sanity: cascading randomisation (Adebayo et al. 2018)", "",
             f"From `benchmarks/results/sanity.json` (`benchmarks/sanity.py`, the shipped model, {res['images']} "
             "test images): Spearman rank correlation of each backprop map with the trained model's map as the "
             "layers are re-initialised from the logits down; |map| summed over channels (signed in brackets). "
             "A map that explains the weights should fall towards 0; one that stays high mostly reflects the "
             "input and the architecture, whatever it scores above.", "",
             "| randomised down to | " + " | ".join(rules) + " |", "|---|" + "---:|" * len(rules)]
    for row in res["rows"]:
        lines.append(f"| {row['randomised_down_to']} | " + " | ".join(
            f"{row[f'{r}_abs']:.2f} ({row[f'{r}_signed']:.2f})" for r in rules) + " |")
    return lines + [""]


def _markdown(report: dict, notes: str = "") -> str:
    s, e = report["settings"], report["endpoints"]
    lines = [
        "# Are the maps right? Faithfulness against the generated test split's object masks", "",
        f"Model `{report['model']}` (accuracy {100 * report['accuracy']:.1f} % on these images); {s['n']} generated "
        f"test images (seed {s['seed']}); every map explains the **true class**. Occlusion: {s['occlusion']}; crop: "
        f"{s['crop']}; {s['channels']}. Deletion greys pixels out ({s['deletion_baseline']}), insertion pastes them "
        f"into a {s['insertion_baseline']} start image, both in {s['steps']} steps, following the softmax probability "
        "of the true class. Values: mean ± 95 % interval over images. ✗: fails to beat at least one baseline "
        "(random, centre prior, colour/edge filter, gradient) — the paired per-image difference's 95 % interval "
        "does not lie on the better side of zero. `mask` is the object mask used as a map: a perfect localiser.",
        "", f"Mean probability of the true class: unperturbed {e['probability_unperturbed']:.3f}, all grey "
        f"{e['probability_all_grey']:.3f} (deletion's end), blurred {e['probability_blurred']:.3f} "
        "(insertion's start).",
        "", *results_table(report), "", "## Which methods fail to beat the baselines", "", *failures(report), "",
        *_sanity_lines(report.get("sanity")),
        "## Curves", "", "![mean deletion and insertion curves](faithfulness.curves.png)", "",
        "Seconds per method (maps and all metrics, this run): " + ", ".join(
            f"{m} {t:.0f}" for m, t in report["seconds"].items()) + ".", "",
    ]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    plt = pyplot()
    fr = np.asarray(report["curves"]["fractions"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for m in report["methods"] + [report["reference"]]:
        style = "--" if m in report["baselines"] else ":" if m == report["reference"] else "-"
        for ax, kind in zip(axes, ("deletion", "insertion")):
            ax.plot(fr, report["curves"][m][kind], style, label=m)
    for ax, kind in zip(axes, ("deletion", "insertion")):
        ax.set(title=f"{kind} (mean over {report['settings']['n']} images)", xlabel=f"fraction of pixels {kind[:-3]}ed"
               if kind == "insertion" else "fraction of pixels deleted", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability of the true class")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def write_report(report: dict, out, *, notes: str = "") -> dict:
    """Write ``faithfulness.json``, ``faithfulness.md`` (with ``notes`` appended) and ``faithfulness.curves.png``.

    Every file goes through a temporary name and a rename. Returns ``{kind: path}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "faithfulness.json", "md": out / "faithfulness.md", "png": out / "faithfulness.curves.png"}
    _plot(report, paths["png"])
    atomic_write_text(paths["json"], json.dumps(report, indent=1) + "\n")
    atomic_write_text(paths["md"], _markdown(report, notes))
    return paths
