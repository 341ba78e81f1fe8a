"""Transformer autoencoder of the MNIST log, attending across the patches of each image."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.contract import Autoencoder
from inrlab.models.layers import activation as make_activation
from inrlab.models.layers import check_positive_int, check_shape
from inrlab.models.registry import register_model


@register_model("autoencoder", tiny=dict(shape=(1, 12, 12), code_size=6, patch_size=4,
                                         stride=4, num_layers=1, num_hidden=8, num_heads=2))
class TransformerAutoencoder(Autoencoder):
    """Conv patch embedding -> TransformerEncoder over patches -> Linear to the code;
    Linear from the code to patch tokens -> TransformerDecoder -> transposed conv.

    Images are zero-padded at the bottom/right so that the patches tile them exactly, and
    the output is cropped back: every (patch, stride) combination gives the input's size.
    It renders at its own size only (``renders_any_size`` is False).
    """

    def __init__(
        self,
        shape: Sequence[int],
        code_size: int,
        patch_size: int = 8,
        stride: int | None = None,
        num_layers: int = 4,
        num_hidden: int = 64,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.1,
        activation: Any = "relu",
    ) -> None:
        super().__init__()
        self.shape = check_shape("shape", shape, 3)
        self.code_size = check_positive_int("code_size", code_size)
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.stride = check_positive_int("stride", stride if stride is not None else patch_size)
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_hidden", num_hidden)
        check_positive_int("num_heads", num_heads)
        if num_hidden % num_heads:
            raise ValueError(f"num_hidden ({num_hidden}) must be divisible by num_heads "
                             f"({num_heads})")
        if self.stride > self.patch_size:
            raise ValueError(f"stride ({self.stride}) larger than patch_size "
                             f"({self.patch_size}) would skip pixels")
        channels, height, width = self.shape
        self.padded = tuple(self._padded_size(s) for s in (height, width))
        self.grid = tuple((s - self.patch_size) // self.stride + 1 for s in self.padded)
        tokens = self.grid[0] * self.grid[1]
        layer_args = dict(d_model=num_hidden, nhead=num_heads,
                          dim_feedforward=mlp_dim or num_hidden, dropout=dropout,
                          batch_first=True, activation=_transformer_activation(activation))
        self.patch_embed = nn.Conv2d(channels, num_hidden, self.patch_size, self.stride)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, num_hidden) * 0.02)
        self.encoder_layers = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_args), num_layers, enable_nested_tensor=False)
        self.to_code = nn.Linear(tokens * num_hidden, self.code_size)
        self.from_code = nn.Linear(self.code_size, tokens * num_hidden)
        self.decoder_layers = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer_args), num_layers)
        self.patch_unembed = nn.ConvTranspose2d(num_hidden, channels, self.patch_size,
                                                self.stride)
        self.num_hidden = num_hidden

    def _padded_size(self, size: int) -> int:
        if size <= self.patch_size:
            return self.patch_size
        steps = math.ceil((size - self.patch_size) / self.stride)
        return self.patch_size + steps * self.stride

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self.padded[0] - x.shape[-2], self.padded[1] - x.shape[-1]
        x = F.pad(x, (0, pad_w, 0, pad_h))
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, D)
        tokens = self.encoder_layers(tokens)
        return self.to_code(tokens.flatten(1))  # (B, code)

    @property
    def input_shape(self) -> tuple[int, int | None, int | None]:
        return self.shape  # type: ignore[return-value]

    def decode(self, code: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        if shape is not None and tuple(shape) != tuple(self.shape[1:]):
            raise ValueError(f"TransformerAutoencoder renders {tuple(self.shape[1:])} only, "
                             f"not {tuple(shape)}")
        tokens = self.from_code(code).view(-1, self.grid[0] * self.grid[1], self.num_hidden)
        tokens = tokens + self.pos_embed  # (B, T, D)
        tokens = self.decoder_layers(tokens, tokens)
        grid = tokens.transpose(1, 2).reshape(-1, self.num_hidden, *self.grid)  # (B, D, h, w)
        images = self.patch_unembed(grid)  # (B, C, padded H, padded W)
        return images[:, :, : self.shape[1], : self.shape[2]]


def _transformer_activation(spec: Any) -> Any:
    # nn.Transformer*Layer accepts "relu"/"gelu" strings or a callable.
    if isinstance(spec, str) and spec.lower() in ("relu", "gelu"):
        return spec.lower()
    return make_activation(spec)
