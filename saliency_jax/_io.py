"""Atomic file output: write beside the target under a temporary name, then rename.

An interrupted run never leaves a half-written file where a good one (or none) stood. A run
that writes a folder holds its lock (:func:`folder_lock`), so two runs never write one folder.
A write that fails (disk full, read-only file system, no permission) raises
:class:`OutputWriteError`, which names the file and the errno; a folder that cannot be written
at all is refused when its lock is taken (:class:`OutputNotWritableError`), before any work.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["LOCK_NAME", "OutputBusyError", "OutputWriteError", "OutputNotWritableError", "atomic_write",
           "atomic_write_text", "folder_lock", "check_writable"]

#: The lock file a run holds in the folder it writes.
LOCK_NAME = ".saliency-jax.lock"


class OutputBusyError(RuntimeError):
    """Another run is writing to the same output folder (it holds the folder's lock file)."""


class OutputWriteError(OSError):
    """An output file could not be written (disk full, read-only file system, no permission …).

    An ``OSError`` with ``errno``, ``strerror`` and ``filename`` (the output file) set, built
    like one (``OutputWriteError(errno, strerror, filename)``), so it pickles unchanged across
    processes (the Ray engine re-raises it as it is). ``errno`` is ``None`` when the system gave
    none (numpy reports a short write as "N requested and M written").

    Example:
        >>> import errno
        >>> print(OutputWriteError(errno.ENOSPC, "No space left on device", "out/a.png.json"))
        cannot write 'out/a.png.json': [Errno 28 ENOSPC] No space left on device
    """

    @classmethod
    def from_error(cls, path: str | os.PathLike, err: OSError) -> "OutputWriteError":
        """The error ``err`` raised while writing ``path``, as an :class:`OutputWriteError`."""
        if isinstance(err, cls):
            return err
        return cls(err.errno, err.strerror or str(err) or type(err).__name__, str(path))

    def __str__(self) -> str:
        code = "" if self.errno is None else f"[Errno {self.errno} {_errno.errorcode.get(self.errno, '?')}] "
        return f"cannot write {self.filename!r}: {code}{self.strerror}"


class OutputNotWritableError(OutputWriteError):
    """The output folder cannot be written at all (found before any work is done)."""

    def __str__(self) -> str:
        code = "" if self.errno is None else f"[Errno {self.errno} {_errno.errorcode.get(self.errno, '?')}] "
        return f"output folder {self.filename!r} is not writable: {code}{self.strerror}"


def atomic_write(path: str | os.PathLike, writer: Callable[[str], object]) -> None:
    """Create ``path`` by calling ``writer(temporary_path)``, then renaming it into place.

    The temporary file sits in the same folder (so the rename is atomic), keeps ``path``'s
    suffix (``np.save`` and ``savefig`` infer formats from it) and is removed if ``writer``
    fails. The result gets mode 0644 (``mkstemp`` creates 0600).

    Raises:
        OutputWriteError: any ``OSError`` while writing (from ``writer`` too), naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
    except OSError as err:
        raise OutputWriteError.from_error(path, err) from err
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise OutputWriteError.from_error(path, err) from err
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
        OutputNotWritableError: the folder cannot be created, or a file cannot be created in it
            (:func:`check_writable`).

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
    path = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+")
        except OSError as err:
            raise OutputNotWritableError.from_error(folder, err) from err
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
        check_writable(folder)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before unlocking: whoever locks the old file next sees it is gone and retries
        f.close()


def check_writable(folder: str | os.PathLike) -> None:
    """Create and remove a temporary file in ``folder``: proof that outputs can be created there.

    Raises:
        OutputNotWritableError: the file cannot be created (read-only file system, no
            permission, no space for a new file …).

    Example:
        >>> import tempfile
        >>> check_writable(tempfile.mkdtemp())
    """
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".saliency-jax-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputNotWritableError.from_error(folder, err) from err
