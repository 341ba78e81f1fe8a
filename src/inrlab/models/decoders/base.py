"""The contract every implicit decoder follows.

``query(code, coords)`` maps codes (B, ...) and pixel coordinates (N, 2) shared by all
images, or (B, N, 2) per image, to colours (B, N, C). ``forward(code, shape)`` renders whole
(H, W) images from the pixel grid; without gradients and in eval mode it goes in chunks of
pixels so memory stays bounded at any resolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from inrlab.models.posenc import pixel_grid

# Upper bound on the floats of one hidden activation while rendering in chunks (64 MiB fp32).
RENDER_CHUNK_ELEMENTS = 2**24


class ImplicitDecoder(nn.Module):
    out_channels: int
    default_shape: tuple[int, int] | None
    code_dims: int = 2  # dims of a batched code: (B, C) for a global code
    max_width: int = 1  # widest hidden layer, sizes render chunks

    def query(self, code: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def resolve_shape(self, shape: Sequence[int] | None) -> tuple[int, int]:
        if shape is None:
            shape = self.default_shape
        if shape is None:
            raise ValueError(f"{type(self).__name__} needs shape=(H, W) (no default_shape set)")
        if len(shape) != 2 or min(int(s) for s in shape) <= 0:
            raise ValueError(f"render shape must be (H, W) with positive sizes, got {tuple(shape)}")
        return int(shape[0]), int(shape[1])

    def forward(self, code: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        single = code.dim() == self.code_dims - 1
        if single:
            code = code.unsqueeze(0)
        if code.dim() != self.code_dims:
            raise ValueError(
                f"{type(self).__name__} expects codes with {self.code_dims} dims "
                f"(batch first), got shape {tuple(code.shape)}"
            )
        height, width = self.resolve_shape(shape)
        dtype = code.dtype if code.is_floating_point() else torch.float32
        coords = pixel_grid((height, width), device=code.device, dtype=dtype)  # (N, 2)
        batch = code.shape[0]
        if torch.is_grad_enabled() or self.training:
            colours = self.query(code, coords)  # (B, N, C)
        else:
            chunk = max(1, RENDER_CHUNK_ELEMENTS // (batch * max(self.max_width, 1)))
            colours = torch.cat([self.query(code, part) for part in coords.split(chunk)], dim=1)
        images = colours.transpose(1, 2).reshape(batch, self.out_channels, height, width)
        return images[0] if single else images
