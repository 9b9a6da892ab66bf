"""Checkpoints: orbax-saved model variables with a JSON model card beside them.

A checkpoint is a directory::

    <name>/
      card.json        the model card: architecture and config, classes, input size,
                       preprocessing, data, training command, metrics, library versions, and
                       a SHA-256 of the weights
      variables/       orbax-checkpoint (``StandardCheckpointer``) of the Flax variables
      ...              anything else saved with it (training metrics, evaluation plots)

:func:`save` writes everything into a temporary sibling directory and renames it into place at
the end, so a crash never leaves a broken checkpoint where a good one stood. :func:`load`
rebuilds the module from the card, checks the stored tree, shapes and dtypes against the
module's abstract variables (``jax.eval_shape`` of ``init``) *before* restoring, restores
against that abstract target and verifies the SHA-256; it returns nothing unless every check
passed.

Where the shipped checkpoint is found
-------------------------------------
A bare name (the default is :data:`DEFAULT_NAME`) is looked up, in order, in

1. ``$SALIENCY_JAX_CHECKPOINTS`` (a directory; optional override),
2. ``<package>/checkpoints/`` — where a wheel (non-editable install) carries it as package
   data (pyproject maps the top-level ``checkpoints/`` there),
3. ``<package>/../checkpoints/`` — the repository's top-level folder, used by a source
   checkout and by an editable install.

Example:
    >>> import saliency_jax.model.checkpoint as ck
    >>> model = ck.load()                       # the shipped model
    >>> model.card["classes"]
    ['ring', 'cross']
    >>> x = model.preprocess(image)[None]       # (1, 128, 128, 3) float32  # doctest: +SKIP
    >>> logits = model.apply_fn(model.params, x)  # (1, 2)                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.model import efficientnet, image_input
from saliency_jax.model.architectures import MODEL_NAMES, get_model, model_config

__all__ = [
    "DEFAULT_NAME",
    "CARD_FORMAT",
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadedModel",
    "ModuleApply",
    "save",
    "write_card",
    "load",
    "resolve",
    "read_card",
    "search_dirs",
    "weights_digest",
    "library_versions",
]

DEFAULT_NAME = "rings-crosses-small"
CARD_FORMAT = "saliency-jax-checkpoint/1"
_ENV = "SALIENCY_JAX_CHECKPOINTS"
_REQUIRED = ("format", "architecture", "classes", "input_size", "preprocessing")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupted, truncated, or with an unreadable card."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose stored variables do not fit the model it is restored into."""


@dataclasses.dataclass(frozen=True)
class ModuleApply:
    """``apply_fn(variables, x) = module.apply(variables, x)``, equal (and hashing equal) for
    equal modules: the jitted computations keyed by ``apply_fn`` are reused when the same
    architecture is loaded again (weights are traced arguments, never part of the key).

    With ``input_size`` (``(H, W, C)``, from the model card) a batch of another shape is
    refused with a ``ValueError`` naming ``image`` (shapes are static, so this also holds
    under ``jit`` and ``vmap``), instead of an error from deep inside the model.
    """

    module: Any
    input_size: tuple[int, ...] | None = None

    def __call__(self, variables, x):
        if self.input_size is not None:
            shape = tuple(getattr(x, "shape", ()))
            if len(shape) < 3 or shape[-3:] != tuple(self.input_size):
                h, w, c = self.input_size
                raise ValueError(
                    f"`image` (shape={shape}) does not fit the model: it takes images (N, {h}, {w}, {c}) "
                    f"(the model card's input_size); bring images to the model's input with its preprocessing "
                    f"(e.g. saliency_jax.to_model_input), which resizes them and gives them {c} channels")
        return self.module.apply(variables, x)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A restored model, ready to call.

    Attributes:
        module: the Flax module (rebuilt from the card's architecture).
        params: the variables dict ``{"params": …}`` — the first argument of ``apply_fn``.
        apply_fn: ``apply_fn(params, x (B, H, W, C) float32) -> logits (B, K) float32``.
        card: the model card (``classes``, ``input_size``, ``preprocessing``, ``metrics`` …).
        path: the checkpoint directory.
    """

    module: Any
    params: Any
    apply_fn: Callable
    card: dict
    path: Path

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in logit order."""
        return tuple(self.card["classes"])

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the model input."""
        return tuple(self.card["input_size"])

    @property
    def preprocessing(self) -> image_input.Preprocessing:
        """The card's ``preprocessing`` record, parsed (:func:`saliency_jax.model.image_input.as_preprocessing`):
        how uint8 images become this model's input (a card without one: the shipped models')."""
        return image_input.as_preprocessing(self.card.get("preprocessing"))

    def preprocess(self, image) -> np.ndarray:
        """One image (path, PIL image or array) to model input ``(H, W, 3) float32``, exactly as
        in training: :func:`saliency_jax.model.image_input.to_model_input` with the card's
        ``preprocessing`` record (for the shipped models, a bilinear stretch and ``[-1, 1]``)."""
        return image_input.to_model_input(image, self.input_size[:2], self.preprocessing)


# --------------------------------------------------------------------------- helpers


def _leaves(tree) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def weights_digest(variables) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (sorted by path).

    Args:
        variables: a pytree of arrays.

    Returns:
        A hex string; equal digests mean bit-identical variables.

    Example:
        >>> weights_digest({"a": np.zeros(2, np.float32)}) == weights_digest({"a": np.zeros(2, np.float32)})
        True
    """
    h = hashlib.sha256()
    for name, leaf in sorted(_leaves(variables).items()):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _tree_spec(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (tuple(int(d) for d in leaf.shape), np.dtype(leaf.dtype).name) for name, leaf in _leaves(tree).items()}


