"""The spurious-cue audit: the shortcut a ROC curve cannot see, measured, and whether the maps see it.

The original write-up's NSFW model had learnt red lips as evidence. Its precision/recall and ROC
curves could not show it, because the test set carried the same bias; only the deconvnet and
occlusion maps did. :func:`audit` reproduces that argument with numbers, on the generated task
(:mod:`saliency_jax.model.generated`), whose images come with exact masks of the object *and* of the
spurious mark (a 7 × 7 red square with a white centre):

* the **cue model** (``checkpoints/rings-crosses-cue``, see :data:`CUE_MODEL`) was trained with
  the mark on a fraction ``p`` of the cue-class ("cross") training images and on no other one;
  the **clean model** (the shipped ``rings-crosses-small``) never saw the mark.
* **Classifier metrics** (:func:`~saliency_jax.app.audit_stats.classifier_report`): ROC-AUC, AP
  and accuracy of both models on
  three test splits of the same images: *biased* (the mark rides with the cue class at the rate
  ``p`` of training, ``cue_split="biased"``), *clean* (the mark on half of all images,
  independent of the label) and *none* (no mark). Plus the mark's direct effect on each model:
  the change in the cue-class margin ``logit[cue] − max_other logit`` when the mark is added to
  the same image (:func:`~saliency_jax.app.audit_stats.cue_effect`).
* **Map metrics** (:func:`~saliency_jax.app.audit_stats.map_scores`,
  :func:`~saliency_jax.app.audit_stats.compare`): on the clean-split images that carry the
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
* **The check** (:func:`~saliency_jax.app.audit_stats.check`): the maps *find* the cue when, for every method in
  ``check_methods`` (occlusion by default), the cue model's mean share of positive mass on the
  mark is at least ``min_ratio`` (2) times the clean model's and the bootstrap interval's lower
  end is above 1. No audited image carrying the mark fails the check too.

:func:`audit` writes ``audit.json``, ``audit.md`` and figures (``audit_roc.png``,
``audit_cue_share.png``, ``audit_panel_<k>.png``: the same image under both models) into
``out``, each written atomically (:mod:`saliency_jax.app.audit_report`). ``saliency-jax audit``
is :func:`saliency_jax.app.audit_cli.cmd`.

The audit is split by concept: this module runs the models (data, maps, the deconvnet
experiment) and assembles the result; :mod:`~saliency_jax.app.audit_stats` holds its statistics
(pure numpy), :mod:`~saliency_jax.app.audit_report` its JSON, markdown and figures, and
:mod:`~saliency_jax.app.audit_cli` its command line. Its methods are the registry's
(:mod:`saliency_jax.methods`); images become model input through each model card's
``preprocessing`` record.

Example:
    >>> from saliency_jax.app import audit
    >>> r = audit.audit(cue_model="rings-crosses-small", n=4, n_maps=2, window=64, stride=64,
    ...                 methods=("occlusion",), spurious_cue=0.5, out=None, n_boot=10)  # doctest: +SKIP
    >>> r["check"]["passed"]      # the shipped model against itself: no cue found  # doctest: +SKIP
    False
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

import jax.numpy as jnp
import numpy as np

from saliency_jax import _validate
from saliency_jax import methods as registry
from saliency_jax._batching import in_batches
from saliency_jax.app.audit_report import write_report
from saliency_jax.app.audit_stats import (
    MASKS,
    check,
    classifier_report,
    compare,
    cue_effect,
    finite_mean,
    map_scores,
    margin,
    mean_ci,
)
from saliency_jax.app.maps import compute_maps
from saliency_jax.app.settings import ExplainSettings, names
from saliency_jax.backprop import saliency_maps
from saliency_jax.model import checkpoint, generated
from saliency_jax.model import evaluate as eval_lib

__all__ = [
    "CUE_MODEL",
    "DEFAULT_METHODS",
    "load_model",
    "audit_data",
    "batched_maps",
    "deconvnet_transfer",
    "audit",
]

#: The shipped cue model's checkpoint name (found by :func:`saliency_jax.model.checkpoint.load`).
CUE_MODEL = "rings-crosses-cue"
#: The methods audited by default: the signed occlusion map and the two rectified projections the
#: write-up's argument is about (deconvnet, guided backprop). Any registered method may be
#: audited (``methods=``, checked against :func:`saliency_jax.methods.names`); its maps go
#: through :func:`saliency_jax.app.maps.compute_maps`.
DEFAULT_METHODS: tuple[str, ...] = tuple(registry.get(m).name for m in ("occlusion", "deconvnet", "guided"))


# --------------------------------------------------------------------------- models and data


def load_model(model) -> checkpoint.LoadedModel:
    """A :class:`~saliency_jax.model.checkpoint.LoadedModel` as is, or a checkpoint name/path loaded.

    ``None`` is the shipped (clean) model.
    """
    if isinstance(model, checkpoint.LoadedModel):
        return model
    return checkpoint.load(model)


def audit_data(card: dict, n: int, *, spurious_cue: float, start: int = 0) -> dict[str, generated.GeneratedData]:
    """The three test splits of the audit: the same ``n`` images of the ``"test"`` stream.

    Args:
        card: the cue model's card (its data seed, input size and cue class are used).
        n: images per split.
        spurious_cue: ``p``, the cue rate of the biased split (the cue model's training rate).
        start: index of the first image.

    Returns:
        ``{"biased": …, "clean": …, "none": …}``: the mark on a fraction ``p`` of the cue class
        (as in training), on half of all images independently of the label, and nowhere. The
        three differ only in the mark's pixels (:mod:`saliency_jax.model.generated`).
    """
    d = card.get("data", {})
    common = dict(split="test", seed=int(d.get("seed", 0)), start=start, size=int(card["input_size"][0]),
                  cue_class=int(d.get("cue_class", 1)))
    return {
        "biased": generated.generate(n, spurious_cue=spurious_cue, cue_split="biased", **common),
        "clean": generated.generate(n, spurious_cue=spurious_cue, cue_split="clean", **common),
        "none": generated.generate(n, spurious_cue=0.0, **common),
    }

# --------------------------------------------------------------------------- maps


def batched_maps(model, images: np.ndarray, target: int, settings: ExplainSettings, batch_size: int) -> dict:
    """Every method's maps of class ``target`` for uint8 ``images``, ``batch_size`` at a time.

    Images become model input through the model card's preprocessing; batches come from
    :func:`saliency_jax._batching.in_batches` (the last one padded: one compilation per method).

    Returns:
        ``{method: (N, H, W) or (N, H, W, C) float32}`` (:func:`saliency_jax.app.maps.compute_maps`).
    """
    policy = model.preprocessing

    def run(chunk, targets):
        return compute_maps(model.apply_fn, model.params, jnp.asarray(policy(chunk)), jnp.asarray(targets), settings)

    n = images.shape[0]
    return in_batches(run, n, batch_size, images, np.full((n,), target, np.int32))


def deconvnet_transfer(model, images: np.ndarray, cue_class: int, *, epsilon: float, batch_size: int,
                       seed: int = 0) -> dict:
    """The write-up's experiment: add the model's deconvnet signal of the cue class to images.

    For each image ``x`` (model input, through the card's preprocessing): ``d`` = the deconvnet
    map of the cue class's logit, ``x' = clip(x + ε · d / max|d|)`` to the model's input range
    (what pixel values 0 and 255 become: ``[-1, 1]`` for the shipped models); the control adds
    Gaussian noise scaled to the same L2 norm as ``ε · d / max|d|``. The margin is
    ``logit[cue] − max_other logit`` (:func:`~saliency_jax.app.audit_stats.margin`). Batches come
    from :func:`saliency_jax._batching.in_batches` (the last one padded: one compilation).

    Args:
        model: a loaded model; images: ``(N, H, W, 3) uint8`` (images of another class).
        cue_class: the class whose signal is added.
        epsilon: the signal's peak amplitude in model-input units (``0.25`` = 32/255 of the
            pixel range for the shipped models).
        batch_size: images per call; seed: the noise seed.

    Returns:
        ``{"margin_before", "margin_signal", "margin_noise", "p_before", "p_signal", "p_noise"}``,
        each ``(N,) float64`` (``p``: softmax probability of the cue class).
    """
    policy = model.preprocessing
    lo, hi = (np.asarray(v, np.float64) for v in policy.range)
    rng = np.random.default_rng(seed)  # drawn batch after batch, in order

    def run(chunk):
        x = policy(chunk)
        d = np.asarray(saliency_maps(model.apply_fn, model.params, jnp.asarray(x), cue_class, rule="deconvnet"),
                       np.float64)
        peak = np.abs(d).reshape(d.shape[0], -1).max(1)
        d = d / np.where(peak > 0, peak, 1.0)[:, None, None, None]
        signal = epsilon * d
        noise = rng.standard_normal(d.shape)
        norm = np.sqrt((signal**2).reshape(d.shape[0], -1).sum(1) / (noise**2).reshape(d.shape[0], -1).sum(1))
        noise = noise * norm[:, None, None, None]
        return {key: np.asarray(model.apply_fn(model.params, jnp.asarray(xx, jnp.float32)), np.float64)
                for key, xx in (("before", x), ("signal", np.clip(x + signal, lo, hi)),
                                ("noise", np.clip(x + noise, lo, hi)))}

    logits = in_batches(run, images.shape[0], batch_size, images)
    out = {}
    for k, z in logits.items():
        out[f"margin_{k}"] = margin(z, cue_class)
        out[f"p_{k}"] = eval_lib.softmax(z)[:, cue_class]
    return out


# --------------------------------------------------------------------------- the audit


def audit(
    cue_model=CUE_MODEL,
    clean_model=None,
    *,
    n: int = 500,
    n_maps: int | None = 100,
    out: str | os.PathLike | None = "audit",
    methods: Sequence[str] | str = DEFAULT_METHODS,
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
        methods: registered map methods (:func:`saliency_jax.methods.names`; a list or a
            comma-separated string).
        window, stride: the occlusion window and stride in pixels (fill 0: mid-grey).
        tolerance: the pointing game's tolerance in pixels.
        epsilon: the deconvnet experiment's signal amplitude (model-input units).
        spurious_cue: the biased split's cue rate ``p`` (default: the cue model card's).
        start: the first test image's index.
        panels: how many images get a figure (half of the other class, half of the cue class).
        batch_size: images per model call.
        n_boot: bootstrap resamples of the intervals.
        check_methods: the methods :func:`~saliency_jax.app.audit_stats.check` requires to find
            the cue; min_ratio: its ratio.
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
    logits = {k: {s: eval_lib.predict_logits(m.apply_fn, m.params, g.images, 250, m.preprocessing) for s, g in splits.items()}
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
        result["files"] = write_report(Path(out), result, models, splits["clean"], sel, maps, logits, settings)
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
    methods = names("methods", kw["methods"], registry.names())
    check_methods = names("check_methods", kw["check_methods"], registry.names())
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
    return ExplainSettings(methods=tuple(opts["methods"]), window=(opts["window"],) * 2, stride=(opts["stride"],) * 2,
                           fill=0.0, target=cue_class, formats=("png",), cmap="jet", signed_cmap="RdBu_r", alpha=0.5,
                           colorbar=False)


def _map_selection(g: generated.GeneratedData, n_maps: int | None) -> np.ndarray:
    idx = np.flatnonzero(g.has_cue)
    return idx if n_maps is None else idx[:n_maps]


def _maps_section(maps: dict, g: generated.GeneratedData, sel: np.ndarray, opts: dict, cue_class: int) -> dict:
    """Scores of every method under both models, their comparison, per mask and per class group."""
    section = {"n_images": int(sel.size), "labels": g.labels[sel].tolist(), "indices": sel.tolist(),
               "cue_area_share": finite_mean(g.cue_masks[sel].mean(axis=(1, 2))),
               "object_area_share": finite_mean(g.masks[sel].mean(axis=(1, 2))), "methods": {}, "per_image": {}}
    if not sel.size:
        return section
    masks = {"object": g.masks[sel], "cue": g.cue_masks[sel]}
    labels = g.labels[sel]
    groups = {"all": np.ones(sel.size, bool), "cue_class": labels == cue_class, "other_class": labels != cue_class}
    for method in opts["methods"]:
        scores = {k: map_scores(maps[k][method], masks, opts["tolerance"]) for k in maps}
        section["methods"][method] = {
            mask: {metric: {**compare(scores["cue"][mask][metric], scores["clean"][mask][metric], n_boot=opts["n_boot"]),
                            "groups": {gname: {"cue_mean": finite_mean(scores["cue"][mask][metric][gsel]),
                                               "clean_mean": finite_mean(scores["clean"][mask][metric][gsel]),
                                               "n": int(gsel.sum())} for gname, gsel in groups.items()}}
                   for metric in ("energy", "pointing", "pointing_strict")}
            for mask in MASKS
        }
        section["per_image"][method] = {k: {mask: {metric: _json_list(v) for metric, v in s[mask].items()}
                                            for mask in MASKS} for k, s in scores.items()}
    return section


def _transfer_section(models: dict, g: generated.GeneratedData, cue_class: int, opts: dict) -> dict:
    idx = np.flatnonzero(g.labels != cue_class)
    if opts["n_maps"] is not None:
        idx = idx[: opts["n_maps"]]
    runs = {k: deconvnet_transfer(m, g.images[idx], cue_class, epsilon=opts["epsilon"], batch_size=opts["batch_size"])
            for k, m in models.items()}
    out = {"n_images": int(idx.size), "epsilon": opts["epsilon"], "models": {}}
    for k, r in runs.items():
        out["models"][k] = {
            "margin_before": finite_mean(r["margin_before"]),
            "margin_change_signal": finite_mean(r["margin_signal"] - r["margin_before"]),
            "margin_change_signal_ci": mean_ci(r["margin_signal"] - r["margin_before"], opts["n_boot"]),
            "margin_change_noise": finite_mean(r["margin_noise"] - r["margin_before"]),
            "p_before": finite_mean(r["p_before"]),
            "p_signal": finite_mean(r["p_signal"]),
            "p_noise": finite_mean(r["p_noise"]),
            "flipped_signal": finite_mean(((r["margin_before"] < 0) & (r["margin_signal"] > 0)).astype(np.float64)),
            "flipped_noise": finite_mean(((r["margin_before"] < 0) & (r["margin_noise"] > 0)).astype(np.float64)),
        }
    c, k = out["models"]["cue"], out["models"]["clean"]
    out["ratio_margin_change"] = (c["margin_change_signal"] / k["margin_change_signal"]
                                  if k["margin_change_signal"] not in (0.0,) and math.isfinite(k["margin_change_signal"])
                                  else math.nan)
    return out


def _json_list(x) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(x, np.float64)]

