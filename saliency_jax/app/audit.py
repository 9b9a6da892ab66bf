"""The spurious-cue audit: the shortcut a ROC curve cannot see, measured, and whether the maps see it.

The original write-up's NSFW model had learnt red lips as evidence. Its precision/recall and ROC
curves could not show it, because the test set carried the same bias; only the deconvnet and
occlusion maps did. :func:`audit` reproduces that argument with numbers, on the generated task
(:mod:`saliency_jax.model.data`), whose images come with exact masks of the object *and* of the
spurious mark (a 7 × 7 red square with a white centre):

* the **cue model** (``checkpoints/rings-crosses-cue``, see :data:`CUE_MODEL`) was trained with
  the mark on a fraction ``p`` of the cue-class ("cross") training images and on no other one;
  the **clean model** (the shipped ``rings-crosses-small``) never saw the mark.
* **Classifier metrics** (:func:`classifier_report`): ROC-AUC, AP and accuracy of both models on
  three test splits of the same images: *biased* (the mark rides with the cue class at the rate
  ``p`` of training, ``cue_split="biased"``), *clean* (the mark on half of all images,
  independent of the label) and *none* (no mark). Plus the mark's direct effect on each model:
  the change in the cue-class margin ``logit[cue] − max_other logit`` when the mark is added to
  the same image (:func:`cue_effect`).
* **Map metrics** (:func:`map_scores`, :func:`compare`): on the clean-split images that carry the
  mark, each method's map of the **cue class's logit** under both models, scored against the
  object mask and against the mark's own mask with :func:`saliency_jax.metrics.energy_pointing_game`
  (share of positive map mass inside the mask; backprop maps count ``max_c |m|``, as that module
  documents) and :func:`saliency_jax.metrics.pointing_game` (the peak within ``tolerance`` px of
  the mask; 15 px by default, and 0 px, a strict hit, beside it). The cue model's mean is
  compared with the clean model's on the same images: ratio of means with a paired bootstrap
  95 % interval, and the per-image ratios' quartiles.
* **The deconvnet experiment** (:func:`deconvnet_transfer`): the write-up "added red to Barbara's
  lips" by adding the deconvnet projection of the NSFW class to an image. Here each model's
  deconvnet map of the cue class is added to images of the other class without the mark,
  ``x + ε · d / max|d|`` (clipped to the input range), and the cue-class margin's change is
  measured, beside a control that adds Gaussian noise of the same L2 norm.
* **The check** (:func:`check`): the maps *find* the cue when, for every method in
  ``check_methods`` (occlusion by default), the cue model's mean share of positive mass on the
  mark is at least ``min_ratio`` (2) times the clean model's and the bootstrap interval's lower
  end is above 1. No audited image carrying the mark fails the check too.

:func:`audit` writes ``audit.json``, ``audit.md`` and figures (``audit_roc.png``,
``audit_cue_share.png``, ``audit_panel_<k>.png``: the same image under both models) into
``out``, each written atomically. ``saliency-jax audit`` is :func:`cmd` (arguments:
:func:`add_arguments`).

Example:
    >>> from saliency_jax.app import audit
    >>> r = audit.audit(cue_model="rings-crosses-small", n=4, n_maps=2, window=64, stride=64,
    ...                 methods=("occlusion",), spurious_cue=0.5, out=None, n_boot=10)  # doctest: +SKIP
    >>> r["check"]["passed"]      # the shipped model against itself: no cue found  # doctest: +SKIP
    False
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax._io import atomic_write, atomic_write_text, folder_lock
from saliency_jax.app import render
from saliency_jax.app.maps import compute_maps
from saliency_jax.app.panels import render_image
from saliency_jax.app.settings import ExplainSettings, names
from saliency_jax.backprop import saliency_maps
from saliency_jax.metrics import energy_pointing_game, pointing_game
from saliency_jax.model import checkpoint, data
from saliency_jax.model import evaluate as eval_lib

__all__ = [
    "CUE_MODEL",
    "AUDIT_METHODS",
    "MASKS",
    "load_model",
    "audit_data",
    "classifier_report",
    "cue_effect",
    "margin",
    "batched_maps",
    "map_scores",
    "compare",
    "deconvnet_transfer",
    "check",
    "report_markdown",
    "to_json",
    "audit",
    "add_arguments",
    "cmd",
]

#: The shipped cue model's checkpoint name (found by :func:`saliency_jax.model.checkpoint.load`).
CUE_MODEL = "rings-crosses-cue"
#: Methods the audit can run (their maps go through :func:`saliency_jax.app.maps.compute_maps`).
AUDIT_METHODS: tuple[str, ...] = ("occlusion", "deconvnet", "guided", "gradient", "crop")
#: The masks each map is scored against.
MASKS: tuple[str, ...] = ("object", "cue")
_DEFAULT_METHODS = ("occlusion", "deconvnet", "guided")
_SPLITS = ("biased", "clean", "none")


# --------------------------------------------------------------------------- models and data


def load_model(model) -> checkpoint.LoadedModel:
    """A :class:`~saliency_jax.model.checkpoint.LoadedModel` as is, or a checkpoint name/path loaded.

    ``None`` is the shipped (clean) model.
    """
    if isinstance(model, checkpoint.LoadedModel):
        return model
    return checkpoint.load(model)


def audit_data(card: dict, n: int, *, spurious_cue: float, start: int = 0) -> dict[str, data.GeneratedData]:
    """The three test splits of the audit: the same ``n`` images of the ``"test"`` stream.

    Args:
        card: the cue model's card (its data seed, input size and cue class are used).
        n: images per split.
        spurious_cue: ``p``, the cue rate of the biased split (the cue model's training rate).
        start: index of the first image.

    Returns:
        ``{"biased": …, "clean": …, "none": …}``: the mark on a fraction ``p`` of the cue class
        (as in training), on half of all images independently of the label, and nowhere. The
        three differ only in the mark's pixels (:mod:`saliency_jax.model.data`).
    """
    d = card.get("data", {})
    common = dict(split="test", seed=int(d.get("seed", 0)), start=start, size=int(card["input_size"][0]),
                  cue_class=int(d.get("cue_class", 1)))
    return {
        "biased": data.generate(n, spurious_cue=spurious_cue, cue_split="biased", **common),
        "clean": data.generate(n, spurious_cue=spurious_cue, cue_split="clean", **common),
        "none": data.generate(n, spurious_cue=0.0, **common),
    }


def margin(logits, cue_class: int) -> np.ndarray:
    """The cue class's margin ``logit[cue] − max_{k ≠ cue} logit[k]``, ``(N,) float64``.

    Example:
        >>> margin(np.array([[1.0, 3.0], [2.0, 0.5]]), 1).tolist()
        [2.0, -1.5]
    """
    z = np.asarray(logits, np.float64)
    others = np.delete(z, cue_class, axis=1)
    return z[:, cue_class] - others.max(axis=1)


def classifier_report(logits: dict, splits: dict, classes: Sequence[str], cue_class: int) -> dict:
    """ROC-AUC, AP (of the cue class, :mod:`saliency_jax.model.evaluate`) and accuracy per split.

    Args:
        logits: ``{split: (N, K) logits}``.
        splits: ``{split: GeneratedData}`` with the same keys.
        classes: class names; ``cue_class``: the class whose ROC/PR curves are reported.

    Returns:
        ``{split: {"auc", "average_precision", "accuracy", "n", "cue_rate", "roc"}}``; ``roc`` holds
        the cue class's ``fpr``/``tpr`` lists, ``cue_rate`` the share of images with the mark per
        class.
    """
    out = {}
    for name, z in logits.items():
        g = splits[name]
        m = eval_lib.classification_metrics(z, g.labels, list(classes))
        per = m["per_class"][classes[cue_class]]
        out[name] = {
            "auc": float(per["auc"]),
            "average_precision": float(per["average_precision"]),
            "accuracy": float(m["accuracy"]),
            "n": int(m["n"]),
            "cue_rate": {classes[k]: float(g.has_cue[g.labels == k].mean()) for k in range(len(classes))},
            "roc": per["roc"],
        }
    return out


def cue_effect(logits_with, logits_without, has_cue, labels, cue_class: int) -> dict:
    """The mark's direct effect: the change in the cue-class margin when it is added to an image.

    Args:
        logits_with: ``(N, K)`` logits of images, some carrying the mark.
        logits_without: ``(N, K)`` logits of the same images without it.
        has_cue: ``(N,)`` bool; labels: ``(N,)`` int.
        cue_class: the class the mark co-occurs with in training.

    Returns:
        ``{"n", "mean_margin_change", "mean_margin_change_other_class", "flipped_to_cue_class"}``:
        over the images carrying the mark; the last two over those of the other classes only
        (``flipped``: predicted as another class without the mark, as the cue class with it).
        NaN when no image applies.
    """
    has_cue, labels = np.asarray(has_cue, bool), np.asarray(labels)
    delta = margin(logits_with, cue_class) - margin(logits_without, cue_class)
    other = has_cue & (labels != cue_class)
    pred_with = np.asarray(logits_with).argmax(1)
    pred_without = np.asarray(logits_without).argmax(1)
    flipped = (pred_without != cue_class) & (pred_with == cue_class)
    return {
        "n": int(has_cue.sum()),
        "mean_margin_change": _mean(delta[has_cue]),
        "mean_margin_change_other_class": _mean(delta[other]),
        "n_other_class": int(other.sum()),
        "flipped_to_cue_class": _mean(flipped[other].astype(np.float64)),
    }


# --------------------------------------------------------------------------- maps


def batched_maps(model, images: np.ndarray, target: int, settings: ExplainSettings, batch_size: int) -> dict:
    """Every method's maps of class ``target`` for uint8 ``images``, ``batch_size`` at a time.

    The last batch is padded to ``batch_size`` (one compilation per method and shape).

    Returns:
        ``{method: (N, H, W) or (N, H, W, C) float32}`` (:func:`saliency_jax.app.maps.compute_maps`).
    """
    n = images.shape[0]
    parts: dict[str, list] = {m: [] for m in settings.methods}
    for i in range(0, n, batch_size):
        chunk = images[i : i + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        x = jnp.asarray(data.preprocess(chunk))
        targets = jnp.full((batch_size,), target, jnp.int32)
        for method, maps in compute_maps(model.apply_fn, model.params, x, targets, settings).items():
            parts[method].append(maps[: batch_size - pad])
    return {m: np.concatenate(v) for m, v in parts.items()}


def map_scores(maps: np.ndarray, masks: dict, tolerance: float) -> dict:
    """Per-image scores of one method's maps against each mask.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, C)`` float32.
        masks: ``{name: (N, H, W) bool}`` (the object, the mark).
        tolerance: the pointing game's tolerance in pixels.

    Returns:
        ``{mask: {"energy": (N,), "pointing": (N,), "pointing_strict": (N,)}}`` float64 arrays:
        the share of positive mass inside the mask, and whether the peak lies within
        ``tolerance`` px (and 0 px) of it (:mod:`saliency_jax.metrics`).
    """
    out = {}
    for name, mask in masks.items():
        out[name] = {
            "energy": np.asarray(energy_pointing_game(maps, mask), np.float64),
            "pointing": np.asarray(pointing_game(maps, mask, tolerance=tolerance), np.float64),
            "pointing_strict": np.asarray(pointing_game(maps, mask, tolerance=0), np.float64),
        }
    return out


def compare(cue_values, clean_values, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The cue model's per-image scores against the clean model's on the same images.

    Images where either value is NaN are left out. The ratio is the ratio of the means; its
    95 % interval comes from a paired bootstrap over images (``n_boot`` resamples, percentile
    interval). ``per_image_ratio`` gives the quartiles of ``cue / clean`` over the images whose
    clean value is positive; ``cue_higher`` the share of images where the cue model's value is
    the larger.

    Returns:
        ``{"n", "cue_mean", "clean_mean", "cue_mean_ci", "clean_mean_ci", "ratio", "ratio_ci",
        "per_image_ratio": {"n", "q25", "median", "q75"}, "cue_higher"}`` (floats; NaN where undefined).

    Example:
        >>> r = compare(np.array([0.5, 1.0]), np.array([0.25, 0.25]), n_boot=50)
        >>> r["ratio"], r["per_image_ratio"]["median"], r["cue_higher"]
        (3.0, 3.0, 1.0)
    """
    a, b = np.asarray(cue_values, np.float64), np.asarray(clean_values, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    out = {"n": n, "cue_mean": _mean(a), "clean_mean": _mean(b)}
    if n == 0:
        nan2 = [math.nan, math.nan]
        out.update(cue_mean_ci=nan2, clean_mean_ci=nan2, ratio=math.nan, ratio_ci=nan2, cue_higher=math.nan,
                   per_image_ratio={"n": 0, "q25": math.nan, "median": math.nan, "q75": math.nan})
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    ma, mb = a[idx].mean(1), b[idx].mean(1)
    safe = np.where(mb > 0, mb, 1.0)
    boot_ratio = np.where(mb > 0, ma / safe, np.where(ma > 0, np.inf, np.nan))
    pos = b > 0
    r = a[pos] / b[pos]
    out.update(
        cue_mean_ci=_percentiles(ma),
        clean_mean_ci=_percentiles(mb),
        ratio=float(a.mean() / b.mean()) if b.mean() > 0 else (math.inf if a.mean() > 0 else math.nan),
        ratio_ci=_percentiles(boot_ratio),
        per_image_ratio={"n": int(pos.sum()), **dict(zip(("q25", "median", "q75"), _quartiles(r)))},
        cue_higher=float((a > b).mean()),
    )
    return out


def deconvnet_transfer(model, images: np.ndarray, cue_class: int, *, epsilon: float, batch_size: int,
                       seed: int = 0) -> dict:
    """The write-up's experiment: add the model's deconvnet signal of the cue class to images.

    For each image ``x`` (model input, in ``[-1, 1]``): ``d`` = the deconvnet map of the cue
    class's logit, ``x' = clip(x + ε · d / max|d|, -1, 1)``; the control adds Gaussian noise
    scaled to the same L2 norm as ``ε · d / max|d|``. The margin is
    ``logit[cue] − max_other logit`` (:func:`margin`).

    Args:
        model: a loaded model; images: ``(N, H, W, 3) uint8`` (images of another class).
        cue_class: the class whose signal is added.
        epsilon: the signal's peak amplitude in model-input units (``0.25`` = 32/255 of the
            pixel range).
        batch_size: images per call; seed: the noise seed.

    Returns:
        ``{"margin_before", "margin_signal", "margin_noise", "p_before", "p_signal", "p_noise"}``,
        each ``(N,) float64`` (``p``: softmax probability of the cue class).
    """
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("before", "signal", "noise")}
    for i in range(0, images.shape[0], batch_size):
        x = data.preprocess(images[i : i + batch_size])
        d = np.asarray(saliency_maps(model.apply_fn, model.params, jnp.asarray(x), cue_class, rule="deconvnet"),
                       np.float64)
        peak = np.abs(d).reshape(d.shape[0], -1).max(1)
        d = d / np.where(peak > 0, peak, 1.0)[:, None, None, None]
        signal = epsilon * d
        noise = rng.standard_normal(d.shape)
        norm = np.sqrt((signal**2).reshape(d.shape[0], -1).sum(1) / (noise**2).reshape(d.shape[0], -1).sum(1))
        noise = noise * norm[:, None, None, None]
        for key, xx in (("before", x), ("signal", np.clip(x + signal, -1, 1)), ("noise", np.clip(x + noise, -1, 1))):
            rows[key].append(np.asarray(model.apply_fn(model.params, jnp.asarray(xx, jnp.float32)), np.float64))
    logits = {k: np.concatenate(v) for k, v in rows.items()}
    out = {}
    for k, z in logits.items():
        out[f"margin_{k}"] = margin(z, cue_class)
        out[f"p_{k}"] = eval_lib.softmax(z)[:, cue_class]
    return out


def check(result: dict, methods: Sequence[str] = ("occlusion",), min_ratio: float = 2.0) -> dict:
    """Did the maps find the cue? See the module docstring.

    Args:
        result: an :func:`audit` result (its ``maps`` section).
        methods: the methods that must find the cue (each must have been audited).
        min_ratio: the least ratio of the cue model's mean share of positive mass on the mark to
            the clean model's.

    Returns:
        ``{"passed": bool, "methods", "min_ratio", "reasons": [str]}``: a reason per failure.
    """
    reasons = []
    maps = result["maps"]
    if maps["n_images"] == 0:
        reasons.append("no audited image carries the cue (spurious_cue is 0, or n too small): nothing to find")
    else:
        for m in methods:
            c = maps["methods"][m]["cue"]["energy"]
            if not (c["ratio"] >= min_ratio and c["ratio_ci"][0] > 1.0):
                reasons.append(
                    f"{m}: the cue model's share of positive mass on the cue is {c['ratio']:.3g}x the clean "
                    f"model's (95% CI {c['ratio_ci'][0]:.3g}-{c['ratio_ci'][1]:.3g}); needs >= {min_ratio:g}x "
                    "with the interval above 1"
                )
    return {"passed": not reasons, "methods": list(methods), "min_ratio": float(min_ratio), "reasons": reasons}


# --------------------------------------------------------------------------- the audit


def audit(
    cue_model=CUE_MODEL,
    clean_model=None,
    *,
    n: int = 500,
    n_maps: int | None = 100,
    out: str | os.PathLike | None = "audit",
    methods: Sequence[str] | str = _DEFAULT_METHODS,
    window: int = 16,
    stride: int = 4,
    tolerance: float = 15,
    epsilon: float = 0.25,
    spurious_cue: float | None = None,
    start: int = 0,
    panels: int = 4,
    batch_size: int = 16,
    n_boot: int = 1000,
    check_methods: Sequence[str] | str = ("occlusion",),
    min_ratio: float = 2.0,
    progress: bool | TextIO = False,
) -> dict:
    """Run the spurious-cue audit and write its report (see the module docstring).

    Args:
        cue_model: the model under audit: a checkpoint name or path, or a loaded model
            (default :data:`CUE_MODEL`).
        clean_model: the reference that never saw the cue (default: the shipped model).
        n: images per test split for the classifier metrics (``>= 2``).
        n_maps: at most this many clean-split images carrying the mark are explained (``None``:
            all of the ``n``); the deconvnet experiment uses at most as many other-class images.
        out: the output folder (created; ``None`` writes nothing).
        methods: map methods from :data:`AUDIT_METHODS` (a list or a comma-separated string).
        window, stride: the occlusion window and stride in pixels (fill 0: mid-grey).
        tolerance: the pointing game's tolerance in pixels.
        epsilon: the deconvnet experiment's signal amplitude (model-input units).
        spurious_cue: the biased split's cue rate ``p`` (default: the cue model card's).
        start: the first test image's index.
        panels: how many images get a figure (half of the other class, half of the cue class).
        batch_size: images per model call.
        n_boot: bootstrap resamples of the intervals.
        check_methods: the methods :func:`check` requires to find the cue; min_ratio: its ratio.
        progress: ``True`` (stderr) or a text stream for one line per stage; ``False`` for none.

    Returns:
        The result (also ``out/audit.json``): ``settings``, ``models``, ``classifier``,
        ``cue_effect``, ``maps``, ``deconvnet_experiment``, ``check``, ``files``.

    Raises:
        ValueError, TypeError: bad arguments (named), or models of different classes.
    """
    opts = _check_args(n=n, n_maps=n_maps, methods=methods, window=window, stride=stride, tolerance=tolerance,
                       epsilon=epsilon, spurious_cue=spurious_cue, start=start, panels=panels, batch_size=batch_size,
                       n_boot=n_boot, check_methods=check_methods, min_ratio=min_ratio)
    say = _say(progress)
    models = {"cue": load_model(cue_model), "clean": load_model(clean_model)}
    if models["cue"].classes != models["clean"].classes:
        raise ValueError(f"the cue model's classes {models['cue'].classes} differ from the clean model's "
                         f"{models['clean'].classes}")
    card = models["cue"].card
    cue_class = int(card.get("data", {}).get("cue_class", 1))
    p = float(card.get("data", {}).get("spurious_cue", 0.0)) if spurious_cue is None else float(spurious_cue)
    say(f"generating {n} test images x 3 splits (p = {p:g})")
    splits = audit_data(card, n, spurious_cue=p, start=start)
    result = {"settings": {**opts, "spurious_cue": p, "cue_class": cue_class, "classes": list(models["cue"].classes),
                           "map_target": "the cue class's logit"},
              "models": {k: _model_info(m) for k, m in models.items()}}
    say("classifier metrics")
    logits = {k: {s: eval_lib.predict_logits(m.apply_fn, m.params, g.images, 250) for s, g in splits.items()}
              for k, m in models.items()}
    result["classifier"] = {k: classifier_report(z, splits, models[k].classes, cue_class) for k, z in logits.items()}
    result["cue_effect"] = {k: cue_effect(z["clean"], z["none"], splits["clean"].has_cue, splits["clean"].labels,
                                          cue_class) for k, z in logits.items()}
    sel = _map_selection(splits["clean"], opts["n_maps"])
    say(f"maps of {sel.size} images carrying the cue, {len(opts['methods'])} methods x 2 models")
    settings = _explain_settings(opts, cue_class)
    maps = {k: batched_maps(m, splits["clean"].images[sel], cue_class, settings, batch_size) if sel.size else None
            for k, m in models.items()}
    result["maps"] = _maps_section(maps, splits["clean"], sel, opts, cue_class)
    say("deconvnet experiment")
    result["deconvnet_experiment"] = _transfer_section(models, splits["none"], cue_class, opts)
    result["check"] = check(result, opts["check_methods"], min_ratio)
    if out is not None:
        say(f"writing the report to {out}")
        result["files"] = _write_outputs(Path(out), result, models, splits["clean"], sel, maps, logits, settings)
    return result


def _say(progress):
    stream = sys.stderr if progress is True else (None if progress is False else progress)

    def say(text: str) -> None:
        if stream is not None:
            print(f"audit: {text}", file=stream, flush=True)

    return say


def _check_args(**kw) -> dict:
    """Every argument of :func:`audit` checked; returns the normalised values."""
    _validate.integer("n", kw["n"], lo=2)
    if kw["n_maps"] is not None:
        _validate.integer("n_maps", kw["n_maps"], lo=1)
    methods = names("methods", kw["methods"], AUDIT_METHODS)
    check_methods = names("check_methods", kw["check_methods"], AUDIT_METHODS)
    missing = [m for m in check_methods if m not in methods]
    if missing:
        raise ValueError(f"`check_methods` (={list(check_methods)!r}) must be among the audited `methods` "
                         f"{list(methods)}; {missing} is not")
    for name in ("window", "stride", "batch_size", "n_boot"):
        _validate.integer(name, kw[name], lo=1)
    for name in ("start", "panels"):
        _validate.integer(name, kw[name], lo=0)
    for name, lo, hi in (("tolerance", 0.0, math.inf), ("epsilon", 0.0, math.inf), ("min_ratio", 0.0, math.inf)):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi:
            raise ValueError(f"`{name}` (={v!r}) must be a finite number >= {lo:g}")
    p = kw["spurious_cue"]
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0):
        raise ValueError(f"`spurious_cue` (={p!r}) must be a number in [0, 1] or None (the cue model card's)")
    if kw["stride"] > kw["window"]:
        raise ValueError(f"`stride` (={kw['stride']}) must not exceed `window` (={kw['window']})")
    return {**kw, "methods": list(methods), "check_methods": list(check_methods)}


