"""The main job: heatmaps for files and folders of images, batched across files, resumable.

:func:`explain_paths` is what ``saliency-jax explain`` calls. For every image it writes, next
to each other under ``out`` (the input folder's structure is mirrored; an input ``a/b.jpg``
gives outputs named ``a/b.jpg.*``):

* ``<name>.<method>.npy``: the raw map, float32 — ``(H, W)`` for heat and signed methods
  (crop, occlusion), ``(H, W, C)`` for rgb ones (deconvnet, guided, gradient; the kinds of
  :mod:`saliency_jax.methods`); with ``target="all"`` a leading class axis
  ``(K, …)``. ``H, W`` are the model's input size: the image is brought to it exactly as the
  model card's preprocessing says (for the shipped models: bilinear, whole image, aspect ratio
  not kept; for the ImageNet models: a centred crop, bicubic), so every map is in model-input
  pixels. The maps equal the library calls (:func:`saliency_jax.attribute`, i.e.
  :func:`saliency_jax.occlusion`, :func:`saliency_jax.saliency_maps`, …) on
  :func:`saliency_jax.to_model_input` of the file.
* ``<name>.<method>.png``: the map rendered (heat maps as a colour overlay on the resized
  image; deconvnet / guided / gradient maps through :func:`saliency_jax.app.render.normalize_map`).
* ``<name>.panel.png``: image | one tile per method, captioned with the class and score,
  as in the original write-up (one row per class with ``target="all"``); for a model with more
  than 5 classes the top-5 classes and their probabilities are listed under it.
* ``<name>.photo.png``: for a model whose preprocessing crops (the ImageNet models' centre
  crop), the maps carried back over the whole original photo (resized into the crop box; the
  rest of the photo dimmed), with the top-5 classes (one explained class only).
* ``<name>.json``: the sidecar, written last — input path, size and SHA-256, model, settings,
  prediction (probabilities and logits), and per method its files, shape and value range.

Every file is written to a temporary name and renamed, and the sidecar comes last, so an
interrupted run leaves no half-written file and an image counts as done only when all its
outputs exist. A rerun skips an image whose sidecar records the same settings, the same model
weights and the same input bytes, and whose outputs all exist; ``force=True`` redoes it.
A file that cannot be read (corrupt, truncated, not an image) is reported with its path and
reason and skipped; the rest finishes. Outputs never overwrite inputs: the output folder is
never read as input, an output path that would coincide with an input is refused, and so is an
input inside the output folder (``--out`` equal to an input folder or above it): outputs would
then sit among the inputs with image suffixes, and a later run over that folder could not tell
them apart. The output folder may lie inside an input folder (it is passed over).

The output folder is checked to be writable before the model runs
(:class:`~saliency_jax._io.OutputNotWritableError`). An output that cannot be written later
(disk full, the file system turned read-only) stops the run with
:class:`~saliency_jax._io.OutputWriteError`, which names the file and the errno; that image's
partial outputs are removed, the images finished before it stay complete, and a rerun goes on
from there. After every run that finishes, ``<out>/summary.json`` records the engine, the
settings key, the counts and each input's status (:data:`SUMMARY_NAME`).

Images are processed ``batch_size`` at a time: every method runs once per batch, the last
batch padded to the same size, so each method compiles once per run. ``engine="local"`` runs
the batches in this process; ``engine="ray"`` spreads them over Ray actors, one model each,
on this machine or a cluster (:mod:`saliency_jax.app.ray_engine`, the ``ray`` extra). Both
write the same files through :class:`~saliency_jax.app.worker.BatchWorker`. One run at a time
writes to an output folder: a run holds ``<out>/.saliency-jax.lock`` and a second run into the
same folder is refused with :class:`OutputBusyError` while the first is running.

The steps live in modules of their own: :mod:`~saliency_jax.app.settings` (the options and their
checks), :mod:`~saliency_jax.app.inputs` (finding, hashing and reading the files),
:mod:`~saliency_jax.app.maps` (the library calls per batch), :mod:`~saliency_jax.app.panels`
(tiles and panels), :mod:`~saliency_jax.app.sidecar` (output names, sidecars, the rule for
"done") and :mod:`~saliency_jax.app.gallery` (``index.html``). This module runs them in order.
"""


from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from saliency_jax import _validate
from saliency_jax._io import (OutputBusyError, OutputNotWritableError, OutputWriteError, atomic_write_text,
                              folder_lock)
