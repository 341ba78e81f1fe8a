"""Image tensor helpers shared by the datasets: channels, resizing, batched augmentation.

Augmentations take batches (B, C, H, W) and draw one random decision per image, so a
whole batch is augmented with a few tensor operations, on the device the batch is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from inrlab.errors import DataError

# Pillow modes of one high-bit-depth channel: 16-bit PNGs load as I;16* or I (0..65535).
_HIGH_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def rgba_uint8(image: Image.Image) -> np.ndarray:
    """An opened image as uint8 RGBA (H, W, 4). Pillow's own conversion clips 16-bit
    grayscale (a PNG of 0..65535) at 255, which turns such an image almost all white; it
    is scaled to 8 bits here instead."""
    if image.mode in _HIGH_BIT_GRAY:
        gray = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(gray / 257), 0, 255).astype(np.uint8), "L")
    return np.asarray(image.convert("RGBA"))


def read_image_file(path: str | Path, composite: bool = True) -> torch.Tensor:
    """An image file as uint8 (3, H, W), transparent pixels composited on black (with
    ``composite=False``: RGBA, (4, H, W)): the one place the commands and datasets read
    image files, so every unreadable file (missing, a directory, empty, truncated, not an
    image, an SVG, a decompression bomb over Pillow's pixel limit) is a ``DataError``
    naming the file and the reason."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            rgba = torch.from_numpy(rgba_uint8(image).copy()).permute(2, 0, 1)  # (4, H, W)
    except FileNotFoundError:
        raise DataError("image file does not exist", path=path) from None
    except IsADirectoryError:
        raise DataError("is a directory, not an image file", path=path) from None
    except Image.DecompressionBombError as e:
        raise DataError(f"refused as a decompression bomb: {e}", path=path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"not a readable image ({type(e).__name__}: {e})", path=path) from None
    if not composite:
        return rgba
    rgb = rgba[:3].float() * (rgba[3:].float() / 255.0)
    return rgb.round().to(torch.uint8)


def set_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert (..., C, H, W) to ``channels``: 3 -> 1 by ITU-R 601 luma, 1 -> 3 by repeating,
    more than 3 -> the first 3 (or luma of those for 1)."""
    have = images.shape[-3]
    if have == channels:
        return images
    if have > 3:
        images, have = images[..., :3, :, :], 3
    if channels == 1 and have == 3:
        weights = torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float32, device=images.device)
        luma = (images.float() * weights.view(3, 1, 1)).sum(-3, keepdim=True)
        return luma.round().to(images.dtype) if not images.is_floating_point() else luma
    if channels == 3 and have in (1, 2):
        return images[..., :1, :, :].expand(*images.shape[:-3], 3, *images.shape[-2:]).clone()
    if channels == 1:
        return images[..., :1, :, :]
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def resize_nearest(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (B, C, H, W) (pixel art stays crisp)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images.float(), size=size, mode="nearest-exact").to(images.dtype)


RESAMPLING = ("nearest", "area")


def resize(images: torch.Tensor, size: tuple[int, int], resample: str = "nearest") -> torch.Tensor:
    """Resize (B, C, H, W): ``"nearest"`` keeps pixel art crisp; ``"area"`` averages the
    source pixels under each target pixel (a proper downsampling; uint8 results rounded)."""
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}")
    if resample == "nearest" or tuple(images.shape[-2:]) == tuple(size):
        return resize_nearest(images, size)
    resized = F.interpolate(images.float(), size=size, mode="area")
    return resized if images.is_floating_point() else resized.round().to(images.dtype)


def flip_draws(batch: int, p_horizontal: float, p_vertical: float, device: torch.device,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ``batch`` images ``random_flip`` flips: (left-right, up-down), each (B,)."""
    flip_h = torch.rand(batch, generator=generator, device=device) < p_horizontal
    flip_v = torch.rand(batch, generator=generator, device=device) < p_vertical
    return flip_h, flip_v


def random_flip(images: torch.Tensor, p_horizontal: float, p_vertical: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of (B, C, H, W) left-right with ``p_horizontal``, up-down with
    ``p_vertical``."""
    flip_h, flip_v = flip_draws(images.shape[0], p_horizontal, p_vertical, images.device,
                                generator)
    return apply_flips(images, flip_h, flip_v)


def apply_flips(images: torch.Tensor, flip_h: torch.Tensor,
                flip_v: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with the images ``flip_h`` (B,) marks flipped left-right, ``flip_v``'s
    up-down."""
    images = torch.where(flip_h.view(-1, 1, 1, 1), images.flip(-1), images)
    return torch.where(flip_v.view(-1, 1, 1, 1), images.flip(-2), images)


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator | None = None,
                 wrap: bool = False) -> torch.Tensor:
    """Translate each image of (B, C, H, W) by up to +-``pixels`` in x and y, filling with 0
    (the seed's pad-then-random-crop), or with ``wrap=True`` rolling it around (what leaves
    one side comes back on the other, so no black border appears)."""
    if pixels <= 0:
        return images
    (batch, channels, height, width), device = images.shape, images.device
    dy = torch.randint(-pixels, pixels + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(-pixels, pixels + 1, (batch,), generator=generator, device=device)
    rows = dy.view(-1, 1) + torch.arange(height, device=device)  # (B, H): source rows
    cols = dx.view(-1, 1) + torch.arange(width, device=device)  # (B, W)
    if wrap:
        source, rows, cols = images, rows % height, cols % width
    else:
        source = F.pad(images, (pixels, pixels, pixels, pixels))
        rows, cols = rows + pixels, cols + pixels
    batch_index = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    channel_index = torch.arange(channels, device=device).view(1, -1, 1, 1)
    return source[batch_index, channel_index, rows.view(batch, 1, height, 1),
                  cols.view(batch, 1, 1, width)]


def random_transpose(images: torch.Tensor, p: float = 0.5,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Swap x and y of each square image of (B, C, S, S) with probability ``p``; with both
    flips this reaches all 8 rotations and reflections of the square."""
    check_square(images.shape, "random_transpose")
    swap = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(swap.view(-1, 1, 1, 1), images.transpose(-1, -2), images)


def check_square(shape: Sequence[int], what: str) -> None:
    """ValueError unless the last two sizes of ``shape`` are equal (``what`` needs them so)."""
    if shape[-1] != shape[-2]:
        raise ValueError(f"{what} needs square images, got {shape[-2]}x{shape[-1]}")
