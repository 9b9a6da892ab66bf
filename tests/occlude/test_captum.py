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
    build_model,
    fill_value,
    init_weights,
    load,
    weights_digest,
)

try:  # the live tests need torch and captum; the fixture tests do not
    import torch

    from tests.fixtures import record_captum
    from tests.torch_port import port
except ImportError:
    torch = record_captum = port = None

needs_peers = pytest.mark.skipif(record_captum is None, reason="torch and captum are not installed")

RTOL, ATOL_PER_SCALE = 1e-4, 2e-5  # see the module docstring


@pytest.fixture(scope="module")
def recorded():
    meta, arrays = load("occlusion")
    model = build_model(OCCLUSION_MODEL)
    return meta, arrays, model, init_weights(model, OCCLUSION_MODEL)


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
    rerun = "the fixture is stale: rerun `python -m tests.fixtures.record_captum`"
    assert meta["model"] == OCCLUSION_MODEL.to_json(), rerun
    assert meta["cases"] == OCCLUSION_CASES, rerun
    assert meta["weights_sha256"] == weights_digest(variables), "the rebuilt weights differ from the recorded ones"


def test_logits_match_the_recorded_torch_logits(recorded):
    _, arrays, model, variables = recorded
    ours = np.asarray(model.apply(variables, arrays["images"]))
    scale = np.abs(arrays["logits"]).max()
    np.testing.assert_allclose(ours, arrays["logits"], rtol=0, atol=1e-5 * scale)


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
    np.testing.assert_allclose(live_arrays["logits"], arrays["logits"], rtol=0, atol=1e-5 * np.abs(arrays["logits"]).max())
    for case in OCCLUSION_CASES:  # torch's thread count may change its summation order
        _assert_parity(live_arrays[case], arrays[case])


@pytest.mark.peers
@needs_peers
def test_ported_model_agrees(recorded):
    _, arrays, model, variables = recorded
    ours = np.asarray(model.apply(variables, arrays["images"]))
    with torch.no_grad():
        theirs = port(model, variables)(record_captum.nchw(arrays["images"])).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.peers
@needs_peers
@pytest.mark.parametrize("case", list(OCCLUSION_CASES))
def test_matches_live_captum_occlusion(recorded, case):
    _, arrays, model, variables = recorded
    images = arrays["images"]
    theirs = record_captum.captum_occlusion(port(model, variables), images, OCCLUSION_CASES[case])
    _assert_parity(_ours(model, variables, images, OCCLUSION_CASES[case]), theirs)