from saliency_jax._progress import Progress
from saliency_jax.app import gallery, inputs, models, sidecar
from saliency_jax.app.settings import FORMATS, ExplainSettings
from saliency_jax.app.worker import BatchWorker, Item, Outcome
from saliency_jax.model import checkpoint

__all__ = ["ENGINES", "SUMMARY_NAME", "ExplainResult", "OutputBusyError", "OutputWriteError", "OutputNotWritableError",
           "explain_paths", "run_info"]

#: The engines of :func:`explain_paths`.
ENGINES = ("local", "ray")

#: The run summary written into the output folder after every run that finishes: JSON with
#: ``engine``, ``settings_key``, ``settings``, ``model``, ``counts`` (done, skipped, failed,
#: ignored) and ``inputs``, one ``{"path", "name", "status", "reason", "sidecar"}`` per input in
#: input order (status ``"done"``, ``"skipped"`` or ``"failed"``; ``sidecar`` relative to the
#: output folder, ``null`` when failed), plus ``ignored`` (files without an image suffix).
SUMMARY_NAME = "summary.json"



@dataclasses.dataclass(frozen=True)
class ExplainResult:
    """What a run did.

    Attributes:
        out: the output folder.
        done: input paths explained in this run.
        skipped: input paths whose outputs were already complete (same settings, model, bytes).
        failed: ``(path, reason)`` for every input that could not be read or explained.
        ignored: files inside the given folders without an image suffix (not read).
        sidecars: the sidecar of every finished input (done or skipped), in input order.
    """

    out: Path
    done: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]
    sidecars: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        """``True`` when no input failed."""
        return not self.failed


