"""``saliency-jax train``: the training config's overrides and where to write
(:func:`saliency_jax.model.export.train_and_export`).

Example:
    >>> import argparse
    >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--config", "smoke", "--epochs", "1"])
    >>> args.config, args.epochs, args.workdir
    ('smoke', 1, None)
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "cmd", "summary"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``saliency-jax train`` options, added to ``parser``."""
    p = parser
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
    return parser


def summary(metrics: dict) -> str:
    """One line of held-out metrics: accuracy, and AUC and AP when present (also ``evaluate``'s).

    Example:
        >>> summary({"accuracy": 0.5, "correct": 1, "n": 2})
        'accuracy 0.5000 (1/2)'
    """
    parts = [f"accuracy {metrics['accuracy']:.4f} ({metrics['correct']}/{metrics['n']})"]
    if "auc" in metrics:
        parts.append(f"AUC {metrics['auc']:.4f}")
        parts.append(f"AP {metrics['average_precision']:.4f}")
    return "  ".join(parts)


def cmd(args: argparse.Namespace) -> int:
    """Run :func:`saliency_jax.model.export.train_and_export`; print the checkpoint and its metrics; 0."""
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
        print(summary(metrics))
    return 0
