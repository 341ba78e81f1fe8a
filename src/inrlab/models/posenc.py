"""Pixel coordinates and positional encodings.

Convention (the seed system's ``Space2d``): x runs along the width, y along the height, each
``linspace(-1, 1, size)`` with both ends included (pixel (0, 0) sits at (-1, -1), the last
pixel at (+1, +1)). Rendering at another resolution samples the same square more densely.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

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


def resampled_pixel_grid(trained: Sequence[int], shape: Sequence[int],
                         device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Coordinates (H*W, 2) of the pixel centres of an (H, W) image covering the same area as
    a ``trained``-size image, in that image's frame.

    ``pixel_grid(shape)`` stretches any size over the same corner pixels; this grid instead
    treats pixels as areas (``align_corners=False`` geometry), which is how a low-resolution
    image made by averaging relates to its high-resolution original. The outer pixel centres
    lie slightly beyond [-1, 1].
    """
    axes = []
    for low, high in zip(trained, shape):
        centres = (torch.arange(int(high), device=device, dtype=dtype) + 0.5) * low / high - 0.5
        axes.append(-1 + 2 * centres / max(int(low) - 1, 1))  # low-res pixel units -> coords
    grid_y, grid_x = torch.meshgrid(axes[0], axes[1], indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


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


class FourierFeatures(nn.Module):
    """Random Fourier features (Tancik et al. 2020): ``[x, y, sin(2 pi B v), cos(2 pi B v)]``
    with ``B`` of shape (num_features, 2) drawn from N(0, sigma^2).

    ``sigma`` is in cycles per unit of the [-1, 1] coordinate: a 32-pixel side spans 2 units,
    so its Nyquist limit is 8. ``B`` is drawn from its own generator seeded by ``seed`` (the
    same model arguments give the same features) and saved with the weights; ``learned=True``
    makes it a parameter that training tunes (2 * num_features more parameters).
    """

    def __init__(self, num_features: int = 64, sigma: float = 4.0, seed: int = 0,
                 learned: bool = False) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) \
                or num_features <= 0:
            raise ValueError(f"pos_embedding_features must be a positive integer, "
                             f"got {num_features!r}")
        if not sigma > 0:
            raise ValueError(f"pos_embedding_sigma must be positive, got {sigma!r}")
        generator = torch.Generator().manual_seed(int(seed))
        matrix = torch.randn(num_features, 2, generator=generator) * float(sigma)
        if learned:
            self.matrix = nn.Parameter(matrix)
        else:
            self.register_buffer("matrix", matrix)
        self.out_features = 2 + 2 * num_features

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        # coords (..., 2) -> (..., 2 + 2F)
        phase = (2 * math.pi) * (coords @ self.matrix.to(coords.dtype).t())  # (..., F)
        return torch.cat([coords, torch.sin(phase), torch.cos(phase)], dim=-1)


ENCODINGS = ("sincos", "sin", "gaussian", "learned")


def positional_encoding(kind: str | dict[str, Any], freqs: Sequence[float] = (7, 17),
                        num_features: int = 64, sigma: float = 4.0, seed: int = 0) -> nn.Module:
    """An encoding module with ``out_features``, by name, or by a ``{name, args}`` spec
    whose args replace the defaults given here (``{"name": "gaussian", "args":
    {"num_features": 32, "sigma": 2.0}}``).

    ``"sincos"`` (the later seed code's default) and ``"sin"`` (the first log entries) use the
    fixed ``freqs``; ``"gaussian"`` is random Fourier features of scale ``sigma`` and
    ``"learned"`` the same with trainable frequencies (both use ``num_features``, ``seed``).
    """
    if isinstance(kind, dict):
        args = {"freqs": freqs, "num_features": num_features, "sigma": sigma, "seed": seed}
        unknown = set(kind.get("args") or {}) - set(args)
        if set(kind) - {"name", "args"} or unknown:
            raise ValueError(f"a pos_embedding spec is {{name, args}} with args among "
                             f"{', '.join(args)}, got {kind!r}")
        return positional_encoding(kind.get("name"), **{**args, **(kind.get("args") or {})})
    if kind == "sincos":
        return SinCosEncoding(freqs, with_cos=True)
    if kind == "sin":
        return SinCosEncoding(freqs, with_cos=False)
    if kind in ("gaussian", "learned"):
        return FourierFeatures(num_features, sigma, seed, learned=kind == "learned")
    raise ValueError(f"pos_embedding must be one of {', '.join(ENCODINGS)}, got {kind!r}")
