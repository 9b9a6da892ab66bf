"""The folder job's inputs: which files are images, the names their outputs get, their bytes' hash.

The pixels are read by :func:`saliency_jax.model.data.load_resized`, the package's one loader
(the resize of training).

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(d / "a.png")
    >>> _ = (d / "notes.txt").write_text("not an image")
    >>> inputs, ignored = find_images([d])
    >>> [rel for _, rel in inputs], [Path(p).name for p in ignored]
    (['a.png'], ['notes.txt'])
    >>> len(sha256_file(d / "a.png"))
    64
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from saliency_jax.model import data

__all__ = ["find_images", "sha256_file"]


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
        ValueError: ``paths`` is empty.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("`paths` must name at least one image file or folder")
    exts = tuple(e.lower() for e in extensions)
    skip = Path(exclude).resolve() if exclude is not None else None
    inputs: list[tuple[Path, str]] = []
    ignored: list[str] = []
    used: set[str] = set()  # output names taken, lower-cased; a folder prefix as "name/"
    seen: set[Path] = set()  # resolved input files: a file named twice is one input

    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"input path {str(p)!r} does not exist")
        if p.is_file():
            found = [(p, _unique(used, p.name))]
        else:
            prefix = _unique(used, p.resolve().name or "input", "/") if len(paths) > 1 else ""
            found = [(fp, f"{prefix}/{rel}" if prefix else rel) for fp, rel in _walk(p, skip, exts, ignored)]
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


def _unique(used: set[str], first: str, rest: str = "") -> str:
    """``first`` with ``-2``, ``-3`` … on its stem until ``first + rest`` is new (case-insensitively)."""
    stem, dot, suffix = first.partition(".") if not rest else (first, "", "")
    k, name = 1, first
    while (name + rest).lower() in used:
        k += 1
        name = f"{stem}-{k}{dot}{suffix}"
    return name


def _walk(folder: Path, skip: Path | None, exts: tuple[str, ...], ignored: list[str]) -> Iterator[tuple[Path, str]]:
    """``(file, name relative to folder)`` of the image files under ``folder``, sorted; files
    without an image suffix are appended to ``ignored``; hidden entries and ``skip`` are passed over."""
    for root, dirs, files in os.walk(folder):
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
            yield fp, fp.relative_to(folder).as_posix()


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
