"""Training with optax: AdamW, linear warm-up then cosine decay, a jitted step, resumable.

A run lives in a *work directory*: ``state/`` (an orbax checkpoint of parameters, optimiser
state and epoch, written after every epoch), ``state.json`` (the config it belongs to) and
``metrics.jsonl`` (one JSON line per epoch). Calling :func:`train` again on the same work
directory with the same config resumes after the last finished epoch, and gives the same
weights, bit for bit, as an uninterrupted run: the shuffling of epoch ``e`` is seeded by
``(seed, e)`` and the augmentation of step ``t`` by ``fold_in(key(seed), t)``.

Example:
    >>> from saliency_jax.model import train
    >>> result = train.train(train.get_config("smoke"), "/tmp/smoke-run", progress=False)  # doctest: +SKIP
    >>> result.history[-1]["val_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from saliency_jax import _validate
from saliency_jax._io import atomic_write_text as _write_text_atomic
from saliency_jax._progress import Progress
from saliency_jax.model import generated
from saliency_jax.model.image_folder import load_image_folder
from saliency_jax.model.image_input import DEFAULT_PREPROCESSING
from saliency_jax.model.architectures import MODEL_NAMES, get_model, model_config
from saliency_jax.model.evaluate import loss_and_accuracy, predict_logits

__all__ = [
    "TrainConfig",
    "CONFIGS",
    "get_config",
    "Dataset",
    "TrainResult",
    "load_data",
    "train",
    "make_optimizer",
]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (frozen; see :data:`CONFIGS`).

    Attributes:
        model: a name from :data:`saliency_jax.model.architectures.MODEL_NAMES`.
        fc: widths of the model's dense layers; ``width``: multiplier on convolution widths.
        num_train, num_val: generated images per split (ignored for an image folder).
        data_seed: seed of the generated data, or of the image folder's split.
        spurious_cue: see :func:`saliency_jax.model.data.generate` (0 = off).
        train_clutter: clutter of the generated *training* images: ``"mixed"`` (uniform in
            [0, 1] per image: easy examples let the un-normalised convnet find the shapes at
            all, hard ones teach it the task) or a level in [0, 1]. Validation and test
            images always have the full clutter (1.0).
        curriculum_step: with ``"mixed"`` clutter, epoch ``e`` trains only on the images whose
            clutter level is at most ``min(1, curriculum_step * (e + 1))`` (easy to hard);
            ``0`` uses every image in every epoch.
        val_fraction: validation share of an image folder.
        epochs, batch_size: the schedule; incomplete last batches are dropped in training.
        learning_rate: peak learning rate; ``warmup_steps`` linear warm-up from 0, then cosine
            decay to ``learning_rate * final_lr_fraction`` at the last step.
        weight_decay: AdamW's decoupled weight decay; ``grad_clip``: global-norm clipping.
        seed: initialisation, shuffling and augmentation seed.
        augment: random horizontal flips and brightness gain in ``[0.8, 1.2]``.
        eval_batch_size: batch size of evaluation passes.
    """

    model: str = "small"
    fc: tuple[int, ...] = (128,)
    width: float = 1.0
    num_train: int = 7000
    num_val: int = 500
    data_seed: int = 0
    spurious_cue: float = 0.0
    train_clutter: float | str = "mixed"
    curriculum_step: float = 0.15
    val_fraction: float = 0.2
    epochs: int = 11
    batch_size: int = 16
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.01
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    augment: bool = True
    eval_batch_size: int = 250

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["fc"] = list(self.fc)
        return d


CONFIGS: dict[str, TrainConfig] = {
    # The shipped model.
    "default": TrainConfig(),
    # A few seconds: for tests and for checking an installation.
    "smoke": TrainConfig(
        num_train=16, num_val=8, epochs=1, batch_size=8, warmup_steps=1, eval_batch_size=8, curriculum_step=0.0
    ),
}


def get_config(name: str = "default", **overrides) -> TrainConfig:
    """A named config from :data:`CONFIGS` with ``overrides`` applied and checked.

    Args:
        name: ``"default"`` or ``"smoke"``.
        **overrides: any :class:`TrainConfig` field.

    Returns:
        A :class:`TrainConfig`.

    Example:
        >>> get_config("smoke", epochs=2).epochs
        2
    """
    if not isinstance(name, str) or name not in CONFIGS:
        raise ValueError(f"`name` (={name!r}) must be one of {tuple(CONFIGS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown config field(s) {sorted(unknown)}; accepted: {sorted(fields)}")
    if "fc" in overrides:
        overrides["fc"] = tuple(overrides["fc"])
    config = dataclasses.replace(CONFIGS[name], **overrides)
    _check_config(config)
    return config


