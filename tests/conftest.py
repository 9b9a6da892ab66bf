"""Shared test settings.

* Strict rank promotion, so silent broadcasting bugs fail loudly.
* The machine lock, held shared for the whole session (``benchmarks/_lock.py``): test sessions
  run side by side, but never beside a benchmark that is timing something.
"""
import jax
import pytest

from benchmarks._lock import machine_lock

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session", autouse=True)
def _machine_lock_shared():
    with machine_lock(exclusive=False):
        yield
