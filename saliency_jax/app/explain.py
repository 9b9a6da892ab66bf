"""The main job: heatmaps for files and folders of images, batched across files, resumable.

:func:`explain_paths` is what ``saliency-jax explain`` calls. For every image it writes, next
to each other under ``out`` (the input folder's structure is mirrored; an input ``a/b.jpg``
gives outputs named ``a/b.jpg.*``):

* ``<name>.<method>.npy``: the raw map, float32 — ``(H, W)`` for occlusion and crop,
  ``(H, W, C)`` for deconvnet, guided and gradient; with ``target="all"`` a leading class axis
  ``(K, …)``. ``H, W`` are the model's input size: the image is resized to it exactly as in
  training (bilinear, whole image, aspect ratio not kept), so every map is in model-input
  pixels. The maps equal the library calls (:func:`saliency_jax.occlusion`,
  :func:`saliency_jax.saliency_maps`) on :func:`saliency_jax.to_model_input` of the file.
* ``<name>.<method>.png``: the map rendered (heat maps as a colour overlay on the resized
  image; deconvnet / guided / gradient maps through :func:`saliency_jax.app.render.normalize_map`).
* ``<name>.panel.png``: image | one tile per method, captioned with the class and score,
  as in the original write-up (one row per class with ``target="all"``).
* ``<name>.json``: the sidecar, written last — input path, size and SHA-256, model, settings,
  prediction (probabilities and logits), and per method its files, shape and value range.

Every file is written to a temporary name and renamed, and the sidecar comes last, so an
interrupted run leaves no half-written file and an image counts as done only when all its
outputs exist. A rerun skips an image whose sidecar records the same settings, the same model
weights and the same input bytes, and whose outputs all exist; ``force=True`` redoes it.
A file that cannot be read (corrupt, truncated, not an image) is reported with its path and
reason and skipped; the rest finishes. Outputs never overwrite inputs: the output folder is
never read as input, and an output path that would coincide with an input is refused.

Images are processed ``batch_size`` at a time: every method runs once per batch, the last
batch padded to the same size, so each method compiles once per run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import html
import json
import math
import numbers
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from saliency_jax.app import render
from saliency_jax.model import checkpoint, data
from saliency_jax._io import atomic_write, atomic_write_text
from saliency_jax.backprop import saliency_maps
from saliency_jax.occlude.engine import occlusion

__all__ = [
    "EXPLAIN_METHODS",
    "DEFAULT_METHODS",
    "FORMATS",
    "ExplainSettings",
    "ExplainResult",
    "explain_paths",
    "find_images",
]

#: Methods ``explain_paths`` can run, in panel order.
EXPLAIN_METHODS: tuple[str, ...] = ("crop", "occlusion", "deconvnet", "guided", "gradient")
#: The original write-up's panel: image | crop heat map | occlusion heat map | deconvnet projection.
DEFAULT_METHODS: tuple[str, ...] = ("crop", "occlusion", "deconvnet")
FORMATS: tuple[str, ...] = ("png", "npy")
_BACKPROP = {"deconvnet": "deconvnet", "guided": "guided", "gradient": "gradient"}
_HEAT = ("crop", "occlusion")
_SIDECAR_VERSION = 1
#: zlib level 1: several times faster to encode than Pillow's default level 6, for ~15 % more bytes
#: (timed on one panel while writing this, not a recorded benchmark).
_PNG = {"format": "PNG", "compress_level": 1}


@dataclasses.dataclass(frozen=True)
class ExplainSettings:
    """Everything that decides an image's outputs (recorded in each sidecar; a rerun with other
    settings redoes the image). See :func:`explain_paths` for the meaning of each field."""

    methods: tuple[str, ...]
    window: tuple[int, int]
    stride: tuple[int, int]
    fill: float | str
    target: str | int
    formats: tuple[str, ...]
    cmap: str
    signed_cmap: str
    alpha: float
    colorbar: bool

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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


# --------------------------------------------------------------------------- validation


def _pair(name: str, value, lo: int = 1) -> tuple[int, int]:
    vals = (value, value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if (
        not isinstance(vals, (tuple, list))
        or len(vals) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo for v in vals)
    ):
        raise ValueError(f"`{name}` (={value!r}) must be an int >= {lo} or a pair of them")
    return int(vals[0]), int(vals[1])


def _names(name: str, value, allowed: Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)) or not items:
        raise ValueError(f"`{name}` (={value!r}) must be a non-empty list from {allowed}")
    out = []
    for item in items:
        item = item.strip() if isinstance(item, str) else item
        if item not in allowed:
            raise ValueError(f"`{name}` (={value!r}): {item!r} is not one of {allowed}")
        if item not in out:
            out.append(item)
    return tuple(out)


def _check_fill(fill) -> float | str:
    if isinstance(fill, str):
        try:
            fill = float(fill)
        except ValueError:
            if fill not in ("mean", "blur"):
                raise ValueError(f"`fill` (={fill!r}) must be a number (model-input units), 'mean' or 'blur'") from None
            return fill
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(fill):
        raise ValueError(f"`fill` (={fill!r}) must be a finite number (model-input units), 'mean' or 'blur'")
    return float(fill)


def _check_target(target, classes: Sequence[str]) -> str | int:
    if target is None or target == "predicted":
        return "predicted"
    if target == "all":
        return "all"
    if isinstance(target, str):
        if target in classes:
            return classes.index(target)
        if target.lstrip("-").isdigit():
            target = int(target)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool) and 0 <= target < len(classes):
        return int(target)
    raise ValueError(
        f"`target` (={target!r}) must be 'predicted', 'all', a class name in {tuple(classes)} "
        f"or a class index in [0, {len(classes)})"
    )


def _check_cmap(name: str, cmap) -> str:
    from matplotlib import colormaps

    if not isinstance(cmap, str) or cmap not in colormaps:
        raise ValueError(f"`{name}` (={cmap!r}) must be a matplotlib colour-map name, e.g. 'jet', 'viridis', 'RdBu_r'")
    return cmap


# --------------------------------------------------------------------------- inputs


def find_images(paths: Iterable[str | os.PathLike], *, exclude: str | os.PathLike | None = None,
                extensions: Sequence[str] = data.IMAGE_EXTENSIONS):
    """The image files named by ``paths`` (files, or folders searched recursively).

    Files inside a folder are taken when their suffix is an image suffix (case-insensitive);
    hidden files and folders and everything under ``exclude`` (the output folder) are passed
    over; symbolic links to folders are not followed. A file named explicitly is always taken
    (a non-image is reported when it is read).

    Args:
        paths: files or folders.
        exclude: a folder whose contents are never inputs.
        extensions: the image suffixes looked for inside folders.

    Returns:
        ``(inputs, ignored)``: ``inputs`` is a list of ``(path, relative output name)`` in a
        stable order (sorted within each folder); ``ignored`` lists the folder files without an
        image suffix. Output names mirror a folder's tree; with several arguments each
        folder's names start with its base name; a file argument keeps its name; clashes get
        ``-2``, ``-3`` … (case-insensitively, for case-insensitive file systems).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("`paths` must name at least one image file or folder")
    exts = tuple(e.lower() for e in extensions)
    skip = Path(exclude).resolve() if exclude is not None else None
    inputs: list[tuple[Path, str]] = []
    ignored: list[str] = []
    used: set[str] = set()
    seen: set[Path] = set()

    def unique(first: str, rest: str = "") -> str:
        # the first component gets -2, -3 … until the whole name is new (case-insensitively)
        stem, dot, suffix = first.partition(".") if not rest else (first, "", "")
        k, name = 1, first
        while (name + rest).lower() in used:
            k += 1
            name = f"{stem}-{k}{dot}{suffix}"
        return name

    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"input path {str(p)!r} does not exist")
        if p.is_file():
            found = [(p, unique(p.name))]
        else:
            prefix = unique(p.resolve().name or "input", "/") if len(paths) > 1 else ""
            found = []
            for root, dirs, files in os.walk(p):
                rootp = Path(root)
                if skip is not None and (rootp.resolve() == skip or skip in rootp.resolve().parents):
                    dirs[:] = []
                    continue
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    fp = rootp / f
                    if f.startswith("."):
                        continue
                    if fp.suffix.lower() not in exts:
                        ignored.append(str(fp))
                        continue
                    rel = fp.relative_to(p).as_posix()
                    found.append((fp, f"{prefix}/{rel}" if prefix else rel))
        for fp, rel in found:
            key = fp.resolve()
            if key in seen:
                continue
            seen.add(key)
            used.add(rel.lower())
            if "/" in rel:
                used.add(rel.split("/")[0].lower() + "/")
            inputs.append((fp, rel))
    return inputs, ignored


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """``(H, W, 3) uint8`` at the model's size (as :func:`data.to_model_input` resizes) and the
    original ``(h, w)``. Raises ValueError for anything PIL cannot decode."""
    try:
        rgb = data.load_image(path)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image too large to decode safely: {err}") from err
    except (ValueError, OSError):
        raise
    except Exception as err:  # decoders of damaged files raise odd types (struct.error, EOFError …)
        raise ValueError(f"cannot read image {str(path)!r}: {type(err).__name__}: {err}") from err
    h, w = size
    im = Image.fromarray(rgb)
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    return np.asarray(im, np.uint8), rgb.shape[:2]


