"""From a training run to a shipped checkpoint: train, save, evaluate the held-out set, write the card.

This module sits above :mod:`~saliency_jax.model.train`, :mod:`~saliency_jax.model.evaluate` and
:mod:`~saliency_jax.model.checkpoint` and joins them; none of them imports it. The result of
:func:`train_and_export` is a checkpoint directory whose ``card.json`` records how the model was
trained (:func:`make_card`) and how it scores on data it never saw, with the plots of that
evaluation in ``evaluation/``.

Example:
    >>> from saliency_jax.model import export, train
    >>> path, metrics = export.train_and_export(
    ...     train.get_config("smoke"), "/tmp/sj-run", "/tmp/sj-model", test_size=16, progress=False
    ... )  # doctest: +SKIP
    >>> metrics["n"]  # doctest: +SKIP
    16
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from saliency_jax import _validate
from saliency_jax.model import checkpoint as ckpt_lib
from saliency_jax.model import image_input
from saliency_jax.model import evaluate as eval_lib
from saliency_jax.model.architectures import model_config
from saliency_jax.model.train import TrainConfig, TrainResult, load_data, train

__all__ = ["HELDOUT_CHECK_SIZE", "make_card", "train_and_export"]

#: Images of the held-out ``"test"`` split whose exact result the card records
#: (``metrics.heldout_check``), so that a test can check a loaded checkpoint reproduces it.
HELDOUT_CHECK_SIZE = 256

_TEST_KEYS = ("n", "correct", "accuracy", "auc", "average_precision", "confusion_matrix", "evaluated_on")


def make_card(result: TrainResult, *, command: str | None = None, name: str | None = None) -> dict:
    """The model card of a finished run (see :mod:`saliency_jax.model.checkpoint`).

    Args:
        result: the :class:`~saliency_jax.model.train.TrainResult`.
        command: the exact command that trained it (recorded verbatim).
        name: a name for the model (default ``"<model>-<task>"``).

    Returns:
        A JSON-ready dict with ``name``, ``architecture``, ``classes``, ``input_size``,
        ``preprocessing``, ``data``, ``training`` (config, command, history, wall time) and
        ``metrics`` (the last epoch's).

    Example:
        >>> from pathlib import Path
        >>> from saliency_jax.model.architectures import get_model
        >>> from saliency_jax.model.train import get_config
        >>> run = TrainResult(get_model("small", num_classes=2), None, get_config("smoke"), ("ring", "cross"),
        ...                   {"task": "rings-and-crosses"}, (), Path("run"), 3.0)
        >>> card = make_card(run, command="saliency-jax train --config smoke")
        >>> card["name"], card["input_size"], card["training"]["epochs_completed"]
        ('small-rings-and-crosses', [128, 128, 3], 0)
    """
    c = result.config
    arch = model_config(c.model, num_classes=len(result.classes), fc=c.fc, width=c.width)
    return {
        "name": name or f"{c.model}-{result.data_info.get('task', 'image-folder')}",
        "architecture": arch,
        "classes": list(result.classes),
        "input_size": list(result.module.input_size),
        "preprocessing": image_input.DEFAULT_PREPROCESSING.record(),
        "data": result.data_info,
        "training": {
            "config": c.to_dict(),
            "command": command,
            "optimizer": "clip_by_global_norm + adamw, linear warm-up then cosine decay",
            "augmentation": "horizontal flip (p=0.5), brightness gain U(0.8, 1.2)" if c.augment else "none",
            "epochs_completed": len(result.history),
            "wall_seconds_last_call": round(result.wall_seconds, 1),
            "history": list(result.history),
        },
        "metrics": {"final_val": dict(result.history[-1]) if result.history else {}},
    }


def train_and_export(
    config: TrainConfig,
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    command: str | None = None,
    test_size: int = 2000,
    progress: bool | TextIO = True,
    resume: bool = True,
) -> tuple[Path, dict | None]:
    """Train, save the checkpoint at ``out``, evaluate it and record the metrics in its card.

    For generated data the evaluation uses ``test_size`` images of the held-out ``"test"``
    split (:func:`saliency_jax.model.evaluate.heldout_set`), and the card also records the
    exact result on its first :data:`HELDOUT_CHECK_SIZE` images (``metrics.heldout_check``).
    For an image folder the validation split is used. Plots and ``metrics.json`` go to
    ``out/evaluation/``. The evaluation runs on the checkpoint as loaded back from disk.

    Args:
        config: the run's :class:`~saliency_jax.model.train.TrainConfig`.
        workdir: the training work directory (resumable; see :func:`~saliency_jax.model.train.train`).
        out: the checkpoint directory to write (replaced if present).
        data_dir: an image folder to train on instead of generated data.
        command: the command line to record in the card.
        test_size: held-out images for generated data (``>= 1``).
        progress, resume: as for :func:`~saliency_jax.model.train.train`.

    Returns:
        ``(checkpoint path, metrics dict)``; the metrics are ``None`` for an image folder
        without a validation split.

    Example:
        >>> from saliency_jax.model.train import get_config
        >>> path, metrics = train_and_export(get_config("smoke"), "/tmp/sj-run", "/tmp/sj-model",
        ...                                  test_size=16, progress=False)  # doctest: +SKIP
    """
    _validate.integer("test_size", test_size, lo=1)
    result = train(config, workdir, data_dir=data_dir, progress=progress, resume=resume)
    card = make_card(result, command=command)
    metrics_file = Path(workdir) / "metrics.jsonl"
    extra = {"metrics.jsonl": metrics_file} if metrics_file.exists() else {}
    path = ckpt_lib.save(out, result.variables, card, extra_files=extra, overwrite=True)
    model = ckpt_lib.load(path)
    if card["data"]["source"] == "generated":
        metrics, heldout_check = _evaluate_heldout(model, test_size, config.eval_batch_size)
    else:
        metrics, heldout_check = _evaluate_validation(model, config, data_dir), None
    card = dict(model.card)
    card["metrics"] = dict(card["metrics"])
    if metrics is not None:
        eval_lib.write_report(metrics, Path(out) / "evaluation", title=card["name"])
        card["metrics"]["test"] = {k: metrics[k] for k in _TEST_KEYS if k in metrics}
    if heldout_check is not None:
        card["metrics"]["heldout_check"] = heldout_check
    ckpt_lib.write_card(path, card)
    return path, metrics


def _evaluate_heldout(model: ckpt_lib.LoadedModel, test_size: int, batch_size: int) -> tuple[dict, dict]:
    """Metrics on ``test_size`` held-out images, and the exact count on the first
    :data:`HELDOUT_CHECK_SIZE` of them (same batches, so a reload reproduces it exactly)."""
    held = eval_lib.heldout_set(model.card, test_size)
    logits = eval_lib.predict_logits(model.apply_fn, model.params, held.images, batch_size, model.preprocessing)
    metrics = eval_lib.classification_metrics(logits, held.labels, model.classes)
    metrics["evaluated_on"] = eval_lib.heldout_description(held)
    n = min(HELDOUT_CHECK_SIZE, test_size)
    hits = logits[:n].argmax(1) == held.labels[:n]
    check = {k: held.info[k] for k in ("split", "seed", "start")}
    check.update(n=n, correct=int(hits.sum()), accuracy=float(hits.mean()))
    return metrics, check


def _evaluate_validation(model: ckpt_lib.LoadedModel, config: TrainConfig, data_dir) -> dict | None:
    """Metrics on an image folder's validation split (``None`` when it has none)."""
    ds = load_data(config, data_dir, model.input_size[:2])
    if not ds.val_labels.size:
        return None
    metrics = eval_lib.evaluate_model(model, ds.val_images, ds.val_labels, config.eval_batch_size)
    metrics["evaluated_on"] = {"split": "val", "n": int(ds.val_labels.shape[0])}
    return metrics
