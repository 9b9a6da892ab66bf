"""One progress line for every long job: training epochs and the folder job.

A :class:`Progress` counts work done out of a known total and draws one line::

    epoch 2/8 [##########..............] 60/120 loss 0.41 acc 0.83 9.80 it/s
    [######..................] 16/64 images 3.10 img/s ETA 0:00:15

On a terminal the line is redrawn in place (``\\r``); on anything else (a log file, a pipe,
a ``StringIO``) each draw is a line of its own, so logs stay readable. The counter is guarded
by a lock, so several threads may advance one bar.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> bar = Progress(4, "epoch 1/1", out, inplace=False)
    >>> bar.advance(2, loss=0.5)
    >>> bar.update(4, loss=0.25)
    >>> bar.close("done")
    >>> print(out.getvalue())  # doctest: +ELLIPSIS
    epoch 1/1 [############............] 2/4 loss 0.5 ... it/s
    epoch 1/1 [########################] 4/4 loss 0.25 ... it/s
    epoch 1/1 done
    <BLANKLINE>
"""

from __future__ import annotations

import math
import threading
import time
from typing import TextIO

from saliency_jax import _validate

__all__ = ["Progress"]


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_field(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """A thread-safe one-line progress bar: ``prefix [####....] done/total unit fields rate ETA``.

    Args:
        total: units of work (an int ``>= 0``; a bar of 0 units draws nothing but its close text).
        prefix: text before the bar, e.g. ``"epoch 2/8"`` (may be empty).
        stream: a text stream to draw on, or ``None`` for a silent bar (callers need no ``if``).
        unit: word after the count, e.g. ``"images"`` (may be empty).
        rate_unit: unit of the rate, e.g. ``"it/s"`` or ``"img/s"``.
        eta: also show the estimated time left (``H:MM:SS``, from the mean rate so far).
        width: characters of the bar.
        inplace: redraw in place with ``\\r`` (``True``) or write a line per draw (``False``);
            ``None`` asks ``stream.isatty()``.

    Keyword fields given to :meth:`advance` / :meth:`update` (e.g. ``loss=0.41``) are drawn
    as ``name value`` between the count and the rate, floats to 4 significant digits. The bar
    can be used as a context manager; leaving the block calls :meth:`close`.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(2, stream=out, unit="images", rate_unit="img/s", eta=True, inplace=False) as bar:
        ...     bar.advance()
        ...     bar.advance()
        >>> print(out.getvalue())  # doctest: +ELLIPSIS
        [############............] 1/2 images ... img/s ETA ...
        [########################] 2/2 images ... img/s ETA 0:00:00
        <BLANKLINE>
    """

    def __init__(
        self,
        total: int,
        prefix: str = "",
        stream: TextIO | None = None,
        *,
        unit: str = "",
        rate_unit: str = "it/s",
        eta: bool = False,
        width: int = 24,
        inplace: bool | None = None,
    ):
        self.total = _validate.integer("total", total, lo=0)
        self.width = _validate.integer("width", width, lo=1)
        for name, value in (("prefix", prefix), ("unit", unit), ("rate_unit", rate_unit)):
            if not isinstance(value, str):
                raise TypeError(f"`{name}` (={value!r}) must be a str")
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise TypeError(f"`stream` (={stream!r}) must be a text stream with .write, or None")
        self.prefix, self.unit, self.rate_unit = prefix, unit, rate_unit
        self.eta = _validate.boolean("eta", eta)
        self.stream = stream
        if inplace is None:
            inplace = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.inplace = _validate.boolean("inplace", inplace)
        self.done = 0
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._drawn = 0  # length of the line on screen (in-place mode), 0 when none
        self._closed = False

    def advance(self, n: int = 1, **fields) -> None:
        """Count ``n`` more units done (an int ``>= 0``) and redraw with ``fields``."""
        n = _validate.integer("n", n, lo=0)
        with self._lock:
            self.done += n
            self._draw(fields)

    def update(self, done: int, **fields) -> None:
        """Set the count to ``done`` (an int ``>= 0``) and redraw with ``fields``."""
        done = _validate.integer("done", done, lo=0)
        with self._lock:
            self.done = done
            self._draw(fields)

    def line(self, **fields) -> str:
        """The text of the bar as it stands now (no ``\\r`` or newline)."""
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        filled = min(self.width, int(self.width * self.done / max(self.total, 1)))
        parts = [self.prefix] if self.prefix else []
        parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}]")
        parts.append(f"{self.done}/{self.total}" + (f" {self.unit}" if self.unit else ""))
        parts += [f"{k} {_format_field(v)}" for k, v in fields.items()]
        parts.append(f"{rate:.2f} {self.rate_unit}")
        if self.eta:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            parts.append(f"ETA {_format_eta(max(left, 0.0))}")
        return " ".join(parts)

    def close(self, text: str | None = None) -> None:
        """End the bar: replace it with ``prefix text`` if ``text`` is given, and end the line.

        Closing twice writes nothing the second time.
        """
        if text is not None and not isinstance(text, str):
            raise TypeError(f"`text` (={text!r}) must be a str or None")
        with self._lock:
            if self._closed or self.stream is None:
                self._closed = True
                return
            self._closed = True
            if text is not None:
                final = f"{self.prefix} {text}" if self.prefix else text
                self._write(final.ljust(self._drawn) if self.inplace else final)
            if self.inplace and (self._drawn or text is not None):
                self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- called with the lock held

    def _draw(self, fields: dict) -> None:
        if self.stream is None or self.total == 0 or self._closed:
            return
        line = self.line(**fields)
        self._write(line.ljust(self._drawn) if self.inplace else line)
        self.stream.flush()

    def _write(self, line: str) -> None:
        if self.inplace:
            self.stream.write("\r" + line)
            self._drawn = len(line)
        else:
            self.stream.write(line + "\n")