# --------------------------------------------------------------------------- computation


def compute_maps(apply_fn: Callable, params: Any, x: jax.Array, targets, settings: ExplainSettings) -> dict:
    """Every method of ``settings`` on a batch.

    Args:
        apply_fn, params: the model.
        x: ``(N, H, W, C)`` model input.
        targets: ``(N,)`` int class per image, or ``"all"``.
        settings: the methods, window, stride and fill.

    Returns:
        ``{method: maps}`` as numpy float32 arrays (shapes as in the module docstring, with the
        batch axis first).
    """
    out = {}
    for method in settings.methods:
        if method in _HEAT:
            kw = {"mode": "crop"} if method == "crop" else {"fill": settings.fill}
            maps = occlusion(apply_fn, params, x, window=settings.window, stride=settings.stride, target=targets, **kw)
        else:
            maps = saliency_maps(apply_fn, params, x, targets, rule=_BACKPROP[method])
        out[method] = np.asarray(maps, np.float32)
    return out


# --------------------------------------------------------------------------- rendering


def _caption(method: str, cls: str) -> str:
    return {
        "crop": f"crop: logit({cls})",
        "occlusion": f"occlusion: drop in logit({cls})",
    }.get(method, f"{method} ({cls})")


def _tile(method: str, display: np.ndarray, m: np.ndarray, settings: ExplainSettings):
    """A rendered tile ``(H, W, 3)`` in [0, 1] and its colour bar (or None)."""
    if method in _HEAT:
        cmap = settings.signed_cmap if method == "occlusion" else settings.cmap
        rng = render.heat_range(m, cmap=cmap)
        return render.overlay(display, m, alpha=settings.alpha, cmap=cmap, vmin=rng[1], vmax=rng[2]), rng
    return np.asarray(render.normalize_map(m)), None


