"""Incremental occlusion sharded over 4 (forced host) devices: the per-image caches are shared
by every device's chunks, and the map equals one device's and full re-inference's."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
import saliency_jax as sj
from saliency_jax.model.architectures import get_model
assert len(jax.devices()) == 4, jax.devices()
model = get_model("small", width=0.25, fc=(8,))
images = jax.random.uniform(jax.random.key(1), (2, 128, 128, 3))
variables = model.init(jax.random.key(0), images[:1])
kw = dict(window=24, stride=10, target=[1, 0], chunk_size=3)
four = sj.occlusion(model.apply, variables, images, method="incremental", **kw)
one = sj.occlusion(model.apply, variables, images, method="incremental", devices=jax.devices()[:1], **kw)
full = sj.occlusion(model.apply, variables, images, method="full", **kw)
scale = float(np.abs(full).max())
assert scale > 1e-4
# one device compiles with XLA's own convolutions, four keep JAX's defaults (YNNPACK): the same
# sums in another order, so float32 rounding, as against full re-inference
np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-5 * scale)
np.testing.assert_allclose(four, full, rtol=1e-5, atol=1e-5 * scale)
print("ok")
"""


@pytest.mark.slow
def test_four_devices_incremental_agrees_with_one_and_with_full():
    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ok")