def _check_config(c: TrainConfig) -> None:
    if c.model not in MODEL_NAMES:
        raise ValueError(f"`model` (={c.model!r}) must be one of {MODEL_NAMES}")
    for name in ("num_train", "num_val", "epochs", "batch_size", "eval_batch_size"):
        _validate.integer(name, getattr(c, name), lo=1)
    for name in ("data_seed", "seed", "warmup_steps"):
        _validate.integer(name, getattr(c, name), lo=0)
    for name in ("learning_rate", "grad_clip"):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"`{name}` (={v!r}) must be a positive number")
    for name, lo, hi in (
        ("final_lr_fraction", 0.0, 1.0),
        ("spurious_cue", 0.0, 1.0),
        ("weight_decay", 0.0, math.inf),
        ("curriculum_step", 0.0, 1.0),
    ):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"`{name}` (={v!r}) must be a number in [{lo}, {hi}]")
    if not isinstance(c.val_fraction, (int, float)) or not 0.0 < c.val_fraction < 1.0:
        raise ValueError(f"`val_fraction` (={c.val_fraction!r}) must be a number in (0, 1)")
    model_config(c.model, fc=c.fc, width=c.width)  # raises on bad fc / width
    generated.check_clutter(c.train_clutter)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Training and validation arrays plus a description (for the model card)."""

    train_images: np.ndarray  # (N, H, W, 3) uint8
    train_labels: np.ndarray  # (N,) int32
    val_images: np.ndarray
    val_labels: np.ndarray
    classes: tuple[str, ...]
    info: dict
    train_clutter: np.ndarray | None = None  # (N,) clutter level per training image, if generated


def load_data(config: TrainConfig, data_dir: str | os.PathLike | None = None, input_size=(128, 128)) -> Dataset:
    """The training and validation data of a run: generated, or read from ``data_dir``.

    Args:
        config: the run's config (sizes, seeds, spurious cue, validation share).
        data_dir: an image folder (``root/<class>/<file>``), or ``None`` for generated data.
        input_size: ``(height, width)`` of the model input.

    Returns:
        A :class:`Dataset`; images are ``uint8 (N, H, W, 3)``, labels ``int32 (N,)``.
    """
    if data_dir is None:
        tr = generated.generate(
            config.num_train,
            split="train",
            seed=config.data_seed,
            size=input_size[0],
            spurious_cue=config.spurious_cue,
            clutter=config.train_clutter,
        )
        va = generated.generate(
            config.num_val, split="val", seed=config.data_seed, size=input_size[0], spurious_cue=config.spurious_cue
        )
        info = {
            "source": "generated",
            "task": tr.info["task"],
            "seed": config.data_seed,
            "train": {"split": "train", "start": 0, "n": config.num_train, "clutter": config.train_clutter},
            "val": {"split": "val", "start": 0, "n": config.num_val, "clutter": 1.0},
            "spurious_cue": config.spurious_cue,
            "cue_class": tr.info["cue_class"],
        }
        return Dataset(tr.images, tr.labels, va.images, va.labels, tr.classes, info, tr.clutter)
    folder = load_image_folder(
        data_dir, input_size=tuple(input_size), val_fraction=config.val_fraction, seed=config.data_seed
    )
    info = {
        "source": "image-folder",
        "root": str(Path(data_dir).resolve()),
        "seed": config.data_seed,
        "val_fraction": config.val_fraction,
        "train": {"n": int(folder.train_labels.shape[0])},
        "val": {"n": int(folder.val_labels.shape[0])},
        "skipped": [list(s) for s in folder.skipped],
    }
    return Dataset(folder.train_images, folder.train_labels, folder.val_images, folder.val_labels, folder.classes, info)


def _schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=config.learning_rate * config.final_lr_fraction,
    )


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping, linear warm-up and cosine decay over ``total_steps``.

    Example:
        >>> tx = make_optimizer(get_config("smoke"), total_steps=10)
    """
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(_schedule(config, total_steps), weight_decay=config.weight_decay),
    )


