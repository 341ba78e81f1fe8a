"""The seed system's "manifold" decoder: an MLP ``code + positional embedding -> colour``,
batched over all images and pixels."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.models.layers import activation as make_activation
from inrlab.models.layers import check_positive_int
from inrlab.models.posenc import positional_encoding
from inrlab.models.registry import register_model


class ResidualLinearBlock(nn.Module):
    """``x + branch(x)`` (or ``concat(x, branch(x))``), branch = [BatchNorm] + L x (Linear, act).

    BatchNorm normalises over every row it gets: all pixels of all images of the batch.
    """

    def __init__(self, width: int, num_layers: int, act: Any, batch_norm: bool,
                 concat: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(width)] if batch_norm else []
        for _ in range(num_layers):
            layers += [nn.Linear(width, width), make_activation(act)]
        self.branch = nn.Sequential(*layers)
        self.concat = concat
        self.out_width = 2 * width if concat else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.branch[0]
        if (isinstance(norm, nn.BatchNorm1d) and norm.running_var is not None
                and not (self.training or torch.is_grad_enabled())):
            y = self.branch[2:](_linear_after_norm(x, norm, self.branch[1]))  # rendering
        else:
            y = self.branch(x)
        return torch.cat([x, y], dim=-1) if self.concat else x + y


def _linear_after_norm(x: torch.Tensor, norm: nn.BatchNorm1d, linear: nn.Linear) -> torch.Tensor:
    """``linear(norm(x))`` for an eval-mode BatchNorm, folded into the Linear's weights: the
    same function without the normalisation's pass over every pixel's activations."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # (w,)
    shift = norm.bias - norm.running_mean * scale
    return F.linear(x, linear.weight * scale, linear.bias + linear.weight @ shift)


@register_model("decoder", tiny=dict(num_input_channels=8, num_output_channels=3, num_hidden=16,
                                     num_blocks=2, num_layers_per_block=1, default_shape=(8, 8)))
class ImageManifoldDecoder(ImplicitDecoder):
    """Implicit decoder ``f(code, pos) -> colour`` with residual MLP blocks.

    ``batch_norm_images``: BatchNorm takes its training statistics over groups of this many
    images: 1 (the default) per image, the seed system's semantics and numbers; None over
    the whole batch. The groups run through the MLP one after another, which keeps their
    activations in cache on a CPU (bench/throughput.py: per image it is faster than the
    seed's loop, while whole-batch statistics stream every activation through memory).

    Parameter count (code c, embedding P, hidden h, B add-blocks of L layers, C outputs):
    ``(c+P)h + h + B(2h + L(h^2 + h)) + hC + C`` -- the seed's formula. The first Linear is
    applied in two parts (code part once per image, position part once per pixel), which is
    the same function and the same parameters as one Linear on the concatenation.
    """

    def __init__(
        self,
        num_input_channels: int,
        num_output_channels: int = 3,
        num_hidden: int = 256,
        num_blocks: int = 2,
        num_layers_per_block: int = 2,
        concat_residual: bool | Sequence[bool] = False,
        pos_embedding_freqs: Sequence[float] = (7, 17),
        batch_norm: bool = True,
        default_shape: Sequence[int] | None = None,
        activation: Any = "gelu",
        activation_out: Any = "sigmoid",
        pos_embedding: str = "sincos",
        pos_embedding_features: int = 64,
        pos_embedding_sigma: float = 4.0,
        pos_embedding_seed: int = 0,
        batch_norm_images: int | None = 1,
    ) -> None:
        super().__init__()
        self.code_size = check_positive_int("num_input_channels", num_input_channels)
        self.set_io((self.code_size,), num_output_channels, default_shape)
        check_positive_int("num_hidden", num_hidden)
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an integer >= 0, got {num_blocks!r}")
        check_positive_int("num_layers_per_block", num_layers_per_block)
        if isinstance(concat_residual, bool):
            concat = [concat_residual] * num_blocks
        else:
            concat = list(concat_residual)
            if len(concat) != num_blocks or not all(isinstance(c, bool) for c in concat):
                raise ValueError(
                    f"concat_residual must be a bool or a list of {num_blocks} bools "
                    f"(one per block), got {concat_residual!r}"
                )
        self.encoding = positional_encoding(pos_embedding, pos_embedding_freqs,
                                            pos_embedding_features, pos_embedding_sigma,
                                            pos_embedding_seed)
        self.linear_in = nn.Linear(self.code_size + self.encoding.out_features, num_hidden)
        self.act_in = make_activation(activation)
        blocks, width = [], num_hidden
        for block_concat in concat:
            block = ResidualLinearBlock(width, num_layers_per_block, activation, batch_norm,
                                        block_concat)
            blocks.append(block)
            width = block.out_width
        self.blocks = nn.Sequential(*blocks)
        self.linear_out = nn.Linear(width, self.out_channels)
        self.act_out = make_activation(activation_out)
        self.max_width = width
        if batch_norm_images is not None:
            check_positive_int("batch_norm_images", batch_norm_images)
        self.batch_norm_images = batch_norm_images

    def query(self, code: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        # code (B, c); coords (N, 2) or (B, N, 2) -> (B, N, C)
        embedding = self.encoding(coords.to(self.linear_in.weight.dtype))  # (..., N, P)
        weight = self.linear_in.weight
        code_part = F.linear(code, weight[:, : self.code_size], self.linear_in.bias)  # (B, h)
        pos_part = F.linear(embedding, weight[:, self.code_size:])  # (N, h) or (B, N, h)
        group = self.batch_norm_images
        if group is None or group >= code.shape[0] or not self.training:
            return self._pixels(code_part, pos_part)  # (B, N, C)
        # BatchNorm statistics per group of images (1: per image, as the seed's loop took
        # them); each group runs the whole MLP on its own, so on a CPU its activations stay
        # in cache instead of streaming the batch's through memory at every layer.
        shared = pos_part.dim() == 2
        return torch.cat([self._pixels(code_part[i:i + group],
                                       pos_part if shared else pos_part[i:i + group])
                          for i in range(0, code.shape[0], group)])

    def _pixels(self, code_part: torch.Tensor, pos_part: torch.Tensor) -> torch.Tensor:
        """The MLP from the first layer's two parts: (G, h) and (N, h) or (G, N, h) ->
        colours (G, N, C); BatchNorm (in training) takes its statistics over all G*N rows."""
        x = self.act_in(code_part.unsqueeze(1) + pos_part)  # (G, N, h)
        batch, pixels, hidden = x.shape
        x = self.blocks(x.reshape(batch * pixels, hidden))  # (G*N, w)
        x = self.act_out(self.linear_out(x))  # (G*N, C)
        return x.view(batch, pixels, self.out_channels)
