"""``saliency-jax demo``: the options of :func:`saliency_jax.app.demo.run_demo`.

Example:
    >>> import argparse
    >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--n", "2"])
    >>> args.n, args.window, args.stride, args.out
    (2, None, None, 'saliency-demo')
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "cmd"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``saliency-jax demo`` options, added to ``parser``."""
    p = parser
    p.add_argument("--out", default="saliency-demo", help="output folder (default ./saliency-demo)")
    p.add_argument("--n", type=int, default=6, help="number of images")
    p.add_argument("--model", default=None,
                   help="checkpoint directory or name, efficientnet-lite0 (the bundled photos through every method), "
                        "or package.module:function (default: the shipped model)")
    p.add_argument("--window", type=int, default=None, help="occlusion window side in pixels (default 32; photos: the model's)")
    p.add_argument("--stride", type=int, default=None, help="occlusion stride in pixels (default 4; photos: window / 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated test split")
    p.add_argument("--methods", default=None,  # the registry imports jax: named in the help, not listed here
                   help="comma-separated registered methods as for `explain --methods`, or all (default: occlusion, crop, "
                        "deconvnet; with --model of other classes: all)")
    return parser


def cmd(args: argparse.Namespace) -> int:
    """Run :func:`saliency_jax.app.demo.run_demo`; print its summary line; 0."""
    from saliency_jax.app.demo import run_demo, summary_line

    summary = run_demo(args.out, n=args.n, model=args.model, window=args.window, stride=args.stride, seed=args.seed,
                       methods=args.methods)
    print(summary_line(summary))
    print(f"wrote {Path(args.out) / summary.get('gallery', 'index.html')}")
    return 0
