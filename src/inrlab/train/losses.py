"""Loss functions by the names experiment files use."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from inrlab.errors import InrlabError

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFunction] = {
    "l1": F.l1_loss,
    "mae": F.l1_loss,
    "l2": F.mse_loss,
    "mse": F.mse_loss,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
    "bce": F.binary_cross_entropy,
}


def loss_function(name: str) -> LossFunction:
    """``l1``/``mae``, ``l2``/``mse``, ``smooth_l1``, ``huber``, ``bce``, or any
    ``torch.nn.functional`` function taking (input, target) by its name."""
    key = str(name).lower()
    if key in LOSSES:
        return LOSSES[key]
    candidate = getattr(F, str(name), None)
    if callable(candidate) and str(name).endswith("loss"):
        return candidate
    raise InrlabError(f"unknown loss_function '{name}'; use one of {', '.join(LOSSES)} "
                      "or a torch.nn.functional loss name such as 'smooth_l1_loss'",
                      key="loss_function")