def explain_paths(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike = "heatmaps",
    *,
    model: "str | os.PathLike | checkpoint.LoadedModel | None" = None,
    methods: str | Sequence[str] | None = None,
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: float | str = 0.0,
    options=None,
    target: str | int | None = "predicted",
    formats: str | Sequence[str] = FORMATS,
    batch_size: int = 16,
    force: bool = False,
    cmap: str = "jet",
    signed_cmap: str = "RdBu_r",
    alpha: float = 0.5,
    colorbar: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    segments: int | None = None,
) -> ExplainResult:
    """Explain every image in ``paths`` with a model; write raw maps, renderings and sidecars.

    Args:
        paths: image files and/or folders (searched recursively for image suffixes).
        out: the output folder (created). Never read as input.
        model: a checkpoint name or directory, a pretrained name (``"efficientnet-lite0"``), a
            :class:`saliency_jax.LoadedModel`, ``"package.module:function"`` (a factory of any JAX
            model: :mod:`saliency_jax.app.models`), or ``None`` for the shipped model. Images are
            brought to its input as its preprocessing says (the card's record: a stretch for the
            shipped models, a centre crop for the ImageNet ones).
        methods: registered methods (:func:`saliency_jax.methods.names`; a list or a
            comma-separated string), run and shown in registry order; default (``None``) the
            registry's default selection, the original write-up's ``crop, occlusion, deconvnet``.
        window: occlusion / crop window ``(h, w)`` or an int, in model-input pixels; default
            a quarter of the input's shorter side (32 for the shipped 128×128 model;
            :func:`saliency_jax.methods.default_window`).
        stride: ``(sh, sw)`` or an int; default a quarter of the window
            (:func:`saliency_jax.methods.default_stride`).
        fill: the occlusion fill in model-input units (``0.0``: mid-grey for the shipped model's
            ``[-1, 1]`` input), ``"mean"`` or ``"blur"``.
        options: the methods' own options, ``["METHOD.KEY=VALUE", ...]`` or ``{method: {key:
            value}}`` (:func:`saliency_jax.app.settings.check_options`), e.g.
            ``["integrated_gradients.n_steps=32"]``; recorded in the sidecars.
        target: ``"predicted"`` (each image's predicted class), ``"all"`` (every class: maps
            gain a class axis, panels one row per class), a class name or a class index.
        formats: a subset of ``("png", "npy")``.
        batch_size: images per model call (``>= 1``); the last batch is padded to it (a run
            with fewer images uses that many).
        force: redo images whose outputs are complete.
        cmap: colour map of crop heat maps (default ``"jet"``, as in the original figures).
        signed_cmap: colour map of occlusion maps, which have both signs (diverging; zero is
            its middle).
        alpha: heat-map weight of the overlays, in ``[0, 1]``.
        colorbar: draw a colour bar with the value range under each heat map.
        progress: show a progress line on stderr (default: when stderr is a terminal).
        log: called with a line for each failed input (default: print to stderr).
        engine: ``"local"`` (this process) or ``"ray"`` (Ray actors; needs the ``ray`` extra).
        address: Ray only: ``None`` starts a Ray instance inside this process; ``"auto"`` or
            ``"HOST:PORT"`` joins a running cluster.
        workers: Ray only: the number of actors (default: one per GPU when ``gpus_per_worker``
            is set, else one per CPU of the cluster).
        gpus_per_worker: Ray only: GPUs each actor reserves (default 0).
        segments: superpixels of the feature methods (``feature_ablation``, the Shapley methods;
            :func:`saliency_jax.segments`); default ``None``: each method's own (50; 8 for the
            exact ``shapley_values``).

    Returns:
        An :class:`ExplainResult`. Inputs that fail are listed there, not raised.

    Raises:
        ValueError, TypeError: bad arguments (before any image is read), including an input
            inside ``out``.
        FileNotFoundError: an input path or the model does not exist.
        CheckpointError: the model's checkpoint is damaged or incomplete.
        OutputBusyError: another run is writing to ``out``.
        OutputNotWritableError: ``out`` cannot be written (before the model runs).
        OutputWriteError: an output could not be written during the run (an ``OSError`` naming
            the file and the errno); the run stops, that image's partial outputs are removed.

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> d = tempfile.mkdtemp()
        >>> Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(f"{d}/black.png")
        >>> r = explain_paths([d], f"{d}/out", methods="occlusion", window=64, stride=64, progress=False)
        >>> r.done == (f"{d}/black.png",), np.load(f"{d}/out/black.png.occlusion.npy").shape
        (True, (128, 128))
    """
    # ---- arguments, before anything is loaded or read
    paths = _check_paths(paths)
    requested = ExplainSettings.request(methods=methods, window=window, stride=stride, fill=fill, options=options,
                                        target=target,
                                        formats=formats, cmap=cmap, signed_cmap=signed_cmap, alpha=alpha,
                                        colorbar=colorbar, segments=segments)
    batch_size = _validate.integer("batch_size", batch_size, lo=1)
    force = _validate.boolean("force", force)
    engine_options = _check_engine(engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` (={str(out)!r}) exists and is not a folder")
    found, ignored = inputs.find_images(paths, exclude=out)

    # ---- the model and the settings it completes
    loaded = models.load_model(model)
    info = run_info(loaded, requested)
    _refuse_overwriting_inputs(found, out, info.settings)
    _refuse_inputs_inside_out(paths, found, out)

    # ---- what is left to do, then do it
    show = sys.stderr.isatty() if progress is None else bool(progress)
    run = _Run(out, info, log or (lambda line: print(line, file=sys.stderr)))
    with folder_lock(out), _engine(engine, engine_options) as execute:  # the lock proves `out` writable
        pending = _pending(run, found, force)
        run.bar = Progress(len(pending), stream=sys.stderr if show else None, unit="images", rate_unit="img/s", eta=True)
        with run.bar:  # ends the line on a terminal, also after an interrupt
            execute(run, pending, loaded, min(batch_size, max(len(pending), 1)))  # a short run pads less

        order = {str(p): i for i, (p, _) in enumerate(found)}
        sidecars = tuple(run.finished[str(p)] for p, _ in found if str(p) in run.finished)
        if "png" in info.settings.formats and sidecars:
            _write_gallery(out, sidecars)
        result = ExplainResult(out, tuple(sorted(run.done, key=order.__getitem__)), tuple(run.skipped),
                               tuple(sorted(run.failed, key=lambda f: order.get(f[0], -1))), tuple(ignored), sidecars)
        _write_summary(result, found, info, engine)
    return result


def run_info(model: "str | os.PathLike | checkpoint.LoadedModel | None" = None,
             settings: ExplainSettings | None = None, **options) -> sidecar.RunInfo:
    """The checked settings of a run with ``model``, as :func:`explain_paths` completes them.

    What a :class:`~saliency_jax.app.worker.BatchWorker` needs besides the model.

    Args:
        model: as for :func:`explain_paths`.
        settings: an :class:`~saliency_jax.app.settings.ExplainSettings` (from
            :meth:`~saliency_jax.app.settings.ExplainSettings.request`), completed here for the
            model; or ``None``, and then ``options``:
        **options: the settings keywords of :func:`explain_paths` (``methods``, ``window``,
            ``stride``, ``fill``, ``target``, ``formats``, ``cmap``, ``signed_cmap``, ``alpha``,
            ``colorbar``), given to :meth:`~saliency_jax.app.settings.ExplainSettings.request`.

    Example:
        >>> run_info(methods="occlusion").settings.window
        (32, 32)
    """
    if settings is None:
        settings = ExplainSettings.request(**options)
    elif options:
        raise TypeError(f"`settings` and the options {sorted(options)} were both given; give one of them")
    loaded = models.load_model(model)
    return sidecar.RunInfo(
        settings.complete(loaded.input_size, loaded.classes),
        {"path": str(loaded.path), "weights_sha256": loaded.card.get("weights", {}).get("sha256"),
         "preprocessing": loaded.preprocessing.record()},
        tuple(loaded.input_size[:2]),
        tuple(loaded.classes),
    )


# --------------------------------------------------------------------------- arguments


def _check_paths(paths) -> list:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError(f"`paths` (={paths!r}) must be a path or a list of paths")
    return list(paths)


def _refuse_overwriting_inputs(found: Sequence[tuple[Path, str]], out: Path, settings: ExplainSettings) -> None:
    input_set = {p.resolve() for p, _ in found}
    for p, rel in found:
        for f in [*sidecar.output_names(rel, settings).values(), f"{rel}.json"]:
            if (out / f).resolve() in input_set:
                raise ValueError(f"output {str(out / f)!r} would overwrite an input; choose another `out`")


def _refuse_inputs_inside_out(paths: Sequence, found: Sequence[tuple[Path, str]], out: Path) -> None:
    """Refuse an input file or folder inside ``out`` (``out`` equal to it or above it).

    Outputs carry image suffixes; beside the inputs, a later run over that folder would take
    them for inputs. The folder form would otherwise find nothing (the output folder is never
    read) and report success for work not done, while the file form would explain the file.
    """
    root = out.resolve()
    named = [Path(p) for p in paths if Path(p).is_dir()] + [p for p, _ in found]
    for p in named:
        r = p.resolve()
        if r == root or root in r.parents:
            kind = "input folder" if p.is_dir() else "input"
            raise ValueError(
                f"`out` (={str(out)!r}) holds the {kind} {str(p)!r}; outputs would sit among the inputs and be "
                "read as inputs by a later run over that folder. Choose an output folder outside the inputs "
                "(a subfolder of an input folder is fine: it is never read as input)")


def _check_engine(engine, *, address, workers, gpus_per_worker) -> dict:
    """The engine's options, checked; the Ray-only ones are refused with the local engine."""
    engine = _validate.choice("engine", engine, ENGINES)
    given = {k: v for k, v in (("address", address), ("workers", workers), ("gpus_per_worker", gpus_per_worker))
             if v is not None}
    if engine == "local":
        if given:
            name, value = next(iter(given.items()))
            raise ValueError(f"`{name}` (={value!r}) applies to engine='ray' only; the engine is 'local'")
        return {}
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise TypeError(f"`address` (={address!r}) must be None (a Ray instance in this process), 'auto' or 'HOST:PORT'")
    if workers is not None:
        workers = _validate.integer("workers", workers, lo=1)
    if gpus_per_worker is not None:
        if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) or not gpus_per_worker >= 0:
            raise ValueError(f"`gpus_per_worker` (={gpus_per_worker!r}) must be a number >= 0")
        gpus_per_worker = float(gpus_per_worker)
    return {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker}


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class _Run:
    """One run's fixed parts (output folder, sidecar info, log) and what it has done so far.

    Outcomes are recorded by the thread that finishes them (the local writer thread, or the
    Ray engine's driver loop); the progress bar is thread-safe.
    """

    out: Path
    info: sidecar.RunInfo
    log: Callable[[str], None]
    bar: Progress | None = None
    done: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    finished: dict = dataclasses.field(default_factory=dict)  # input path -> sidecar, done or skipped

    def fail(self, path: Path | str, reason: str) -> None:
        self.failed.append((str(path), reason))
        self.log(f"skipped {str(path)!r}: {reason}")

    def record(self, outcome: Outcome) -> None:
        """Count one image's :class:`Outcome` and advance the progress line."""
        if outcome.status == "done":
            self.done.append(outcome.path)
            self.finished[outcome.path] = outcome.sidecar
        else:
            self.fail(outcome.path, outcome.reason)
        self.bar.advance(1)


@contextlib.contextmanager
def _engine(engine: str, options: dict) -> Iterator[Callable]:
    """``execute(run, pending, loaded, batch_size)`` for the engine, with its resources held.

    The Ray engine connects here (a bad address fails before any image is read) and shuts its
    actors down on leaving.
    """
    if engine == "local":
        yield _execute_local
        return
    from saliency_jax.app import ray_engine  # the optional extra, loaded only when asked for

    with ray_engine.RayEngine(**options) as ray_run:
        def execute(run: _Run, pending: list[Item], loaded: checkpoint.LoadedModel, batch_size: int) -> None:
            ray_run.run(pending, out=run.out, info=run.info, loaded=loaded, batch_size=batch_size,
                        on_outcome=run.record)

        yield execute


def _pending(run: _Run, found: Sequence[tuple[Path, str]], force: bool) -> list[Item]:
    """The inputs left to do; finished ones are recorded as skipped, unhashable ones as failed.

    An input is hashed here only when its sidecar could make it done (same settings key, every
    file present); the others are hashed by :meth:`BatchWorker.read` on the reader thread, so
    every input is hashed once.
    """
    pending = []
    key = run.info.key
    for p, rel in found:
        side = sidecar.sidecar_path(run.out, rel)
        recorded = None if force else sidecar.done_digest(side, key)
        if recorded is None:
            pending.append(Item(p, rel))
            continue
        try:
            digest = inputs.sha256_file(p)
        except OSError as err:
            run.fail(p, f"cannot read file: {err}")
            continue
        if digest == recorded:
            run.skipped.append(str(p))
            run.finished[str(p)] = side
        else:
            pending.append(Item(p, rel, digest))
    return pending


def _execute_local(run: _Run, pending: list[Item], loaded: checkpoint.LoadedModel, batch_size: int) -> None:
    """Read, compute and write ``pending`` in this process: :meth:`BatchWorker.run`, a pipeline
    (reader thread, model on this thread, writer thread); each outcome is recorded as it comes."""
    BatchWorker(run.out, run.info, loaded, batch_size).run(pending, on_outcome=run.record)


def _write_summary(result: ExplainResult, found: Sequence[tuple[Path, str]], info: sidecar.RunInfo,
                   engine: str) -> None:
    """``out/summary.json`` (:data:`SUMMARY_NAME`), atomically."""
    done, skipped = set(result.done), set(result.skipped)
    failed = dict(result.failed)
    sidecars = {str(p): sidecar.sidecar_path(result.out, rel) for p, rel in found}
    entries = []
    for p, rel in found:
        key = str(p)
        status = "done" if key in done else "skipped" if key in skipped else "failed" if key in failed else "pending"
        side = None if status in ("failed", "pending") else Path(os.path.relpath(sidecars[key], result.out)).as_posix()
        entries.append({"path": key, "name": rel, "status": status, "reason": failed.get(key), "sidecar": side})
    summary = {
        "engine": engine,
        "settings_key": info.key,
        "settings": info.settings.as_dict(),
        "model": info.model,
        "counts": {"inputs": len(found), "done": len(done), "skipped": len(skipped), "failed": len(failed),
                   "ignored": len(result.ignored)},
        "inputs": entries,
        "ignored": list(result.ignored),
    }
    atomic_write_text(result.out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")


def _write_gallery(out: Path, sidecars: Sequence[Path]) -> None:
    """``out/index.html``: the panel of every finished image that has one, captioned with its class."""
    figures = []
    for s in sidecars:
        side = sidecar.read_sidecar(s)
        panel = None if side is None else side.get("files", {}).get("panel")
        if panel is None:
            continue
        pred, name = side["prediction"], side["input"]["name"]
        src = Path(os.path.relpath(s.parent / panel, out)).as_posix()
        figures.append(gallery.Figure(src, name, f"{name}: {pred['class']} (P={pred['probabilities'][pred['class']]:.2f})"))
    gallery.write_gallery(out / "index.html", "explain", f"{len(figures)} images.", figures)
