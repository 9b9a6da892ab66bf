"""Parity with Captum's ``Occlusion`` on the same weights (skipped without torch and captum)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import saliency_jax as sj  # noqa: E402
from saliency_jax.occlude.engine import occlusion  # noqa: E402
from tests.torch_port import port  # noqa: E402

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def nets():
    model = sj.get_model("small", num_classes=3, width=0.5, fc=(16,))
    shape = (2, 44, 38, 3)
    variables = model.init(jax.random.key(3), jnp.zeros(shape))
    images = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    return model, variables, port(model, variables), images


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def test_ported_model_agrees(nets):
    model, variables, torch_net, images = nets
    ours = np.asarray(model.apply(variables, jnp.asarray(images)))
    with torch.no_grad():
        theirs = torch_net(_nchw(images)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "window, stride, fill, target",
    [
        ((8, 8), (4, 4), 0.0, 1),  # divides 44 but not 38: Captum clips the last column of windows
        ((11, 7), (5, 3), 0.5, [2, 0]),  # non-square, neither divides: clipped windows on both axes
        ((6, 6), (6, 6), "per-channel", 0),  # non-overlapping, per-channel fill
        ((9, 10), (4, 5), "mean", [1, 2]),  # per-image channel means as Captum baselines
    ],
)
def test_matches_captum_occlusion(nets, window, stride, fill, target):
    model, variables, torch_net, images = nets
    c = images.shape[-1]
    if fill == "per-channel":
        fill_ours = np.asarray([0.2, 0.5, 0.8], np.float32)
        baselines = torch.from_numpy(fill_ours).reshape(1, c, 1, 1)
    elif fill == "mean":
        fill_ours = "mean"
        baselines = torch.from_numpy(images.mean(axis=(1, 2))).reshape(-1, c, 1, 1)
    else:
        fill_ours, baselines = fill, fill
    ours = np.asarray(occlusion(model.apply, variables, images, window=window, stride=stride, fill=fill_ours, target=target))
    theirs = captum_attr.Occlusion(torch_net).attribute(
        _nchw(images),
        sliding_window_shapes=(c, *window),
        strides=(c, *stride),
        baselines=baselines,
        target=target,
        perturbations_per_eval=32,
    )
    theirs = theirs.detach().numpy()
    np.testing.assert_allclose(theirs[:, 0], theirs[:, 2], rtol=0, atol=0)  # the window spans all channels
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs[:, 0], rtol=1e-4, atol=2e-5 * scale)