def _model_info(model) -> dict:
    card = model.card
    return {"path": str(model.path), "name": card.get("name"), "spurious_cue": card.get("data", {}).get("spurious_cue"),
            "command": card.get("training", {}).get("command"), "sha256": card.get("weights", {}).get("sha256")}


def _explain_settings(opts: dict, cue_class: int) -> ExplainSettings:
    return ExplainSettings(tuple(opts["methods"]), (opts["window"],) * 2, (opts["stride"],) * 2, 0.0, cue_class,
                           ("png",), "jet", "RdBu_r", 0.5, False)


def _map_selection(g: data.GeneratedData, n_maps: int | None) -> np.ndarray:
    idx = np.flatnonzero(g.has_cue)
    return idx if n_maps is None else idx[:n_maps]


def _maps_section(maps: dict, g: data.GeneratedData, sel: np.ndarray, opts: dict, cue_class: int) -> dict:
    """Scores of every method under both models, their comparison, per mask and per class group."""
    section = {"n_images": int(sel.size), "labels": g.labels[sel].tolist(), "indices": sel.tolist(),
               "cue_area_share": _mean(g.cue_masks[sel].mean(axis=(1, 2))),
               "object_area_share": _mean(g.masks[sel].mean(axis=(1, 2))), "methods": {}, "per_image": {}}
    if not sel.size:
        return section
    masks = {"object": g.masks[sel], "cue": g.cue_masks[sel]}
    labels = g.labels[sel]
    groups = {"all": np.ones(sel.size, bool), "cue_class": labels == cue_class, "other_class": labels != cue_class}
    for method in opts["methods"]:
        scores = {k: map_scores(maps[k][method], masks, opts["tolerance"]) for k in maps}
        section["methods"][method] = {
            mask: {metric: {**compare(scores["cue"][mask][metric], scores["clean"][mask][metric], n_boot=opts["n_boot"]),
                            "groups": {gname: {"cue_mean": _mean(scores["cue"][mask][metric][gsel]),
                                               "clean_mean": _mean(scores["clean"][mask][metric][gsel]),
                                               "n": int(gsel.sum())} for gname, gsel in groups.items()}}
                   for metric in ("energy", "pointing", "pointing_strict")}
            for mask in MASKS
        }
        section["per_image"][method] = {k: {mask: {metric: _json_list(v) for metric, v in s[mask].items()}
                                            for mask in MASKS} for k, s in scores.items()}
    return section


