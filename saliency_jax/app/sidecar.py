"""The folder job's record of each image: output names, the JSON sidecar and the rule for "done".

An image's sidecar (``<name>.json``, written after every other output of the image) holds the
input's path, name, size and SHA-256, the model, the settings, the prediction (with the top-5 classes), the explained
classes, each map's shape and range, and the image's files. Its ``settings_key`` hashes what
decides the outputs (settings, model weights, input size): a rerun skips an image whose sidecar
has the same key and the same input bytes and whose files all exist (:func:`is_done`).

Example:
    >>> from saliency_jax.app.settings import ExplainSettings
    >>> s = ExplainSettings(("occlusion",), (32, 32), (8, 8), 0.0, "predicted", ("png", "npy"),
    ...                     "jet", "RdBu_r", 0.5, False)
    >>> output_names("a/b.jpg", s)
    {'occlusion.png': 'a/b.jpg.occlusion.png', 'occlusion.npy': 'a/b.jpg.occlusion.npy', 'panel': 'a/b.jpg.panel.png'}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from saliency_jax._io import atomic_write_text
from saliency_jax.app.settings import ExplainSettings
from saliency_jax.model import image_input

__all__ = ["SIDECAR_VERSION", "RunInfo", "output_names", "sidecar_path", "is_done", "done_digest", "read_sidecar",
           "write_sidecar"]

#: The sidecar layout's version (part of the settings key: a new layout redoes every image).
SIDECAR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What every sidecar of one run shares: the settings and the model.

    Attributes:
        settings: the run's settings.
        model: ``{"path": checkpoint folder (or factory), "weights_sha256": from the model card (or
            None), "preprocessing": the policy's record}`` (:class:`~saliency_jax.model.image_input.Preprocessing`;
            a model that is not the shipped kind also has its policy in the settings key).
        input_size: ``(H, W)`` of the model input.
        classes: the model's class names.
    """

    settings: ExplainSettings
    model: dict
    input_size: tuple[int, int]
    classes: tuple[str, ...]

    @functools.cached_property
    def key(self) -> str:
        """The settings key: SHA-256 of the sidecar version, settings, weights' hash and input size."""
        h, w = self.input_size
        return hashlib.sha256(
            json.dumps({"v": SIDECAR_VERSION, "settings": self.settings.as_dict(), "model": self.model["weights_sha256"],
                        "input_size": [h, w], **self._policy_key()}, sort_keys=True).encode()
        ).hexdigest()

    def _policy_key(self) -> dict:
        """The preprocessing in the key, except the shipped models' record (their keys stay as they were)."""
        record = self.model.get("preprocessing")
        return {} if record is None or record == image_input.PREPROCESSING else {"preprocessing": record}

    def sidecar(self, *, path: Path, name: str, sha256: str, size: Sequence[int], logits: np.ndarray,
                probs: np.ndarray, explained: Sequence[int], maps: dict, files: dict) -> dict:
        """One image's sidecar.

        Args:
            path: the input file. name: its relative output name. sha256: its bytes' hash.
            size: the file's ``(h, w)``.
            logits, probs: ``(K,)`` the model's scores and softmax for the image.
            explained: the class indices the maps explain.
            maps: ``{method: map}`` of the image.
            files: ``{kind: output path}`` from :func:`output_names` (recorded by base name,
                relative to the sidecar's folder).
        """
        classes = list(self.classes)
        pred = int(probs.argmax())
        h, w = self.input_size
        return {
            "version": SIDECAR_VERSION,
            "settings_key": self.key,
            "input": {"path": str(path.resolve()), "name": name, "sha256": sha256, "size": list(size)},
            "model": {**self.model, "input_size": [h, w], "classes": classes},
            "settings": self.settings.as_dict(),
            "prediction": {
                "class": classes[pred],
                "index": pred,
                "probabilities": {c: float(v) for c, v in zip(classes, probs)},
                "logits": {c: float(v) for c, v in zip(classes, logits)},
                "top5": [{"class": classes[int(c)], "index": int(c), "probability": float(probs[int(c)])}
                         for c in np.argsort(-np.asarray(probs, np.float64), kind="stable")[:5]],
            },
            "explained": [classes[c] for c in explained],
            "maps": {m: {"shape": list(a.shape), "min": float(np.nanmin(a)), "max": float(np.nanmax(a))}
                     for m, a in maps.items()},
            "files": {k: Path(v).name for k, v in files.items()},
        }


def output_names(rel: str, settings: ExplainSettings) -> dict[str, str]:
    """``{kind: path relative to the output folder}`` of an image's outputs other than its sidecar:
    ``<method>.<format>`` for each method and format, and ``panel`` when PNGs are written."""
    files = {}
    for m in settings.methods:
        for fmt in settings.formats:
            files[f"{m}.{fmt}"] = f"{rel}.{m}.{fmt}"
    if "png" in settings.formats:
        files["panel"] = f"{rel}.panel.png"
    return files


def sidecar_path(out: str | os.PathLike, rel: str) -> Path:
    """Where the sidecar of the input named ``rel`` goes: ``out/<rel>.json``."""
    return Path(out) / f"{rel}.json"


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """A sidecar's contents, or ``None`` when it is missing, unreadable or not a JSON object."""
    try:
        side = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return side if isinstance(side, dict) else None


def is_done(path: str | os.PathLike, key: str, digest: str) -> bool:
    """True when the sidecar at ``path`` records settings key ``key`` and input hash ``digest``
    and every file it lists exists. A damaged sidecar means "not done" (the image is redone)."""
    return done_digest(path, key) == digest


def done_digest(path: str | os.PathLike, key: str) -> str | None:
    """The input hash recorded by the sidecar at ``path`` when it records settings key ``key``
    and every file it lists exists, else ``None``: the image is done when its input still has
    that hash, and certainly not done (no need to hash the input) on ``None``."""
    side = read_sidecar(path)
    if side is None or side.get("settings_key") != key:
        return None
    source, files = side.get("input"), side.get("files")
    if not isinstance(source, dict) or not isinstance(source.get("sha256"), str) or not isinstance(files, dict):
        return None
    if not all(isinstance(f, str) and (Path(path).parent / f).is_file() for f in files.values()):
        return None
    return source["sha256"]


def write_sidecar(path: str | os.PathLike, side: dict) -> None:
    """Write a sidecar atomically, as indented JSON."""
    atomic_write_text(path, json.dumps(side, indent=2))
