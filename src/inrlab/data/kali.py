"""Kali-set fractal patches, generated on demand.

Item ``i`` draws its parameters from a counter-based hash of ``(seed, i)``, so any item
is reproducible on its own and a batch of items renders in one vectorised pass. Only the
crop is rendered: the kali set is a per-pixel function, so a 32x32 window of the 128x128
render is computed directly at the same pixel spacing. Nearly flat renders are re-drawn.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from inrlab.data.procedural import ProceduralDataset

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
ACCUMULATIONS = ("none", "mean", "max", "min")


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, index: np.ndarray, stream: int, count: int) -> np.ndarray:
    """Uniform floats in [0, 1), shape (len(index), count), a pure function of the inputs."""
    key = _splitmix(np.uint64(seed & 0xFFFFFFFF) * np.uint64(1_000_003) + np.uint64(stream))
    base = _splitmix(index.astype(np.uint64)[:, None] ^ key)
    bits = _splitmix(base + np.arange(count, dtype=np.uint64)[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def render_kali(
    seed: int,
    index: np.ndarray,
    shape: tuple[int, int],
    render_size: int = 128,
    max_iterations: int = 37,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """RGB crops (B, 3, H, W) in [0, 1] of the kali renders of items ``index``, rendered on
    ``device`` (the per-item parameters are hashed on the host: a few numbers per item)."""
    batch, (height, width) = len(index), shape

    def u(stream: int, n: int) -> torch.Tensor:
        return torch.from_numpy(hash_uniform(seed, index, stream, n)).float().to(device)

    offset = u(1, 3) * 4.0 - 2.0  # (B, 3) in [-2, 2]
    scale = u(2, 1) ** 2 * 0.9 + 0.05  # (B, 1) size of the rendered square
    param = u(3, 3) * 1.2  # (B, 3)
    mode = (u(4, 1)[:, 0] * len(ACCUMULATIONS)).long().clamp(max=len(ACCUMULATIONS) - 1)
    iterations = (u(5, 1)[:, 0] * (max_iterations - 1)).long() + 1 + (1 / scale[:, 0]).long()
    iterations = iterations.clamp(1, max_iterations)  # (B,)
    normal = torch.sqrt(-2 * torch.log(1 - u(6, 9))) * torch.cos(2 * math.pi * u(7, 9))
    mix = (u(8, 9) / math.sqrt(3) + 0.2 * normal).view(batch, 3, 3)  # (B, 3, 3)
    top = (u(9, 1)[:, 0] * (render_size - height + 1)).long()
    left = (u(10, 1)[:, 0] * (render_size - width + 1)).long()

    step = 2.0 / (render_size - 1)
    ys = -1 + step * (top.view(-1, 1).float() + torch.arange(height, device=device))  # (B, H)
    xs = -1 + step * (left.view(-1, 1).float() + torch.arange(width, device=device))  # (B, W)
    p = torch.zeros(batch, 3, height, width, device=device)
    p[:, 0] = xs.view(batch, 1, width)
    p[:, 1] = ys.view(batch, height, 1)
    p = p * scale.view(-1, 1, 1, 1) + offset.view(-1, 3, 1, 1)  # (B, 3, H, W)

    total = torch.zeros_like(p)
    high = torch.full_like(p, -math.inf)
    low = torch.full_like(p, math.inf)
    last = torch.zeros_like(p)
    active_until = iterations.view(-1, 1, 1, 1)
    for step_index in range(max_iterations if iterations.is_cuda else int(iterations.max())):
        active = step_index < active_until
        p = p.abs() / (p.square().sum(1, keepdim=True) + 1e-6)
        last = torch.where(active, p, last)
        total = torch.where(active, total + p, total)
        high = torch.where(active, torch.maximum(high, p), high)
        low = torch.where(active, torch.minimum(low, p), low)
        p = p - param.view(-1, 3, 1, 1)
    value = torch.stack([last, total / iterations.view(-1, 1, 1, 1), high, low])  # (4, B, 3, H, W)
    value = value[mode, torch.arange(batch, device=device)]  # (B, 3, H, W)
    rgb = torch.einsum("bchw,bcd->bdhw", value, mix)
    return rgb.clamp(0.0, 1.0)


def _boring(images: torch.Tensor, min_std: float) -> torch.Tensor:
    """Flat renders (spatial std below ``min_std``) and noise (neighbouring pixels differ as
    much as random ones), per image of (B, C, H, W)."""
    spread = images.std(dim=(2, 3)).mean(1)  # (B,)
    neighbour = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    neighbour += (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    return (spread < min_std) | (neighbour > 1.5 * spread)


class KaliPatchDataset(ProceduralDataset):
    """``num_images`` kali patches of ``shape`` (C, H, W); items ``(image,)`` float in [0, 1].

    Deterministic for ``(seed, index)``; ``validation=True`` draws from a disjoint stream.
    ``min_std``: flat renders (pixel std below it) and noisy ones are re-drawn (up to 8 tries).
    """

    name = "kali patches"
    max_side = 128
    size_note = "cropped from 128x128 renders"

    def __init__(self, shape: Sequence[int], num_images: int = 50_000, validation: bool = False,
                 seed: int = 0, random_flip: bool = False, min_std: float = 0.05) -> None:
        super().__init__(shape, num_images, validation, seed, random_flip)
        self.min_std = min_std

    def render(self, index: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        images = render_kali(self.seed, index, size, device=self.device)
        for attempt in range(1, 8):
            redo = _boring(images, self.min_std).cpu().numpy()  # (B,)
            if not redo.any():
                break
            retry = index[redo] + np.int64(attempt) * np.int64(1 << 40)
            images[torch.from_numpy(redo).to(self.device)] = render_kali(
                self.seed, retry, size, device=self.device)
        return images


def kali_patch_dataset(shape: Sequence[int], num_images: int = 50_000, validation: bool = False,
                       seed: int = 0, random_flip: bool = False) -> KaliPatchDataset:
    """Procedural kali-set fractal patches (no download); see ``KaliPatchDataset``."""
    return KaliPatchDataset(shape, num_images, validation, seed, random_flip)
