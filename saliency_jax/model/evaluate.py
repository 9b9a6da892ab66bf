"""Evaluation of a classifier: accuracy, confusion matrix, ROC / AUC, precision–recall / AP.

The curves follow the usual definitions (those of scikit-learn), written here in numpy:

* ROC: for every distinct score threshold ``t`` (descending), the false- and true-positive
  rates of "score >= t", starting at ``(0, 0)``; AUC by the trapezoidal rule (equal to the
  probability that a random positive outscores a random negative, ties counted half).
* Precision–recall: precision and recall of "score >= t" for every distinct threshold;
  average precision ``AP = Σ_k (R_k − R_{k−1}) P_k`` (a step sum, no interpolation).

For two classes the positive class is class 1 and its score is ``softmax(logits)[:, 1]``;
for more classes every class gets a one-vs-rest curve and the macro averages are reported.

Example:
    >>> import numpy as np
    >>> from saliency_jax.model.evaluate import roc_curve
    >>> fpr, tpr, thr = roc_curve(np.array([0, 1, 1]), np.array([0.1, 0.4, 0.9]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.0, 1.0], [0.0, 0.5, 1.0, 1.0])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from saliency_jax import _validate
from saliency_jax._batching import in_batches
from saliency_jax._io import atomic_write as _atomic_write
from saliency_jax._plotting import pyplot
from saliency_jax.model import checkpoint as ckpt_lib
from saliency_jax.model import generated
from saliency_jax.model.image_folder import load_image_folder
from saliency_jax.model.image_input import as_preprocessing

__all__ = [
    "predict_logits",
    "loss_and_accuracy",
    "heldout_set",
    "heldout_description",
    "softmax",
    "confusion_matrix",
    "roc_curve",
    "auc",
    "precision_recall_curve",
    "average_precision",
    "classification_metrics",
    "evaluate_model",
    "write_report",
    "evaluate_checkpoint",
]


def predict_logits(apply_fn: Callable, variables: Any, images: np.ndarray, batch_size: int = 250,
                   preprocessing=None) -> np.ndarray:
    """Logits for uint8 images, in fixed-size batches (the last one padded: one compilation).

    Images go through the model's preprocessing (:func:`saliency_jax.model.image_input.preprocess`,
    numpy) first, exactly as a user's images would. Batches come from
    :func:`saliency_jax._batching.in_batches` (the last one padded with copies of the last image,
    the padded rows dropped).

    Args:
        apply_fn: ``apply_fn(variables, x (B, H, W, C) float32) -> (B, K)``.
        variables: the model variables.
        images: ``(N, H, W, 3) uint8``, ``N >= 1``.
        batch_size: images per call.
        preprocessing: the model card's record or a ``Preprocessing`` (``None``: the shipped
            models', ``[0, 255] -> [-1, 1]``).

    Returns:
        ``(N, K) float32`` numpy array.

    Example:
        >>> apply_fn = lambda v, x: x.mean(axis=(1, 2))[:, :2] * v
        >>> predict_logits(apply_fn, 2.0, np.full((3, 4, 4, 3), 255, np.uint8), batch_size=2).tolist()
        [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise TypeError(f"`images` must be (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    _validate.integer("batch_size", batch_size, lo=1)
    policy = as_preprocessing(preprocessing)
    fn = apply_fn if hasattr(apply_fn, "lower") else jax.jit(apply_fn)  # already jitted: reuse its cache
    return in_batches(lambda chunk: np.asarray(fn(variables, policy(chunk))), images.shape[0], batch_size,
                      images).astype(np.float32)


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean softmax cross-entropy and accuracy of ``(N, K)`` logits against ``(N,)`` labels.

    Returns:
        ``{"loss": float, "accuracy": float}``; both NaN when ``N == 0``.

    Example:
        >>> r = loss_and_accuracy(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([1, 0]))
        >>> round(r["loss"], 4), r["accuracy"]
        (0.41, 0.5)
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if labels.shape[0] == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    top = logits.max(1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    loss = float(-logp[np.arange(labels.shape[0]), labels].mean())
    return {"loss": loss, "accuracy": float((logits.argmax(1) == labels).mean())}


def heldout_set(
    card: dict, n: int, *, split: str = "test", start: int = 0, spurious_cue: float | None = None
) -> generated.GeneratedData:
    """The generated held-out images a model card refers to.

    Uses the card's data seed, input size, cue class and spurious-cue setting, so the images
    come from the distribution the model was trained on (the ``"test"`` split is never
    trained on).

    Args:
        card: a model card whose ``data.source`` is ``"generated"``.
        n, split, start: images ``start … start + n - 1`` of ``split``.
        spurious_cue: the cue setting (default: the card's).

    Returns:
        A :class:`saliency_jax.model.generated.GeneratedData` (``images (n, H, W, 3) uint8``,
        ``labels (n,) int32``, ``info`` with the seed, split, start and cue used).

    Raises:
        ValueError: the card's data are not generated, or its classes are not the task's.

    Example:
        >>> card = {"data": {"source": "generated", "seed": 0}, "input_size": [32, 32, 3],
        ...         "classes": ["ring", "cross"]}
        >>> heldout_set(card, 2).images.shape
        (2, 32, 32, 3)
    """
    d = card.get("data", {})
    if d.get("source") != "generated":
        raise ValueError(f"the model card's data source is {d.get('source')!r}; a generated held-out set needs 'generated'")
    _validate.integer("n", n, lo=1)
    gen = generated.generate(
        n,
        split=split,
        seed=int(d.get("seed", 0)),
        start=start,
        size=int(card["input_size"][0]),
        spurious_cue=float(d.get("spurious_cue", 0.0)) if spurious_cue is None else spurious_cue,
        cue_class=int(d.get("cue_class", 1)),
    )
    if list(gen.classes) != list(card["classes"]):
        raise ValueError(f"the checkpoint's classes {card['classes']} are not the generated task's {list(gen.classes)}")
    return gen


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits, float64 → ``(N, K)``."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_binary(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"`y_true` (shape {y.shape}) and `scores` (shape {s.shape}) must be 1-D of equal length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"`y_true` must hold only 0 and 1; got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(s).all():
        raise ValueError("`scores` must be finite")
    return y.astype(np.int64), s


def _cumulative_counts(y: np.ndarray, s: np.ndarray):
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last_of_group]
    fp = (last_of_group + 1) - tp
    return tp, fp, s[last_of_group]


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of binary labels against scores (higher = more positive).

    Args:
        y_true: ``(N,)`` labels in {0, 1}, both present.
        scores: ``(N,)`` float scores.

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(T + 1,)`` float64: the point ``(0, 0)`` (threshold
        ``+inf``) then one point per distinct score, in decreasing threshold order.
    """
    y, s = _check_binary(y_true, scores)
    pos, neg = int(y.sum()), int(y.size - y.sum())
    if pos == 0 or neg == 0:
        raise ValueError(f"`y_true` must contain both classes for a ROC curve (positives={pos}, negatives={neg})")
    tp, fp, thr = _cumulative_counts(y, s)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos], np.r_[np.inf, thr]


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under a curve by the trapezoidal rule (``x`` monotonic)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def precision_recall_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``score >= t`` for every distinct threshold ``t``.

    Args:
        y_true: ``(N,)`` labels in {0, 1}, at least one positive.
        scores: ``(N,)`` float scores.

    Returns:
        ``(precision, recall, thresholds)``, each ``(T,)`` float64 in decreasing threshold
        order (recall increasing).
    """
    y, s = _check_binary(y_true, scores)
    pos = int(y.sum())
    if pos == 0:
        raise ValueError("`y_true` must contain at least one positive for a precision-recall curve")
    tp, fp, thr = _cumulative_counts(y, s)
    return tp / (tp + fp), tp / pos, thr


def average_precision(y_true, scores) -> float:
    """``AP = Σ_k (R_k − R_{k−1}) P_k`` over the precision–recall curve (``R_0 = 0``)."""
    precision, recall, _ = precision_recall_curve(y_true, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(K, K) int64``: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"`y_true` {y_true.shape} and `y_pred` {y_pred.shape} must be 1-D of equal length")
    for name, v in (("y_true", y_true), ("y_pred", y_pred)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"`{name}` values must lie in [0, {num_classes - 1}]; got [{v.min()}, {v.max()}]")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, confusion matrix, ROC/AUC and PR/AP of logits against labels.

    Args:
        logits: ``(N, K)`` float.
        labels: ``(N,)`` int class indices.
        classes: the ``K`` class names.

    Returns:
        A JSON-ready dict: ``n``, ``correct``, ``accuracy``, ``confusion_matrix`` (list of
        lists), ``per_class`` (one-vs-rest ``auc``, ``average_precision``, ``roc`` and ``pr``
        curves), and ``auc`` / ``average_precision`` (class 1's for K = 2, macro means
        otherwise) with ``positive_class``.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    k = len(classes)
    if logits.ndim != 2 or logits.shape[1] != k or labels.shape != logits.shape[:1]:
        raise ValueError(f"`logits` (shape {logits.shape}) must be (N, {k}) and `labels` (shape {labels.shape}) (N,)")
    probs = softmax(logits)
    pred = logits.argmax(axis=1)
    cm = confusion_matrix(labels, pred, k)
    out = {
        "n": int(labels.size),
        "correct": int((pred == labels).sum()),
        "accuracy": float((pred == labels).mean()),
        "classes": list(classes),
        "confusion_matrix": cm.tolist(),
        "per_class": {},
    }
    positives = [1] if k == 2 else list(range(k))
    for c in positives:
        y = (labels == c).astype(np.int64)
        if 0 < y.sum() < y.size:
            fpr, tpr, _ = roc_curve(y, probs[:, c])
            prec, rec, _ = precision_recall_curve(y, probs[:, c])
            out["per_class"][classes[c]] = {
                "auc": auc(fpr, tpr),
                "average_precision": average_precision(y, probs[:, c]),
                "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
                "pr": {"precision": prec.tolist(), "recall": rec.tolist()},
            }
    if out["per_class"]:
        out["auc"] = float(np.mean([v["auc"] for v in out["per_class"].values()]))
        out["average_precision"] = float(np.mean([v["average_precision"] for v in out["per_class"].values()]))
    out["positive_class"] = classes[1] if k == 2 else "macro (one-vs-rest)"
    return out


def evaluate_model(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 250) -> dict:
    """:func:`classification_metrics` of a loaded model on uint8 images.

    Args:
        model: a :class:`saliency_jax.model.checkpoint.LoadedModel` (``apply_fn``, ``params``, ``card``).
        images: ``(N, H, W, 3) uint8`` at the model's input size.
        labels: ``(N,)`` int class indices.
        batch_size: images per forward pass.

    Returns:
        The metrics dict.
    """
    logits = predict_logits(model.apply_fn, model.params, images, batch_size, model.preprocessing)
    return classification_metrics(logits, labels, model.card["classes"])


def write_report(metrics: dict, out_dir: str | os.PathLike, title: str = "") -> dict[str, Path]:
    """Write ``metrics.json``, ``roc.png``, ``pr.png`` and ``confusion.png`` into ``out_dir``.

    Every file is written to a temporary name and renamed into place.

    Args:
        metrics: a dict from :func:`classification_metrics` (extra keys are kept in the JSON).
        out_dir: the output directory (created if missing).
        title: a prefix for the plot titles.

    Returns:
        ``{"metrics": path, "roc": path, "pr": path, "confusion": path}``.
    """
    # matplotlib loads here (pyplot()), not with the module: training imports this module for
    # its metrics and must not pay for (or require) the plotting library.
    plt = pyplot()

    out = Path(out_dir)
    paths = {k: out / f"{k}.{'json' if k == 'metrics' else 'png'}" for k in ("metrics", "roc", "pr", "confusion")}
    _atomic_write(paths["metrics"], lambda p: Path(p).write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n"))
    prefix = f"{title}: " if title else ""
    for kind, draw in (("roc", _draw_roc), ("pr", _draw_pr), ("confusion", _draw_confusion)):
        fig = draw(plt, metrics, prefix)
        fig.tight_layout()
        _atomic_write(paths[kind], lambda p, f=fig: f.savefig(p, format="png"))
        plt.close(fig)
    return paths


def _draw_roc(plt, metrics: dict, prefix: str):
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, v in metrics["per_class"].items():
        ax.plot(v["roc"]["fpr"], v["roc"]["tpr"], lw=1.8, label=f"{name} (AUC = {v['auc']:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{prefix}ROC (n = {metrics['n']})", fontsize=10)
    ax.legend(loc="lower right")
    return fig


def _draw_pr(plt, metrics: dict, prefix: str):
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, v in metrics["per_class"].items():
        ax.step(v["pr"]["recall"], v["pr"]["precision"], where="post", lw=1.8, label=f"{name} (AP = {v['average_precision']:.4f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{prefix}precision / recall (n = {metrics['n']})", fontsize=10)
    ax.legend(loc="lower left")
    return fig


def _draw_confusion(plt, metrics: dict, prefix: str):
    cm = np.asarray(metrics["confusion_matrix"])
    names = metrics["classes"]
    fig, ax = plt.subplots(figsize=(4.8, 4.0), dpi=100)
    im = ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true")
    fig.suptitle(f"{prefix}accuracy {metrics['accuracy']:.4f} (n = {metrics['n']})", fontsize=10)
    fig.colorbar(im, ax=ax)
    return fig


def evaluate_checkpoint(
    checkpoint=None,
    out_dir: str | os.PathLike = "evaluation",
    *,
    data_dir: str | os.PathLike | None = None,
    n: int = 2000,
    split: str = "test",
    start: int = 0,
    spurious_cue: float | None = None,
    batch_size: int = 250,
) -> tuple[dict, dict[str, Path]]:
    """Evaluate a checkpoint and write ``metrics.json`` and the plots into ``out_dir``.

    Args:
        checkpoint: a checkpoint name or directory (``None``: the shipped model).
        out_dir: where the report goes.
        data_dir: an image folder (every image is used; its subfolders must be the card's
            classes); ``None`` evaluates on generated data of the card's task.
        n, split, start: the generated images ``start … start + n - 1`` of ``split``.
        spurious_cue: the generated data's cue setting (default: the card's).
        batch_size: images per forward pass.

    Returns:
        ``(metrics, paths)`` as from :func:`classification_metrics` and :func:`write_report`.
    """
    model = ckpt_lib.load(checkpoint)
    card = model.card
    if data_dir is not None:
        folder = load_image_folder(data_dir, input_size=tuple(card["input_size"][:2]), val_fraction=0.0,
                                   preprocessing=model.preprocessing)
        if list(folder.classes) != list(card["classes"]):
            raise ValueError(
                f"`data_dir` (={str(data_dir)!r}) has classes {list(folder.classes)}; the checkpoint expects {card['classes']}"
            )
        images, labels = folder.train_images, folder.train_labels
        evaluated_on = {"source": "image-folder", "root": str(Path(data_dir).resolve()), "n": int(labels.size)}
    else:
        held = heldout_set(card, n, split=split, start=start, spurious_cue=spurious_cue)
        images, labels = held.images, held.labels
        evaluated_on = heldout_description(held)
    metrics = evaluate_model(model, images, labels, batch_size)
    metrics["evaluated_on"] = evaluated_on
    metrics["checkpoint"] = str(model.path)
    paths = write_report(metrics, out_dir, title=str(card.get("name", "")))
    return metrics, paths


def heldout_description(held: generated.GeneratedData) -> dict:
    """What a report records of a :func:`heldout_set`: ``source``, ``split``, ``seed``,
    ``start``, ``n`` and ``spurious_cue``.

    Example:
        >>> from saliency_jax.model.generated import generate
        >>> heldout_description(generate(1, split="test", start=4, size=32))["start"]
        4
    """
    return {"source": "generated", **{k: held.info[k] for k in ("split", "seed", "start", "n", "spurious_cue")}}
