"""The logs' "simple 3-layer CNN" encoder and a plain MLP encoder."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.layers import activation, check_positive_int, check_shape
from inrlab.models.registry import register_model


@register_model("encoder", tiny=dict(shape=(3, 8, 8), code_size=6, channels=(4, 4)))
class EncoderConv2d(nn.Module):
    """Valid (unpadded) convolutions, each followed by the activation, then one Linear.

    For 3x32x32 with channels (16, 24, 32): 32 -> 30 -> 28 -> 26, so the Linear has
    32*26*26 = 21,632 inputs, as in the logs.
    """

    def __init__(
        self,
        shape: Sequence[int],
        code_size: int,
        channels: Sequence[int] = (16, 24, 32),
        kernel_size: int = 3,
        stride: int = 1,
        act_fn: Any = "relu",
    ) -> None:
        super().__init__()
        self.shape = check_shape("shape", shape, 3)
        self.code_size = check_positive_int("code_size", code_size)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("stride", stride)
        if not channels:
            raise ValueError("channels must list at least one convolution's output channels")
        layers: list[nn.Module] = []
        size = list(self.shape[1:])
        in_channels = self.shape[0]
        for out_channels in channels:
            check_positive_int("channels", out_channels)
            size = [(s - kernel_size) // stride + 1 for s in size]
            if min(size) <= 0:
                raise ValueError(
                    f"kernel_size {kernel_size} with stride {stride} and {len(channels)} "
                    f"convolutions shrinks the {self.shape[1]}x{self.shape[2]} image to nothing"
                )
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size, stride),
                       activation(act_fn)]
            in_channels = out_channels
        self.convolution = nn.Sequential(*layers)
        self.linear = nn.Linear(in_channels * math.prod(size), self.code_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, code_size)
        return self.linear(self.convolution(x).flatten(1))


@register_model("encoder", tiny=dict(shape=(1, 6, 6), code_size=5, hidden=(12,)))
class EncoderMLP(nn.Module):
    """Flatten the image, then Linear layers with activations, then a Linear to the code."""

    def __init__(self, shape: Sequence[int], code_size: int, hidden: Sequence[int] = (512,),
                 act_fn: Any = "relu") -> None:
        super().__init__()
        self.shape = check_shape("shape", shape, 3)
        self.code_size = check_positive_int("code_size", code_size)
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = math.prod(self.shape)
        for size in hidden:
            layers += [nn.Linear(width, check_positive_int("hidden", size)), activation(act_fn)]
            width = size
        layers.append(nn.Linear(width, self.code_size))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
