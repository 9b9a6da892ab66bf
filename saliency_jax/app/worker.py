"""One batch of the folder job, start to finish: read the files, run every method, write the outputs.

Both engines of :func:`saliency_jax.explain_paths` use a :class:`BatchWorker`: the local engine
in its own process (overlapping the writing of one batch with the computing of the next), the
Ray engine inside each actor (:mod:`saliency_jax.app.ray_engine`). A worker holds one loaded
model and pads every batch to the same size, so each method compiles once per worker.

What a worker reports for each image is an :class:`Outcome`; it never raises for a bad input
file (that image is a ``"failed"`` outcome and the rest of the batch goes on). An output that
cannot be written raises :class:`~saliency_jax._io.OutputWriteError` (naming the file and the
errno) after that image's partial outputs are removed: an image has all its outputs and its
sidecar, or none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from saliency_jax._io import atomic_write
from saliency_jax.app import inputs, maps, panels, sidecar
from saliency_jax.model import checkpoint, data

__all__ = ["Item", "Outcome", "ReadBatch", "BatchWorker"]


@dataclasses.dataclass(frozen=True)
class Item:
    """One input to explain.

    Attributes:
        path: the input file.
        name: its output name under the output folder (the input's path relative to the folder
            it was found in; outputs are ``<name>.*``).
        sha256: the file's SHA-256 (hex), recorded in the sidecar; ``None`` when not known yet
            (:meth:`BatchWorker.read` hashes the file then, so every input is hashed once).
    """

    path: Path
    name: str
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one :class:`Item`.

    Attributes:
        path: the input path (as a string).
        status: ``"done"`` (every output and the sidecar written) or ``"failed"`` (the file could
            not be read; nothing was written for it).
        reason: why it failed (``None`` when done).
        sidecar: the sidecar's path when done.
    """

    path: str
    status: Literal["done", "failed"]
    reason: str | None = None
    sidecar: Path | None = None


@dataclasses.dataclass(frozen=True)
class ReadBatch:
    """The readable part of a batch.

    Attributes:
        items: ``(item, original (H, W))`` for every readable item, in order (its ``sha256`` set).
        pixels: ``(B, H, W, 3) uint8``, the resized images padded to the batch size by repeating
            the last one (``None`` when no item was readable).
        failed: an :class:`Outcome` for every unreadable item.
    """

    items: tuple[tuple[Item, tuple[int, int]], ...]
    pixels: np.ndarray | None
    failed: tuple[Outcome, ...]


class BatchWorker:
    """Explains batches of images with one loaded model and writes their outputs.

    Args:
        out: the output folder (exists).
        info: the run's settings, model identity, input size and classes.
        loaded: the model.
        batch_size: images per model call; every batch is padded to it.

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> from saliency_jax.app import explain
        >>> d = Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "a.png")
        >>> loaded = checkpoint.load()
        >>> info = explain.run_info(loaded, methods="occlusion", window=64, stride=64, formats="npy")
        >>> worker = BatchWorker(d, info, loaded, batch_size=1)
        >>> [o.status for o in worker.run([Item(d / "a.png", "a.png", "0" * 64)])]
        ['done']
    """

    def __init__(self, out: str | Path, info: sidecar.RunInfo, loaded: checkpoint.LoadedModel, batch_size: int):
        self.out, self.info, self.loaded, self.batch_size = Path(out), info, loaded, int(batch_size)

    def read(self, items: Sequence[Item]) -> ReadBatch:
        """Decode and resize ``items`` (at most ``batch_size``); unreadable ones become outcomes."""
        ok, images, failed = [], [], []
        for item in items:
            try:
                if item.sha256 is None:
                    item = dataclasses.replace(item, sha256=inputs.sha256_file(item.path))
            except OSError as err:
                failed.append(Outcome(str(item.path), "failed", f"cannot read file: {err}"))
                continue
            try:
                img, orig = data.load_resized(item.path, self.info.input_size)
            except (ValueError, OSError) as err:
                failed.append(Outcome(str(item.path), "failed", str(err)))
                continue
            ok.append((item, orig))
            images.append(img)
        pixels = None
        if images:
            pixels = np.stack(images + [images[-1]] * (self.batch_size - len(images)))
        return ReadBatch(tuple(ok), pixels, tuple(failed))

    def compute(self, batch: ReadBatch) -> maps.BatchMaps:
        """Every method on the batch's pixels (one model call per method, padded batch)."""
        return maps.explain_batch(self.loaded.apply_fn, self.loaded.params, batch.pixels, self.info.settings)

    def write(self, batch: ReadBatch, computed: maps.BatchMaps) -> list[Outcome]:
        """Every output of a computed batch, each image's sidecar last (:meth:`write_one` per image)."""
        return [self.write_one(batch, computed, i) for i in range(len(batch.items))]

    def write_one(self, batch: ReadBatch, computed: maps.BatchMaps, i: int) -> Outcome:
        """The outputs of the ``i``-th readable image of a computed batch, its sidecar last.

        PNGs are rendered only when ``"png"`` is among the formats.

        Raises:
            OutputWriteError: an output could not be written; the image's outputs written so far
                (and an older sidecar of it) are removed first. An interrupt removes them too.
        """
        settings, classes = self.info.settings, self.info.classes
        item, orig = batch.items[i]
        explained = maps.explained_classes(settings.target, int(computed.probs[i].argmax()), len(classes))
        files = sidecar.output_names(item.name, settings)
        side = sidecar.sidecar_path(self.out, item.name)
        per = {m: computed.maps[m][i] for m in settings.methods}
        try:
            if "npy" in settings.formats:
                for m in settings.methods:
                    atomic_write(self.out / files[f"{m}.npy"], lambda t, a=per[m]: np.save(t, a.astype(np.float32)))
            if "png" in settings.formats:
                panel, tiles = panels.render_image(batch.pixels[i].astype(np.float32) / 255.0, per, classes,
                                                   explained, computed.probs[i], settings)
                for m in settings.methods:
                    atomic_write(self.out / files[f"{m}.png"], lambda t, im=tiles[m]: im.save(t, **panels.PNG_OPTIONS))
                atomic_write(self.out / files["panel"], lambda t, im=panel: im.save(t, **panels.PNG_OPTIONS))
            sidecar.write_sidecar(side, self.info.sidecar(
                path=item.path, name=item.name, sha256=item.sha256, size=orig, logits=computed.logits[i],
                probs=computed.probs[i], explained=explained, maps=per, files=files))
        except BaseException:
            for f in [side, *(self.out / f for f in files.values())]:  # sidecar first: never one without its files
                with contextlib.suppress(OSError):
                    os.unlink(f)
            raise
        return Outcome(str(item.path), "done", None, side)

    def run(self, items: Sequence[Item]) -> list[Outcome]:
        """Read, compute and write ``items`` (any number), ``batch_size`` at a time, in order.

        Returns:
            One :class:`Outcome` per item, in the order of ``items``.

        Raises:
            OutputWriteError: an output could not be written (the run stops there; the images
                written before it are complete).
        """
        by_path: dict[str, Outcome] = {}
        for start in range(0, len(items), self.batch_size):
            batch = self.read(items[start:start + self.batch_size])
            by_path.update((o.path, o) for o in batch.failed)
            if batch.items:
                by_path.update((o.path, o) for o in self.write(batch, self.compute(batch)))
        return [by_path[str(item.path)] for item in items]