def _augment(key: jax.Array, x: jnp.ndarray) -> jnp.ndarray:
    """Random horizontal flip and brightness gain per image; ``x`` is ``(B, H, W, C)`` in [0, 1]."""
    k_flip, k_gain = jax.random.split(key)
    b = x.shape[0]
    flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    gain = jax.random.uniform(k_gain, (b, 1, 1, 1), minval=0.8, maxval=1.2)
    x = jnp.where(flip, x[:, :, ::-1, :], x)
    return jnp.clip(x * gain, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        module: the Flax module; ``variables``: its variables (``{"params": …}``).
        config: the run's config; ``classes``: class names; ``data_info``: where data came from.
        history: one dict per epoch (the lines of ``metrics.jsonl``).
        workdir: the work directory; ``wall_seconds``: time spent in this call.
    """

    module: Any
    variables: Any
    config: TrainConfig
    classes: tuple[str, ...]
    data_info: dict
    history: tuple[dict, ...]
    workdir: Path
    wall_seconds: float


def _write_json_atomic(path: Path, obj: Any) -> None:
    _write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _save_state(workdir: Path, state: dict) -> None:
    """Write ``workdir/state`` (orbax) via a temporary sibling, so a crash keeps the old one."""
    final = workdir / "state"
    tmp = workdir / f".state.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp.resolve(), state)
        ckpt.wait_until_finished()
    old = workdir / f".state.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _restore_state(workdir: Path, abstract_state: dict) -> dict:
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore((workdir / "state").resolve(), abstract_state)


def _open_run(workdir: Path, fingerprint: dict, init_state: Callable[[], dict], resume: bool) -> tuple[dict, list[dict]]:
    """The run's state and history: restored from ``workdir`` when it holds this run, else fresh.

    Raises:
        ValueError: ``resume`` and ``workdir`` holds the state of another config or data.
    """
    state_json = workdir / "state.json"
    metrics_path = workdir / "metrics.jsonl"
    if resume and (workdir / "state").exists() and state_json.exists():
        recorded = json.loads(state_json.read_text())
        if recorded != json.loads(json.dumps(fingerprint)):
            raise ValueError(
                f"`workdir` (={str(workdir)!r}) holds a run of a different config or data; "
                f"pass resume=False (CLI: --restart) or another workdir. Recorded: {recorded['config']}"
            )
        return _restore_state(workdir, jax.eval_shape(init_state)), _read_history(metrics_path)
    if metrics_path.exists():
        metrics_path.unlink()
    _write_json_atomic(state_json, fingerprint)
    return init_state(), []


def _check_train_args(config, stop_after_epoch) -> None:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` (type {type(config).__name__}) must be a TrainConfig; use get_config()")
    _check_config(config)
    if stop_after_epoch is not None:
        _validate.integer("stop_after_epoch", stop_after_epoch, lo=1)


def _make_train_step(module, tx: optax.GradientTransformation, config: TrainConfig, aug_key: jax.Array) -> Callable:
    """The jitted step ``(params, opt_state, images uint8, labels, step) -> (params, opt_state, loss, acc)``."""

    def loss_fn(params, x, y):
        logits = module.apply({"params": params}, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (jnp.argmax(logits, axis=-1) == y).mean()

    policy = DEFAULT_PREPROCESSING  # what the card records (export.make_card); validation uses the same

    @jax.jit
    def train_step(params, opt_state, images, labels, step):
        x = policy.to_unit(images)  # the policy's two steps, with the augmentation between them
        if config.augment:  # in [0, 1], before standardisation
            x = _augment(jax.random.fold_in(aug_key, step), x)
        x = policy.standardize(x)
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return train_step


@dataclasses.dataclass(frozen=True)
class _Loop:
    """What stays fixed across the epochs of one run: data, plan, compiled functions, output."""

    config: TrainConfig
    ds: Dataset
    pools: list  # training indices of each epoch (the curriculum)
    steps_in: list  # steps of each epoch
    batch: int
    train_step: Callable
    eval_apply: Callable
    lr_at: optax.Schedule
    stream: TextIO | None

    def epoch(self, epoch: int, params, opt_state) -> tuple[Any, Any, dict]:
        """Train one epoch, then validate: ``(params, opt_state, metrics record)``."""
        c, t0 = self.config, time.perf_counter()
        pool, steps = self.pools[epoch], self.steps_in[epoch]
        first_step = sum(self.steps_in[:epoch])
        order = pool[np.random.default_rng(np.random.SeedSequence([c.seed, epoch])).permutation(len(pool))]
        bar = Progress(steps, f"epoch {epoch + 1}/{c.epochs}", self.stream)
        every = 5 if bar.inplace else max(1, steps // 10)  # a log file gets ~10 lines per epoch
        losses, accs = [], []
        for i in range(steps):
            idx = np.sort(order[i * self.batch : (i + 1) * self.batch])
            params, opt_state, loss, acc = self.train_step(
                params, opt_state, self.ds.train_images[idx], self.ds.train_labels[idx], jnp.int32(first_step + i)
            )
            losses.append(loss)
            accs.append(acc)
            if self.stream is not None and (i % every == 0 or i == steps - 1):
                bar.update(i + 1, loss=float(loss), acc=float(np.mean(np.asarray(accs))))
        train_loss, train_acc = float(np.mean(np.asarray(losses))), float(np.mean(np.asarray(accs)))
        if len(self.ds.val_labels):
            logits = predict_logits(self.eval_apply, {"params": params}, self.ds.val_images, c.eval_batch_size,
                                    DEFAULT_PREPROCESSING)
            val = loss_and_accuracy(logits, self.ds.val_labels)
        else:  # an image folder too small for a validation split
            val = {"loss": float("nan"), "accuracy": float("nan")}
        record = {
            "epoch": epoch + 1,
            "step": first_step + steps,
            "lr": float(self.lr_at(max(first_step + steps - 1, 0))),
            "train_images": int(len(pool)),
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        bar.close(
            f"loss {train_loss:.4f} acc {train_acc:.3f} | val loss {val['loss']:.4f} acc {val['accuracy']:.3f}"
            f" | {record['seconds']:.1f}s"
        )
        return params, opt_state, record


def train(
    config: TrainConfig,
    workdir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    dataset: Dataset | None = None,
    progress: bool | TextIO = True,
    resume: bool = True,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train a model; resumable from ``workdir``.

    Args:
        config: a :class:`TrainConfig` (see :func:`get_config`).
        workdir: the run's directory (created if missing).
        data_dir: an image folder to train on instead of generated data.
        dataset: ready-made data (overrides ``data_dir``; used by tests).
        progress: ``True`` for a progress bar on stderr, a text stream for one there, ``False``
            for none.
        resume: continue from ``workdir/state`` when present (its config must be the same);
            ``False`` starts afresh and overwrites it.
        stop_after_epoch: stop once this many epochs are done (to split a run; the schedule
            still spans ``config.epochs``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad arguments, or ``workdir`` holds the state of a different config.

    Example:
        >>> r = train(get_config("smoke", fc=(8,), width=0.25), "/tmp/sj-doc-run", progress=False)  # doctest: +SKIP
        >>> [h["epoch"] for h in r.history]  # doctest: +SKIP
        [1]
    """
    _check_train_args(config, stop_after_epoch)
    stream = sys.stderr if progress is True else (None if progress is False else progress)
    started = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    input_size = tuple(get_model(config.model, num_classes=2, fc=config.fc, width=config.width).input_size)
    ds = dataset if dataset is not None else load_data(config, data_dir, input_size[:2])
    module = get_model(config.model, num_classes=len(ds.classes), fc=config.fc, width=config.width)
    pools = _epoch_pools(config, ds)
    batch = min(config.batch_size, ds.train_labels.shape[0])
    steps_in = [len(p) // batch for p in pools]
    tx = make_optimizer(config, sum(steps_in))
    init_key, aug_key = jax.random.split(jax.random.key(config.seed))

    def init_state():
        variables = module.init(init_key, jnp.zeros((1,) + input_size, jnp.float32))
        return {"params": variables["params"], "opt_state": tx.init(variables["params"]), "epoch": jnp.int32(0)}

    fingerprint = {"config": config.to_dict(), "classes": list(ds.classes), "data": ds.info}
    state, history = _open_run(workdir, fingerprint, init_state, resume)
    loop = _Loop(config, ds, pools, steps_in, batch, _make_train_step(module, tx, config, aug_key),
                 jax.jit(module.apply), _schedule(config, sum(steps_in)), stream)
    params, opt_state = state["params"], state["opt_state"]
    last_epoch = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
    for epoch in range(int(state["epoch"]), last_epoch):
        params, opt_state, record = loop.epoch(epoch, params, opt_state)
        history.append(record)
        _save_state(workdir, {"params": params, "opt_state": opt_state, "epoch": jnp.int32(epoch + 1)})
        _write_text_atomic(workdir / "metrics.jsonl", "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))

    return TrainResult(
        module=module,
        variables={"params": params},
        config=config,
        classes=tuple(ds.classes),
        data_info=ds.info,
        history=tuple(history),
        workdir=workdir,
        wall_seconds=time.perf_counter() - started,
    )


def _epoch_pools(config: TrainConfig, ds: Dataset) -> list[np.ndarray]:
    """Indices of the training images of each epoch (the curriculum; all of them without one)."""
    n = ds.train_labels.shape[0]
    everything = np.arange(n)
    if ds.train_clutter is None or config.curriculum_step == 0.0 or config.train_clutter != "mixed":
        return [everything] * config.epochs
    pools = []
    for e in range(config.epochs):
        cap = min(1.0, config.curriculum_step * (e + 1))
        pool = everything if cap >= 1.0 else everything[ds.train_clutter <= cap]
        if len(pool) < min(config.batch_size, n):  # too few easy images: take the easiest batch
            pool = np.sort(np.argsort(ds.train_clutter, kind="stable")[: min(config.batch_size, n)])
        pools.append(pool)
    return pools
