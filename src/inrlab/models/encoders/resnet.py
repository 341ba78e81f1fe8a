"""ResNet-18 without the final average pool ("resnet18_open"), written here so it needs no
torchvision; parameter names match torchvision's, so its ImageNet state dict loads as is."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from inrlab.errors import InrlabError
from inrlab.models.layers import check_positive_int, check_shape
from inrlab.models.contract import Encoder
from inrlab.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(n_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.downsample = None
        if stride != 1 or n_in != n_out:
            self.downsample = nn.Sequential(nn.Conv2d(n_in, n_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + skip)


class ResNet18Open(nn.Module):
    """ResNet-18 whose forward stops after ``layer4``: (B, 3, H, W) -> (B, 512, H/32, W/32).

    The unused classifier ``fc`` is kept, frozen, so torchvision weights load strictly and
    the parameter count matches the seed system's (11,689,512 incl. 513,000 frozen).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512]
        n_in = 64
        for index, width in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            setattr(self, f"layer{index}",
                    nn.Sequential(BasicBlock(n_in, width, stride), BasicBlock(width, width, 1)))
            n_in = width
        self.fc = nn.Linear(512, 1000)
        self.fc.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18_open(weights: Any = None) -> ResNet18Open:
    """ResNet-18 without average pool; ``weights``: None (random init), a path to a
    torchvision-format state dict (loaded with ``weights_only=True``), or a torchvision
    ``ResNet18_Weights`` value (needs the optional torchvision extra and may download)."""
    model = ResNet18Open()
    if weights is None:
        return model
    if isinstance(weights, (str, Path)):
        path = Path(weights).expanduser()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InrlabError("ResNet-18 weights file not found", path=path) from None
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
            raise InrlabError(f"cannot read ResNet-18 weights: {e}", path=path) from None
    elif hasattr(weights, "get_state_dict"):
        state = weights.get_state_dict(progress=False)
    else:
        raise TypeError(
            f"weights must be None, a file path or torchvision weights, got {weights!r}")
    model.load_state_dict(state)
    return model


@register_model("encoder", tiny=dict(shape=(3, 16, 16), code_size=7))
class ResNetEncoder(Encoder):
    """The logs' ResNet encoder: ``resnet18_open`` -> flatten -> Linear(features -> code)."""

    def __init__(self, shape: Sequence[int], code_size: int, weights: Any = None,
                 freeze: bool = False) -> None:
        super().__init__()
        self.shape = check_shape("shape", shape, 3)
        if self.shape[0] != 3:
            raise ValueError(f"ResNetEncoder needs 3-channel images, got shape {self.shape}")
        self.code_size = check_positive_int("code_size", code_size)
        self.code_shape = (self.code_size,)
        self.resnet = resnet18_open(weights)
        if freeze:
            self.resnet.requires_grad_(False)
        size = [math.ceil(s / 32) for s in self.shape[1:]]
        self.linear = nn.Linear(512 * size[0] * size[1], self.code_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.resnet(x).flatten(1))
