"""Parity with Captum's ``Occlusion`` on the same weights.

Always: ``sj.occlusion`` against Captum's maps recorded in ``tests/fixtures/captum_occlusion.npz``
(regenerate with ``python -m tests.fixtures.record_captum``); no torch needed. With torch and
captum installed (marker ``peers``): also against live Captum on the ported network.

Tolerance: ``atol = 2e-5 * max|Captum map|`` plus ``rtol = 1e-4``. The map is a difference of two
logits, so it inherits their float32 rounding, which scales with the logits (max 0.42 here,
about 20x the map's max of 0.017-0.026), not with the map. The two frameworks sum the
convolutions in different orders: the logits differ by up to 9e-8 (3 ulps at 0.42), the maps by
up to 3.1e-7 (10 ulps of the largest logit; 1.2e-5 of the map's max). The tolerance allows about
16 ulps of the largest logit.
"""

from __future__ import annotations

import numpy as np
import pytest

import saliency_jax as sj
from tests.fixtures.captum_cases import (
    OCCLUSION_CASES,
    OCCLUSION_MODEL,
    fill_value,
)
from tests.fixtures.peers import (assert_logits, assert_recorded_with, needs_peers, port, rebuild,
                                   record_captum, torch)

RTOL, ATOL_PER_SCALE = 1e-4, 2e-5  # see the module docstring


@pytest.fixture(scope="module")
def recorded():
    return rebuild("occlusion", OCCLUSION_MODEL)


def _ours(model, variables, images, case, method="auto"):
    return np.asarray(sj.occlusion(model.apply, variables, images, window=tuple(case["window"]),
                                   stride=tuple(case["stride"]), fill=fill_value(case["fill"]),
                                   target=case["target"], method=method))


def _assert_parity(ours, captum_map):
    scale = np.abs(captum_map).max()
    assert scale > 0 and np.ptp(captum_map) > 0  # a map with content, not a constant
    np.testing.assert_allclose(ours, captum_map, rtol=RTOL, atol=ATOL_PER_SCALE * scale)


def test_fixture_was_recorded_on_these_cases(recorded):
    meta, _, _, variables = recorded
    assert_recorded_with(meta, OCCLUSION_MODEL, variables, cases=OCCLUSION_CASES)


def test_logits_match_the_recorded_torch_logits(recorded):
    _, arrays, model, variables = recorded
    assert_logits(model.apply(variables, arrays["images"]), arrays["logits"])


# Each engine on two cases (tests/occlude/test_incremental.py checks the engines agree on many more).
@pytest.mark.parametrize("case, method", [("clip_columns", "full"), ("clip_both", "incremental"),
                                          ("per_channel", "full"), ("image_mean", "incremental")])
def test_matches_recorded_captum_occlusion(recorded, case, method):
    _, arrays, model, variables = recorded
    _assert_parity(_ours(model, variables, arrays["images"], OCCLUSION_CASES[case], method), arrays[case])


@pytest.mark.slow
@pytest.mark.peers
@needs_peers
def test_recorder_reproduces_the_fixture(recorded):
    meta, arrays, _, _ = recorded
    live_meta, live_arrays = record_captum.occlusion_fixture()
    assert {**live_meta, "versions": None} == {**meta, "versions": None}
    assert sorted(live_arrays) == sorted(arrays)
    np.testing.assert_array_equal(live_arrays["images"], arrays["images"])
    assert_logits(live_arrays["logits"], arrays["logits"])
    for case in OCCLUSION_CASES:  # torch's thread count may change its summation order
        _assert_parity(live_arrays[case], arrays[case])


@pytest.mark.peers
@needs_peers
def test_ported_model_agrees(recorded):
    _, arrays, model, variables = recorded
    ours = np.asarray(model.apply(variables, arrays["images"]))
    with torch.no_grad():
        theirs = port(model, variables)(record_captum.nchw(arrays["images"])).numpy()
    assert_logits(ours, theirs)


@pytest.mark.peers
@needs_peers
@pytest.mark.parametrize("case", list(OCCLUSION_CASES))
def test_matches_live_captum_occlusion(recorded, case):
    _, arrays, model, variables = recorded
    images = arrays["images"]
    theirs = record_captum.captum_occlusion(port(model, variables), images, OCCLUSION_CASES[case])
    _assert_parity(_ours(model, variables, images, OCCLUSION_CASES[case]), theirs)
