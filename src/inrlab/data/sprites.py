"""Procedural sprites: flat-coloured shapes with outlines on a plain or graded background.

Item ``i`` is a scene in continuous coordinates drawn from a counter-based hash of
``(seed, i)`` (as the kali patches), so the same item renders at any size: the 64x64
render of an item is the truth for a 2x render of its 32x32 one. Edges are anti-aliased
analytically (each shape's coverage of a pixel from its signed distance at the pixel's
centre), so a render costs a few operations per pixel and shape, and the area-downscale of
a 64x64 render is the 32x32 render up to a few levels at corners.

Why this data for implicit decoders: sharp edges between flat regions are what a linear
code (PCA) blurs and what a nonlinear decoder can place at any resolution, and the truth
exists at every resolution. The quick start trains on them (experiments/README.md, "issue
43, third pass": 1.4 dB above PCA at 256 floats after 80,000 inputs).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from inrlab.data.kali import hash_uniform
from inrlab.data.procedural import ProceduralDataset

MAX_SHAPES = 4
KINDS = ("ellipse", "rectangle", "triangle")
OUTLINE = 0.035  # outline width, in units of the image side (~1.1 pixels at 32x32)


def render_sprites(seed: int, index: np.ndarray, shape: tuple[int, int],
                   device: torch.device | str = "cpu", max_shapes: int = MAX_SHAPES,
                   graded: float = 0.5, outlined: float = 0.5) -> torch.Tensor:
    """RGB renders (B, 3, H, W) in [0, 1] of the scenes of items ``index`` at ``shape``."""
    height, width = shape
    y = ((torch.arange(height, device=device) + 0.5) / height).view(1, -1, 1)  # (1, H, 1)
    x = ((torch.arange(width, device=device) + 0.5) / width).view(1, 1, -1)  # (1, 1, W)
    return _render(seed, index, x, y, pixel_side(height, width), device, max_shapes,
                   graded, outlined)


def render_sprite_points(seed: int, index: np.ndarray, points: torch.Tensor,
                         sizes: torch.Tensor, device: torch.device | str = "cpu",
                         max_shapes: int = MAX_SHAPES, graded: float = 0.5,
                         outlined: float = 0.5) -> torch.Tensor:
    """Colours (B, 3, N) of the scenes of items ``index`` at ``points`` (B, N, 2), pixel
    centres (x, y) in units of the image's side, each as a render of its size in ``sizes``
    ((N, 2) or (B, N, 2), (H, W)) has it: pixels of renders of several sizes in one pass."""
    x, y = points[..., 0].unsqueeze(1), points[..., 1].unsqueeze(1)  # (B, 1, N) each
    pixel = pixel_side(sizes[..., 0], sizes[..., 1]).unsqueeze(-2)  # (1, N) or (B, 1, N)
    colour = _render(seed, index, x, y, pixel, device, max_shapes, graded, outlined)
    return colour.squeeze(2)  # (B, 3, 1, N) -> (B, 3, N)


def pixel_side(height: Any, width: Any) -> Any:
    """The width of the coverage ramp at an edge of an (H, W) render, in image sides
    (numbers or tensors)."""
    return 0.5 * (1 / height + 1 / width)


def _render(seed: int, index: np.ndarray, x: torch.Tensor, y: torch.Tensor,
            pixel: float | torch.Tensor, device: torch.device | str, max_shapes: int,
            graded: float, outlined: float) -> torch.Tensor:
    """Colours at pixel centres ``x``, ``y`` (broadcasting to (B, H, W)) with coverage
    ramps ``pixel`` wide: (B, 3, H, W)."""
    batch = len(index)

    def u(stream: int, n: int) -> torch.Tensor:
        return torch.from_numpy(hash_uniform(seed, index, stream, n)).float().to(device)

    # the background: a colour, graded towards a second one along a random direction for half
    low, high = u(1, 3), u(2, 3)  # (B, 3)
    graded = (u(3, 1) < graded).float()  # (B, 1)
    angle = u(4, 1) * 2 * math.pi
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    ramp = (cos * (x - 0.5) + sin * (y - 0.5) + 0.5).clamp(0, 1)  # (B, H, W)
    colour = low.view(-1, 3, 1, 1) + (graded * (high - low)).view(-1, 3, 1, 1) * ramp[:, None]

    count = 1 + (u(5, 1)[:, 0] * max_shapes).long().clamp(max=max_shapes - 1)  # (B,)
    kind = (u(6, MAX_SHAPES) * len(KINDS)).long().clamp(max=len(KINDS) - 1)  # (B, K)
    centre = 0.15 + 0.7 * u(7, 2 * MAX_SHAPES).view(batch, MAX_SHAPES, 2)
    half = 0.08 + 0.27 * u(8, 2 * MAX_SHAPES).view(batch, MAX_SHAPES, 2)  # (B, K, 2)
    turn = u(9, MAX_SHAPES) * math.pi
    fill = u(10, 3 * MAX_SHAPES).view(batch, MAX_SHAPES, 3)
    outline = torch.where(u(11, MAX_SHAPES) < outlined, OUTLINE, 0.0)  # (B, K)
    for k in range(MAX_SHAPES):
        dx, dy = x - centre[:, k, 0].view(-1, 1, 1), y - centre[:, k, 1].view(-1, 1, 1)
        cos, sin = torch.cos(turn[:, k]).view(-1, 1, 1), torch.sin(turn[:, k]).view(-1, 1, 1)
        along, across = cos * dx + sin * dy, cos * dy - sin * dx  # (B, H, W) shape frame
        distance = _signed_distance(kind[:, k], along, across, half[:, k, 0].view(-1, 1, 1),
                                    half[:, k, 1].view(-1, 1, 1))
        present = (k < count).float().view(-1, 1, 1, 1)
        outer = (0.5 - distance / pixel).clamp(0, 1)[:, None] * present  # (B, 1, H, W)
        inner = (0.5 - (distance + outline[:, k].view(-1, 1, 1)) / pixel).clamp(0, 1)[:, None]
        edge = fill[:, k].view(-1, 3, 1, 1) * 0.25  # a dark outline of the fill's hue
        colour = torch.lerp(colour, edge, outer)
        colour = torch.lerp(colour, fill[:, k].view(-1, 3, 1, 1), inner * present)
    return colour.clamp(0.0, 1.0)


def _signed_distance(kind: torch.Tensor, along: torch.Tensor, across: torch.Tensor,
                     a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance outside (negative: inside) each item's shape of half sizes ``a`` x ``b``
    (B, 1, 1); exact for rectangles and triangles along their sides, first-order for
    ellipses (the level function over its gradient's length)."""
    level = ((along / a).square() + (across / b).square()).sqrt().clamp(min=1e-6)
    gradient = ((along / a.square()).square() + (across / b.square()).square()).sqrt() / level
    ellipse = (level - 1) / gradient.clamp(min=1e-6)
    rectangle = torch.maximum(along.abs() - a, across.abs() - b)
    side = (2 * b * along.abs() - a * (across + b)) / (4 * b.square() + a.square()).sqrt()
    triangle = torch.maximum(across - b, side)  # apex up, base at across = b
    kind = kind.view(-1, 1, 1)
    return torch.where(kind == 0, ellipse, torch.where(kind == 1, rectangle, triangle))


