"""The ``saliency-jax`` subcommands, one module each: ``add_arguments(parser)`` and ``cmd(args)``.

:mod:`saliency_jax.app.cli` lists them (:data:`saliency_jax.app.cli.COMMANDS`) and imports a
module only when its subcommand is the one run, so ``saliency-jax --help`` loads no JAX. A module
here imports its library inside ``cmd`` (and, where its options come from the library, such as
the registry's methods, inside ``add_arguments``).

* :mod:`~saliency_jax.app.commands.explain` — :func:`saliency_jax.app.explain.explain_paths`;
* :mod:`~saliency_jax.app.commands.demo` — :func:`saliency_jax.app.demo.run_demo`;
* :mod:`~saliency_jax.app.commands.train` — :func:`saliency_jax.model.export.train_and_export`;
* :mod:`~saliency_jax.app.commands.evaluate` — :func:`saliency_jax.model.evaluate.evaluate_checkpoint`;
* :mod:`~saliency_jax.app.commands.faithfulness` — :func:`saliency_jax.app.faithfulness.faithfulness_report`.

The ``audit`` subcommand's module is :mod:`saliency_jax.app.audit` (same two functions).
"""

__all__: list[str] = []
