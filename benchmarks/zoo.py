"""Flax linen models people actually run, with random weights, looked up by name.

``build(name, image_size, num_classes=10, seed=0) -> (apply_fn, variables)`` where
``apply_fn(variables, x)`` maps ``(N, H, W, 3) float32`` images to logits ``(N, K) float32``.
The BatchNorm models are in inference form (``use_running_average=True``) and carry
``batch_stats``; those statistics are calibrated once on a random batch (one pass in training
mode with momentum 0), so every BatchNorm really normalises and activations stay O(1) through
deep stacks instead of growing with depth as uncalibrated statistics (mean 0, variance 1) let them.

Names: ``"resnet18"``, ``"resnet50"`` (He et al. 2016, v1.5: stride on the 3×3 conv),
``"mobilenet_v2"`` (Sandler et al. 2018: inverted residuals, depthwise convs, ReLU6),
``"vgg16"`` (Simonyan & Zisserman 2015, configuration D, no BatchNorm) and ``"zf"`` (the
Zeiler & Fergus-style model of :mod:`saliency_jax.model.architectures`).

Only jax, flax and numpy are imported, so this runs on a bare accelerator machine.

Example:
    >>> import jax.numpy as jnp
    >>> apply_fn, variables = build("resnet18", 32, num_classes=3)
    >>> apply_fn(variables, jnp.zeros((2, 32, 32, 3))).shape
    (2, 3)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MODEL_NAMES", "build", "ResNet", "MobileNetV2", "VGG"]

MODEL_NAMES = ("resnet18", "resnet50", "mobilenet_v2", "vgg16", "zf")


def _bn(train: bool, name: str | None = None) -> nn.BatchNorm:
    # momentum 0: one calibration pass in training mode sets the running statistics to that batch's.
    return nn.BatchNorm(use_running_average=not train, momentum=0.0, epsilon=1e-5, name=name)


class _Basic(nn.Module):
    """ResNet basic block: 3×3 → BN → ReLU → 3×3 → BN, + shortcut (1×1 strided conv + BN on change)."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False)(x)
        y = nn.relu(_bn(train)(y))
        y = nn.Conv(self.features, (3, 3), 1, padding=1, use_bias=False)(y)
        y = _bn(train)(y)
        if x.shape[-1] != self.features or self.stride != 1:
            x = _bn(train)(nn.Conv(self.features, (1, 1), self.stride, use_bias=False)(x))
        return nn.relu(x + y)


class _Bottleneck(nn.Module):
    """ResNet bottleneck (v1.5): 1×1 → 3×3 (strided) → 1×1 (×4), each with BN, + shortcut."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        out = 4 * self.features
        y = nn.relu(_bn(train)(nn.Conv(self.features, (1, 1), use_bias=False)(x)))
        y = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False)(y)
        y = nn.relu(_bn(train)(y))
        y = _bn(train)(nn.Conv(out, (1, 1), use_bias=False)(y))
        if x.shape[-1] != out or self.stride != 1:
            x = _bn(train)(nn.Conv(out, (1, 1), self.stride, use_bias=False)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet: 7×7/2 conv → BN → ReLU → 3×3/2 max-pool → 4 stages → global mean → dense."""

    stages: Sequence[int]
    bottleneck: bool
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(64, (7, 7), 2, padding=3, use_bias=False)(x)
        x = nn.relu(_bn(train)(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        block = _Bottleneck if self.bottleneck else _Basic
        for i, n in enumerate(self.stages):
            for j in range(n):
                x = block(64 * 2**i, 2 if (i > 0 and j == 0) else 1)(x, train)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class _Inverted(nn.Module):
    """MobileNetV2 inverted residual: 1×1 expand → ReLU6 → 3×3 depthwise → ReLU6 → 1×1 project."""

    features: int
    stride: int
    expand: int

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        y = x
        if self.expand != 1:
            y = jax.nn.relu6(_bn(train)(nn.Conv(c * self.expand, (1, 1), use_bias=False)(y)))
        y = nn.Conv(y.shape[-1], (3, 3), self.stride, padding=1, feature_group_count=y.shape[-1], use_bias=False)(y)
        y = jax.nn.relu6(_bn(train)(y))
        y = _bn(train)(nn.Conv(self.features, (1, 1), use_bias=False)(y))
        return x + y if (self.stride == 1 and c == self.features) else y


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0): 3×3/2 conv(32) → 17 inverted residuals → 1×1 conv(1280) → mean → dense."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jax.nn.relu6(_bn(train)(nn.Conv(32, (3, 3), 2, padding=1, use_bias=False)(x)))
        for expand, features, n, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for j in range(n):
                x = _Inverted(features, stride if j == 0 else 1, expand)(x, train)
        x = jax.nn.relu6(_bn(train)(nn.Conv(1280, (1, 1), use_bias=False)(x)))
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class VGG(nn.Module):
    """VGG16 (configuration D): 13 3×3 convs + ReLU in 5 max-pooled groups → fc 4096 → fc 4096 → dense."""

    num_classes: int
    fc: Sequence[int] = (4096, 4096)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for features, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(n):
                x = nn.relu(nn.Conv(features, (3, 3), padding=1)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        for width in self.fc:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


def _module(name: str, num_classes: int) -> nn.Module:
    if name == "resnet18":
        return ResNet((2, 2, 2, 2), False, num_classes)
    if name == "resnet50":
        return ResNet((3, 4, 6, 3), True, num_classes)
    if name == "mobilenet_v2":
        return MobileNetV2(num_classes)
    if name == "vgg16":
        return VGG(num_classes)
    from saliency_jax.model.architectures import get_model

    return get_model("zf", num_classes=num_classes)


def build(name: str, image_size: int, num_classes: int = 10, seed: int = 0) -> tuple[Callable, Any]:
    """Model ``name`` with random weights for ``(N, image_size, image_size, 3)`` inputs.

    Args:
        name: one of :data:`MODEL_NAMES`.
        image_size: the square input side (``vgg16`` and ``zf`` fix their dense layers at it;
            at least 32 for the ResNets/MobileNet, 64 for ``zf``).
        num_classes: number of logits ``K``.
        seed: the weights' random seed (the same seed gives the same weights).

    Returns:
        ``(apply_fn, variables)``: ``apply_fn(variables, x)`` is pure, jit/vmap-compatible and
        maps ``(N, H, W, 3) float32`` to ``(N, K) float32``; ``variables`` holds ``params`` and,
        for the BatchNorm models, ``batch_stats``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"`name` (={name!r}) must be one of {MODEL_NAMES}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"`image_size` (={image_size!r}) must be an int >= 32")
    module = _module(name, num_classes)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = jax.jit(module.init)(init_key, x)
    if "batch_stats" in variables:
        batch = jax.random.normal(data_key, (8, image_size, image_size, 3), jnp.float32)
        _, updates = jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))(variables, batch)
        variables = {**variables, "batch_stats": updates["batch_stats"]}

    def apply_fn(variables, x):
        return module.apply(variables, x)

    return apply_fn, variables
