"""Port a saliency_jax ConvNet and its Flax variables to an equivalent PyTorch module (tests only).

Used by ``tests/fixtures/record_captum.py`` (which records Captum's maps as fixtures) and by the
live parity tests against Captum. TF/Flax "SAME" padding (asymmetric when the total is odd) is
reproduced with explicit ``F.pad``; max-pool padding uses -inf like Flax. Each ReLU is its own
``nn.ReLU`` module so that Captum's hooks (deconvolution, guided backprop) find them; the
flatten goes through NHWC order so the dense weights carry over unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saliency_jax.model.architectures import ConvNet, ConvSpec


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Pad(nn.Module):
    def __init__(self, kernel: int, stride: int, value: float):
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x):
        top, bottom = _same_pads(x.shape[2], self.kernel, self.stride)
        left, right = _same_pads(x.shape[3], self.kernel, self.stride)
        return F.pad(x, (left, right, top, bottom), value=self.value)


class _FlattenNHWC(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def port(model: ConvNet, variables) -> nn.Sequential:
    """An ``nn.Sequential`` taking NCHW float32 and returning the same logits as ``model.apply``."""
    params = variables["params"]
    layers: list[nn.Module] = []
    channels = model.input_size[2]
    for spec in model.layers:
        if isinstance(spec, ConvSpec):
            if spec.padding == "SAME":
                layers.append(_Pad(spec.kernel, spec.stride, 0.0))
            conv = nn.Conv2d(channels, spec.features, spec.kernel, spec.stride)
            conv.weight.data = _tensor(params[spec.name]["kernel"]).permute(3, 2, 0, 1).contiguous()
            conv.bias.data = _tensor(params[spec.name]["bias"])
            layers += [conv, nn.ReLU()]
            channels = spec.features
        else:
            if spec.padding == "SAME":
                layers.append(_Pad(spec.window, spec.stride, -math.inf))
            layers.append(nn.MaxPool2d(spec.window, spec.stride))
    layers.append(_FlattenNHWC())
    for name in [f"fc{6 + i}" for i in range(len(model.hidden))] + ["logits"]:
        kernel = _tensor(params[name]["kernel"])
        dense = nn.Linear(kernel.shape[0], kernel.shape[1])
        dense.weight.data = kernel.T.contiguous()
        dense.bias.data = _tensor(params[name]["bias"])
        layers.append(dense)
        if name != "logits":
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()
