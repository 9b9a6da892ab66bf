"""``saliency-jax explain``: the options of :func:`saliency_jax.app.explain.explain_paths`.

``--methods`` takes the registry's methods (:mod:`saliency_jax.methods`), so building this
parser loads the registry (and JAX); ``saliency-jax --help`` does not build it.

Example:
    >>> import argparse
    >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["photos", "--window", "48x32"])
    >>> args.paths, args.window, args.methods
    (['photos'], (48, 32), 'crop,occlusion,deconvnet')
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "cmd", "window_arg"]


def window_arg(text: str):
    """A window or stride as typed: ``N`` or ``HxW`` (also ``H,W``) -> an int or an ``(h, w)`` pair.

    Example:
        >>> window_arg("32"), window_arg("48x32")
        (32, (48, 32))
    """
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


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``saliency-jax explain`` options and description, added to ``parser``."""
    from saliency_jax import methods
    from saliency_jax.app.settings import FORMATS

    parser.description = (
        "Explain every image in PATH... (files, or folders searched recursively) with a model. "
        "Images are resized to the model's input size as in training; maps are in model-input pixels. "
        "A rerun skips images whose outputs exist with the same settings; unreadable files are reported "
        "and skipped (exit status 1).")
    default = ",".join(methods.names(default=True))
    p = parser
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--out", default="heatmaps", help="output folder (default ./heatmaps)")
    p.add_argument("--model", default=None, help="checkpoint directory or name (default: the shipped model)")
    p.add_argument("--methods", default=default,
                   help=f"comma-separated, from {','.join(methods.names())} (default {default})")
    p.add_argument("--window", type=window_arg, default=None, help="occlusion/crop window: N or HxW (default: input side / 4)")
    p.add_argument("--stride", type=window_arg, default=None, help="window stride: N or HxW (default: window / 4)")
    p.add_argument("--option", dest="option", action="append", default=None, metavar="METHOD.KEY=VALUE",
                   help="a method's own option, repeatable (e.g. integrated_gradients.n_steps=32, "
                        "smoothgrad.kind=vargrad, grad_cam.layer=conv5); values read as JSON where they parse")
    p.add_argument("--fill", default="0", help="occlusion fill in model-input units (0 = mid-grey for the shipped model), mean or blur")
    p.add_argument("--segments", type=int, default=None,
                   help="superpixels of the feature methods (feature_ablation, shapley_*, kernel_shap); default: each method's own (50; 8 for the exact shapley_values)")
    p.add_argument("--target", default="predicted", help="predicted (default), all, a class name or a class index")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated from {','.join(FORMATS)} (default both)")
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
    return parser


def cmd(args: argparse.Namespace) -> int:
    """Run :func:`saliency_jax.app.explain.explain_paths`; print the counts; 0, or 1 when an input failed."""
    from saliency_jax.app.explain import explain_paths

    result = explain_paths(
        args.paths,
        args.out,
        model=args.model,
        methods=args.methods,
        window=args.window,
        stride=args.stride,
        fill=args.fill,
        options=args.option,
        target=args.target,
        segments=args.segments,
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
