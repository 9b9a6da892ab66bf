"""XLA compile options for the occlusion engines on CPU.

On jaxlib 0.10 XLA:CPU hands convolutions and matrix products to YNNPACK ("ynn fusions") by
default. Measured on a 2-core x86 CPU (``benchmarks/results/incremental.md``), YNNPACK's
convolutions ran at 25-110 GFLOP/s depending on shape (a cliff from batch 12-16 of 14×14×512
maps), against 150-177 GFLOP/s for XLA's own convolutions on the same shapes; full re-inference
of the VGG16-style model, the ZF-style model and the shipped small model, and incremental
re-inference of all three, were faster with YNNPACK off. :func:`cpu_compiler_options` returns the
per-``jit`` option that turns it off, only where it applies:

* the default backend is the CPU;
* the installed jaxlib accepts the option (checked once by compiling a trivial function);
* the user has not chosen a YNNPACK setting in ``XLA_FLAGS`` (theirs wins).

Otherwise it returns ``{}`` and the library's defaults apply. The result is cached; it never runs
at import time (it must not initialise the backend before a user's ``XLA_FLAGS`` are read).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

__all__ = ["cpu_compiler_options"]

_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def cpu_compiler_options() -> dict:
    """``compiler_options`` for ``jax.jit`` that keep XLA:CPU's own convolutions (see the module)."""
    if _OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    try:
        if jax.default_backend() != "cpu":
            return {}
        options = {_OPTION: ""}
        jax.jit(lambda x: x + 1, compiler_options=options).lower(jnp.zeros((), jnp.float32)).compile()
    except Exception:  # an older/newer jaxlib without the option: keep its defaults
        return {}
    return options
