"""Parity with Captum's Deconvolution, GuidedBackprop and Saliency(abs=False) on the same weights.

Always: ``sj.deconvnet``, ``sj.guided_backprop`` and ``sj.gradient`` against Captum's maps
recorded in ``tests/fixtures/captum_backprop.npz`` (regenerate with
``python -m tests.fixtures.record_captum``); no torch needed. With torch and captum installed
(marker ``peers``): also against live Captum. The ported network (``tests/torch_port.py``) uses
one ``nn.ReLU`` module per ReLU, so Captum's hooks override every ReLU's backward pass, and
``nn.MaxPool2d``, whose backward routes to the first maximum like our switches.

Tolerance: ``atol = 1e-5 * max|Captum map|``, no ``rtol``. A backprop map is a sum of products
of weights along paths: nothing larger cancels in it, so its float32 rounding scales with the
map itself. The two frameworks sum in different orders; the maps differ by at most 3.4e-7 of
their max (about 3 float32 epsilons); 1e-5 (about 80 epsilons) leaves room for other CPUs and
thread counts while catching any wrong rule (a flipped ReLU mask or a misrouted max-pool moves
entries by a good fraction of the scale).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from tests.fixtures.captum_cases import (
    BACKPROP_METHODS,
    BACKPROP_MODEL,
    BACKPROP_TARGETS,
)
from tests.fixtures.peers import (assert_logits, assert_recorded_with, needs_peers, port, rebuild,
                                   record_captum)

ATOL_PER_SCALE = 1e-5  # see the module docstring
OURS = {"deconvnet": sj.deconvnet, "guided_backprop": sj.guided_backprop, "gradient": sj.gradient}


@pytest.fixture(scope="module")
def recorded():
    return rebuild("backprop", BACKPROP_MODEL)


def _ours(name, model, variables, images):
    return np.asarray(OURS[name](model.apply, variables, jnp.asarray(images), target=BACKPROP_TARGETS))


def _assert_parity(ours, captum_map):
    scale = np.abs(captum_map).max()
    assert scale > 0 and np.ptp(captum_map) > 0  # a map with content, not a constant
    np.testing.assert_allclose(ours, captum_map, rtol=0, atol=ATOL_PER_SCALE * scale)


def test_fixture_was_recorded_on_these_cases(recorded):
    meta, _, _, variables = recorded
    assert_recorded_with(meta, BACKPROP_MODEL, variables, methods=BACKPROP_METHODS, targets=BACKPROP_TARGETS)


def test_logits_match_the_recorded_torch_logits(recorded):
    _, arrays, model, variables = recorded
    assert_logits(model.apply(variables, arrays["images"]), arrays["logits"])


@pytest.mark.parametrize("name", list(BACKPROP_METHODS))
def test_matches_recorded_captum(recorded, name):
    _, arrays, model, variables = recorded
    _assert_parity(_ours(name, model, variables, arrays["images"]), arrays[name])


def test_the_three_recorded_maps_differ(recorded):
    # the rules are told apart: no two methods' recorded maps agree within the parity tolerance
    arrays = recorded[1]
    for a in BACKPROP_METHODS:
        for b in BACKPROP_METHODS:
            if a < b:
                assert np.abs(arrays[a] - arrays[b]).max() > 100 * ATOL_PER_SCALE * np.abs(arrays[a]).max()


@pytest.mark.peers
@needs_peers
def test_recorder_reproduces_the_fixture(recorded):
    meta, arrays, _, _ = recorded
    live_meta, live_arrays = record_captum.backprop_fixture()
    assert {**live_meta, "versions": None} == {**meta, "versions": None}
    assert sorted(live_arrays) == sorted(arrays)
    np.testing.assert_array_equal(live_arrays["images"], arrays["images"])
    assert_logits(live_arrays["logits"], arrays["logits"])
    for name in BACKPROP_METHODS:  # torch's thread count may change its summation order
        _assert_parity(live_arrays[name], arrays[name])


@pytest.mark.peers
@needs_peers
@pytest.mark.parametrize("name", list(BACKPROP_METHODS))
def test_matches_live_captum(recorded, name):
    _, arrays, model, variables = recorded
    images = arrays["images"]
    theirs = record_captum.captum_backprop(port(model, variables), images, BACKPROP_METHODS[name], BACKPROP_TARGETS)
    _assert_parity(_ours(name, model, variables, images), theirs)
