"""One machine-wide lock so tests and benchmarks do not disturb each other's timings.

Benchmarks hold it exclusively for their whole run; a test session holds it shared. On a
shared 2-core machine a benchmark therefore waits for running test sessions to finish, and
a test session waits for a running benchmark, while several test sessions run side by side.
The lock file is ``$SALIENCY_JAX_LOCK`` (default: ``saliency_jax.lock`` in the temp folder).

Example:
    >>> with machine_lock(exclusive=False):
    ...     pass
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile

__all__ = ["machine_lock"]

_HELD = "SALIENCY_JAX_LOCK_HELD"


def _path() -> str:
    return os.environ.get("SALIENCY_JAX_LOCK") or os.path.join(tempfile.gettempdir(), "saliency_jax.lock")


@contextlib.contextmanager
def machine_lock(*, exclusive: bool):
    """Hold the machine lock (``exclusive`` for benchmarks, shared for tests) inside the block.

    A child process of a holder (a benchmark's measuring subprocess) inherits ``_HELD`` and
    does not lock again, which would wait for its own parent.
    """
    if os.environ.get(_HELD):
        yield
        return
    with open(_path(), "a+") as f:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            who = "benchmark" if not exclusive else "test session or benchmark"
            print(f"waiting for the machine lock {_path()} (a {who} is running)", file=sys.stderr)
            fcntl.flock(f, mode)
        os.environ[_HELD] = "1"
        try:
            yield
        finally:
            del os.environ[_HELD]
            fcntl.flock(f, fcntl.LOCK_UN)