class SpriteDataset(ProceduralDataset):
    """``num_images`` procedural sprites of ``shape`` (C, H, W); items ``(image,)`` in [0, 1].

    Deterministic for ``(seed, index)`` at every size; ``validation=True`` draws from a
    disjoint stream. Sides up to 1024 pixels. ``max_scale`` above 1: each ``batch`` renders
    at one random size from ``shape`` to ``max_scale`` times it (items one by one stay at
    ``shape``): the truth for training a decoder at every render scale, with a model that
    encodes any size down to ``shape`` (``UpscalingAutoencoder`` with a fixed-size encoder).
    ``native_share``: the share of those batches rendered at ``shape`` itself, the rest at a
    uniform scale from 1 to ``max_scale``. ``pixel_batches`` (a step with ``train_pixels``)
    renders a batch's items at ``shape`` and only its scored pixels at the drawn size.
    """

    name = "sprites"
    renders_points = True

    def __init__(self, shape: Sequence[int], num_images: int = 50_000, validation: bool = False,
                 seed: int = 0, random_flip: bool = False, max_shapes: int = MAX_SHAPES,
                 graded: float = 0.5, outlined: float = 0.5, max_scale: float = 1.0,
                 native_share: float = 0.0) -> None:
        super().__init__(shape, num_images, validation, seed, random_flip, stream=1_000_000)
        if not 1 <= max_shapes <= MAX_SHAPES:
            raise ValueError(f"max_shapes must be 1 to {MAX_SHAPES}, got {max_shapes}")
        if not 1 <= max_scale <= 32:
            raise ValueError(f"max_scale must be 1 to 32, got {max_scale}")
        if not 0 <= native_share <= 1:
            raise ValueError(f"native_share must be 0 to 1, got {native_share}")
        self.max_scale = float(max_scale)
        self.native_share = float(native_share)
        self.scene = dict(max_shapes=int(max_shapes), graded=float(graded),
                          outlined=float(outlined))

    def render(self, index: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        return render_sprites(self.seed, index, size, self.device, **self.scene)

    def render_points(self, index: np.ndarray, points: torch.Tensor,
                      sizes: torch.Tensor) -> torch.Tensor:
        return render_sprite_points(self.seed, index, points, sizes, self.device,
                                    **self.scene)

    def draw_size(self, generator: torch.Generator | None = None) -> tuple[int, int]:
        size = self.shape[1:]
        if self.max_scale > 1:
            device = generator.device if generator is not None else "cpu"
            draw = torch.rand((), generator=generator, device=device).item()
            native = self.native_share
            if draw >= native:  # the rest of the unit interval, stretched to 1..max_scale
                scale = 1 + (self.max_scale - 1) * (draw - native) / (1 - native)
                size = tuple(min(self.max_side, round(side * scale)) for side in size)
        return size


def sprite_dataset(shape: Sequence[int], num_images: int = 50_000, validation: bool = False,
                   seed: int = 0, random_flip: bool = False, max_shapes: int = MAX_SHAPES,
                   graded: float = 0.5, outlined: float = 0.5, max_scale: float = 1.0,
                   native_share: float = 0.0) -> SpriteDataset:
    """Procedural flat-coloured sprites (no download) at any size; see ``SpriteDataset``."""
    return SpriteDataset(shape, num_images, validation, seed, random_flip, max_shapes, graded,
                         outlined, max_scale, native_share)
