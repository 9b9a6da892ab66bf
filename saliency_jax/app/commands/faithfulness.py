"""``saliency-jax faithfulness``: the options of :func:`saliency_jax.app.faithfulness.faithfulness_report`.

``--methods`` takes the report's rows (registry methods with their windows) and baselines, so
building this parser loads the registry (and JAX).

Example:
    >>> import argparse
    >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--n", "8", "--methods", "random,centre"])
    >>> args.n, args.methods, args.out
    (8, 'random,centre', 'faithfulness')
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "cmd"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``saliency-jax faithfulness`` options, added to ``parser``."""
    from saliency_jax import metrics
    from saliency_jax.app.faithfulness import METHODS

    parser.add_argument("--model", default=None, help="checkpoint name or directory (default: the shipped model)")
    parser.add_argument("--n", type=int, default=500, help="generated test images (default 500)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: all)")
    parser.add_argument("--out", default="faithfulness", help="output folder (default ./faithfulness)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    parser.add_argument("--tolerance", type=float, default=float(metrics.DEFAULT_TOLERANCE),
                        help="pointing-game tolerance in pixels (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="generated test split seed (default 0)")
    parser.add_argument("--sanity", default=None,
                        help="a cascading-randomisation JSON (benchmarks/results/sanity.json) to show beside the table")
    return parser


def cmd(args: argparse.Namespace) -> int:
    """Run :func:`saliency_jax.app.faithfulness.faithfulness_report`; print the table; 0."""
    from saliency_jax.app import faithfulness as fa

    report = fa.faithfulness_report(args.model, n=args.n, methods=args.methods, out=args.out, steps=args.steps,
                                    tolerance=args.tolerance, seed=args.seed, sanity=args.sanity,
                                    log=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(fa.results_table(report)))
    print("\n".join(fa.failures(report)))
    print(f"wrote {Path(args.out) / 'faithfulness.md'}")
    return 0
