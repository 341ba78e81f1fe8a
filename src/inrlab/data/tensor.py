"""Map-style datasets over image tensors held in memory, augmented per batch."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from inrlab.data.batched import BatchedDataset
from inrlab.data.images import check_square, random_flip, random_shift, random_transpose


def fits_on(device: torch.device, nbytes: int, share: float = 0.25) -> bool:
    """Whether ``nbytes`` take at most ``share`` of the free memory of a CUDA ``device``
    (always true elsewhere: the data is in host memory already)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


class ImageTensorDataset(BatchedDataset):
    """Items ``(image,)``: float (C, H, W) in [0, 1] from a uint8 or float (N, C, H, W) tensor.

    ``random_shift`` (pixels) and ``random_flip`` (probabilities ``flip_probs`` for
    horizontal, vertical; the seed's 0.4 / 0.2) augment anew on every read; ``shift_wrap``
    rolls the shifted image around instead of filling with black, ``random_transpose`` swaps
    x and y of half the (square) images. ``num_repeat``
    repeats every image (each copy augmented independently). ``batch(indices)`` gives a
    whole augmented batch in a few tensor operations; the trainer calls it directly (a
    DataLoader goes through ``__getitems__``), after ``on_device`` put the images on the
    training device, so indexing, conversion and augmentation run there.
    """

    def __init__(
        self,
        images: torch.Tensor,
        random_shift: int = 0,
        random_flip: bool = False,
        flip_probs: tuple[float, float] = (0.4, 0.2),
        num_repeat: int = 1,
        shift_wrap: bool = False,
        random_transpose: bool = False,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
        self.images = images
        self.shift = int(random_shift)
        self.flip = bool(random_flip)
        self.flip_probs = flip_probs
        self.num_repeat = int(num_repeat)
        self.shift_wrap = bool(shift_wrap)
        self.transpose = bool(random_transpose)
        if self.transpose:
            check_square(images.shape, "random_transpose")

    def __len__(self) -> int:
        return self.images.shape[0] * self.num_repeat

    def on_device(self, device: torch.device | str) -> "ImageTensorDataset":
        """The same dataset with its images on ``device`` (kept where they are when they
        would take over a quarter of the device's free memory)."""
        device = torch.device(device)
        if self.images.device == device or not fits_on(device, self.images.nbytes):
            return self
        return ImageTensorDataset(self.images.to(device), random_shift=self.shift,
                                  random_flip=self.flip, flip_probs=self.flip_probs,
                                  num_repeat=self.num_repeat, shift_wrap=self.shift_wrap,
                                  random_transpose=self.transpose)

    def unaugmented(self) -> "ImageTensorDataset":
        """The same images once each, as they are (no shift, flip, transpose or repeat)."""
        return ImageTensorDataset(self.images)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Augmented float images (B, C, H, W) for ``indices``, on the images' device."""
        index = torch.as_tensor(indices, dtype=torch.long)
        index = index.to(self.images.device, non_blocking=True) // self.num_repeat
        images = self.images[index]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.shift:
            images = random_shift(images, self.shift, wrap=self.shift_wrap)
        if self.flip:
            images = random_flip(images, *self.flip_probs)
        if self.transpose:
            images = random_transpose(images)
        return images

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return (self.batch([index % len(self)])[0],)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor]]:
        return [(image,) for image in self.batch(indices)]


class TransformDataset(Dataset):
    """The seed's ``TransformDataset``: item ``k`` is source item ``k // num_repeat`` with its
    first element cast to ``dtype``, multiplied by ``multiply`` and passed through every
    transform in order; other tuple elements pass through. Always returns a tuple."""

    def __init__(
        self,
        source: Any,
        dtype: torch.dtype | None = None,
        multiply: float | None = None,
        transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
        num_repeat: int = 1,
    ) -> None:
        self.source = source
        self.dtype = dtype
        self.multiply = multiply
        self.transforms = list(transforms or [])
        self.num_repeat = int(num_repeat)

    def __len__(self) -> int:
        return len(self.source) * self.num_repeat

    def __getitem__(self, index: int) -> tuple:
        item = self.source[index // self.num_repeat]
        first, rest = (item[0], tuple(item[1:])) if isinstance(item, tuple) else (item, ())
        if self.dtype is not None:
            first = first.to(self.dtype)
        if self.multiply is not None:
            first = first * self.multiply
        for transform in self.transforms:
            first = transform(first)
        return (first, *rest)