def _transfer_section(models: dict, g: data.GeneratedData, cue_class: int, opts: dict) -> dict:
    idx = np.flatnonzero(g.labels != cue_class)
    if opts["n_maps"] is not None:
        idx = idx[: opts["n_maps"]]
    runs = {k: deconvnet_transfer(m, g.images[idx], cue_class, epsilon=opts["epsilon"], batch_size=opts["batch_size"])
            for k, m in models.items()}
    out = {"n_images": int(idx.size), "epsilon": opts["epsilon"], "models": {}}
    for k, r in runs.items():
        out["models"][k] = {
            "margin_before": _mean(r["margin_before"]),
            "margin_change_signal": _mean(r["margin_signal"] - r["margin_before"]),
            "margin_change_signal_ci": _mean_ci(r["margin_signal"] - r["margin_before"], opts["n_boot"]),
            "margin_change_noise": _mean(r["margin_noise"] - r["margin_before"]),
            "p_before": _mean(r["p_before"]),
            "p_signal": _mean(r["p_signal"]),
            "p_noise": _mean(r["p_noise"]),
            "flipped_signal": _mean(((r["margin_before"] < 0) & (r["margin_signal"] > 0)).astype(np.float64)),
            "flipped_noise": _mean(((r["margin_before"] < 0) & (r["margin_noise"] > 0)).astype(np.float64)),
        }
    c, k = out["models"]["cue"], out["models"]["clean"]
    out["ratio_margin_change"] = (c["margin_change_signal"] / k["margin_change_signal"]
                                  if k["margin_change_signal"] not in (0.0,) and math.isfinite(k["margin_change_signal"])
                                  else math.nan)
    return out


