"""The batch protocol: datasets that make whole batches on the training device."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch.utils.data import Dataset


class PixelSample(NamedTuple):
    """Some pixels of each image of a batch rendered at ``size`` (H, W): what a training
    step that scores only those pixels needs (``train_pixels``), without the whole render."""

    size: tuple[int, int]
    index: torch.Tensor  # (B, n) flat row-major pixel indices into an (H, W) render
    colours: torch.Tensor  # (B, n, C) their colours


def random_pixels(batch: int, height: int, width: int, count: int | None,
                  device: torch.device | str,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Flat indices (B, n) of ``count`` distinct random pixels of each of ``batch`` (H, W)
    images, from ``generator`` (default torch's; None, or at least H*W: every pixel, in
    order)."""
    if count is None or count >= height * width:
        return torch.arange(height * width, device=device).expand(batch, -1)
    scores = torch.rand(batch, height * width, device=device, generator=generator)
    return scores.topk(count, dim=1, sorted=False).indices


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

    def pixel_batches(self, batches: Sequence[Sequence[int] | torch.Tensor], count: int,
                      generators: Sequence[torch.Generator | None] | None = None
                      ) -> list[tuple[torch.Tensor, PixelSample]] | None:
        """One (images, sample) per batch of item indices: the items at the dataset's own
        size and ``count`` random pixels of each at the size that batch is scored at, its
        draws from ``generators[k]``, for a dataset that can render pixels alone cheaper
        than whole images; None (the default): it cannot, and the trainer draws the pixels
        of ``batch(indices)`` itself."""
        return None


def makes_batches(dataset: Dataset) -> bool:
    return isinstance(dataset, BatchedDataset) and dataset.makes_batches
