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
from pathlib import Path

from saliency_jax._io import OutputBusyError, OutputNotWritableError, OutputWriteError

__all__ = ["main", "build_parser", "cmd_explain", "cmd_demo", "cmd_train", "cmd_evaluate"]

# Each subcommand imports its library when it runs (not to dodge a cycle: none exists), so
# ``saliency-jax --help`` and argument errors answer without loading JAX.


def _command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["saliency-jax", *args])


def cmd_train(args: argparse.Namespace) -> int:
    """``saliency-jax train``: :func:`saliency_jax.model.export.train_and_export`."""
    from saliency_jax.model import export as export_lib
    from saliency_jax.model import train as train_lib

    overrides = {}
    for field in ("epochs", "seed", "batch_size", "num_train", "num_val", "data_seed", "spurious_cue", "learning_rate"):
        value = getattr(args, field)
        if value is not None:
            overrides[field] = value
    config = train_lib.get_config(args.config, **overrides)
    workdir = Path(args.workdir) if args.workdir else Path("runs") / args.config
    out = Path(args.out) if args.out else workdir / "model"
    test_size = args.test_size if args.test_size is not None else (16 if args.config == "smoke" else 2000)
    path, metrics = export_lib.train_and_export(
        config,
        workdir,
        out,
        data_dir=args.data,
        command=args.command_line,
        test_size=test_size,
        progress=not args.no_progress,
        resume=not args.restart,
    )
    print(f"checkpoint: {path}")
    if metrics is not None:
        print(_summary(metrics))
    return 0


def _summary(metrics: dict) -> str:
    parts = [f"accuracy {metrics['accuracy']:.4f} ({metrics['correct']}/{metrics['n']})"]
    if "auc" in metrics:
        parts.append(f"AUC {metrics['auc']:.4f}")
        parts.append(f"AP {metrics['average_precision']:.4f}")
    return "  ".join(parts)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``saliency-jax evaluate``: :func:`saliency_jax.model.evaluate.evaluate_checkpoint`."""
    from saliency_jax.model import evaluate as eval_lib

    metrics, paths = eval_lib.evaluate_checkpoint(
        args.checkpoint,
        args.out,
        data_dir=args.data,
        n=args.n,
        split=args.split,
        start=args.start,
        spurious_cue=args.spurious_cue,
    )
    print(_summary(metrics))
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``saliency-jax demo``: :func:`saliency_jax.app.demo.run_demo`."""
    from saliency_jax.app.demo import run_demo, summary_line

    summary = run_demo(args.out, n=args.n, model=args.model, window=args.window, stride=args.stride, seed=args.seed)
    print(summary_line(summary))
    print(f"wrote {Path(args.out) / 'index.html'}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """``saliency-jax explain``: :func:`saliency_jax.app.explain.explain_paths`."""
    from saliency_jax.app.explain import explain_paths

    result = explain_paths(
        args.paths,
        args.out,
        model=args.model,
        methods=args.methods,
        window=args.window,
        stride=args.stride,
        fill=args.fill,
        target=args.target,
        formats=args.formats,
        batch_size=args.batch_size,
        force=args.force,
        cmap=args.cmap,
        signed_cmap=args.signed_cmap,
        alpha=args.alpha,
        colorbar=args.colorbar,
        progress=False if args.no_progress else None,
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
    )
    parts = [f"{len(result.done)} explained", f"{len(result.skipped)} already done",
             f"{len(result.failed)} failed" + (" (reported above)" if result.failed else "")]
    if result.ignored:
        parts.append(f"{len(result.ignored)} non-image files ignored")
    print(f"{', '.join(parts)}; outputs in {result.out}")
    return 0 if result.ok else 1


def _window_arg(text: str):
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int or HxW") from None
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 2:
        return tuple(vals)
    raise argparse.ArgumentTypeError(f"{text!r} is not an int or HxW")


# Subcommands whose options live beside their library (a module that loads JAX): the module is
# imported only when its command is the one run, so `saliency-jax --help` stays light.
_LIBRARY_COMMANDS = {
    "faithfulness": ("saliency_jax.app.faithfulness",
                     "score every map method and the baselines against the generated test split's object masks"),
    "audit": ("saliency_jax.app.audit_cli",
              "the spurious-cue audit: ROC on biased and clean test splits, the maps on the cue, the deconvnet experiment"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``saliency-jax`` parser: one subcommand each, its function in ``args.func``.

    Args:
        argv: the arguments about to be parsed; the options of a library subcommand
            (``faithfulness``, ``audit``) are added only when it is the command in ``argv``.
    """
    parser = argparse.ArgumentParser(prog="saliency-jax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_explain, _add_demo, _add_train, _add_evaluate):
        add(sub)
    command = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module_name, text) in _LIBRARY_COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.cmd)
    return parser