def render_image(display: np.ndarray, maps: dict, classes: Sequence[str], explained: Sequence[int],
                 probs: np.ndarray, settings: ExplainSettings, title: str | None = None):
    """Panel and per-method tiles for one image.

    Args:
        display: ``(H, W, 3)`` floats in [0, 1], the resized image.
        maps: ``{method: map}``; with several explained classes, each map has a class axis.
        classes: class names. explained: the class indices the maps explain (one, or all).
        probs: ``(K,)`` softmax probabilities of the image.
        title: the image tile's caption (default: the predicted class and its probability).

    Returns:
        ``(panel PIL image, {method: PIL image})``; a method's image stacks one tile per
        explained class.
    """
    rows, per_method = [], {m: [] for m in settings.methods}
    pred = int(np.argmax(probs))
    for j, c in enumerate(explained):
        cls = classes[c]
        tiles, captions, bars = [display], [(title or f"{classes[pred]}: P={probs[pred]:.2f}") if j == 0 else f"class {cls}"], [None]
        for method in settings.methods:
            m = maps[method] if len(explained) == 1 else maps[method][c]
            tile, bar = _tile(method, display, m, settings)
            tiles.append(tile)
            captions.append(_caption(method, cls))
            bars.append(bar if settings.colorbar else None)
            per_method[method].append(
                render.panel([tile], [_caption(method, cls)], bars=[bars[-1]], scale=1)
            )
        rows.append(render.panel(tiles, captions, bars=bars if settings.colorbar else None))
    return render.stack(rows), {m: render.stack(ims) for m, ims in per_method.items()}