def _describe_mismatch(stored: dict, wanted: dict) -> list[str]:
    problems = []
    for name in sorted(set(stored) | set(wanted)):
        if name not in wanted:
            problems.append(f"{name}: in the checkpoint {stored[name][0]} but not in the model")
        elif name not in stored:
            problems.append(f"{name}: expected by the model {wanted[name][0]} but missing from the checkpoint")
        elif stored[name] != wanted[name]:
            problems.append(
                f"{name}: checkpoint {stored[name][0]} {stored[name][1]} vs model {wanted[name][0]} {wanted[name][1]}"
            )
    return problems


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"model card value of type {type(obj).__name__} is not JSON-serialisable")


def library_versions() -> dict[str, str]:
    """Versions of saliency_jax and the libraries a checkpoint depends on."""
    from importlib import metadata

    out = {}
    for dist in ("saliency-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --------------------------------------------------------------------------- save


def save(
    path: str | os.PathLike,
    variables,
    card: dict,
    *,
    extra_files: dict[str, str | os.PathLike | bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``variables`` and a model card at ``path``, atomically.

    The card must name the ``architecture`` (a :func:`saliency_jax.model.architectures.model_config`
    dict), ``classes``, ``input_size`` (``[H, W, C]``) and ``preprocessing``; ``format``,
    ``weights`` (digest, parameter count, shapes) and ``library`` versions are added.

    Args:
        path: the checkpoint directory to create.
        variables: the Flax variables (``{"params": …}``) of a model built from the card.
        card: the model card (JSON-serialisable).
        extra_files: more files to store in the checkpoint, ``{name: source path or bytes}``.
        overwrite: replace an existing checkpoint at ``path`` (the old one stays in place
            until the new one is complete).

    Returns:
        The checkpoint directory.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: the card lacks a field, or ``variables`` do not fit its architecture.
    """
    path = Path(path)
    if not isinstance(card, dict):
        raise TypeError(f"`card` (type {type(card).__name__}) must be a dict")
    missing = [k for k in _REQUIRED if k not in card and k != "format"]
    if missing:
        raise ValueError(f"`card` lacks the field(s) {missing}; required: {[k for k in _REQUIRED if k != 'format']}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {str(path)!r} exists; pass overwrite=True to replace it")
    variables, card_text = _complete_card(path, variables, card)
    _write_checkpoint(path, variables, card_text, extra_files or {})
    return path


def _complete_card(path: Path, variables, card: dict) -> tuple[Any, str]:
    """Check ``variables`` against the card's architecture; ``(numpy variables, full card JSON)``
    with ``format``, ``weights`` and ``library`` added."""
    module = _module_from_card(card, path)
    _check_preprocessing(card, path, ValueError)
    wanted = _tree_spec(_abstract_variables(module, card["input_size"]))
    given = _tree_spec(variables)
    problems = _describe_mismatch(given, wanted)
    if problems:
        raise ValueError(
            f"`variables` do not fit the card's architecture {card['architecture']} for {str(path)!r}: "
            + "; ".join(problems[:8])
        )
    variables = jax.tree.map(np.asarray, variables)
    full = dict(card)
    full["format"] = CARD_FORMAT
    full["weights"] = {
        "sha256": weights_digest(variables),
        "num_params": int(sum(np.asarray(v).size for v in _leaves(variables).values())),
        "leaves": {k: {"shape": list(s), "dtype": d} for k, (s, d) in sorted(given.items())},
    }
    full.setdefault("library", library_versions())
    full.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return variables, json.dumps(full, indent=2, sort_keys=True, default=_json_default) + "\n"


def _write_checkpoint(path: Path, variables, card_text: str, extra_files: dict) -> None:
    """Everything into a temporary sibling, the card last, then renamed over ``path``."""
    import orbax.checkpoint as ocp  # here, not at the top: importing this module stays light (see load)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save((tmp / "variables").resolve(), variables)
            ckpt.wait_until_finished()
        for name, src in extra_files.items():
            if Path(name).name != name or name in ("card.json", "variables"):
                raise ValueError(f"`extra_files` name {name!r} must be a plain file name other than card.json/variables")
            if isinstance(src, bytes):
                (tmp / name).write_bytes(src)
            else:
                shutil.copyfile(src, tmp / name)
        (tmp / "card.json").write_text(card_text)  # last: a directory with a card is complete
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_card(path: str | os.PathLike, card: dict) -> None:
    """Replace the card of the checkpoint at ``path`` atomically (e.g. to add metrics).

    The weight digest and shapes already in the card are kept; the weights are not touched.
    """
    path = Path(path)
    old = read_card(path)
    new = dict(card)
    new["format"] = CARD_FORMAT
    new["weights"] = old["weights"]
    text = json.dumps(new, indent=2, sort_keys=True, default=_json_default) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".card.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path / "card.json")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- find and load


def search_dirs() -> list[Path]:
    """Directories searched for a checkpoint given by bare name, in order."""
    pkg = Path(__file__).resolve().parents[1]  # saliency_jax/
    dirs = []
    if os.environ.get(_ENV):
        dirs.append(Path(os.environ[_ENV]))
    dirs += [pkg / "checkpoints", pkg.parent / "checkpoints"]
    return dirs


def resolve(name_or_path: str | os.PathLike | None = None) -> Path:
    """The directory of a checkpoint given by path or by name (``None``: the shipped one).

    Raises:
        FileNotFoundError: nothing found; the message lists the places tried.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_NAME
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"`name_or_path` (={name_or_path!r}) must be a checkpoint name or a path")
    p = Path(name_or_path)
    if p.is_dir():
        return p
    tried = [str(p)]
    if len(p.parts) == 1:
        for d in search_dirs():
            if (d / p).is_dir():
                return d / p
            tried.append(str(d / p))
    raise FileNotFoundError(f"no checkpoint {str(name_or_path)!r}; looked for a directory at {tried}")


def read_card(path: str | os.PathLike) -> dict:
    """The model card of the checkpoint directory ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` exists but has no ``card.json`` (an incomplete checkpoint, an
            empty folder or not a checkpoint), or the card is not valid JSON or lacks fields.
    """
    card_path = Path(path) / "card.json"
    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint {str(path)!r}: the path does not exist")
    if not card_path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no card.json (incomplete, empty or not a checkpoint)")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"model card {str(card_path)!r} is not valid JSON ({err}); the checkpoint is corrupted") from err
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {str(card_path)!r} must hold a JSON object")
    missing = [k for k in _REQUIRED + ("weights",) if k not in card]
    if missing:
        raise CheckpointError(f"model card {str(card_path)!r} lacks field(s) {missing}")
    if card["format"] != CARD_FORMAT:
        raise CheckpointError(f"model card {str(card_path)!r} has format {card['format']!r}; this version reads {CARD_FORMAT!r}")
    return card


def _check_preprocessing(card: dict, path, error: type[Exception]) -> None:
    """Raise ``error`` naming the checkpoint unless the card's ``preprocessing`` record parses
    (an old card's prose fields read as the policy of its time)."""
    try:
        image_input.Preprocessing.from_record(card["preprocessing"])
    except (TypeError, ValueError) as err:
        raise error(f"checkpoint {str(path)!r}: the model card's preprocessing record is invalid: {err}") from err


def _module_from_card(card: dict, path) -> Any:
    arch = card.get("architecture")
    if isinstance(arch, dict) and arch.get("name") == "efficientnet-lite":  # the pretrained ImageNet models
        try:
            module = efficientnet.from_config(arch)
        except ValueError as err:
            raise CheckpointMismatchError(f"checkpoint {str(path)!r}: architecture {arch!r} is invalid: {err}") from err
        if len(card["classes"]) != module.num_classes:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r}: card lists {len(card['classes'])} classes but the architecture has "
                f"num_classes={module.num_classes}")
        return module
    if not isinstance(arch, dict) or arch.get("name") not in MODEL_NAMES:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r}: architecture {arch!r} is not one of the known models "
            f"{MODEL_NAMES + ('efficientnet-lite',)}"
        )
    options = {k: v for k, v in arch.items() if k != "name"}
    try:
        model_config(arch["name"], **options)
    except (TypeError, ValueError) as err:
        raise CheckpointMismatchError(f"checkpoint {str(path)!r}: architecture {arch!r} is invalid: {err}") from err
    module = get_model(arch["name"], **options)
    if len(card["classes"]) != module.num_classes:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r}: card lists {len(card['classes'])} classes but the architecture has "
            f"num_classes={module.num_classes}"
        )
    return module


