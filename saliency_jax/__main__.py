"""``python -m saliency_jax ...`` runs the same command line as ``saliency-jax ...``."""

from saliency_jax.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
