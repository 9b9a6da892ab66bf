"""Atomic file output: write beside the target under a temporary name, then rename.

An interrupted run never leaves a half-written file where a good one (or none) stood. A run
that writes a folder holds its lock (:func:`folder_lock`), so two runs never write one folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["LOCK_NAME", "OutputBusyError", "atomic_write", "atomic_write_text", "folder_lock"]

#: The lock file a run holds in the folder it writes.
LOCK_NAME = ".saliency-jax.lock"


class OutputBusyError(RuntimeError):
    """Another run is writing to the same output folder (it holds the folder's lock file)."""


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


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder/.saliency-jax.lock`` (an advisory ``flock``; the folder is created), or refuse.

    The lock file is removed when the block ends. The kernel drops the lock when the process
    ends, also when it is killed, so a crashed run leaves an unlocked file that the next run
    takes over: it never blocks the next run.

    Raises:
        OutputBusyError: another process holds the lock.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with folder_lock(d):
        ...     try:
        ...         with folder_lock(d):
        ...             pass
        ...     except OutputBusyError:
        ...         print("refused")
        refused
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise OutputBusyError(
                f"another saliency-jax run is writing to {str(folder)!r} (it holds {str(path)!r}); "
                "wait for it to finish or choose another output folder") from None
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break  # the file we locked is still the lock file (not one a finishing run just removed)
        except FileNotFoundError:
            pass
        f.close()
    try:
        yield
    finally:
        os.unlink(path)  # before unlocking: whoever locks the old file next sees it is gone and retries
        f.close()
