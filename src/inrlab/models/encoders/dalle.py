"""A small version of the DALL-E dVAE encoder, as the seed system's ``DalleEncoder``.

Always four groups; after groups 1-3 the resolution halves (space-to-depth with a 1x1 conv,
or max-pooling); group ``g`` has ``2**(g-1) * n_hid`` channels; a final activation and 1x1
conv give ``vocab_size`` channels. ``group_count`` only scales the residual gain
``1 / (group_count * n_blk_per_group)**2``, as in the original.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from inrlab.models.layers import activation, check_positive_int


class DalleConv2d(nn.Conv2d):
    """'Same'-padded conv initialised with N(0, 1/sqrt(n_in * k^2)) weights and zero bias."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int) -> None:
        super().__init__(n_in, n_out, kernel_size, padding=(kernel_size - 1) // 2)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / math.sqrt(n_in * kernel_size**2))
            self.bias.zero_()


class DalleBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, post_gain: float, act_fn: Any) -> None:
        super().__init__()
        hidden = n_out // 4
        self.id_path = DalleConv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(
            activation(act_fn), DalleConv2d(n_in, hidden, 3),
            activation(act_fn), DalleConv2d(hidden, hidden, 3),
            activation(act_fn), DalleConv2d(hidden, hidden, 3),
            activation(act_fn), DalleConv2d(hidden, n_out, 1),
        )
        self.post_gain = post_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


class SpaceToDepthPool(nn.Module):
    """(B, C, H, W) -> (B, 4C, H/2, W/2) -> 1x1 conv -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sub-grid order as in the seed: [even/even, odd/even, even/odd, odd/odd] (row/col).
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2],
                       x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=1)
        return self.conv(x)


class DalleEncoder(nn.Module):
    def __init__(
        self,
        input_channels: int = 3,
        vocab_size: int = 8192,
        n_hid: int = 256,
        n_blk_per_group: int = 2,
        group_count: int = 4,
        act_fn: Any = "relu",
        space_to_depth: bool = False,
    ) -> None:
        super().__init__()
        for name, value in [("input_channels", input_channels), ("vocab_size", vocab_size),
                            ("n_hid", n_hid), ("n_blk_per_group", n_blk_per_group),
                            ("group_count", group_count)]:
            check_positive_int(name, value)
        if n_hid % 4:
            raise ValueError(f"n_hid must be a multiple of 4, got {n_hid}")
        post_gain = 1.0 / (group_count * n_blk_per_group) ** 2
        layers: list[nn.Module] = [DalleConv2d(input_channels, n_hid, 7)]
        width = n_hid
        for group in range(4):
            group_width = n_hid * 2**group
            for _ in range(n_blk_per_group):
                layers.append(DalleBlock(width, group_width, post_gain, act_fn))
                width = group_width
            if group < 3:
                layers.append(SpaceToDepthPool(width) if space_to_depth else nn.MaxPool2d(2))
        layers += [activation(act_fn), DalleConv2d(width, vocab_size, 1)]
        self.blocks = nn.Sequential(*layers)
        self.input_channels = input_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.input_channels:
            raise ValueError(f"DalleEncoder expects (B, {self.input_channels}, H, W) images, "
                             f"got {tuple(x.shape)}")
        return self.blocks(x)  # (B, vocab_size, H/8, W/8)
