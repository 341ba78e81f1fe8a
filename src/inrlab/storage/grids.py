"""Image grids (no torchvision needed) and PNG output."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def image_grid(images: torch.Tensor, columns: int = 8, padding: int = 2,
               pad_value: float = 0.25) -> torch.Tensor:
    """Tile (N, C, H, W) images in [0, 1] into one (3, H', W') image, row-major."""
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    count, _, height, width = images.shape
    rows = max(1, -(-count // columns))
    cell_h, cell_w = height + padding, width + padding
    grid = torch.full((3, rows * cell_h + padding, columns * cell_w + padding), pad_value)
    for index in range(count):  # a few dozen images for a picture, not a hot path
        r, c = divmod(index, columns)
        top, left = padding + r * cell_h, padding + c * cell_w
        grid[:, top:top + height, left:left + width] = images[index, :3]
    return grid


def reconstruction_grid(originals: torch.Tensor, reconstructions: torch.Tensor,
                        columns: int = 8) -> torch.Tensor:
    """Rows alternate: ``columns`` originals, then their reconstructions (the seed's layout)."""
    rows = []
    for start in range(0, originals.shape[0], columns):
        rows += [originals[start:start + columns], reconstructions[start:start + columns]]
    paired = torch.cat([_pad_row(r, columns) for r in rows])
    return image_grid(paired, columns)


def _pad_row(row: torch.Tensor, columns: int) -> torch.Tensor:
    missing = columns - row.shape[0]
    if missing <= 0:
        return row
    return torch.cat([row, torch.zeros(missing, *row.shape[1:], dtype=row.dtype)])


def to_8_bits(images: torch.Tensor) -> torch.Tensor:
    """The 8-bit values a PNG of ``images`` (in [0, 1]) stores."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: Path, scale: int = 1) -> None:
    """Save a (3, H, W) image in [0, 1], upscaled ``scale`` times with nearest neighbour."""
    array = to_8_bits(image).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    save_picture(picture, path)


def save_picture(picture: Image.Image, path: Path) -> None:
    """Write a PNG through a temporary file, so a crash never leaves half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    picture.save(tmp, format="PNG")
    tmp.replace(path)
