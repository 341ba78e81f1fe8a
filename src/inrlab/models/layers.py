"""Small building blocks shared by models: activations by name, argument checks, a residual
convolution block."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn


def activation(spec: Any) -> nn.Module:
    """An activation module from a name (case-insensitive ``torch.nn`` class, e.g. ``"gelu"``,
    ``"relu6"``), a module class, a module instance, or ``None``/``"none"`` for identity."""
    if spec is None or (isinstance(spec, str) and spec.lower() in ("none", "identity", "linear")):
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if inspect.isclass(spec) and issubclass(spec, nn.Module):
        return spec()
    if isinstance(spec, str):
        wanted = spec.strip().strip("'\"").lower()
        for name in dir(nn):
            obj = getattr(nn, name)
            if name.lower() == wanted and inspect.isclass(obj) and issubclass(obj, nn.Module):
                return obj()
        raise ValueError(f"unknown activation {spec!r}: use a torch.nn class name such as "
                         "'relu', 'gelu', 'silu', 'tanh', 'sigmoid'")
    raise TypeError(f"activation must be a name, an nn.Module class or instance, got {spec!r}")


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_count(name: str, value: Any) -> int:
    """``int(value)`` when it is >= 0 (a number of blocks or layers that may be zero)."""
    if int(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def check_shape(name: str, value: Any, length: int) -> tuple[int, ...]:
    """A tuple of ``length`` positive ints, e.g. an image shape ``(C, H, W)``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != length:
        raise ValueError(f"{name} must be a sequence of {length} positive integers, got {value!r}")
    for v in value:
        check_positive_int(name, v)
    return tuple(int(v) for v in value)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class ResidualConvBlock(nn.Module):
    """x + conv(act(conv(x))), 3x3 'same' convolutions (EDSR's block without scaling)."""

    def __init__(self, channels: int, act_fn: Any) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), activation(act_fn),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
