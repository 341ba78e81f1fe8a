"""Any ``nn.Module`` seen through the ``Autoencoder`` contract, so the trainers, ``render``
and the report handle a snippet's own model (an ``nn.Sequential``, a class of the user's)
without probing it."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.contract import Autoencoder, named_part
from inrlab.models.layers import keep_state_keys
from inrlab.models.registry import _SPEC


class ModuleAutoencoder(Autoencoder):
    """``module(images)`` (its first output when it gives several) as an autoencoder whose
    code is the image itself: ``encode`` passes the images through, ``decode`` runs the
    module, which renders its input's size only. ``has_code`` is False, so evaluation and
    the report do not score a code it does not have.

    The state dict is the module's own (no ``module.`` prefix), so its checkpoints load with
    or without the wrapper; attributes the wrapper lacks are the module's (a custom trainer
    may still call its model's own methods)."""

    has_code = False

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        if hasattr(module, _SPEC):  # built from a spec: the wrapper rebuilds as it does
            setattr(self, _SPEC, getattr(module, _SPEC))
        keep_state_keys(self, {"module.": ""})  # the module's own keys

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)

    @property
    def class_name(self) -> str:
        return type(self.module).__name__

    @property
    def input_shape(self) -> tuple[int, int | None, int | None]:
        raise ValueError(f"{type(self.module).__name__} is no inrlab Autoencoder: it does not "
                         "say which images it takes")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, codes: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        output = self.module(codes)
        output = output[0] if isinstance(output, (tuple, list)) else output
        if shape is not None and tuple(output.shape[-2:]) != tuple(shape):
            raise ValueError(f"{type(self.module).__name__} renders "
                             f"{tuple(output.shape[-2:])} only, not {tuple(shape)}")
        return output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(images)  # whatever its output's size (the Trainer's targets)

    def parameter_parts(self) -> dict[str, nn.Module | None]:
        return {part: named_part(self.module, part) for part in ("encoder", "decoder")}


def as_autoencoder(module: nn.Module) -> Autoencoder:
    """``module`` itself when it is an ``Autoencoder``, else wrapped in ``ModuleAutoencoder``."""
    return module if isinstance(module, Autoencoder) else ModuleAutoencoder(module)

