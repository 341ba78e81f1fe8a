"""The batch protocol: datasets that make whole batches on the training device."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset


class BatchedDataset(Dataset):
    """A dataset that gives whole batches: ``batch(indices)`` -> images (B, C, H, W), and
    ``on_device(device)`` -> the same dataset making its batches on ``device``.

    The trainer takes batches of these directly (the tile, MNIST and kali datasets and their
    mixtures): no DataLoader, no per-item Python, no collate, no host-to-device copy of
    images. ``makes_batches`` False opts out (a mixture with a member that cannot); items
    stay readable one by one (``dataset[i]``) for everything else.
    """

    makes_batches: bool = True

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_device(self, device: torch.device | str) -> "BatchedDataset":
        raise NotImplementedError


def makes_batches(dataset: Dataset) -> bool:
    return isinstance(dataset, BatchedDataset) and dataset.makes_batches