# --------------------------------------------------------------------------- helpers


def _mean(x) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _percentiles(x) -> list[float]:
    x = np.asarray(x, np.float64)
    x = x[~np.isnan(x)]
    # "inverted_cdf": the interval's ends are resampled values (an infinite ratio stays infinite)
    return [float(v) for v in np.percentile(x, [2.5, 97.5], method="inverted_cdf")] if x.size else [math.nan, math.nan]


def _quartiles(x) -> list[float]:
    x = np.asarray(x, np.float64)
    return [float(v) for v in np.percentile(x, [25, 50, 75])] if x.size else [math.nan] * 3


def _mean_ci(x, n_boot: int, seed: int = 0) -> list[float]:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return [math.nan, math.nan]
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    return _percentiles(x[idx].mean(1))


def _json_list(x) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(x, np.float64)]


def to_json(result: dict) -> str:
    """An audit result as strict JSON text (NaN and infinities as ``null``, keys sorted).

    Example:
        >>> json.loads(to_json({"ratio": float("nan"), "n": np.int64(3)}))
        {'n': 3, 'ratio': None}
    """
    return json.dumps(_jsonable(result), indent=1, sort_keys=True, allow_nan=False) + "\n"


def _jsonable(obj):
    """NaN and infinities become ``None`` (strict JSON); numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------- outputs


def _write_outputs(out: Path, result: dict, models: dict, g, sel, maps, logits, settings) -> dict:
    """``audit.json``, ``audit.md`` and the figures, each written atomically; returns their names."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    with folder_lock(out):
        files["roc"] = _plot_roc(out / "audit_roc.png", result)
        if result["maps"]["n_images"]:
            files["cue_share"] = _plot_cue_share(out / "audit_cue_share.png", result)
        files["panels"] = _write_panels(out, result, models, g, sel, maps, logits, settings)
        result["files"] = files
        atomic_write_text(out / "audit.md", report_markdown(result))
        files["markdown"] = "audit.md"
        files["json"] = "audit.json"
        atomic_write_text(out / "audit.json", to_json(result))
    return files


