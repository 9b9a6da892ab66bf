"""EfficientNet-Lite in Flax linen (inference form), and its weights from a PyTorch state dict.

EfficientNet-Lite (Tan & Le 2019; the "lite" variants of the TensorFlow TPU repository) is
EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish and with the stem and
head kept at 32 and 1280 channels when the width is scaled. The network:

=============  ==================================================================
``stem``       3×3/2 conv (32) → BatchNorm → ReLU6
``blocks_0``…  MBConv blocks: [1×1 expand conv → BN → ReLU6] → k×k/s depthwise conv → BN →
               ReLU6 → 1×1 project conv → BN (+ the block input when stride 1 and the
               channel count is kept); 16 blocks for lite0
``head``       1×1 conv (1280) → BatchNorm → ReLU6
``fc``         global average → dense (1000 logits); dropout is a training-only layer and
               is left out
=============  ==================================================================

Every ``nn.Module`` here is named, so ``layer=`` (:func:`saliency_jax.project_units`, layer
features) can name ``"stem"``, ``"blocks_0"`` … ``"blocks_15"`` or ``"head"`` (each the output
after its activation or residual addition) or a convolution inside a block (``"blocks_15/project_conv"``).
BatchNorm runs with its running statistics (``use_running_average=True``), kept in the
``batch_stats`` collection: ``variables = {"params": …, "batch_stats": …}``. Convolutions pad
"SAME" the way TensorFlow does (more padding at the bottom/right), as the PyTorch port's
``Conv2dStaticSamePadding`` does at the model's own resolution. Images are NHWC.

:func:`variables_from_torch` maps a state dict in the naming of ``efficientnet_pytorch`` /
``efficientnet_lite_pytorch`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` …,
``_conv_head``, ``_bn1``, ``_fc``) onto this module's variables.

Example:
    >>> import jax, jax.numpy as jnp
    >>> model = efficientnet_lite("efficientnet-lite0")
    >>> x = jnp.zeros((1, 224, 224, 3))
    >>> variables = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> sorted(variables), len(model.block_specs)
    (['batch_stats', 'params'], 16)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "VARIANTS",
    "BlockSpec",
    "MBConv",
    "ConvBNAct",
    "DepthwiseConv",
    "EfficientNetLite",
    "relu6",
    "block_specs",
    "efficientnet_lite",
    "architecture_config",
    "from_config",
    "variables_from_torch",
]

#: name -> (width coefficient, depth coefficient, input resolution, dropout rate), as in the
#: TensorFlow repository's ``efficientnet_lite_builder.py``.
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet-lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet-lite4": (1.4, 1.8, 300, 0.3),
}

# The seven stages of EfficientNet-B0 / Lite0: (repeats, kernel, stride, expand ratio, in, out).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM, _HEAD = 32, 1280
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.99


def relu6(x):
    """``min(max(x, 0), 6)``: :func:`jax.nn.relu6`, looked up here at call time (so a test may swap it)."""
    return jax.nn.relu6(x)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: ``in_features`` → ``out_features``, depthwise ``kernel`` × ``kernel``
    with ``stride``, hidden width ``in_features * expand_ratio``."""

    in_features: int
    out_features: int
    kernel: int
    stride: int
    expand_ratio: int

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output (stride 1 and same channel count)."""
        return self.stride == 1 and self.in_features == self.out_features


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale by ``width``, round to a multiple of ``divisor``,
    never more than 10 % down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def block_specs(width: float, depth: float) -> tuple[BlockSpec, ...]:
    """The MBConv blocks of EfficientNet-Lite at ``width`` / ``depth`` coefficients.

    The first and last stages keep their repeat count and the first stage its 32 input
    channels (the stem is not scaled: "fix_head_stem" of the Lite builder); the others repeat
    ``ceil(depth * repeats)`` times and every stage's channels are rounded from ``width``.

    Example:
        >>> len(block_specs(1.0, 1.0)), len(block_specs(1.0, 1.1)), len(block_specs(1.1, 1.2))
        (16, 21, 21)
    """
    specs = []
    last = len(_STAGES) - 1
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
        cin, cout = _round_filters(cin, width), _round_filters(cout, width)
        if i == 0:
            cin = _STEM
        if i not in (0, last):
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append(BlockSpec(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
    return tuple(specs)


def _batch_norm(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name)


class ConvBNAct(nn.Module):
    """A bias-free convolution → BatchNorm → ReLU6 (the stem and the head)."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        """``(B, H, W, C)`` → ``(B, ceil(H / stride), ceil(W / stride), features)``."""
        x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                    padding="SAME", use_bias=False, name="conv")(x)
        return relu6(_batch_norm("bn")(x))


class DepthwiseConv(nn.Module):
    """A bias-free depthwise ``k × k`` convolution, TF ``SAME`` padding, written as ``k²`` shifted
    multiply-adds (its parameter is ``nn.Conv``'s: ``kernel (k, k, 1, C)``).

    Why not ``nn.Conv(feature_group_count=C)``: XLA:CPU runs that grouped convolution at about
    0.6–0.8 GFLOP/s, while the same sum as shifted multiply-adds runs at 6–20 GFLOP/s (measured
    by ``benchmarks/imagenet.py --parts depthwise``); the whole Lite0 forward pass at batch 16 went
    from 8.6 to 51.5 images/s, logits equal to 3e-7 of their scale. The sum order differs from the
    grouped convolution's, so results agree to float32 rounding, not bit for bit.
    """

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        """``(B, H, W, C)`` → ``(B, ceil(H / stride), ceil(W / stride), C)``."""
        k, s = self.kernel, self.stride
        # float32 as nn.Conv's kernels (the initialiser's default would follow jax_enable_x64 to float64,
        # and a float32 checkpoint would then not fit the model)
        w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, self.features), jnp.float32)
        b, h, wd, c = x.shape
        ho, wo = -(-h // s), -(-wd // s)
        ph, pw = max((ho - 1) * s + k - h, 0), max((wo - 1) * s + k - wd, 0)
        p = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        out = None
        for i in range(k):
            for j in range(k):
                tap = jax.lax.slice(p, (0, i, j, 0), (b, i + (ho - 1) * s + 1, j + (wo - 1) * s + 1, c),
                                    (1, s, s, 1)) * w[i, j, 0].astype(x.dtype).reshape(1, 1, 1, c)
                out = tap if out is None else out + tap
        return out


class MBConv(nn.Module):
    """The mobile inverted bottleneck of EfficientNet-Lite (no squeeze-and-excitation)."""

    spec: BlockSpec

    @nn.compact
    def __call__(self, inputs):
        """``(B, H, W, in)`` → ``(B, ceil(H / stride), ceil(W / stride), out)``."""
        s = self.spec
        hidden = s.in_features * s.expand_ratio
        x = inputs
        if s.expand_ratio != 1:
            x = nn.Conv(hidden, (1, 1), use_bias=False, name="expand_conv")(x)
            x = relu6(_batch_norm("bn0")(x))
        x = DepthwiseConv(hidden, s.kernel, s.stride, name="depthwise_conv")(x)
        x = relu6(_batch_norm("bn1")(x))
        x = nn.Conv(s.out_features, (1, 1), use_bias=False, name="project_conv")(x)
        x = _batch_norm("bn2")(x)
        if s.residual:
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: images ``(B, H, W, 3) float32`` (normalised as the card says) →
    logits ``(B, num_classes) float32``.

    Attributes:
        width: the width coefficient (channels; 1.0 for lite0 and lite1, 1.1 for lite2).
        depth: the depth coefficient (block repeats; 1.0, 1.1, 1.2 for lite0, 1, 2).
        num_classes: number of logits.
        input_size: ``(H, W, C)`` the weights were trained at (informational: the network
            accepts other sizes).
    """

    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (224, 224, 3)

    @property
    def block_specs(self) -> tuple[BlockSpec, ...]:
        """The MBConv blocks, in order (``blocks_0`` …)."""
        return block_specs(self.width, self.depth)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the top-level layers in forward order (for ``layer=``)."""
        return ("stem",) + tuple(f"blocks_{i}" for i in range(len(self.block_specs))) + ("head", "fc")

    @nn.compact
    def __call__(self, x):
        """Logits ``(B, num_classes)`` for images ``(B, H, W, 3)``."""
        x = ConvBNAct(_STEM, 3, 2, name="stem")(x)
        for i, spec in enumerate(self.block_specs):
            x = MBConv(spec, name=f"blocks_{i}")(x)
        x = ConvBNAct(_HEAD, 1, 1, name="head")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


def architecture_config(name: str = "efficientnet-lite0", num_classes: int = 1000) -> dict:
    """The card's ``architecture`` record of a variant: ``{"name": "efficientnet-lite", "variant",
    "width", "depth", "num_classes", "input_size"}``.

    Raises:
        ValueError: ``name`` is not one of :data:`VARIANTS`.
    """
    if not isinstance(name, str) or name not in VARIANTS:
        raise ValueError(f"`name` (={name!r}) must be one of {tuple(VARIANTS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"`num_classes` (={num_classes!r}) must be a positive int")
    width, depth, res, _dropout = VARIANTS[name]
    return {"name": "efficientnet-lite", "variant": name, "width": width, "depth": depth,
            "num_classes": num_classes, "input_size": [res, res, 3]}


def from_config(config: Mapping) -> EfficientNetLite:
    """The module an :func:`architecture_config` record describes.

    Raises:
        ValueError: the record is not an EfficientNet-Lite one, or its fields are invalid.
    """
    if not isinstance(config, Mapping) or config.get("name") != "efficientnet-lite":
        raise ValueError(f"`config` (={config!r:.200}) is not an efficientnet-lite architecture record")
    width, depth = config.get("width"), config.get("depth")
    num_classes, size = config.get("num_classes", 1000), config.get("input_size", [224, 224, 3])
    for arg, value in (("width", width), ("depth", depth)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"`config['{arg}']` (={value!r}) must be a positive number")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"`config['num_classes']` (={num_classes!r}) must be a positive int")
    if not (isinstance(size, Sequence) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f"`config['input_size']` (={size!r}) must be [H, W, C] positive ints")
    return EfficientNetLite(float(width), float(depth), num_classes, tuple(size))


def efficientnet_lite(name: str = "efficientnet-lite0", num_classes: int = 1000) -> EfficientNetLite:
    """The (unbound) EfficientNet-Lite variant ``name`` (``"efficientnet-lite0"`` … ``"-lite4"``).

    Example:
        >>> efficientnet_lite("efficientnet-lite2").input_size
        (260, 260, 3)
    """
    return from_config(architecture_config(name, num_classes))


# --------------------------------------------------------------------------- torch weights


def _conv(w: np.ndarray) -> np.ndarray:
    """torch ``(O, I/groups, kh, kw)`` → Flax ``(kh, kw, I/groups, O)``."""
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def variables_from_torch(module: EfficientNetLite, state_dict: Mapping[str, np.ndarray]) -> dict:
    """The Flax variables of ``module`` from an ``efficientnet_pytorch``-named state dict.

    Args:
        module: the :class:`EfficientNetLite` the weights belong to.
        state_dict: ``{name: np.ndarray}`` (e.g. from
            :func:`saliency_jax.model.torch_legacy.read_state_dict`), torch layouts: convolutions
            ``(O, I/groups, kh, kw)``, dense ``(out, in)``, BatchNorm ``weight``/``bias``/
            ``running_mean``/``running_var`` (``num_batches_tracked`` is ignored).

    Returns:
        ``{"params": …, "batch_stats": …}`` of numpy ``float32`` arrays, with exactly the
        structure, shapes and dtypes of ``module.init`` at the module's ``input_size``.

    Raises:
        ValueError: an entry the module needs is missing, one is left over, or a shape differs
            (the message names them).
    """
    sd = {k: np.asarray(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in sd:
            raise ValueError(f"`state_dict` lacks {key!r} (has {len(sd)} entries, e.g. {sorted(sd)[:4]})")
        used.add(key)
        return np.asarray(sd[key], np.float32)

    params: dict = {}
    stats: dict = {}

    def bn(torch_name: str):
        p = {"scale": take(f"{torch_name}.weight"), "bias": take(f"{torch_name}.bias")}
        s = {"mean": take(f"{torch_name}.running_mean"), "var": take(f"{torch_name}.running_var")}
        return p, s

    def conv_bn(flax_name: str, conv: str, norm: str):
        p, s = bn(norm)
        params[flax_name] = {"conv": {"kernel": _conv(take(f"{conv}.weight"))}, "bn": p}
        stats[flax_name] = {"bn": s}

    conv_bn("stem", "_conv_stem", "_bn0")
    for i, spec in enumerate(module.block_specs):
        t = f"_blocks.{i}"
        bp: dict = {}
        bs: dict = {}
        if spec.expand_ratio != 1:
            bp["expand_conv"] = {"kernel": _conv(take(f"{t}._expand_conv.weight"))}
            bp["bn0"], bs["bn0"] = bn(f"{t}._bn0")
        bp["depthwise_conv"] = {"kernel": _conv(take(f"{t}._depthwise_conv.weight"))}
        bp["bn1"], bs["bn1"] = bn(f"{t}._bn1")
        bp["project_conv"] = {"kernel": _conv(take(f"{t}._project_conv.weight"))}
        bp["bn2"], bs["bn2"] = bn(f"{t}._bn2")
        params[f"blocks_{i}"], stats[f"blocks_{i}"] = bp, bs
    conv_bn("head", "_conv_head", "_bn1")
    params["fc"] = {"kernel": np.ascontiguousarray(take("_fc.weight").T), "bias": take("_fc.bias")}
    left = sorted(set(sd) - used)
    if left:
        raise ValueError(f"`state_dict` has {len(left)} entries the module does not use: {left[:6]}")
    variables = {"params": params, "batch_stats": stats}
    sample = jax.ShapeDtypeStruct((1,) + tuple(module.input_size), jnp.float32)
    wanted = jax.eval_shape(module.init, jax.random.key(0), sample)
    got_paths = jax.tree_util.tree_flatten_with_path(variables)[0]
    want_paths = jax.tree_util.tree_flatten_with_path(wanted)[0]
    got = {jax.tree_util.keystr(p): a.shape for p, a in got_paths}
    want = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in want_paths}
    problems = [f"{k}: state dict {got.get(k)} vs module {want.get(k)}" for k in sorted(set(got) | set(want))
                if got.get(k) != want.get(k)]
    if problems:
        raise ValueError(f"`state_dict` does not fit {module.__class__.__name__}(width={module.width}, "
                         f"depth={module.depth}): " + "; ".join(problems[:6]))
    return variables