def _abstract_variables(module, input_size) -> Any:
    sample = jax.ShapeDtypeStruct((1,) + tuple(int(s) for s in input_size), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), sample)


def _restore_leaf_by_leaf(ocp, var_dir: Path, target) -> Any:
    """Restore ``target``'s leaves (abstract arrays) from ``var_dir`` one at a time, as numpy arrays.

    Not one ``restore`` of the whole tree: orbax reads all leaves at once (``asyncio.gather``)
    in an event loop it closes as soon as one read fails, without cancelling the others; their
    tensorstore reads then complete into the closed loop and print "RuntimeError: Event loop
    is closed" tracebacks after the error was raised. One leaf per restore leaves no read in
    flight when one fails, and costs a few milliseconds per leaf.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    leaves = []
    with ocp.PyTreeCheckpointer() as ckpt:
        for path, leaf in flat:
            keys = [_key_name(k) for k in path]
            item, restore_args = {}, {}
            node, args_node = item, restore_args
            for k in keys[:-1]:
                node, args_node = node.setdefault(k, {}), args_node.setdefault(k, {})
            node[keys[-1]] = leaf
            args_node[keys[-1]] = ocp.RestoreArgs(restore_type=np.ndarray)
            got = ckpt.restore(var_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                                      partial_restore=True))
            for k in keys:
                got = got[k]
            leaves.append(np.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def load(name_or_path: str | os.PathLike | None = None, *, module=None) -> LoadedModel:
    """Load a checkpoint: the shipped model by default.

    Args:
        name_or_path: a checkpoint directory, a name looked up in :func:`search_dirs`, or
            ``None`` for :data:`DEFAULT_NAME`.
        module: restore into this Flax module instead of the one the card describes (its
            variables must match the stored ones exactly).

    Returns:
        A :class:`LoadedModel` (``apply_fn``, ``params``, ``card``, ``module``, ``path``).

    Raises:
        FileNotFoundError: no checkpoint there (the message lists the places tried).
        CheckpointError: a folder that is not a complete checkpoint (no ``card.json``: empty,
            incomplete or something else), or damaged arrays (truncated, corrupted).
        CheckpointMismatchError: the stored variables have another structure, shape or dtype
            than the model (the message lists the differing leaves).
        CheckpointError: the card or the stored arrays are corrupted or truncated.

    Example:
        >>> m = load()
        >>> m.apply_fn(m.params, np.zeros((1, 128, 128, 3), np.float32)).shape
        (1, 2)
    """
    # orbax is imported when a checkpoint is read, not with the module: the app imports this
    # module at start-up and explains user-supplied models that never touch orbax.
    import orbax.checkpoint as ocp

    path = resolve(name_or_path)
    card = read_card(path)
    _check_preprocessing(card, path, CheckpointError)
    if module is None:
        module = _module_from_card(card, path)
    target = _abstract_variables(module, card["input_size"])
    wanted = _tree_spec(target)
    recorded = {k: (tuple(v["shape"]), v["dtype"]) for k, v in card["weights"].get("leaves", {}).items()}
    problems = _describe_mismatch(recorded, wanted)
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} does not fit the model ({len(problems)} difference(s)): " + "; ".join(problems[:8])
        )
    var_dir = (path / "variables").resolve()
    if not var_dir.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} has no variables/ directory (incomplete checkpoint)")
    try:
        with ocp.StandardCheckpointer() as ckpt:
            stored_meta = ckpt.metadata(var_dir)
            stored_tree = getattr(getattr(stored_meta, "item_metadata", stored_meta), "tree", None)
            if stored_tree is not None:
                stored = _tree_spec(stored_tree)
                problems = _describe_mismatch(stored, wanted)
                if problems:
                    raise CheckpointMismatchError(
                        f"checkpoint {str(path)!r}: stored variables do not fit the model: " + "; ".join(problems[:8])
                    )
        restored = _restore_leaf_by_leaf(ocp, var_dir, target)
    except CheckpointError:
        raise
    except Exception as err:  # orbax/tensorstore raise many types for damaged files
        raise CheckpointError(f"checkpoint {str(path)!r} could not be restored (corrupted or truncated): {err}") from err
    digest = weights_digest(restored)
    if digest != card["weights"].get("sha256"):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: the restored weights' SHA-256 {digest[:12]}… differs from the card's "
            f"{str(card['weights'].get('sha256'))[:12]}…; the checkpoint is corrupted"
        )
    params = jax.tree.map(jnp.asarray, restored)
    apply_fn = ModuleApply(module, tuple(int(s) for s in card["input_size"]))
    return LoadedModel(module=module, params=params, apply_fn=apply_fn, card=card, path=path)
