"""Atomic file output: write beside the target under a temporary name, then rename.

An interrupted run never leaves a half-written file where a good one (or none) stood.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, writer: Callable[[str], object]) -> None:
    """Create ``path`` by calling ``writer(temporary_path)``, then renaming it into place.

    The temporary file sits in the same folder (so the rename is atomic), keeps ``path``'s
    suffix (``np.save`` and ``savefig`` infer formats from it) and is removed if ``writer``
    fails. The result gets mode 0644 (``mkstemp`` creates 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
