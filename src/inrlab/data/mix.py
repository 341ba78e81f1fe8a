"""Mixtures of datasets (the logs' tiles + fractals) and materialised subsets."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from inrlab.data.batched import BatchedDataset, makes_batches


class InterleaveDataset(BatchedDataset):
    """Round-robin over map-style datasets: item ``k`` comes from dataset ``k % n``; shorter
    datasets wrap around, the length is ``n * max(len)`` (every item of the longest appears
    once per pass).

    When every member makes whole batches (``batch`` and ``on_device``: tiles, MNIST, kali
    patches), so does the mixture (``makes_batches``): each member renders its share of a
    batch at once, on the training device."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        if not datasets:
            raise ValueError("interleave needs at least one dataset")
        self.datasets = list(datasets)
        self.lengths = [len(d) for d in self.datasets]  # type: ignore[arg-type]
        if min(self.lengths) == 0:
            raise ValueError("cannot interleave an empty dataset")
        self.makes_batches = all(makes_batches(d) for d in self.datasets)

    def on_device(self, device: torch.device | str) -> "InterleaveDataset":
        return InterleaveDataset([d.on_device(device) for d in self.datasets])  # type: ignore

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) of ``indices``, each member's share made in one call."""
        if not self.makes_batches:
            raise TypeError("not every interleaved dataset makes whole batches")
        index = torch.as_tensor(indices, dtype=torch.long).cpu()
        source, position = index % len(self.datasets), index // len(self.datasets)
        images: torch.Tensor | None = None
        for number, dataset in enumerate(self.datasets):
            chosen = source == number
            if not bool(chosen.any()):
                continue
            part = dataset.batch(position[chosen] % self.lengths[number])  # type: ignore
            if images is None:
                images = part.new_empty((len(index), *part.shape[1:]))
            images[chosen.to(images.device)] = part.to(images.dtype)
        assert images is not None
        return images

    def __len__(self) -> int:
        return len(self.datasets) * max(self.lengths)

    def __getitem__(self, index: int):
        source, position = index % len(self.datasets), index // len(self.datasets)
        return self.datasets[source][position % self.lengths[source]]


class LimitDataset(Dataset):
    """The first ``size`` items of a map-style dataset."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset = dataset
        self.size = min(int(size), len(dataset))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self.dataset[index]


def first_images(dataset: Dataset, count: int) -> torch.Tensor:
    """The first ``count`` images of a map-style dataset as one float tensor (n, C, H, W):
    element 0 of each item (items are ``(image,)`` or ``(image, target)`` tuples)."""
    items = []
    for index in range(min(int(count), len(dataset))):  # type: ignore[arg-type]
        item = dataset[index]
        items.append(item[0] if isinstance(item, (tuple, list)) else item)
    if not items:
        raise ValueError("the dataset is empty")
    return torch.stack(items).float()



def plain_images(dataset: Dataset, count: int) -> torch.Tensor:
    """The first ``count`` images of ``dataset`` without its augmentation where it can give
    them (``unaugmented()``, as tile and tensor datasets do), else as it reads them."""
    unaugmented = getattr(dataset, "unaugmented", None)
    return first_images(unaugmented() if callable(unaugmented) else dataset, count)
