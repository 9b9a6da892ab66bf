"""Parity with Captum's Deconvolution, GuidedBackprop and Saliency(abs=False) on ported weights.

Skipped without torch and captum. The ported network (tests/torch_port.py) uses one
``nn.ReLU`` module per ReLU, so Captum's hooks override every ReLU's backward pass, and
``nn.MaxPool2d``, whose backward routes to the first maximum like our switches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import saliency_jax as sj  # noqa: E402
from saliency_jax import backprop  # noqa: E402
from tests.torch_port import port  # noqa: E402

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def nets():
    model = sj.get_model("small", num_classes=3, width=0.25, fc=(16,))
    shape = (2, 40, 36, 3)
    rng = np.random.default_rng(5)  # N(0, 1/fan_in) weights without compiling the initialisers
    variables = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape, dtype=np.float32)
                              / np.float32(np.sqrt(np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10.0))),
        jax.eval_shape(model.init, jax.random.key(5), jax.ShapeDtypeStruct(shape, jnp.float32)))
    images = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    return model, variables, port(model, variables), images


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


@pytest.mark.parametrize("ours, theirs", [
    (backprop.deconvnet, lambda net: captum_attr.Deconvolution(net)),
    (backprop.guided_backprop, lambda net: captum_attr.GuidedBackprop(net)),
    (backprop.gradient, lambda net: captum_attr.Saliency(net)),
])
def test_parity_with_captum(nets, ours, theirs):
    model, variables, torch_net, images = nets
    targets = [0, 2]
    mine = np.asarray(ours(model.apply, variables, jnp.asarray(images), target=targets))
    method = theirs(torch_net)
    kwargs = {"abs": False} if isinstance(method, captum_attr.Saliency) else {}
    ref = method.attribute(_nchw(images).requires_grad_(), target=targets, **kwargs).detach().numpy()
    ref = np.transpose(ref, (0, 2, 3, 1))
    assert np.abs(ref).max() > 0
    scale = np.abs(ref).max()
    np.testing.assert_allclose(mine, ref, rtol=1e-3, atol=1e-4 * scale)
