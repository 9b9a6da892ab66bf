"""``saliency-jax audit``: the spurious-cue audit's command line (:func:`add_arguments`, :func:`cmd`).

Loaded by :mod:`saliency_jax.app.cli` only when ``audit`` is the command run (it loads JAX through
the audit library), like every subcommand whose options live beside their library.

Example:
    >>> a = add_arguments(argparse.ArgumentParser()).parse_args(["--n", "8"])
    >>> a.n, a.methods, a.func is cmd
    (8, 'occlusion,deconvnet,guided', True)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from saliency_jax import methods as registry
from saliency_jax.app.audit import CUE_MODEL, DEFAULT_METHODS, audit
from saliency_jax.app.audit_report import fmt

__all__ = ["add_arguments", "cmd"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``saliency-jax audit``'s options to ``parser`` (and set ``func`` to :func:`cmd`).

    Example:
        >>> p = add_arguments(argparse.ArgumentParser())
        >>> a = p.parse_args(["--n", "8", "--check"])
        >>> a.n, a.check, a.cue_model
        (8, True, 'rings-crosses-cue')
    """
    p = parser
    p.add_argument("--cue-model", dest="cue_model", default=CUE_MODEL, help=f"model under audit (default {CUE_MODEL})")
    p.add_argument("--clean-model", dest="clean_model", default=None, help="reference model (default: the shipped one)")
    p.add_argument("--n", type=int, default=500, help="test images per split for the classifier metrics (default 500)")
    p.add_argument("--n-maps", dest="n_maps", type=int, default=100, help="images with the mark to explain (default 100)")
    p.add_argument("--out", default="audit", help="output folder (default ./audit)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated map methods, of {', '.join(registry.names())} (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--window", type=int, default=16, help="occlusion window side in pixels (default 16)")
    p.add_argument("--stride", type=int, default=4, help="occlusion stride in pixels (default 4)")
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels (default 15)")
    p.add_argument("--epsilon", type=float, default=0.25, help="deconvnet experiment: signal amplitude (default 0.25)")
    p.add_argument("--spurious-cue", dest="spurious_cue", type=float, default=None,
                   help="cue rate of the biased split (default: the cue model card's)")
    p.add_argument("--start", type=int, default=0, help="index of the first test image")
    p.add_argument("--panels", type=int, default=4, help="images drawn under both models (default 4)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per model call")
    p.add_argument("--check", action="store_true", help="exit 1 unless the maps find the cue")
    p.add_argument("--check-methods", dest="check_methods", default="occlusion",
                   help="methods that must find the cue for --check (default occlusion)")
    p.add_argument("--min-ratio", dest="min_ratio", type=float, default=2.0,
                   help="--check: least cue/clean ratio of the share of positive mass on the mark (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd)
    return p


def cmd(args: argparse.Namespace) -> int:
    """``saliency-jax audit``: :func:`audit`; prints the headline numbers.

    Returns:
        0, or 1 with ``--check`` when the maps did not find the cue (the reasons are printed).
    """
    result = audit(
        args.cue_model, args.clean_model, n=args.n, n_maps=args.n_maps, out=args.out, methods=args.methods,
        window=args.window, stride=args.stride, tolerance=args.tolerance, epsilon=args.epsilon,
        spurious_cue=args.spurious_cue, start=args.start, panels=args.panels, batch_size=args.batch_size,
        check_methods=args.check_methods, min_ratio=args.min_ratio, progress=not args.no_progress,
    )
    c = result["classifier"]
    print(f"ROC-AUC, biased test: cue model {c['cue']['biased']['auc']:.4f}, clean model {c['clean']['biased']['auc']:.4f}; "
          f"clean test: cue model {c['cue']['clean']['auc']:.4f}, clean model {c['clean']['clean']['auc']:.4f}")
    for method, per in result["maps"]["methods"].items():
        e = per["cue"]["energy"]
        print(f"{method}: share of positive mass on the cue {fmt(e['cue_mean'])} vs {fmt(e['clean_mean'])} "
              f"(ratio {fmt(e['ratio'], '.2f')}, 95% CI {fmt(e['ratio_ci'][0], '.2f')}-{fmt(e['ratio_ci'][1], '.2f')})")
    print(f"check: {'passed' if result['check']['passed'] else 'FAILED'}")
    for reason in result["check"]["reasons"]:
        print(f"  {reason}")
    if args.out is not None:
        print(f"wrote {Path(args.out) / 'audit.md'}")
    return 1 if args.check and not result["check"]["passed"] else 0
