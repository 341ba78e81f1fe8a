"""MNIST (and any dataset in the same idx format) from local files, downloaded when missing."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from inrlab.data.cache import cache_dir, fetch
from inrlab.data.images import set_channels
from inrlab.data.tensor import ImageTensorDataset
from inrlab.errors import DataError

MNIST_FILES = {True: "train-images-idx3-ubyte", False: "t10k-images-idx3-ubyte"}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def read_idx_images(path: Path) -> torch.Tensor:
    """uint8 (N, H, W) from an idx3 file, plain or gzipped."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read idx file ({e})", path=path) from None
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise DataError("not an idx3 uint8 image file (bad magic number)", path=path)
    count, height, width = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    if len(raw) != 16 + count * height * width:
        raise DataError(f"idx file is truncated: header says {count} images of "
                        f"{height}x{width}", path=path)
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=16).copy()).view(
        count, height, width)


def mnist_dataset(train: bool = True, shape: Sequence[int] = (1, 28, 28),
                  root: str | Path | None = None, download: bool = True) -> ImageTensorDataset:
    """MNIST digits as items ``(image,)``, float (C, H, W) in [0, 1] (map-style).

    ``root``: a directory holding ``train-images-idx3-ubyte`` / ``t10k-images-idx3-ubyte``
    (optionally ``.gz``); default ``$INRLAB_CACHE_DIR/mnist``, where missing files are
    downloaded when ``download`` is true.
    """
    directory = Path(root).expanduser() if root is not None else cache_dir() / "mnist"
    name = MNIST_FILES[bool(train)]
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            path = candidate
            break
    else:
        if root is not None or not download:
            raise DataError(f"no {name}[.gz] in the MNIST directory", path=directory)
        both = " and ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
        path = fetch(MNIST_MIRROR + f"{name}.gz", directory / f"{name}.gz",
                     looked=[directory / name],
                     ways=[f"put MNIST's {both} in a folder and pass it as "
                           "mnist_dataset(root=FOLDER)"])
    images = read_idx_images(path).unsqueeze(1)  # (N, 1, H, W)
    images = set_channels(images, int(shape[0]))
    if tuple(images.shape[-2:]) != tuple(shape[1:]):
        images = torch.nn.functional.interpolate(images.float(), size=tuple(shape[1:]),
                                                 mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    return ImageTensorDataset(images)