def _panel_picks(labels: np.ndarray, cue_class: int, k: int) -> list[int]:
    """Positions (into the explained images) of ``k`` panels: other-class images first, then cue-class."""
    other = list(np.flatnonzero(labels != cue_class))
    same = list(np.flatnonzero(labels == cue_class))
    n_other = min(len(other), (k + 1) // 2)
    picks = other[:n_other] + same[: k - n_other]
    return [int(i) for i in (picks + other[n_other:])[:k]]


def _write_panels(out: Path, result, models, g, sel, maps, logits, settings) -> list[str]:
    """One figure per picked image: its panel under the cue model above its panel under the clean model."""
    if not sel.size:
        return []
    classes = result["settings"]["classes"]
    cue_class = result["settings"]["cue_class"]
    names_out = []
    for j, pos in enumerate(_panel_picks(g.labels[sel], cue_class, result["settings"]["panels"])):
        k = int(sel[pos])
        display = g.images[k].astype(np.float32) / 255.0
        rows = []
        for who in ("cue", "clean"):
            probs = eval_lib.softmax(logits[who]["clean"][k : k + 1])[0]
            title = f"{who} model: {classes[g.labels[k]]}, P({classes[cue_class]})={probs[cue_class]:.2f}"
            panel, _ = render_image(display, {m: v[pos] for m, v in maps[who].items()}, classes, [cue_class], probs,
                                    settings, title=title)
            rows.append(panel)
        name = f"audit_panel_{j}.png"
        atomic_write(out / name, lambda path, im=render.stack(rows, gap=4): im.save(path, format="PNG"))
        names_out.append(name)
    return names_out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, path: Path) -> str:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path.name


