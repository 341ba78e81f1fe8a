"""Loss functions by the names experiment files use.

``loss_function`` is one name or a weighted sum of names, e.g. ``"l2 + 0.1 * gradient"``.
A name is one of :data:`LOSSES`, any ``torch.nn.functional`` function taking (input,
target) (``"smooth_l1_loss"``, ``"cross_entropy"``) or any ``torch.nn`` loss class, built
with its defaults (``"MSELoss"``, ``"CrossEntropyLoss"``).
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from inrlab.errors import InrlabError
from inrlab.train.image_metrics import ssim

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_div_batchmean(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.kl_div`` summed over each item and averaged over the batch (its ``batchmean``):
    ``output`` holds log-probabilities, ``target`` probabilities."""
    return F.kl_div(output, target, reduction="batchmean")


def _whole_images(name: str, output: torch.Tensor, target: torch.Tensor) -> None:
    if output.dim() != 4 or output.shape != target.shape:
        raise ValueError(
            f"the '{name}' loss compares whole images (batch, channels, height, width) and got "
            f"{tuple(output.shape)} against {tuple(target.shape)}; with train_pixels or "
            "train_jitter a step decodes scattered pixels, which have no neighbours: leave "
            "train_pixels out (and train_jitter)")


def gradient_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Edge-aware loss: the mean absolute difference between the horizontal and vertical
    pixel differences of ``output`` and of ``target`` (B, C, H, W). A blurred edge has a
    smaller difference than the sharp one, so this loss grows with blur where a pixel loss
    on its own is content with the average of the possible edges."""
    _whole_images("gradient", output, target)
    error = output - target  # differences of the error = differences of output - of target
    dx = error[..., :, 1:] - error[..., :, :-1]  # (B, C, H, W-1)
    dy = error[..., 1:, :] - error[..., :-1, :]  # (B, C, H-1, W)
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (the validation metric's definition, 11-tap Gaussian window) over whole
    images (B, C, H, W) in [0, 1]: a perceptual loss that weighs local contrast and
    structure rather than each pixel's error."""
    _whole_images("ssim", output, target)
    return 1 - ssim(output, target).mean()


LOSSES: dict[str, LossFunction] = {
    "l1": F.l1_loss,
    "mae": F.l1_loss,
    "l2": F.mse_loss,
    "mse": F.mse_loss,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
    "bce": F.binary_cross_entropy,
    "ce": F.cross_entropy,
    "kl_div": kl_div_batchmean,
    "gradient": gradient_loss,
    "ssim": ssim_loss,
}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:({_NUMBER})\s*\*\s*)?([A-Za-z_]\w*)\s*")


def loss_function(spec: str, key: str = "loss_function") -> LossFunction:
    """The loss a ``loss_function`` value names: one name (see the module docstring) or a
    weighted sum ``"name + w * name + ..."`` of them. ``key``: the experiment key an error
    names (e.g. ``warmup_loss_function``)."""
    try:
        return _parse_loss(str(spec))
    except InrlabError as e:
        e.key = key
        raise


def _parse_loss(text: str) -> LossFunction:
    terms: list[tuple[float, str]] = []
    position = 0
    while True:
        match = _TERM.match(text, position)
        if match is None:
            raise InrlabError(f"cannot read loss_function '{text}': write one loss name or a "
                              "weighted sum such as 'l2 + 0.1 * gradient'", key="loss_function")
        terms.append((float(match.group(1)) if match.group(1) else 1.0, match.group(2)))
        position = match.end()
        if position == len(text):
            break
        if text[position] != "+":
            raise InrlabError(f"cannot read loss_function '{text}' at '{text[position:]}': "
                              "terms are joined by '+', e.g. 'l2 + 0.1 * gradient'",
                              key="loss_function")
        position += 1
    if len(terms) == 1 and terms[0][0] == 1.0:
        return _named_loss(terms[0][1])
    functions = [(weight, _named_loss(name)) for weight, name in terms]

    def weighted_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(weight * function(output, target) for weight, function in functions)

    return weighted_sum


def second_parameter(function: Callable) -> str | None:
    """The name of a callable's second parameter (``target`` for torch's losses; for a
    class, of its constructor after ``self``: ``T_max`` for ``CosineAnnealingLR``)."""
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None
    return parameters[1] if len(parameters) > 1 else None


def _named_loss(name: str) -> LossFunction:
    if name.lower() in LOSSES:
        return LOSSES[name.lower()]
    candidate = getattr(F, name, None)
    if callable(candidate) and second_parameter(candidate) == "target":
        return candidate
    module_class = getattr(torch.nn, name, None)
    if isinstance(module_class, type) and issubclass(module_class, _Loss):
        return module_class()
    raise InrlabError(f"unknown loss_function '{name}'; use one of {', '.join(LOSSES)}, "
                      "a torch.nn.functional function such as 'smooth_l1_loss', or a "
                      "torch.nn loss class such as 'MSELoss'", key="loss_function")
