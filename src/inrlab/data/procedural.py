"""Images drawn on demand: item ``i`` of a procedural dataset is a pure function of
``(seed, i)`` (``kali.hash_uniform``), rendered for a whole batch in one vectorised pass."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from inrlab.data.batched import BatchedDataset
from inrlab.data.images import random_flip, set_channels


class ProceduralDataset(BatchedDataset):
    """``num_images`` images of ``shape`` (1 or 3, H, W) in [0, 1]; items ``(image,)``.

    Subclasses give ``render(index, size)``: RGB images (B, 3, *size) of items ``index``
    (an int64 array) on ``self.device``. ``validation=True`` draws from a stream disjoint
    from training's; ``stream`` keeps two datasets' seeds apart. ``random_flip`` flips
    each batch at random (p=0.5 each way).
    """

    name = "images"  # in messages: "index out of range for 64 <name>"
    max_side = 1024
    size_note = "at most 1024 pixels a side"

    def __init__(self, shape: Sequence[int], num_images: int, validation: bool, seed: int,
                 random_flip: bool, stream: int = 0) -> None:
        if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
            raise ValueError(f"shape must be (1 or 3, H, W), got {tuple(shape)}")
        if max(shape[1:]) > self.max_side:
            raise ValueError(f"{self.name} are {self.size_note}; got {tuple(shape)}")
        if num_images <= 0:
            raise ValueError(f"num_images must be positive, got {num_images}")
        self.shape = tuple(int(s) for s in shape)
        self.num_images = int(num_images)
        self.seed = int(seed) * 2 + (1 if validation else 0) + stream
        self.flip = random_flip
        self.device = torch.device("cpu")

    def render(self, index: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_images

    def on_device(self, device: torch.device | str) -> "ProceduralDataset":
        """The same images, rendered on ``device`` (equal up to float rounding)."""
        moved = copy.copy(self)
        moved.device = torch.device(device)
        return moved

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        return self.images(indices, self.shape[1:])

    def images(self, indices: Sequence[int] | torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
        """Items ``indices`` rendered at ``size`` (H, W), in the dataset's channels."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu()
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.num_images):
            raise IndexError(f"index out of range for {self.num_images} {self.name}")
        images = set_channels(self.render(index, tuple(size)), self.shape[0])
        return random_flip(images, 0.5, 0.5) if self.flip else images

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.images([index], self.shape[1:])[0],)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor]]:
        return [(image,) for image in self.images(indices, self.shape[1:])]
