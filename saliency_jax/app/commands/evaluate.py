"""``saliency-jax evaluate``: the checkpoint and the data to evaluate on
(:func:`saliency_jax.model.evaluate.evaluate_checkpoint`).

Example:
    >>> import argparse
    >>> args = add_arguments(argparse.ArgumentParser()).parse_args([])
    >>> args.checkpoint, args.n, args.split
    (None, 2000, 'test')
"""

from __future__ import annotations

import argparse

from saliency_jax.app.commands.train import summary

__all__ = ["add_arguments", "cmd"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``saliency-jax evaluate`` options, added to ``parser``."""
    p = parser
    p.add_argument("--checkpoint", default=None, help="checkpoint directory or name (default: the shipped model)")
    p.add_argument("--data", default=None, help="image folder to evaluate on (all its images)")
    p.add_argument("--out", default="evaluation", help="output directory for metrics.json and the plots")
    p.add_argument("--n", type=int, default=2000, help="generated images to evaluate on")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="generated split")
    p.add_argument("--start", type=int, default=0, help="index of the first generated image")
    p.add_argument("--spurious-cue", dest="spurious_cue", type=float, default=None, help="override the card's cue setting")
    return parser


def cmd(args: argparse.Namespace) -> int:
    """Run :func:`saliency_jax.model.evaluate.evaluate_checkpoint`; print the metrics and the files; 0."""
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
    print(summary(metrics))
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0
