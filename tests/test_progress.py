"""The shared progress line (saliency_jax._progress): counts, fields, in-place redraws, threads."""

import io
import re
import threading

import pytest

from saliency_jax._progress import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_lines_show_count_bar_fields_rate_and_eta():
    out = io.StringIO()
    bar = Progress(4, "epoch 2/8", out, width=8, unit="images", rate_unit="img/s", eta=True)
    bar.advance(1, loss=0.41234, acc=0.83)
    bar.update(3, note="x")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # not a terminal: one line per draw, no carriage returns
    assert "\r" not in out.getvalue()
    assert re.fullmatch(r"epoch 2/8 \[##\.{6}\] 1/4 images loss 0\.4123 acc 0\.83 [\d.]+ img/s ETA \d+:\d\d:\d\d", lines[0])
    assert re.fullmatch(r"epoch 2/8 \[######\.\.\] 3/4 images note x [\d.]+ img/s ETA \d+:\d\d:\d\d", lines[1])


def test_in_place_redraw_pads_over_the_longer_line_and_close_ends_it():
    out = _Tty()
    bar = Progress(2, "epoch 1/1", out, width=4)
    bar.advance(1, loss=0.5)
    first = out.getvalue()
    assert first.startswith("\r") and "\n" not in first
    bar.close("ok")
    text = out.getvalue()[len(first):]
    assert text.startswith("\repoch 1/1 ok") and text.endswith("\n")
    assert len(text) - 2 == len(first) - 1  # the close line covers the whole bar it replaces
    bar.close("again")  # closing twice writes nothing
    bar.advance(1)  # nor does a closed bar
    assert out.getvalue().endswith("ok".ljust(len(first) - 1 - len("epoch 1/1 ")) + "\n")


def test_silent_and_empty_bars_write_nothing():
    bar = Progress(3, "x", None)
    bar.advance(3, loss=1.0)
    bar.close("done")
    assert bar.done == 3
    out = io.StringIO()
    with Progress(0, stream=out):
        pass
    assert out.getvalue() == ""


def test_threads_count_every_advance():
    out = io.StringIO()
    bar = Progress(800, stream=out, inplace=False)
    workers = [threading.Thread(target=lambda: [bar.advance() for _ in range(100)]) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    lines = out.getvalue().splitlines()
    assert bar.done == 800 and len(lines) == 800
    # each draw happened under the lock: the counts appear once each, in order
    assert [int(re.search(r" (\d+)/800 ", " " + s).group(1)) for s in lines] == list(range(1, 801))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"total": -1}, ValueError, "`total`"),
        ({"total": 2.0}, TypeError, "`total`"),
        ({"total": 2, "width": 0}, ValueError, "`width`"),
        ({"total": 2, "stream": 3}, TypeError, "`stream`"),
        ({"total": 2, "prefix": 1}, TypeError, "`prefix`"),
        ({"total": 2, "inplace": 1}, TypeError, "`inplace`"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        Progress(**kwargs)


def test_bad_counts_name_themselves():
    bar = Progress(2)
    with pytest.raises(ValueError, match="`n`"):
        bar.advance(-1)
    with pytest.raises(TypeError, match="`done`"):
        bar.update("1")
