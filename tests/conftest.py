"""Shared test settings.

* Strict rank promotion, so silent broadcasting bugs fail loudly.
* The machine lock, held shared for the whole session (``benchmarks/_lock.py``): test sessions
  run side by side, but never beside a benchmark that is timing something.
* One persistent XLA compilation cache per test run (``JAX_COMPILATION_CACHE_DIR``), shared by the
  xdist workers and by every process the tests start (the CLI, the benchmarks' smoke runs, Ray's
  workers), so a program compiled once in the run is not compiled again elsewhere. A new folder
  per run (nothing carries over between runs) unless the variable is already set; removed at the
  end of the run.
"""
import os
import shutil
import tempfile

import jax
import pytest

from benchmarks._lock import machine_lock

jax.config.update("jax_numpy_rank_promotion", "raise")

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"  # the same in every worker of a run
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"saliency-jax-tests-xla-{_RUN}")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs recur most
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))


def pytest_sessionfinish(session):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _machine_lock_shared():
    with machine_lock(exclusive=False):
        yield
