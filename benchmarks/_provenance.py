"""What every results file records about how it was made, and file names relative to the repository.

:func:`start` at the beginning of a run (the command, the load average before, the date, the
machine), :func:`finish` at its end (the load average after, the versions of the libraries the
run imported: jax, jaxlib, flax, numpy always; torch, Captum, Ray, Equinox, Haiku, Keras where
they ran). :func:`relative` rewrites file names under the repository as repository-relative
and under the temp folder as ``$TMPDIR/...``, so no results file names the machine that made it.

Example:
    >>> record = finish(start(["--smoke"], script="benchmarks/occlusion.py"))
    >>> record["command"], len(record["load_before"]), "jax" in record["versions"]
    ('python benchmarks/occlusion.py --smoke', 3, True)
"""

from __future__ import annotations

import datetime
import json
import importlib.metadata
import os
import platform
import sys
import tempfile
from pathlib import Path

__all__ = ["ROOT", "start", "finish", "relative", "versions", "command", "markdown_line", "write_results"]

ROOT = Path(__file__).resolve().parents[1]

_ALWAYS = ("jax", "jaxlib", "flax", "numpy")
_WHERE_RAN = {"torch": "torch", "captum": "captum", "ray": "ray", "equinox": "equinox", "haiku": "dm-haiku",
              "keras": "keras", "optax": "optax", "orbax": "orbax-checkpoint", "PIL": "pillow"}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    """Python and library versions: the core four always, the others only if this process imported them."""
    out = {"python": platform.python_version()}
    out.update({name: _version(name) for name in _ALWAYS})
    out.update({module: _version(dist) for module, dist in _WHERE_RAN.items() if module in sys.modules})
    return out


def relative(value):
    """``value`` (str, list, tuple or dict, recursively) with absolute paths made repository-relative.

    A path inside the repository becomes relative to it (``/x/repo/checkpoints/a`` →
    ``checkpoints/a``); one inside the temp folder becomes ``$TMPDIR/...``; anything else is kept.
    """
    if isinstance(value, dict):
        return {k: relative(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(relative(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(relative(v) for v in value)
    if not isinstance(value, str):
        return value
    for base, name in ((str(ROOT), None), (os.path.realpath(tempfile.gettempdir()), "$TMPDIR"),
                       (tempfile.gettempdir(), "$TMPDIR")):
        if base in value:
            value = value.replace(base + os.sep, "" if name is None else name + "/")
            value = value.replace(base, "." if name is None else name)
    return value


def command(argv=None, script=None) -> str:
    """The command line that made the results, repository-relative: ``python benchmarks/x.py ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script = script or (sys.argv[0] if sys.argv and sys.argv[0] else "python")
    return " ".join(["python", relative(str(Path(script).resolve())) if script.endswith(".py") else script,
                     *(relative(str(a)) for a in argv)])


def start(argv=None, script=None) -> dict:
    """The provenance record at the start of a run (complete it with :func:`finish`)."""
    return {
        "command": command(argv, script),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "load_before": [round(v, 2) for v in os.getloadavg()],
    }


def finish(record: dict) -> dict:
    """``record`` with the load average after the run and the versions of what the run imported."""
    return {**record, "load_after": [round(v, 2) for v in os.getloadavg()], "versions": versions()}


def markdown_line(record: dict) -> str:
    """One markdown line stating a finished record: command, load before/after, versions."""
    libs = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    return (f"Provenance: `{record['command']}`, {record['date']}, {record['machine']}; load average before "
            f"{record['load_before']}, after {record['load_after']}; {libs}.")


def write_results(out, stem: str, report: dict, markdown) -> str:
    """Write ``<out>/<stem>.json`` (``report``, file names made :func:`relative`) and ``<out>/<stem>.md``
    (``markdown(report)``), each atomically, creating ``out``; returns the markdown text."""
    from saliency_jax._io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = relative(report)
    text = markdown(report)
    atomic_write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / f"{stem}.md", text)
    return text
