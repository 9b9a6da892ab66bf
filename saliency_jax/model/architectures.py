"""Flax convnets of the Zeiler & Fergus family, with named layers, looked up by name.

Every model here maps a batch ``(B, H, W, C) float32`` to logits ``(B, K) float32`` and is
built from the pieces saliency methods care about: ``nn.Conv``, ``nn.relu`` and
``nn.max_pool``, then dense layers. Submodules carry the layer names of the paper
(``conv1`` … ``conv5``, ``fc6``, ``fc7``, ``logits``) so that layers can be addressed by name.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import saliency_jax as sj
    >>> model = sj.get_model("small", num_classes=2)
    >>> x = jnp.zeros((1, 128, 128, 3))
    >>> variables = model.init(jax.random.key(0), x)
    >>> model.apply(variables, x).shape
    (1, 2)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["ConvSpec", "PoolSpec", "ConvNet", "MODEL_NAMES", "get_model", "model_config"]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution followed by ReLU: ``features`` maps, ``kernel`` × ``kernel``, ``stride``."""

    name: str
    features: int
    kernel: int
    stride: int = 1
    padding: str = "SAME"


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A max pool of ``window`` × ``window`` with ``stride`` (overlapping when stride < window)."""

    name: str
    window: int = 3
    stride: int = 2
    padding: str = "SAME"


class ConvNet(nn.Module):
    """A Zeiler–Fergus-style convnet: ``[conv → relu (→ max-pool)]*`` then ``[dense → relu]*`` → logits.

    Attributes:
        layers: the convolution/pooling stack, in order.
        hidden: widths of the dense layers before the classifier (named ``fc6``, ``fc7``, …).
        num_classes: number of output logits ``K``.
        input_size: the ``(H, W, C)`` the model was designed for (informational; convolutions
            accept other sizes, the first dense layer fixes the flattened size at init).
    """

    layers: Sequence[ConvSpec | PoolSpec]
    hidden: Sequence[int]
    num_classes: int
    input_size: tuple[int, int, int]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits ``(B, K)`` for images ``(B, H, W, C)``."""
        for spec in self.layers:
            if isinstance(spec, ConvSpec):
                x = nn.Conv(
                    spec.features,
                    (spec.kernel, spec.kernel),
                    strides=(spec.stride, spec.stride),
                    padding=spec.padding,
                    name=spec.name,
                )(x)
                x = nn.relu(x)
            else:
                x = nn.max_pool(
                    x, (spec.window, spec.window), strides=(spec.stride, spec.stride), padding=spec.padding
                )
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"fc{6 + i}")(x))
        return nn.Dense(self.num_classes, name="logits")(x)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the layers in forward order (convolutions, pools, dense layers, logits)."""
        dense = tuple(f"fc{6 + i}" for i in range(len(self.hidden)))
        return tuple(spec.name for spec in self.layers) + dense + ("logits",)


def _zf(num_classes: int, fc: Sequence[int], width: float) -> ConvNet:
    w = lambda n: max(1, int(round(n * width)))  # noqa: E731
    return ConvNet(
        layers=(
            ConvSpec("conv1", w(96), 7, 2),
            PoolSpec("pool1", 3, 2),
            ConvSpec("conv2", w(256), 5, 2),
            PoolSpec("pool2", 3, 2),
            ConvSpec("conv3", w(384), 3),
            ConvSpec("conv4", w(384), 3),
            ConvSpec("conv5", w(256), 3),
            PoolSpec("pool5", 3, 2, "VALID"),
        ),
        hidden=tuple(fc),
        num_classes=num_classes,
        input_size=(224, 224, 3),
    )


def _small(num_classes: int, fc: Sequence[int], width: float) -> ConvNet:
    w = lambda n: max(1, int(round(n * width)))  # noqa: E731
    return ConvNet(
        layers=(
            ConvSpec("conv1", w(32), 5, 2),
            PoolSpec("pool1", 3, 2),
            ConvSpec("conv2", w(64), 3),
            PoolSpec("pool2", 3, 2),
            ConvSpec("conv3", w(96), 3),
            ConvSpec("conv4", w(96), 3),
            ConvSpec("conv5", w(64), 3),
            PoolSpec("pool5", 3, 2, "VALID"),
        ),
        hidden=tuple(fc),
        num_classes=num_classes,
        input_size=(128, 128, 3),
    )


_REGISTRY = {
    # ZF-style for 224×224×3: 7×7/2 conv(96) → pool 3/2 → 5×5/2 conv(256) → pool 3/2 →
    # 3×3 conv(384, 384, 256) → pool 3/2 → fc6, fc7 → logits.
    "zf": (_zf, dict(num_classes=1000, fc=(4096, 4096), width=1.0)),
    # The small member of the family (128×128×3), the architecture of the shipped model.
    "small": (_small, dict(num_classes=2, fc=(128,), width=1.0)),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def model_config(name: str, **overrides) -> dict:
    """The full configuration of model ``name`` with ``overrides`` applied (for model cards).

    Args:
        name: one of :data:`MODEL_NAMES`.
        **overrides: ``num_classes`` (int), ``fc`` (sequence of dense widths), ``width`` (a
            multiplier on every convolution's feature count).

    Returns:
        A plain ``dict`` with keys ``name``, ``num_classes``, ``fc`` (list) and ``width``.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"`name` (={name!r}) must be one of {MODEL_NAMES}")
    defaults = _REGISTRY[name][1]
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)} for {name!r}; accepted: {sorted(defaults)}")
    config = {**defaults, **overrides}
    if not isinstance(config["num_classes"], int) or config["num_classes"] < 1:
        raise ValueError(f"`num_classes` (={config['num_classes']!r}) must be a positive int")
    if not all(isinstance(f, int) and f > 0 for f in config["fc"]):
        raise ValueError(f"`fc` (={config['fc']!r}) must be a sequence of positive ints")
    if not isinstance(config["width"], (int, float)) or not config["width"] > 0:
        raise ValueError(f"`width` (={config['width']!r}) must be a positive number")
    return {"name": name, "num_classes": config["num_classes"], "fc": list(config["fc"]), "width": config["width"]}


def get_model(name: str, **overrides) -> ConvNet:
    """Build the model called ``name`` (see :func:`model_config` for the options).

    Args:
        name: ``"zf"`` (224×224×3, Zeiler–Fergus layout) or ``"small"`` (128×128×3).
        **overrides: ``num_classes``, ``fc``, ``width``.

    Returns:
        An unbound :class:`ConvNet`; ``model.init(key, x)`` creates its variables and
        ``model.apply(variables, x)`` maps ``(B, H, W, C)`` to logits ``(B, K)``.
    """
    config = model_config(name, **overrides)
    build = _REGISTRY[name][0]
    return build(config["num_classes"], tuple(config["fc"]), config["width"])
