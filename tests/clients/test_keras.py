"""Keras 3 applications on the JAX backend (``weights=None``, through ``stateless_call``).

ResNet50 keeps its default softmax head (strict guided backprop must accept it); MobileNetV2 is
built with logits and exercises ReLU6. Keras broadcasts biases by rank promotion, so these
tests allow it (the rest of the suite raises on it).
"""

import functools

import jax
import numpy as np
import pytest

from tests.clients.common import check_backprop, check_occlusion

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # pragma: no cover - another backend was chosen before conftest ran
    pytest.skip("keras is not on the JAX backend", allow_module_level=True)

pytestmark = pytest.mark.slow  # building a Keras application alone takes seconds


@pytest.fixture(autouse=True)
def _allow_rank_promotion():
    with jax.numpy_rank_promotion("allow"):
        yield


@functools.lru_cache(maxsize=None)
def _model(name: str):
    """``(apply_fn, variables, image)``: ``apply_fn(variables, x)`` is ``stateless_call`` in inference mode.

    The BatchNorm statistics are calibrated on a random batch (momentum 0, one training-mode
    call), so activations neither vanish nor explode through the random network (uncalibrated,
    MobileNetV2's logits come out near 1e-12).
    """
    with jax.numpy_rank_promotion("allow"):
        if name == "resnet50":
            model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
        else:
            model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10,
                                                   classifier_activation=None)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.0
        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]
        batch = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
        _, fixed = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=True))(trainable, fixed, batch)
    # the classifier's kernel (the last trainable variables are its kernel and bias) scaled so that
    # the logits spread over a few units: a softmax of random ResNet50 logits saturates otherwise
    trainable[-2] = trainable[-2] * 0.05

    def apply_fn(variables, x):
        return model.stateless_call(variables[0], variables[1], x, training=False)[0]

    image = jax.random.normal(jax.random.key(1), (32, 32, 3))
    return apply_fn, (trainable, list(fixed)), image


def test_resnet50_with_its_softmax_head(monkeypatch):
    apply_fn, variables, image = _model("resnet50")
    probs = np.asarray(jax.jit(apply_fn)(variables, image[None]))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)  # the default head is a softmax
    check_occlusion(apply_fn, variables, image, window=16, stride=16, target=3)
    # strict guided backprop accepts the softmax head and equals the custom-VJP-ReLU reference
    check_backprop(apply_fn, variables, image, 3, monkeypatch, [(jax.nn, "relu", "relu")], rules=("guided",))


def test_mobilenet_v2_relu6(monkeypatch):
    apply_fn, variables, image = _model("mobilenet_v2")
    check_occlusion(apply_fn, variables, image, window=16, stride=16, target=2)
    check_backprop(apply_fn, variables, image, 2, monkeypatch, [(jax.nn, "relu6", "relu6")])
