"""The names a snippet in an experiment file sees.

One explicit dict, made fresh for every matrix entry: Python/torch basics, every registered
model by its class name, the dataset helpers and the trainers. ``globals:`` of the file are
added per entry and never leak into the next entry.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from inrlab import data, models
from inrlab.errors import InrlabError
from inrlab.train import TRAINERS


class MissingModule:
    """Stands in for an optional module that is not installed; any use says how to get it."""

    def __init__(self, name: str, install: str) -> None:
        self._name, self._install = name, install

    def __getattr__(self, attribute: str) -> Any:
        raise InrlabError(f"{self._name} is not installed (needed for "
                          f"{self._name}.{attribute}); install it with: {self._install}")


def _optional(name: str, install: str) -> Any:
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return MissingModule(name, install)


def snippet_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "math": math, "random": random, "np": np, "Path": Path,
        "torch": torch, "nn": nn, "F": F,
        "DataLoader": DataLoader, "Dataset": Dataset, "IterableDataset": IterableDataset,
        "TensorDataset": TensorDataset,
        "torchvision": _optional("torchvision", "pip install 'inrlab[vision]'"),
    }
    namespace.update(models.MODELS.classes())
    namespace.update({name: getattr(models, name) for name in models.__all__})
    namespace.update({name: getattr(data, name) for name in data.__all__})
    namespace.update(TRAINERS)
    return namespace
