"""Pixel coordinates and positional encodings.

Convention (the seed system's ``Space2d``): x runs along the width, y along the height, each
``linspace(-1, 1, size)`` with both ends included (pixel (0, 0) sits at (-1, -1), the last
pixel at (+1, +1)). Rendering at another resolution samples the same square more densely.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def pixel_grid(shape: Sequence[int], device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Coordinates of every pixel of an (H, W) image, row-major: (H*W, 2) as (x, y)."""
    height, width = int(shape[0]), int(shape[1])
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (H*W, 2)


class SinCosEncoding(nn.Module):
    """``[x, y, sin(f x), sin(f y) for f in freqs, cos(f x), cos(f y) for f in freqs]``.

    ``with_cos=False`` gives the seed's first embedding ``[x, y, sin(f x), sin(f y) ...]``.
    Frequencies multiply the [-1, 1] coordinate directly (no 2*pi), as in the seed system.
    """

    def __init__(self, freqs: Sequence[float] = (7, 17), with_cos: bool = True) -> None:
        super().__init__()
        if isinstance(freqs, (int, float)):
            freqs = (freqs,)
        self.freqs = tuple(float(f) for f in freqs)
        self.with_cos = with_cos
        self.register_buffer("_freqs", torch.tensor(self.freqs, dtype=torch.float32),
                             persistent=False)
        self.out_features = 2 + 2 * len(self.freqs) * (2 if with_cos else 1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        # coords (..., 2) -> (..., out_features)
        scaled = coords.unsqueeze(-2) * self._freqs.to(coords.dtype).unsqueeze(-1)  # (..., F, 2)
        parts = [coords, torch.sin(scaled).flatten(-2)]
        if self.with_cos:
            parts.append(torch.cos(scaled).flatten(-2))
        return torch.cat(parts, dim=-1)


def positional_encoding(kind: str, freqs: Sequence[float]) -> SinCosEncoding:
    """``"sincos"`` (default of the later seed code) or ``"sin"`` (the first log entries)."""
    if kind == "sincos":
        return SinCosEncoding(freqs, with_cos=True)
    if kind == "sin":
        return SinCosEncoding(freqs, with_cos=False)
    raise ValueError(f"pos_embedding must be 'sincos' or 'sin', got {kind!r}")
