"""The logs' "simple 3-layer CNN" encoder and a plain MLP encoder."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.layers import (GridLinear, ResidualConvBlock, activation, check_count,
                                  check_positive_int, check_shape)
from inrlab.models.contract import Encoder
from inrlab.models.registry import register_model


@register_model("encoder", tiny=dict(shape=(3, 8, 8), code_size=6, channels=(4, 4)))
class EncoderConv2d(Encoder):
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
        self.code_shape = (self.code_size,)
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
class EncoderMLP(Encoder):
    """Flatten the image, then Linear layers with activations, then a Linear to the code."""

    def __init__(self, shape: Sequence[int], code_size: int, hidden: Sequence[int] = (512,),
                 act_fn: Any = "relu") -> None:
        super().__init__()
        self.shape = check_shape("shape", shape, 3)
        self.code_size = check_positive_int("code_size", code_size)
        self.code_shape = (self.code_size,)
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = math.prod(self.shape)
        for size in hidden:
            layers += [nn.Linear(width, check_positive_int("hidden", size)), activation(act_fn)]
            width = size
        layers.append(nn.Linear(width, self.code_size))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register_model("encoder", tiny=dict(shape=(3, 8, 8), latent_channels=3, grid=(2, 2),
                                     channels=(4, 4), num_blocks=1, code_kernel=3))
class EncoderConvGrid(Encoder):
    """A convolutional encoder whose code is a latent grid (latent_channels, gh, gw), for
    ``LocalLatentDecoder``.

    Each entry of ``channels`` is a stage: a 3x3 convolution, then a stride-2 3x3 convolution
    (both padded, each followed by BatchNorm unless ``batch_norm=False``, and the
    activation), halving the feature map; 32x32 with 3 stages reaches 4x4. Stages that would
    halve the map below ``grid`` are left out, so one ``channels`` serves every grid (32x32
    with ``(32, 64, 128)``: all three for a 4x4 grid, two for 5x5 or 8x8). ``num_blocks``
    residual blocks (no BatchNorm) follow at the last stage's size and width, where they
    are cheap. Then the map is average-pooled to ``grid`` (when it is not that size
    already) and a 1x1 convolution gives the latent channels; with ``global_code=True`` a
    Linear layer over the whole grid does (``GridLinear``, starting as the 1x1 convolution),
    so every code value may depend on the whole image and no cell is tied to its own region:
    the encoder can spend the floats where a tile has detail (pair it with
    ``LocalLatentDecoder(global_code=True)``).

    ``code_kernel``: the size of that last convolution (odd): 1 (the default) computes each
    cell's latents from its own features, 3 from its 3x3 neighbourhood's too (the quick
    start's model gained 0.3-0.5 dB at equal inputs, two seeds: experiments/README.md,
    "issue 43, fifth pass").

    ``code_floats`` in place of ``latent_channels`` gives each cell as many latent channels
    as fit in that many floats for the whole code (102, the logs' budget for 32x32: 6 per
    cell on a 4x4 grid, 4 on 5x5, 1 on 8x8).
    """

    def __init__(
        self,
        shape: Sequence[int],
        latent_channels: int | None = None,
        grid: Sequence[int] = (4, 4),
        channels: Sequence[int] = (32, 64, 128),
        act_fn: Any = "gelu",
        batch_norm: bool = True,
        num_blocks: int = 0,
        global_code: bool = False,
        code_floats: int | None = None,
        code_kernel: int = 1,
    ) -> None:
        super().__init__()
        self.shape = check_shape("shape", shape, 3)
        self.grid = check_shape("grid", grid, 2)
        if (latent_channels is None) == (code_floats is None):
            raise ValueError("give one of latent_channels and code_floats")
        if code_floats is not None:
            cells = self.grid[0] * self.grid[1]
            latent_channels = check_positive_int("code_floats", code_floats) // cells
            if latent_channels < 1:
                raise ValueError(f"code_floats={code_floats} is less than one float per cell "
                                 f"of the {self.grid[0]}x{self.grid[1]} grid")
        self.latent_channels = check_positive_int("latent_channels", latent_channels)
        self.code_shape = (self.latent_channels, *self.grid)
        num_blocks = check_count("num_blocks", num_blocks)
        if self.shape[1] < self.grid[0] or self.shape[2] < self.grid[1]:
            raise ValueError(f"the latent grid {self.grid[0]}x{self.grid[1]} is larger than "
                             f"the {self.shape[1]}x{self.shape[2]} image")
        layers: list[nn.Module] = []
        size = list(self.shape[1:])
        in_channels = self.shape[0]
        for out_channels in channels:
            check_positive_int("channels", out_channels)
            if (size[0] + 1) // 2 < self.grid[0] or (size[1] + 1) // 2 < self.grid[1]:
                break  # a further stage would halve the map below the grid
            for conv in (nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)):
                layers += [conv, nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
                           activation(act_fn)]
            size = [(s + 1) // 2 for s in size]
            in_channels = out_channels
        layers += [ResidualConvBlock(in_channels, act_fn) for _ in range(num_blocks)]
        if tuple(size) != self.grid:
            layers.append(nn.AdaptiveAvgPool2d(self.grid))
        code_kernel = check_positive_int("code_kernel", code_kernel)
        if code_kernel % 2 == 0:
            raise ValueError(f"code_kernel must be odd (centred on its cell), got {code_kernel}")
        if global_code and code_kernel != 1:
            raise ValueError("global_code reads the whole grid already; leave code_kernel at 1")
        layers.append(GridLinear(in_channels, self.latent_channels, self.grid, conv_init=1)
                      if global_code
                      else nn.Conv2d(in_channels, self.latent_channels, code_kernel,
                                     padding=code_kernel // 2))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, latent_channels, gh, gw)
        return self.layers(x)


@register_model("encoder", tiny=dict(in_channels=3, latent_channels=3, channels=4, num_blocks=1))
class EncoderConvMap(Encoder):
    """A fully convolutional encoder that keeps the resolution: its code is a latent map with
    one ``latent_channels`` vector per input pixel (LIIF's feature-map encoder, after EDSR's
    residual blocks, no BatchNorm), for ``LocalLatentDecoder(grid=None)``. It takes images of
    any size, so a model trained on small images encodes larger ones unchanged.

    3x3 convolution to ``channels``, ``num_blocks`` residual blocks, a 1x1 convolution to
    ``latent_channels``.
    """

    def __init__(self, in_channels: int, latent_channels: int, channels: int = 64,
                 num_blocks: int = 4, act_fn: Any = "gelu") -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.shape = (self.in_channels, None, None)  # any height and width
        self.latent_channels = check_positive_int("latent_channels", latent_channels)
        self.code_shape = (self.latent_channels, None, None)  # one latent per input pixel
        check_positive_int("channels", channels)
        num_blocks = check_count("num_blocks", num_blocks)
        self.layers = nn.Sequential(
            nn.Conv2d(self.in_channels, channels, 3, padding=1),
            *[ResidualConvBlock(channels, act_fn) for _ in range(num_blocks)],
            nn.Conv2d(channels, self.latent_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, latent_channels, H, W)
        return self.layers(x)
