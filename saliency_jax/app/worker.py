"""One batch of the folder job, start to finish: read the files, run every method, write the outputs.

Both engines of :func:`saliency_jax.explain_paths` use a :class:`BatchWorker`: the local engine
in its own process, the Ray engine inside each actor (:mod:`saliency_jax.app.ray_engine`).
:meth:`BatchWorker.run` keeps the model busy: the next batch is read and the previous one
rendered and written on two threads while the current one is computed. A worker holds one loaded
model and pads every batch to the same size, so each method compiles once per worker.

What a worker reports for each image is an :class:`Outcome`; it never raises for a bad input
file (that image is a ``"failed"`` outcome and the rest of the batch goes on). An output that
cannot be written raises :class:`~saliency_jax._io.OutputWriteError` (naming the file and the
errno) after that image's partial outputs are removed: an image has all its outputs and its
sidecar, or none of them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import os
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from PIL import Image

from saliency_jax._io import atomic_write
from saliency_jax.app import inputs, maps, models, panels, render, sidecar
from saliency_jax.model import checkpoint, data

__all__ = ["RENDER_THREADS", "PHOTO_SIDE", "Item", "Outcome", "Prepared", "ReadBatch", "BatchWorker"]

#: Threads that render and encode the images of one batch at once (at most 4, at most the CPUs).
RENDER_THREADS = max(1, min(4, os.cpu_count() or 1))
#: The longest side of the whole-photo view (``<name>.photo.png``); larger photos are shown shrunk.
PHOTO_SIDE = 512


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
class Prepared:
    """One image's outputs, encoded in memory and not yet written (:meth:`BatchWorker.prepare`).

    Attributes:
        item: the input.
        payloads: ``{path relative to the output folder: file bytes}``, every output but the sidecar.
        sidecar: the sidecar's contents (written last).
    """

    item: Item
    payloads: dict
    sidecar: dict


def _encoded(save: Callable[[io.BytesIO], object]) -> bytes:
    """The bytes ``save`` writes into a file object (``np.save``, ``PIL.Image.save``)."""
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class ReadBatch:
    """The readable part of a batch.

    Attributes:
        items: ``(item, original (H, W))`` for every readable item, in order (its ``sha256`` set).
        pixels: ``(B, H, W, 3) uint8``, the resized images padded to the batch size by repeating
            the last one (``None`` when no item was readable).
        failed: an :class:`Outcome` for every unreadable item.
        inputs: ``(B, H, W, C) float32`` model input made by the model's preprocessing (padded
            like ``pixels``), or ``None`` (then ``pixels`` through the shipped models' record).
        photos: per readable item, ``(photo, box)`` for the whole-photo view — the photo shrunk
            to at most :data:`PHOTO_SIDE` px as ``(h, w, 3) uint8`` and the crop box
            ``(top, left, height, width)`` in its pixels — when the model's preprocessing crops
            and PNGs are written; else ``None``.
    """

    items: tuple[tuple[Item, tuple[int, int]], ...]
    pixels: np.ndarray | None
    failed: tuple[Outcome, ...]
    inputs: np.ndarray | None = None
    photos: tuple | None = None


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
        """Decode ``items`` (at most ``batch_size``) and bring them to model input as the model's
        preprocessing says (the card's record; a factory model's own ``preprocess``); unreadable
        ones become outcomes."""
        ok, images, xs, photos, failed = [], [], [], [], []
        policy = self.loaded.preprocessing
        own = isinstance(self.loaded, models.FactoryModel)
        view = "png" in self.info.settings.formats and policy.crop is not None
        for item in items:
            try:
                if item.sha256 is None:
                    item = dataclasses.replace(item, sha256=inputs.sha256_file(item.path))
            except OSError as err:
                failed.append(Outcome(str(item.path), "failed", f"cannot read file: {err}"))
                continue
            try:
                rgb = data.load_image(item.path)
                img = policy.fit(Image.fromarray(rgb), self.info.input_size)
                x = self.loaded.preprocess(rgb) if own else policy(img)
                box = policy.crop_box(rgb.shape[:2], self.info.input_size)
            except (ValueError, OSError) as err:
                failed.append(Outcome(str(item.path), "failed", str(err)))
                continue
            ok.append((item, (int(rgb.shape[0]), int(rgb.shape[1]))))
            images.append(img)
            xs.append(x)
            photos.append(_photo_view(rgb, box) if view else None)
        pixels = inputs_ = None
        if images:
            pad = self.batch_size - len(images)
            pixels = np.stack(images + [images[-1]] * pad)
            inputs_ = np.stack(xs + [xs[-1]] * pad).astype(np.float32)
        return ReadBatch(tuple(ok), pixels, tuple(failed), inputs_, tuple(photos) if view else None)

    def compute(self, batch: ReadBatch) -> maps.BatchMaps:
        """Every method on the batch's pixels (one model call per method, padded batch)."""
        return maps.explain_batch(self.loaded.apply_fn, self.loaded.params, batch.pixels, self.info.settings,
                                  inputs=batch.inputs)

    def write(self, batch: ReadBatch, computed: maps.BatchMaps) -> list[Outcome]:
        """Every output of a computed batch, each image's sidecar last (:meth:`write_one` per image)."""
        return [self.write_one(batch, computed, i) for i in range(len(batch.items))]

    def write_one(self, batch: ReadBatch, computed: maps.BatchMaps, i: int) -> Outcome:
        """The outputs of the ``i``-th readable image of a computed batch, its sidecar last:
        :meth:`commit` of :meth:`prepare`.

        Raises:
            OutputWriteError: see :meth:`commit`.
        """
        return self.commit(self.prepare(batch, computed, i))

    def prepare(self, batch: ReadBatch, computed: maps.BatchMaps, i: int) -> Prepared:
        """The encoded outputs of the ``i``-th readable image of a computed batch, in memory.

        No file is touched, so images can be prepared on several threads at once. PNGs are
        rendered only when ``"png"`` is among the formats.
        """
        settings, classes = self.info.settings, self.info.classes
        item, orig = batch.items[i]
        explained = maps.explained_classes(settings.target, int(computed.probs[i].argmax()), len(classes))
        files = sidecar.output_names(item.name, settings)
        per = {m: computed.maps[m][i] for m in settings.methods}
        payloads = {}
        if "npy" in settings.formats:
            for m in settings.methods:
                payloads[files[f"{m}.npy"]] = _encoded(lambda f, a=per[m]: np.save(f, a.astype(np.float32)))
        if "png" in settings.formats:
            panel, tiles = panels.render_image(render.from_uint8(batch.pixels[i]), per, classes,
                                               explained, computed.probs[i], settings)
            if len(classes) > panels.TOP_K:  # many classes: the top-5 under the panel
                panel = render.stack([panel, panels.top_k_caption(classes, computed.probs[i])])
            for m in settings.methods:
                payloads[files[f"{m}.png"]] = _encoded(lambda f, im=tiles[m]: im.save(f, **panels.PNG_OPTIONS))
            payloads[files["panel"]] = _encoded(lambda f, im=panel: im.save(f, **panels.PNG_OPTIONS))
            if batch.photos is not None and len(explained) == 1:  # the maps over the whole photo
                photo, box = batch.photos[i]
                view = panels.render_photo(render.from_uint8(photo), box, per, classes, explained[0],
                                           computed.probs[i], settings)
                files = {**files, "photo": f"{item.name}.photo.png"}
                payloads[files["photo"]] = _encoded(lambda f, im=view: im.save(f, **panels.PNG_OPTIONS))
        side = self.info.sidecar(path=item.path, name=item.name, sha256=item.sha256, size=orig,
                                 logits=computed.logits[i], probs=computed.probs[i], explained=explained, maps=per,
                                 files=files)
        return Prepared(item, payloads, side)

    def commit(self, prepared: Prepared) -> Outcome:
        """Write a prepared image's files (each atomically), its sidecar last.

        Raises:
            OutputWriteError: an output could not be written; the image's outputs written so far
                (and an older sidecar of it) are removed first. An interrupt removes them too.
        """
        item = prepared.item
        side = sidecar.sidecar_path(self.out, item.name)
        try:
            for name, payload in prepared.payloads.items():
                atomic_write(self.out / name, lambda t, b=payload: Path(t).write_bytes(b))
            sidecar.write_sidecar(side, prepared.sidecar)
        except BaseException:
            for f in [side, *(self.out / name for name in prepared.payloads)]:  # sidecar first: never one without its files
                with contextlib.suppress(OSError):
                    os.unlink(f)
            raise
        return Outcome(str(item.path), "done", None, side)

    def run(self, items: Sequence[Item], on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Read, compute and write ``items`` (any number), ``batch_size`` at a time, as a pipeline.

        While the model computes batch b (the calling thread), a reader thread hashes, decodes
        and resizes batch b + 1 and a writer thread writes batch b − 1, in order, as
        :data:`RENDER_THREADS` threads render and encode its images (:meth:`prepare`; XLA, zlib
        and PIL's codecs release the GIL, and after the last model call the rendering has every
        core). At most one batch waits on each side. A write error stops the run before the
        next model call; no image after the failed one is written. On an interrupt of the calling thread
        the batch being written is finished first (leaving the pool waits for it).

        Args:
            items: the inputs.
            on_outcome: called with each :class:`Outcome` as soon as it is known (from the
                calling thread for unreadable files, from the writer thread for written ones).

        Returns:
            One :class:`Outcome` per item, in the order of ``items``.

        Raises:
            OutputWriteError: an output could not be written (the run stops there; the images
                written before it are complete and were reported to ``on_outcome``).
        """
        by_path: dict[str, Outcome] = {}

        def report(outcome: Outcome) -> None:
            by_path[outcome.path] = outcome
            if on_outcome is not None:
                on_outcome(outcome)

        def write(batch: ReadBatch, computed: maps.BatchMaps) -> None:
            futures = [renderers.submit(self.prepare, batch, computed, i) for i in range(len(batch.items))]
            try:
                for f in futures:  # committed in order: a failure leaves no later image behind
                    report(self.commit(f.result()))
            finally:
                for f in futures:
                    f.cancel()

        chunks = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        with concurrent.futures.ThreadPoolExecutor(1, "sj-read") as reader, \
                concurrent.futures.ThreadPoolExecutor(1, "sj-write") as writer, \
                concurrent.futures.ThreadPoolExecutor(RENDER_THREADS, "sj-render") as renderers:
            next_read = reader.submit(self.read, chunks[0]) if chunks else None
            in_flight = None
            for b in range(len(chunks)):
                batch = next_read.result()
                next_read = reader.submit(self.read, chunks[b + 1]) if b + 1 < len(chunks) else None
                for outcome in batch.failed:
                    report(outcome)
                if in_flight is not None and in_flight.done():
                    in_flight.result()  # a write error stops the run before the next model call
                if not batch.items:
                    continue
                computed = self.compute(batch)
                if in_flight is not None:
                    in_flight.result()
                in_flight = writer.submit(write, batch, computed)
            if in_flight is not None:
                in_flight.result()
        return [by_path[str(item.path)] for item in items]


def _photo_view(rgb: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo shrunk to at most :data:`PHOTO_SIDE` px on its longer side, and ``box`` in its pixels."""
    h, w = rgb.shape[:2]
    f = min(1.0, PHOTO_SIDE / max(h, w))
    if f < 1.0:
        small = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))
    else:
        small = rgb
    top, left, bh, bw = box
    sh, sw = small.shape[:2]
    t, l = min(int(top * f), sh - 1), min(int(left * f), sw - 1)
    return small, (t, l, max(1, min(round(bh * f), sh - t)), max(1, min(round(bw * f), sw - l)))
