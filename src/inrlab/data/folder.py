"""Any folder of PNG/JPEG/BMP images, as whole images or as random patches."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from inrlab.data.images import read_image_file, set_channels
from inrlab.data.tensor import ImageTensorDataset
from inrlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def image_folder_dataset(
    root: str | Path,
    shape: Sequence[int] = (3, 32, 32),
    patches: int = 0,
    seed: int = 0,
    random_flip: bool = False,
) -> ImageTensorDataset:
    """Images of a folder (recursively, sorted by path) resized (bilinear, antialiased) to
    ``shape``; with ``patches`` > 0, that many random ``shape`` crops per image instead
    (drawn once with ``seed``; images smaller than the patch are skipped)."""
    directory = Path(root).expanduser()
    if not directory.is_dir():
        raise DataError("image folder not found", path=directory)
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    channels, height, width = (int(s) for s in shape)
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for file in files:
        image = read_image_file(file)
        if patches:
            if image.shape[1] < height or image.shape[2] < width:
                continue
            top = torch.randint(0, image.shape[1] - height + 1, (patches,), generator=generator)
            left = torch.randint(0, image.shape[2] - width + 1, (patches,), generator=generator)
            parts += [image[:, t:t + height, x:x + width] for t, x in zip(top, left)]
        else:
            resized = torch.nn.functional.interpolate(
                image[None].float(), size=(height, width), mode="bilinear", antialias=True)
            parts.append(resized[0].round().clamp(0, 255).to(torch.uint8))
    if not parts:
        raise DataError(f"no usable {'/'.join(IMAGE_SUFFIXES)} images", path=directory)
    images = set_channels(torch.stack(parts), channels)
    return ImageTensorDataset(images, random_flip=random_flip)
