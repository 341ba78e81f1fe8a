"""Batches for the trainer: an epoch's training batches (resumable mid-epoch), validation
batches (frozen once when asked), and the first items that check a run before it starts.

Two sources: datasets of the batch protocol (``BatchedDataset``: tiles, MNIST, kali
patches) are asked for whole batches on the training device; any other dataset goes
through a DataLoader."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from inrlab.data.batched import makes_batches
from inrlab.errors import InrlabError
from inrlab.train.settings import TrainSettings


class EpochSampler(Sampler[int]):
    """A permutation of ``range(size)`` fixed by (seed, epoch), starting at ``start``, so a
    resumed run continues the interrupted epoch with exactly the remaining items."""

    def __init__(self, size: int, seed: int, epoch: int, start: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        self.permutation = torch.randperm(size, generator=generator)[start:]  # (n,)
        self.order = self.permutation.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class Batches:
    """The run's datasets as batches on ``device``. ``train_sets``/``validation_sets`` are
    (first epoch, dataset) pairs: ``train_set5`` takes over from epoch 5."""

    def __init__(self, train_sets: Sequence[tuple[int, Dataset]],
                 validation_sets: Sequence[tuple[int, Dataset]], settings: TrainSettings,
                 device: torch.device) -> None:
        self.train_sets = sorted(train_sets, key=lambda item: item[0])
        self.validation_sets = sorted(validation_sets, key=lambda item: item[0])
        self.settings = settings
        self.device = device
        self._on_device: dict[int, Any] = {}
        # pixel batches render together until they hold this many items (bench/ sets 1)
        self.render_group_items = RENDER_GROUP_ITEMS
        self._frozen_validation: list[Any] | None = None

    def train(self, epoch: int, skip_batches: int,
              pixels: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The batches of ``epoch`` after the first ``skip_batches`` (a resumed epoch). A
        stream (IterableDataset) cannot skip: it restarts its epoch. ``pixels``: the step
        scores that many pixels per image; a dataset that renders pixels alone gives
        ``(images, PixelSample)`` batches (``BatchedDataset.pixel_batches``), each drawn
        from its own generator (``batch_generator``) and rendered several at a time."""
        dataset = self._for_epoch(self.train_sets, epoch)
        s = self.settings
        pin = self.device.type == "cuda"
        if isinstance(dataset, IterableDataset):
            batches: Any = DataLoader(dataset, batch_size=s.batch_size,
                                      num_workers=s.num_workers, pin_memory=pin)
        else:
            sampler = EpochSampler(len(dataset), s.seed, epoch, skip_batches * s.batch_size)
            if self._direct(dataset):
                order = sampler.permutation.pin_memory() if pin else sampler.permutation
                source = self._device_copy(dataset)
                chunks = order.split(s.batch_size) if len(order) else ()
                batches = (_pixel_batches(source, chunks, pixels, s.seed, epoch, skip_batches,
                                          self.device, self.render_group_items) if pixels
                           else ((source.batch(index),) for index in chunks))
            else:
                batches = DataLoader(dataset, batch_size=s.batch_size, sampler=sampler,
                                     num_workers=s.num_workers, pin_memory=pin)
        for batch in batches:
            yield self.to_device(batch)

    def restarts_epoch(self, epoch: int) -> bool:
        return isinstance(self._for_epoch(self.train_sets, epoch), IterableDataset)

    def validation(self, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """The validation batches of ``epoch`` (the same list every time with
        ``freeze_validation_set``)."""
        dataset = self._for_epoch(self.validation_sets, epoch)
        if dataset is None:
            return iter(())
        size = self.settings.validation_batch_size
        batches: Any
        if self._direct(dataset):
            source = self._device_copy(dataset)
            batches = ((source.batch(index),)
                       for index in torch.arange(len(dataset)).split(size))  # type: ignore
        else:
            batches = DataLoader(dataset, batch_size=size, pin_memory=self.device.type == "cuda")
        if self.settings.freeze_validation_set:
            if self._frozen_validation is None:
                self._frozen_validation = list(batches)
            batches = self._frozen_validation
        return (self.to_device(batch) for batch in batches)

    def to_device(self, batch: Any) -> tuple[torch.Tensor, ...]:
        if not isinstance(batch, (tuple, list)):
            batch = (batch,)
        return tuple(b.to(self.device, non_blocking=True) if isinstance(b, torch.Tensor) else b
                     for b in batch)

    def _direct(self, dataset: Dataset) -> bool:
        return self.settings.num_workers == 0 and makes_batches(dataset)

    def _device_copy(self, dataset: Any) -> Any:
        key = id(dataset)
        if key not in self._on_device:
            self._on_device[key] = dataset.on_device(self.device)
        return self._on_device[key]

    @staticmethod
    def _for_epoch(sets: Sequence[tuple[int, Dataset]], epoch: int) -> Dataset | None:
        chosen = None
        for start, dataset in sets:
            if start <= epoch:
                chosen = dataset
        return chosen


# Pixel batches render together until they hold this many items: a small render's cost is
# per operation, not per pixel (bench/cpu_choices.py, "pixel batches rendered together").
RENDER_GROUP_ITEMS = 128


def _pixel_batches(source: Any, chunks: Sequence[torch.Tensor], pixels: int, seed: int,
                   epoch: int, first: int, device: torch.device,
                   group_items: int) -> Iterator[tuple[Any, ...]]:
    """The batches of item indices ``chunks`` (the first is batch ``first`` of ``epoch``)
    as ``(images, PixelSample)`` from ``source.pixel_batches``, rendered together up to
    ``group_items`` items, or ``(images,)`` where the dataset renders no pixels alone."""
    group = max(1, group_items // max(1, len(chunks[0]))) if chunks else 1
    for start in range(0, len(chunks), group):
        part = chunks[start:start + group]
        generators = [batch_generator(seed, epoch, first + start + k, device)
                      for k in range(len(part))]
        sampled = source.pixel_batches(part, pixels, generators)
        if sampled is None:  # it renders no pixels alone: whole batches from here on
            yield from ((source.batch(index),) for index in chunks[start:])
            return
        yield from sampled


def batch_generator(seed: int, epoch: int, batch: int, device: torch.device) -> torch.Generator:
    """The generator of batch ``batch`` of ``epoch``'s random draws (its size, pixels and
    flips): a function of the three numbers alone, so a batch is the same whether it is
    rendered alone or with others, and in a resumed run."""
    state = np.random.SeedSequence([seed, epoch, batch]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(
        (int(state[0]) << 31) ^ int(state[1]))


def first_items(dataset: Dataset, count: int, key: str) -> list[Any]:
    """The first ``count`` items of ``dataset``; bad input (naming ``key``) when it is empty
    or fails to read."""
    try:
        if isinstance(dataset, IterableDataset):
            items = []
            for item in dataset:
                items.append(item)
                if len(items) == count:
                    break
        else:
            size = len(dataset)  # type: ignore[arg-type]
            items = [dataset[i] for i in range(min(count, size))]
    except InrlabError:
        raise
    except Exception as e:  # noqa: BLE001 - a dataset that fails to read is bad input
        raise InrlabError(f"reading the first items failed: {type(e).__name__}: {e}",
                          key=key) from e
    if not items:
        raise InrlabError("the dataset is empty", key=key)
    return items
