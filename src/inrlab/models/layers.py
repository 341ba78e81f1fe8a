"""Small building blocks shared by models: activations by name, argument checks, a residual
convolution block, a Linear layer over a whole latent grid."""

from __future__ import annotations

import inspect
import itertools
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


class GridLinear(nn.Module):
    """One Linear layer from a whole (B, in_channels, gh, gw) grid to a (B, out_channels, gh,
    gw) grid: every output cell sees every input cell, with weights of its own (a 1x1 or 3x3
    convolution shares them across cells and sees only its neighbours).

    ``conv_init=k`` starts it as a freshly initialised k x k 'same' convolution (zero
    weights between cells further apart than the kernel), so training begins from the local
    model and learns the rest; ``None`` keeps Linear's default initialisation.
    """

    def __init__(self, in_channels: int, out_channels: int, grid: Sequence[int],
                 conv_init: int | None = None) -> None:
        super().__init__()
        self.grid = check_shape("grid", grid, 2)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        cells = self.grid[0] * self.grid[1]
        self.linear = nn.Linear(self.in_channels * cells, self.out_channels * cells)
        if conv_init is not None:
            kernel = check_positive_int("conv_init", conv_init)
            if kernel % 2 == 0:
                raise ValueError(f"conv_init must be an odd kernel size, got {conv_init!r}")
            self._init_as(nn.Conv2d(self.in_channels, self.out_channels, kernel,
                                    padding=kernel // 2))

    @torch.no_grad()
    def _init_as(self, conv: nn.Conv2d) -> None:
        """Copy ``conv`` ('same' padding, stride 1) as the dense matrix it is on this grid."""
        (height, width), kernel = self.grid, conv.kernel_size[0]
        weight = torch.zeros(self.out_channels, height, width, self.in_channels, height, width)
        for y, x, dy, dx in itertools.product(range(height), range(width), range(kernel),
                                              range(kernel)):
            source_y, source_x = y + dy - kernel // 2, x + dx - kernel // 2
            if 0 <= source_y < height and 0 <= source_x < width:
                weight[:, y, x, :, source_y, source_x] = conv.weight[:, :, dy, dx]
        self.linear.weight.copy_(weight.view_as(self.linear.weight))
        self.linear.bias.copy_(conv.bias.repeat_interleave(height * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"GridLinear expects a {self.grid[0]}x{self.grid[1]} grid, got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        # (B, C_in, gh, gw) -> (B, C_in * gh * gw) -> (B, C_out, gh, gw)
        return self.linear(x.flatten(1)).view(x.shape[0], self.out_channels, *self.grid)


def keep_state_keys(module: nn.Module, stored_as: dict[str, str]) -> None:
    """Keep the state-dict keys an earlier layout of ``module`` had, so its checkpoints load:
    ``stored_as`` maps a prefix of today's keys (``"mlp.layers."``) to the prefix stored
    (``"mlp."``). ``state_dict()`` writes the stored keys and ``load_state_dict()`` reads
    them; each key is renamed once, by its longest matching prefix."""
    stored_to_new = {old: new for new, old in stored_as.items()}

    def rename(state: dict[str, Any], prefix: str, mapping: dict[str, str]) -> None:
        items = list(state.items())
        state.clear()
        for key, value in items:
            rest = key[len(prefix):] if key.startswith(prefix) else None
            match = max((p for p in mapping if rest is not None and rest.startswith(p)),
                        key=len, default=None)
            if match is not None:
                key = prefix + mapping[match] + rest[len(match):]
            state[key] = value

    def out(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
        rename(state, prefix, stored_as)

    def into(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        rename(state, prefix, stored_to_new)

    module.register_state_dict_post_hook(out)
    module.register_load_state_dict_pre_hook(into)
