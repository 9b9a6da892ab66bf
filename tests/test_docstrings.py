"""Every docstring example of the package runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import jax
import pytest

import saliency_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(saliency_jax.__path__, "saliency_jax.")
                 if not m.name.startswith("saliency_jax.checkpoints"))


def test_the_package_has_examples():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES for t in finder.find(importlib.import_module(name)))
    assert examples >= 30


# Examples that compile a model take seconds; the fast subset (-m "not slow") skips these.
SLOW_EXAMPLES = {"saliency_jax.backprop.methods", "saliency_jax.occlude.engine", "saliency_jax.occlude.incremental"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXAMPLES else n
                                  for n in ["saliency_jax", *MODULES]])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with jax.numpy_rank_promotion("allow"):  # examples show user code under JAX's defaults, not conftest's strict mode
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (printed above)"