def _plot_roc(path: Path, result: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    styles = {"biased": "-", "clean": "--", "none": ":"}
    for who, color in (("cue", "tab:red"), ("clean", "tab:blue")):
        for split, r in result["classifier"][who].items():
            ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], styles[split], color=color, lw=1.6,
                    label=f"{who} model, {split} test (AUC {r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"ROC of '{result['settings']['classes'][result['settings']['cue_class']]}'", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    return _save_figure(plt, fig, path)


def _plot_cue_share(path: Path, result: dict) -> str:
    plt = _pyplot()
    methods = result["settings"]["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    for ax, mask in zip(axes, MASKS):
        for j, (who, color) in enumerate((("cue", "tab:red"), ("clean", "tab:blue"))):
            c = [result["maps"]["methods"][m][mask]["energy"] for m in methods]
            mean = np.array([v[f"{who}_mean"] for v in c])
            ci = np.array([v[f"{who}_mean_ci"] for v in c]).T
            x = np.arange(len(methods)) + (j - 0.5) * 0.38
            ax.bar(x, mean, width=0.38, color=color, label=f"{who} model",
                   yerr=np.abs(ci - mean[None, :]), capsize=3)
        ax.set_xticks(np.arange(len(methods)), methods)
        ax.set_title(f"share of positive map mass on the {mask}", fontsize=9)
        ax.legend(fontsize=7)
    if "cue_area_share" in result["maps"]:
        axes[1].axhline(result["maps"]["cue_area_share"], color="grey", lw=0.8, ls=":")
    return _save_figure(plt, fig, path)


def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def report_markdown(result: dict) -> str:
    """The audit's markdown report (tables of every section, the figures, the check)."""
    s = result["settings"]
    cls = s["classes"][s["cue_class"]]
    lines = [
        "# Spurious-cue audit",
        "",
        f"Cue model: `{result['models']['cue']['path']}` (trained with the mark on a fraction "
        f"{_f(result['models']['cue']['spurious_cue'], 'g')} of the '{cls}' training images; command "
        f"`{result['models']['cue']['command']}`). Clean model: `{result['models']['clean']['path']}`.",
        f"Test images: n = {s['n']} per split from index {s['start']}; biased split p = {s['spurious_cue']:g}; "
        f"maps explain {s['map_target']} ('{cls}').",
        "",
        *_classifier_lines(result),
        *_map_lines(result),
        *_transfer_lines(result),
        "## Check",
        "",
        f"{'PASSED' if result['check']['passed'] else 'FAILED'}: methods {result['check']['methods']}, "
        f"min ratio {result['check']['min_ratio']:g}.",
        *[f"- {r}" for r in result["check"]["reasons"]],
        "",
    ]
    files = result.get("files", {})
    if files:
        lines += ["## Figures", "", f"![ROC]({files.get('roc')})", ""]
        if files.get("cue_share"):
            lines += [f"![share of positive mass]({files['cue_share']})", ""]
        lines += [f"![panel]({p})" for p in files.get("panels", [])] + [""]
        lines += ["Each panel: the image under the cue model (top) and the clean model (bottom): image | "
                  + " | ".join(s["methods"]) + f", all of the '{cls}' logit.", ""]
    return "\n".join(lines)


def _classifier_lines(result: dict) -> list[str]:
    cls = result["settings"]["classes"][result["settings"]["cue_class"]]
    lines = ["## Classifier metrics", "",
             f"ROC-AUC and AP of '{cls}'. *biased*: the mark rides with '{cls}' as in training; *clean*: the mark "
             "on half of all images, independent of the label; *none*: no mark.", "",
             "| model | split | ROC-AUC | AP | accuracy | mark rate per class |", "|---|---|---|---|---|---|"]
    for who, rows in result["classifier"].items():
        for split, r in rows.items():
            rate = ", ".join(f"{k} {v:.2f}" for k, v in r["cue_rate"].items())
            lines.append(f"| {who} | {split} | {r['auc']:.4f} | {r['average_precision']:.4f} | {r['accuracy']:.4f} | {rate} |")
    lines += ["", "The mark's direct effect (clean split, same image with and without the mark): change of the margin "
              f"logit[{cls}] − other logit.", "",
              "| model | images with the mark | mean margin change | other class: mean change | other class flipped |",
              "|---|---|---|---|---|"]
    for who, e in result["cue_effect"].items():
        lines.append(f"| {who} | {e['n']} | {_f(e['mean_margin_change'])} | {_f(e['mean_margin_change_other_class'])} "
                     f"| {_f(e['flipped_to_cue_class'])} |")
    return lines + [""]


def _map_lines(result: dict) -> list[str]:
    m = result["maps"]
    s = result["settings"]
    lines = ["## Map metrics", "",
             f"{m['n_images']} clean-split images carrying the mark; mark area {_f(m['cue_area_share'], '.4f')} of the "
             f"image (a uniform map's share), object {_f(m['object_area_share'], '.3f')}. *energy*: share of positive "
             f"map mass in the mask (backprop maps: max_c |m|); *pointing*: peak within {s['tolerance']:g} px; "
             "*strict*: peak on the mask. Ratio = cue model / clean model, mean over images, paired bootstrap 95% CI; "
             "per-image ratio quartiles over images with a positive clean value.", ""]
    if not m["n_images"]:
        return lines + ["No image carried the mark.", ""]
    lines += ["| method | mask | metric | cue model | clean model | ratio (95% CI) | per-image ratio q25/median/q75 "
              "| cue model higher |", "|---|---|---|---|---|---|---|---|"]
    for method, per in m["methods"].items():
        for mask in MASKS:
            for metric in ("energy", "pointing", "pointing_strict"):
                c = per[mask][metric]
                q = c["per_image_ratio"]
                lines.append(
                    f"| {method} | {mask} | {metric} | {_f(c['cue_mean'])} | {_f(c['clean_mean'])} | {_f(c['ratio'], '.2f')} "
                    f"({_f(c['ratio_ci'][0], '.2f')}–{_f(c['ratio_ci'][1], '.2f')}) | {_f(q['q25'], '.2f')}/"
                    f"{_f(q['median'], '.2f')}/{_f(q['q75'], '.2f')} | {_f(c['cue_higher'], '.2f')} |")
    lines += ["", "By class (share of positive mass on the mark, mean): ", ""]
    lines += ["| method | class group | n | cue model | clean model |", "|---|---|---|---|---|"]
    for method, per in m["methods"].items():
        for gname, gv in per["cue"]["energy"]["groups"].items():
            lines.append(f"| {method} | {gname} | {gv['n']} | {_f(gv['cue_mean'])} | {_f(gv['clean_mean'])} |")
    return lines + [""]


def _transfer_lines(result: dict) -> list[str]:
    t = result["deconvnet_experiment"]
    cls = result["settings"]["classes"][result["settings"]["cue_class"]]
    lines = ["## The deconvnet experiment", "",
             f"Each model's deconvnet map of '{cls}' added to {t['n_images']} images of the other class without the "
             f"mark (peak amplitude ε = {t['epsilon']:g} in model-input units); control: Gaussian noise of the same L2 "
             "norm.", "",
             "| model | margin before | change, signal (95% CI) | change, noise | P before | P signal | P noise "
             "| flipped, signal | flipped, noise |", "|---|---|---|---|---|---|---|---|---|"]
    for who, r in t["models"].items():
        ci = r["margin_change_signal_ci"]
        lines.append(f"| {who} | {_f(r['margin_before'])} | {_f(r['margin_change_signal'])} ({_f(ci[0])}–{_f(ci[1])}) "
                     f"| {_f(r['margin_change_noise'])} | {_f(r['p_before'])} | {_f(r['p_signal'])} | {_f(r['p_noise'])} "
                     f"| {_f(r['flipped_signal'])} | {_f(r['flipped_noise'])} |")
    return lines + ["", f"Margin change, cue model / clean model: {_f(t['ratio_margin_change'], '.2f')}.", ""]


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``saliency-jax audit``'s options to ``parser`` (and set ``func`` to :func:`cmd`).

    Example:
        >>> p = add_arguments(argparse.ArgumentParser())
        >>> a = p.parse_args(["--n", "8", "--check"])
        >>> a.n, a.check, a.cue_model
        (8, True, 'rings-crosses-cue')
    """
    p = parser
    p.add_argument("--cue-model", dest="cue_model", default=CUE_MODEL, help=f"model under audit (default {CUE_MODEL})")
    p.add_argument("--clean-model", dest="clean_model", default=None, help="reference model (default: the shipped one)")
    p.add_argument("--n", type=int, default=500, help="test images per split for the classifier metrics (default 500)")
    p.add_argument("--n-maps", dest="n_maps", type=int, default=100, help="images with the mark to explain (default 100)")
    p.add_argument("--out", default="audit", help="output folder (default ./audit)")
    p.add_argument("--methods", default=",".join(_DEFAULT_METHODS), help="comma-separated map methods")
    p.add_argument("--window", type=int, default=16, help="occlusion window side in pixels (default 16)")
    p.add_argument("--stride", type=int, default=4, help="occlusion stride in pixels (default 4)")
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels (default 15)")
    p.add_argument("--epsilon", type=float, default=0.25, help="deconvnet experiment: signal amplitude (default 0.25)")
    p.add_argument("--spurious-cue", dest="spurious_cue", type=float, default=None,
                   help="cue rate of the biased split (default: the cue model card's)")
    p.add_argument("--start", type=int, default=0, help="index of the first test image")
    p.add_argument("--panels", type=int, default=4, help="images drawn under both models (default 4)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per model call")
    p.add_argument("--check", action="store_true", help="exit 1 unless the maps find the cue")
    p.add_argument("--check-methods", dest="check_methods", default="occlusion",
                   help="methods that must find the cue for --check (default occlusion)")
    p.add_argument("--min-ratio", dest="min_ratio", type=float, default=2.0,
                   help="--check: least cue/clean ratio of the share of positive mass on the mark (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd)
    return p


def cmd(args: argparse.Namespace) -> int:
    """``saliency-jax audit``: :func:`audit`; prints the headline numbers.

    Returns:
        0, or 1 with ``--check`` when the maps did not find the cue (the reasons are printed).
    """
    result = audit(
        args.cue_model, args.clean_model, n=args.n, n_maps=args.n_maps, out=args.out, methods=args.methods,
        window=args.window, stride=args.stride, tolerance=args.tolerance, epsilon=args.epsilon,
        spurious_cue=args.spurious_cue, start=args.start, panels=args.panels, batch_size=args.batch_size,
        check_methods=args.check_methods, min_ratio=args.min_ratio, progress=not args.no_progress,
    )
    c = result["classifier"]
    print(f"ROC-AUC, biased test: cue model {c['cue']['biased']['auc']:.4f}, clean model {c['clean']['biased']['auc']:.4f}; "
          f"clean test: cue model {c['cue']['clean']['auc']:.4f}, clean model {c['clean']['clean']['auc']:.4f}")
    for method, per in result["maps"]["methods"].items():
        e = per["cue"]["energy"]
        print(f"{method}: share of positive mass on the cue {_f(e['cue_mean'])} vs {_f(e['clean_mean'])} "
              f"(ratio {_f(e['ratio'], '.2f')}, 95% CI {_f(e['ratio_ci'][0], '.2f')}-{_f(e['ratio_ci'][1], '.2f')})")
    print(f"check: {'passed' if result['check']['passed'] else 'FAILED'}")
    for reason in result["check"]["reasons"]:
        print(f"  {reason}")
    if args.out is not None:
        print(f"wrote {Path(args.out) / 'audit.md'}")
    return 1 if args.check and not result["check"]["passed"] else 0
