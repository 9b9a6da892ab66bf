"""Command line: a thin layer over the library (one function per subcommand).

Subcommands:
    explain    heat maps for image files and folders: raw maps (.npy), overlays and panels (.png),
               a JSON sidecar per image and an index.html; reruns skip finished images.
    demo       the shipped model on a few generated test images: every method, panels, a gallery.
    train      train the model (generated data by default, ``--data DIR`` for an image folder),
               save the checkpoint with its model card, evaluate it on held-out data.
    evaluate   accuracy, confusion matrix, ROC/AUC and precision-recall/AP of a checkpoint,
               written as PNG plots and JSON.
    faithfulness  are the maps right? every method and the baselines scored against the
               generated test split's object masks (pointing games, ranks, AUC, deletion and
               insertion curves), a markdown table, curves and JSON.
    audit      the original write-up's lesson as numbers: a model with a spurious cue, ROC on
               biased and clean test splits, how much of each map lies on the cue (--check).
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from saliency_jax._io import OutputBusyError, OutputNotWritableError, OutputWriteError

__all__ = ["COMMANDS", "main", "build_parser"]

#: Every subcommand: the module that gives its options and runs it (``add_arguments(parser)``,
#: ``cmd(args) -> exit status``) and its one-line help. A module is imported only when its
#: subcommand is the one parsed (not to dodge a cycle: none exists), so ``saliency-jax --help``
#: and ``saliency-jax`` alone answer without loading JAX.
COMMANDS: dict[str, tuple[str, str]] = {
    "explain": ("saliency_jax.app.commands.explain",
                "heat maps for image files and folders (raw .npy maps, overlays, panels, JSON sidecars)"),
    "demo": ("saliency_jax.app.commands.demo",
             "explain a few generated test images with the shipped model (panels + index.html)"),
    "train": ("saliency_jax.app.commands.train", "train a model and save a checkpoint with its model card"),
    "evaluate": ("saliency_jax.app.commands.evaluate",
                 "accuracy, confusion matrix, ROC/AUC and PR/AP of a checkpoint"),
    "faithfulness": ("saliency_jax.app.commands.faithfulness",
                     "score every map method and the baselines against the generated test split's object masks"),
    "audit": ("saliency_jax.app.audit_cli",
              "the spurious-cue audit: ROC on biased and clean test splits, the maps on the cue, the deconvnet experiment"),
}


def _command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["saliency-jax", *args])


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``saliency-jax`` parser: one subcommand each (:data:`COMMANDS`), its ``cmd`` in ``args.func``.

    Args:
        argv: the arguments about to be parsed: only the subcommand named there gets its
            options (its module is imported); ``None`` builds every subcommand's options.
    """
    parser = argparse.ArgumentParser(prog="saliency-jax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    command = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module_name, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if argv is None or name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``saliency-jax`` on ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0: done; 1: some inputs failed (reported, the rest done); 2: bad arguments, a missing file,
    a damaged checkpoint, an output folder another run is writing to or that cannot be written
    (nothing was computed); 3: an output could not be written during the run (disk full,
    read-only file system: the message names the file and the errno; finished images are kept,
    rerun to continue); 130: interrupted (finished outputs are kept).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.command_line = _command_line(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, OutputBusyError, OutputNotWritableError,
            ConnectionError, ImportError) as err:  # the last two: a Ray address nothing answers at, Ray missing
        print(f"saliency-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OutputWriteError as err:
        print(f"saliency-jax {args.command}: error: {err}; the run stopped (that image's partial outputs were "
              "removed; finished images are kept, rerun to continue)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"saliency-jax {args.command}: interrupted; finished outputs are kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
