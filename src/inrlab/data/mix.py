"""Mixtures of datasets (the logs' tiles + fractals) and materialised subsets."""

from __future__ import annotations

from typing import Sequence

from torch.utils.data import Dataset


class InterleaveDataset(Dataset):
    """Round-robin over map-style datasets: item ``k`` comes from dataset ``k % n``; shorter
    datasets wrap around, the length is ``n * max(len)`` (every item of the longest appears
    once per pass)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        if not datasets:
            raise ValueError("interleave needs at least one dataset")
        self.datasets = list(datasets)
        self.lengths = [len(d) for d in self.datasets]  # type: ignore[arg-type]
        if min(self.lengths) == 0:
            raise ValueError("cannot interleave an empty dataset")

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