def _add_explain(sub) -> None:
    """``saliency-jax explain``: the options of :func:`saliency_jax.app.explain.explain_paths`."""
    p = sub.add_parser(
        "explain",
        help="heat maps for image files and folders (raw .npy maps, overlays, panels, JSON sidecars)",
        description="Explain every image in PATH... (files, or folders searched recursively) with a model. "
        "Images are resized to the model's input size as in training; maps are in model-input pixels. "
        "A rerun skips images whose outputs exist with the same settings; unreadable files are reported "
        "and skipped (exit status 1).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--out", default="heatmaps", help="output folder (default ./heatmaps)")
    p.add_argument("--model", default=None, help="checkpoint directory or name (default: the shipped model)")
    p.add_argument("--methods", default="crop,occlusion,deconvnet",
                   help="comma-separated, from crop,occlusion,deconvnet,guided,gradient (default crop,occlusion,deconvnet)")
    p.add_argument("--window", type=_window_arg, default=None, help="occlusion/crop window: N or HxW (default: input side / 4)")
    p.add_argument("--stride", type=_window_arg, default=None, help="window stride: N or HxW (default: window / 4)")
    p.add_argument("--fill", default="0", help="occlusion fill in model-input units (0 = mid-grey for the shipped model), mean or blur")
    p.add_argument("--target", default="predicted", help="predicted (default), all, a class name or a class index")
    p.add_argument("--formats", default="png,npy", help="comma-separated from png,npy (default both)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per model call (default 16)")
    p.add_argument("--force", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--cmap", default="jet", help="colour map of crop heat maps (matplotlib name; default jet)")
    p.add_argument("--signed-cmap", dest="signed_cmap", default="RdBu_r", help="colour map of signed occlusion maps (default RdBu_r)")
    p.add_argument("--alpha", type=float, default=0.5, help="heat-map weight in the overlays (default 0.5)")
    p.add_argument("--colorbar", action="store_true", help="draw a colour bar under each heat map")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: this process (default); ray: Ray actors on this machine or a cluster (the ray extra)")
    p.add_argument("--address", default=None,
                   help="ray: auto or HOST:PORT of a running cluster (default: start Ray inside this process)")
    p.add_argument("--workers", type=int, default=None, help="ray: number of actors (default: one per CPU, or per GPU)")
    p.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=float, default=None,
                   help="ray: GPUs each actor reserves (default 0)")
    p.set_defaults(func=cmd_explain)


def _add_demo(sub) -> None:
    """``saliency-jax demo``: the options of :func:`saliency_jax.app.demo.run_demo`."""
    p = sub.add_parser("demo", help="explain a few generated test images with the shipped model (panels + index.html)")
    p.add_argument("--out", default="saliency-demo", help="output folder (default ./saliency-demo)")
    p.add_argument("--n", type=int, default=6, help="number of images")
    p.add_argument("--model", default=None, help="checkpoint directory or name (default: the shipped model)")
    p.add_argument("--window", type=int, default=32, help="occlusion window side in pixels")
    p.add_argument("--stride", type=int, default=4, help="occlusion stride in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated test split")
    p.set_defaults(func=cmd_demo)


def _add_train(sub) -> None:
    """``saliency-jax train``: the training config's overrides and where to write."""
    p = sub.add_parser("train", help="train a model and save a checkpoint with its model card")
    p.add_argument("--config", default="default", choices=("default", "smoke"), help="named training config")
    p.add_argument("--data", default=None, help="image folder (one subfolder per class) instead of generated data")
    p.add_argument("--workdir", default=None, help="run directory: resumable state, metrics.jsonl (default runs/<config>)")
    p.add_argument("--out", default=None, help="checkpoint directory to write (default <workdir>/model)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--learning-rate", dest="learning_rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="initialisation / shuffling / augmentation seed")
    p.add_argument("--data-seed", dest="data_seed", type=int, default=None, help="generated-data or split seed")
    p.add_argument("--num-train", dest="num_train", type=int, default=None, help="generated training images")
    p.add_argument("--num-val", dest="num_val", type=int, default=None, help="generated validation images")
    p.add_argument("--spurious-cue", dest="spurious_cue", type=float, default=None, help="plant the spurious mark (0..1)")
    p.add_argument("--test-size", dest="test_size", type=int, default=None, help="held-out generated test images")
    p.add_argument("--restart", action="store_true", help="ignore a previous run in --workdir and start afresh")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    """``saliency-jax evaluate``: the checkpoint and the data to evaluate on."""
    p = sub.add_parser("evaluate", help="accuracy, confusion matrix, ROC/AUC and PR/AP of a checkpoint")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory or name (default: the shipped model)")
    p.add_argument("--data", default=None, help="image folder to evaluate on (all its images)")
    p.add_argument("--out", default="evaluation", help="output directory for metrics.json and the plots")
    p.add_argument("--n", type=int, default=2000, help="generated images to evaluate on")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="generated split")
    p.add_argument("--start", type=int, default=0, help="index of the first generated image")
    p.add_argument("--spurious-cue", dest="spurious_cue", type=float, default=None, help="override the card's cue setting")
    p.set_defaults(func=cmd_evaluate)


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
