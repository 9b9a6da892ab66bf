"""The spurious-cue audit's statistics: margins, the mark's effect, map scores, paired bootstrap, the check.

Pure numpy functions of logits and per-image scores (no model runs here), each checked by hand
in the tests; :mod:`saliency_jax.app.audit` runs the models and feeds them.

* :func:`margin`, :func:`cue_effect` — the cue class's margin ``logit[cue] − max_other logit``
  and its change when the mark is added to the same image;
* :func:`classifier_report` — ROC-AUC, AP and accuracy per test split
  (:mod:`saliency_jax.model.evaluate`);
* :func:`map_scores` — a method's maps against the object and the mark
  (:mod:`saliency_jax.metrics`);
* :func:`compare` — the cue model's scores against the clean model's: ratio of means with a
  paired bootstrap 95 % interval, per-image ratio quartiles;
* :func:`check` — did the maps find the cue?

Example:
    >>> r = compare(np.array([0.5, 1.0]), np.array([0.25, 0.25]), n_boot=50)
    >>> r["ratio"], finite_mean([1.0, np.nan, 3.0])
    (3.0, 2.0)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from saliency_jax.metrics import energy_pointing_game, pointing_game
from saliency_jax.model import evaluate as eval_lib

__all__ = [
    "MASKS",
    "margin",
    "classifier_report",
    "cue_effect",
    "map_scores",
    "compare",
    "check",
    "finite_mean",
    "mean_ci",
]

#: The masks each map is scored against: the deciding object and the spurious mark.
MASKS: tuple[str, ...] = ("object", "cue")


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
        "mean_margin_change": finite_mean(delta[has_cue]),
        "mean_margin_change_other_class": finite_mean(delta[other]),
        "n_other_class": int(other.sum()),
        "flipped_to_cue_class": finite_mean(flipped[other].astype(np.float64)),
    }


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
    out = {"n": n, "cue_mean": finite_mean(a), "clean_mean": finite_mean(b)}
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


def check(result: dict, methods: Sequence[str] = ("occlusion",), min_ratio: float = 2.0) -> dict:
    """Did the maps find the cue? For every method in ``methods``, the cue model's mean share of
    positive mass on the mark must be at least ``min_ratio`` times the clean model's, with the
    bootstrap interval's lower end above 1. When no audited image carries the mark, the check fails.

    Args:
        result: an :func:`saliency_jax.app.audit.audit` result (its ``maps`` section).
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


def finite_mean(x) -> float:
    """The mean of the finite values of ``x`` (NaN when there are none).

    Example:
        >>> finite_mean([1.0, float("inf"), 2.0]), finite_mean([])
        (1.5, nan)
    """
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def mean_ci(x, n_boot: int, seed: int = 0) -> list[float]:
    """A bootstrap 95 % percentile interval of the mean of the finite values of ``x``
    (``n_boot`` resamples; ``[nan, nan]`` when there are none)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return [math.nan, math.nan]
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    return _percentiles(x[idx].mean(1))


def _percentiles(x) -> list[float]:
    x = np.asarray(x, np.float64)
    x = x[~np.isnan(x)]
    # "inverted_cdf": the interval's ends are resampled values (an infinite ratio stays infinite)
    return [float(v) for v in np.percentile(x, [2.5, 97.5], method="inverted_cdf")] if x.size else [math.nan, math.nan]


def _quartiles(x) -> list[float]:
    x = np.asarray(x, np.float64)
    return [float(v) for v in np.percentile(x, [25, 50, 75])] if x.size else [math.nan] * 3