# --------------------------------------------------------------------------- progress


class _Progress:
    """``12/64 images  3.1 img/s  ETA 0:00:16`` on stderr (redrawn in place on a terminal)."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.total, self.enabled = total, enabled and total > 0
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.count = 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.lock = threading.Lock()  # advanced by the reader (failed files) and the writer thread

    def advance(self, n: int) -> None:
        with self.lock:
            self.count += n
            if self.enabled:
                self._draw()

    def _draw(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 else float("nan")
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "?"
        width = 24
        filled = int(width * self.count / self.total)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} images  {rate:.2f} img/s  ETA {eta}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.count >= self.total:
            self.stream.write("\n")
        self.stream.flush()


# --------------------------------------------------------------------------- the job


def _outputs(rel: str, settings: ExplainSettings) -> dict[str, str]:
    files = {}
    for m in settings.methods:
        for fmt in settings.formats:
            files[f"{m}.{fmt}"] = f"{rel}.{m}.{fmt}"
    if "png" in settings.formats:
        files["panel"] = f"{rel}.panel.png"
    return files


def _is_done(sidecar: Path, key: str, digest: str) -> bool:
    try:
        side = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if side.get("settings_key") != key or side.get("input", {}).get("sha256") != digest:
        return False
    return all((sidecar.parent / f).is_file() for f in side.get("files", {}).values())


def _write_gallery(out: Path, sidecars: Sequence[Path]) -> None:
    cards = []
    for s in sidecars:
        try:
            side = json.loads(s.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        panel = side.get("files", {}).get("panel")
        if panel is None:
            continue
        src = os.path.relpath(s.parent / panel, out)
        pred = side["prediction"]
        cards.append(
            f'<figure><img src="{html.escape(Path(src).as_posix())}" alt="{html.escape(side["input"]["name"])}">'
            f'<figcaption>{html.escape(side["input"]["name"])}: {html.escape(pred["class"])} '
            f'(P={pred["probabilities"][pred["class"]]:.2f})</figcaption></figure>'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>saliency_jax explain</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{margin:1em 0}img{image-rendering:pixelated}</style>"
        f"</head><body><h1>saliency_jax explain</h1><p>{len(cards)} images.</p>{''.join(cards)}</body></html>"
    )
    atomic_write_text(out / "index.html", page)


def explain_paths(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike = "heatmaps",
    *,
    model: "str | os.PathLike | checkpoint.LoadedModel | None" = None,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: float | str = 0.0,
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
) -> ExplainResult:
    """Explain every image in ``paths`` with a model; write raw maps, renderings and sidecars.

    Args:
        paths: image files and/or folders (searched recursively for image suffixes).
        out: the output folder (created). Never read as input.
        model: a checkpoint name or directory, a :class:`saliency_jax.LoadedModel`, or ``None``
            for the shipped model.
        methods: a subset of :data:`EXPLAIN_METHODS` (a list or a comma-separated string);
            default the original write-up's ``crop, occlusion, deconvnet``.
        window: occlusion / crop window ``(h, w)`` or an int, in model-input pixels; default
            a quarter of the input's shorter side (32 for the shipped 128×128 model).
        stride: ``(sh, sw)`` or an int; default a quarter of the window.
        fill: the occlusion fill in model-input units (``0.0``: mid-grey for the shipped model's
            ``[-1, 1]`` input), ``"mean"`` or ``"blur"``.
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

    Returns:
        An :class:`ExplainResult`. Inputs that fail are listed there, not raised.

    Raises:
        ValueError, TypeError: bad arguments (before any image is read).
        FileNotFoundError: an input path or the model does not exist.

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
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError(f"`paths` (={paths!r}) must be a path or a list of paths")
    methods = _names("methods", methods, EXPLAIN_METHODS)
    methods = tuple(m for m in EXPLAIN_METHODS if m in methods)
    formats = _names("formats", formats, FORMATS)
    fill = _check_fill(fill)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"`batch_size` (={batch_size!r}) must be an int >= 1")
    for name, flag in (("force", force), ("colorbar", colorbar)):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` (={flag!r}) must be a bool")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` (={alpha!r}) must be a number in [0, 1]")
    cmap, signed_cmap = _check_cmap("cmap", cmap), _check_cmap("signed_cmap", signed_cmap)
    if window is not None:
        window = _pair("window", window)
    if stride is not None:
        stride = _pair("stride", stride)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` (={str(out)!r}) exists and is not a folder")
    inputs, ignored = find_images(paths, exclude=out)
    log = log or (lambda line: print(line, file=sys.stderr))

    # ---- the model and the settings it completes
    loaded = model if isinstance(model, checkpoint.LoadedModel) else checkpoint.load(model)
    classes = list(loaded.classes)
    h, w = loaded.input_size[:2]
    target = _check_target(target, classes)
    if window is None:
        window = (max(1, min(h, w) // 4),) * 2
    if stride is None:
        stride = (max(1, window[0] // 4), max(1, window[1] // 4))
    if window[0] > h or window[1] > w:
        raise ValueError(f"`window` (={window}) must fit inside the model's input (H={h}, W={w})")
    if stride[0] > window[0] or stride[1] > window[1]:
        raise ValueError(f"`stride` (={stride}) must not exceed `window` (={window}): pixels would be skipped")
    settings = ExplainSettings(methods, window, stride, fill, target, formats, cmap, signed_cmap, float(alpha), colorbar)
    model_id = {"path": str(loaded.path), "weights_sha256": loaded.card.get("weights", {}).get("sha256")}
    key = hashlib.sha256(
        json.dumps({"v": _SIDECAR_VERSION, "settings": settings.as_dict(), "model": model_id["weights_sha256"],
                    "input_size": [h, w]}, sort_keys=True).encode()
    ).hexdigest()

    # ---- outputs never overwrite inputs
    input_set = {p.resolve() for p, _ in inputs}
    for p, rel in inputs:
        for f in [*_outputs(rel, settings).values(), f"{rel}.json"]:
            if (out / f).resolve() in input_set:
                raise ValueError(f"output {str(out / f)!r} would overwrite an input; choose another `out`")

    # ---- what is left to do
    pending, skipped, failed, finished = [], [], [], {}
    for p, rel in inputs:
        sidecar = out / f"{rel}.json"
        try:
            digest = _sha256(p)
        except OSError as err:
            failed.append((str(p), f"cannot read file: {err}"))
            log(f"skipped {str(p)!r}: cannot read file: {err}")
            continue
        if not force and _is_done(sidecar, key, digest):
            skipped.append(str(p))
            finished[str(p)] = sidecar
        else:
            pending.append((p, rel, digest))

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = _Progress(len(pending), show)
    done = []
    apply_fn, params = loaded.apply_fn, loaded.params

    def write(batch, arr, maps, logits, probs):
        """Every output of a computed batch, each image's sidecar last."""
        for i, (p, rel, digest, orig) in enumerate(batch):
            pred = int(probs[i].argmax())
            explained = list(range(len(classes))) if target == "all" else [pred if target == "predicted" else target]
            files = _outputs(rel, settings)
            per = {m: maps[m][i] for m in methods}
            if "npy" in formats:
                for m in methods:
                    atomic_write(out / files[f"{m}.npy"], lambda t, a=per[m]: np.save(t, a.astype(np.float32)))
            if "png" in formats:
                panel, tiles = render_image(arr[i].astype(np.float32) / 255.0, per, classes, explained, probs[i], settings)
                for m in methods:
                    atomic_write(out / files[f"{m}.png"], lambda t, im=tiles[m]: im.save(t, **_PNG))
                atomic_write(out / files["panel"], lambda t, im=panel: im.save(t, **_PNG))
            sidecar = out / f"{rel}.json"
            side = {
                "version": _SIDECAR_VERSION,
                "settings_key": key,
                "input": {"path": str(p.resolve()), "name": rel, "sha256": digest, "size": list(orig)},
                "model": {**model_id, "input_size": [h, w], "classes": classes},
                "settings": settings.as_dict(),
                "prediction": {
                    "class": classes[pred],
                    "index": pred,
                    "probabilities": {c: float(v) for c, v in zip(classes, probs[i])},
                    "logits": {c: float(v) for c, v in zip(classes, logits[i])},
                },
                "explained": [classes[c] for c in explained],
                "maps": {m: {"shape": list(per[m].shape), "min": float(np.nanmin(per[m])),
                             "max": float(np.nanmax(per[m]))} for m in methods},
                # paths relative to the sidecar's folder
                "files": {k: Path(v).name for k, v in files.items()},
            }
            atomic_write_text(sidecar, json.dumps(side, indent=2))
            done.append(str(p))
            finished[str(p)] = sidecar
            bar.advance(1)

    # One writer thread renders and writes batch b while the model computes batch b + 1 (XLA and
    # PNG encoding both release the GIL). At most one batch is in flight; its errors (and an
    # interrupt raised while writing) surface here. On an interrupt of the main thread the
    # batch being written is finished first (leaving the pool waits for it).
    batch_size = min(batch_size, max(len(pending), 1))  # a short run does not pad to a long batch
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        in_flight = None
        for start in range(0, len(pending), batch_size):
            batch, images = [], []
            for p, rel, digest in pending[start:start + batch_size]:
                try:
                    img, orig = _read(p, (h, w))
                except (ValueError, OSError) as err:
                    failed.append((str(p), str(err)))
                    log(f"skipped {str(p)!r}: {err}")
                    bar.advance(1)
                    continue
                batch.append((p, rel, digest, orig))
                images.append(img)
            if not batch:
                continue
            arr = np.stack(images + [images[-1]] * (batch_size - len(batch)))  # padded: one compile per method
            x = jnp.asarray(data.preprocess(arr))
            logits = np.asarray(apply_fn(params, x), np.float32)
            targets = "all" if target == "all" else jnp.asarray(
                logits.argmax(-1) if target == "predicted" else np.full((batch_size,), target), jnp.int32)
            maps = compute_maps(apply_fn, params, x, targets, settings)
            probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
            if in_flight is not None:
                in_flight.result()
            in_flight = writer.submit(write, batch, arr, maps, logits, probs)
        if in_flight is not None:
            in_flight.result()

    sidecars = tuple(finished[str(p)] for p, _ in inputs if str(p) in finished)
    if "png" in formats and sidecars:
        _write_gallery(out, sidecars)
    return ExplainResult(out, tuple(done), tuple(skipped), tuple(failed), tuple(ignored), sidecars)
