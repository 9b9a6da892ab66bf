"""How the engines (occlusion, masked evaluation, the gradient family) compile and run: CPU compile options, one jit policy, fixed-size chunks.

**Compile options.** On jaxlib 0.10 XLA:CPU hands convolutions and matrix products to YNNPACK
("ynn fusions") by default. Measured on a 2-core x86 CPU (``benchmarks/results/incremental.md``),
YNNPACK's convolutions ran at 25-110 GFLOP/s depending on shape (a cliff from batch 12-16 of
14×14×512 maps), against 150-177 GFLOP/s for XLA's own convolutions on the same shapes; full
re-inference of the VGG16-style model, the ZF-style model and the shipped small model, and
incremental re-inference of all three, were faster with YNNPACK off. :func:`cpu_compiler_options`
returns the per-``jit`` option that turns it off, only where it applies:

* the default backend is the CPU;
* the installed jaxlib accepts the option (checked once by compiling a trivial function);
* the user has not chosen a YNNPACK setting in ``XLA_FLAGS`` (theirs wins).

Otherwise it returns ``{}`` and the library's defaults apply. The result is cached; it never runs
at import time (it must not initialise the backend before a user's ``XLA_FLAGS`` are read).

**The jit policy** (:func:`jit_with_policy`, the one place the engines are jitted): the options
above on one device with concrete arguments; JAX's defaults when sharded over several devices
(with YNNPACK off, full re-inference of the shipped model sharded over two host devices returned
wrong maps: max error 2.95 on maps up to 10.3, ``tests/occlude/test_devices.py`` guards it) and
inside a caller's ``jit``/``vmap`` (traced arguments: the caller's compilation decides).

**Chunks** (:func:`chunk_indices`): the windows run through the model in chunks of one fixed
size, the last one padded, so each shape is traced once.

**Backend defaults** (:func:`default_chunk_size`, :data:`CHUNK_SIZES`): windows per model call
when ``chunk_size`` is not given, per method and per backend. On the CPU they are the measured
ones (full re-inference 16, incremental 32: ``benchmarks/results/occlusion.md`` and
``incremental.md``). On a GPU or TPU a batch must be much larger to fill the device, and memory
is not the limit at these sizes (a 224² float32 image is 0.6 MB; the widest activation of the
VGG16-style model at batch 64 is about 0.8 GB), so full re-inference defaults to 64 and the
incremental engine, whose per-window work is a small region, to 128. **These two were not
measured** (no accelerator was at hand when they were set); ``chunk_size="auto"`` measures
the model on its device over :data:`TUNE_CANDIDATES` (:func:`seconds_per_item` times it).

Example:
    >>> from saliency_jax._compile import chunk_indices
    >>> chunk_indices(7, 3).tolist()   # 3 chunks of 3; the padding repeats the last window
    [[[0, 1, 2], [3, 4, 5], [6, 6, 6]]]
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from saliency_jax import _validate

__all__ = ["cpu_compiler_options", "jit_with_policy", "chunk_indices", "CHUNK_SIZES", "TUNE_CANDIDATES",
           "backend_kind", "default_chunk_size", "seconds_per_item"]

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


def jit_with_policy(fn: Callable, static_argnums: Sequence[int] = (), *, args: Any = (), n_devices: int = 1,
                    library_defaults: bool = False) -> Callable:
    """``fn`` under ``jax.jit``, with :func:`cpu_compiler_options` where the policy applies them.

    The options apply when ``n_devices == 1``, no leaf of ``args`` (the call's array
    arguments) is a tracer and ``library_defaults`` is false; otherwise, and wherever the
    options are ``{}``, this is the plain ``jax.jit(fn, static_argnums=...)`` (XLA's defaults:
    YNNPACK on, which measured faster for depthwise convolutions and single-image batches,
    so ``method="auto"`` can measure both; ``benchmarks/results/execution.md``). The jitted function is cached per ``(fn,
    static_argnums, options applied)``, so repeated calls reuse its compilation cache.

    Args:
        fn: the function to jit (hashable).
        static_argnums: as for ``jax.jit``.
        args: the arguments the call will pass (any pytree); only inspected for tracers.
        n_devices: how many devices the computation is sharded over.
        library_defaults: compile with XLA's defaults whatever the policy says.

    Example:
        >>> import jax.numpy as jnp
        >>> from saliency_jax._compile import jit_with_policy
        >>> double = lambda x: 2 * x
        >>> float(jit_with_policy(double, args=(jnp.ones(()),))(jnp.ones(())))
        2.0
        >>> jit_with_policy(double, n_devices=2) is jit_with_policy(double, n_devices=3)
        True
    """
    tuned = not library_defaults and n_devices == 1 and all(_validate.is_concrete(x) for x in jax.tree.leaves(args))
    return _jitted(fn, tuple(static_argnums), tuned and bool(cpu_compiler_options()))


@functools.cache
def _jitted(fn: Callable, static_argnums: tuple[int, ...], tuned: bool) -> Callable:
    return jax.jit(fn, static_argnums=static_argnums, compiler_options=cpu_compiler_options() if tuned else None)


def chunk_indices(total: int, chunk_size: int, n_groups: int = 1) -> jax.Array:
    """Flat indices ``0 … total − 1`` in fixed-size chunks: int32 ``(n_groups, n_chunks, chunk)``.

    ``n_chunks = ceil(total / (chunk_size · n_groups))`` chunks per group (a group is a device)
    and ``chunk = ceil(total / (n_chunks · n_groups)) <= chunk_size``: as even as possible, at
    most ``n_groups · n_chunks − 1`` padded entries. The padding repeats ``total − 1``; drop
    the results past ``total`` (flat index ``t`` sits at ``.reshape(-1)[t]``).

    Args:
        total: how many indices (``>= 1``).
        chunk_size: the largest chunk (``>= 1``).
        n_groups: how many groups share the chunks (``>= 1``).
    """
    n_chunks = -(-total // (chunk_size * n_groups))
    chunk = -(-total // (n_chunks * n_groups))
    padded = n_groups * n_chunks * chunk
    return jnp.minimum(jnp.arange(padded, dtype=jnp.int32), total - 1).reshape(n_groups, n_chunks, chunk)


CHUNK_SIZES = {"cpu": {"full": 16, "incremental": 32}, "gpu": {"full": 64, "incremental": 128},
               "tpu": {"full": 64, "incremental": 128}}
"""Default windows per model call, per backend kind and method (see the module)."""

TUNE_CANDIDATES = {"cpu": (1, 2, 4, 8, 16, 32), "gpu": (8, 16, 32, 64, 128, 256), "tpu": (8, 16, 32, 64, 128, 256)}
"""Batch sizes ``chunk_size="auto"`` tries, per backend kind."""


def backend_kind(platform: str | None = None) -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"`` for a device's ``platform`` (``"cuda"``, ``"rocm"`` … are
    GPUs; any other accelerator counts as one); default the default backend's.

    Example:
        >>> backend_kind("cuda"), backend_kind("cpu")
        ('gpu', 'cpu')
    """
    platform = (platform or jax.default_backend()).lower()
    if platform == "cpu":
        return "cpu"
    return "tpu" if platform == "tpu" else "gpu"


def default_chunk_size(method: str = "full", platform: str | None = None) -> int:
    """Windows per model call for ``method`` (``"full"`` or ``"incremental"``) on ``platform``.

    Args:
        method: ``"full"`` or ``"incremental"``.
        platform: a device's ``platform`` (``device.platform``); default the default backend's.

    Returns:
        :data:`CHUNK_SIZES` ``[backend_kind(platform)][method]``.

    Example:
        >>> default_chunk_size("full", "cpu"), default_chunk_size("incremental", "gpu")
        (16, 128)
    """
    _validate.choice("method", method, ("full", "incremental"))
    return CHUNK_SIZES[backend_kind(platform)][method]


def seconds_per_item(run: Callable[[], Any], items: int, repeats: int = 3) -> float:
    """Seconds per item of ``run()`` (which handles ``items`` items): one warm-up call (compile),
    then the fastest of ``repeats`` timed calls, each waited for with ``block_until_ready``.

    The fastest, not the median: on a shared machine other work only ever adds time.

    Example:
        >>> import jax.numpy as jnp
        >>> seconds_per_item(lambda: jnp.ones(4) * 2, items=4) > 0
        True
    """
    jax.block_until_ready(run())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        best = min(best, time.perf_counter() - start)
    return best / items
