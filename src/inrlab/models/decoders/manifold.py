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

# Bytes of one hidden activation (fp32) of the images that go through the MLP at once in
# training with per-image BatchNorm statistics on a CPU: small enough to stay in cache
# between layers. Measured on a 2-core AMD EPYC (AVX2), decoder forward + backward at batch
# 64 of 32x32 images in chunks of 1k-16k rows: 2 MiB (2k, 4k, 8k rows at widths 256, 128,
# 64) came within 8% of the best chunk for each width, one image at a time 0.86-1.19x the
# seed's loop against its 1.12-1.72x (bench/README.md, `throughput.py --layouts`).
CPU_CHUNK_BYTES = 2 * 2**20


class ResidualLinearBlock(nn.Module):
    """``x + branch(x)`` (or ``concat(x, branch(x))``), branch = [BatchNorm] + L x (Linear, act).

    BatchNorm normalises over every row of ``x`` (R, w) it gets; in training, ``x`` may be
    (N, S, w): S groups of N rows each, normalised with each group's own statistics.
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
        if isinstance(norm, nn.BatchNorm1d) and x.dim() == 3 and self.training:
            y = self.branch[1:](_batch_norm_per_group(x, norm))  # (N, S, w)
        elif (isinstance(norm, nn.BatchNorm1d) and norm.running_var is not None
                and not (self.training or torch.is_grad_enabled())):
            y = self.branch[2:](_linear_after_norm(x, norm, self.branch[1]))  # rendering
        else:
            y = self.branch(x)
        return torch.cat([x, y], dim=-1) if self.concat else x + y


def _batch_norm_per_group(x: torch.Tensor, norm: nn.BatchNorm1d) -> torch.Tensor:
    """Training-mode ``norm`` of x (N, S, w) with statistics per group s (over its N rows),
    in one fused batch_norm call: the S groups' channels side by side as S*w channels.
    The running statistics end as if the S groups had passed one after another."""
    rows, groups, width = x.shape
    if norm.momentum is None and norm.running_mean is not None:  # a cumulative average
        return torch.stack([norm(x[:, group]) for group in range(groups)], dim=1)
    running = norm.running_mean is not None
    mean = norm.running_mean.repeat(groups) if running else None  # (S*w,) updated per group
    var = norm.running_var.repeat(groups) if running else None
    weight = norm.weight.repeat(groups) if norm.weight is not None else None
    bias = norm.bias.repeat(groups) if norm.bias is not None else None
    y = F.batch_norm(x.reshape(rows, groups * width), mean, var, weight, bias, True,
                     0.0 if norm.momentum is None else norm.momentum, norm.eps)
    if running:
        with torch.no_grad():  # each copy moved from the start by one group's statistics
            keep = 1 - norm.momentum
            for buffer, updated in ((norm.running_mean, mean), (norm.running_var, var)):
                start = buffer.clone()
                for step in updated.view(groups, width):  # step = keep * start + m * stat
                    buffer.mul_(keep).add_(step - keep * start)
            norm.num_batches_tracked.add_(groups)
    return y.view(rows, groups, width)


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
        # them). The images go through the MLP a chunk at a time, each chunk's groups side
        # by side: on a CPU a chunk's activations stay in cache between layers instead of
        # streaming the whole batch's through memory at every layer.
        batch = code.shape[0]
        chunk = self.chunk_images(batch, pos_part.shape[-2], group, code.device)
        full = batch - batch % group  # a last, smaller group has statistics of its own
        bounds = [(i, min(i + chunk, full)) for i in range(0, full, chunk)] + [(full, batch)]

        def pixels(start: int, end: int) -> torch.Tensor:
            pos = pos_part if pos_part.dim() == 2 else pos_part[start:end]
            return self._pixels(code_part[start:end], pos, group if end <= full else None)

        return torch.cat([pixels(start, end) for start, end in bounds if end > start])

    def chunk_images(self, batch: int, pixels: int, group: int, device: torch.device) -> int:
        """How many images go through the MLP at once in training with per-group statistics:
        on a CPU as many whole groups as keep a hidden activation within
        ``CPU_CHUNK_BYTES`` (at least one group), elsewhere the whole batch."""
        if device.type != "cpu":
            return batch
        rows = CPU_CHUNK_BYTES // (4 * self.max_width)
        return group * max(1, rows // (group * pixels))

    def _pixels(self, code_part: torch.Tensor, pos_part: torch.Tensor,
                group: int | None = None) -> torch.Tensor:
        """The MLP from the first layer's two parts: (G, h) and (N, h) or (G, N, h) ->
        colours (G, N, C). BatchNorm (in training) takes its statistics over all G*N rows,
        or with ``group`` over each ``group`` images' rows."""
        images, hidden = code_part.shape
        if group is None or group >= images:
            x = self.act_in(code_part.unsqueeze(1) + pos_part)  # (G, N, h)
            pixels = x.shape[1]
            x = self.blocks(x.reshape(images * pixels, hidden))  # (G*N, w)
            x = self.act_out(self.linear_out(x))  # (G*N, C)
            return x.view(images, pixels, self.out_channels)
        # pixel-major: the rows of a statistics group are column s of x (N*group, G/group, h)
        pos = pos_part.unsqueeze(1) if pos_part.dim() == 2 else pos_part.transpose(0, 1)
        x = self.act_in(code_part + pos).contiguous()  # (N, G, h)
        pixels = x.shape[0]
        x = x.view(pixels, images // group, group, hidden).transpose(1, 2)  # (N, g, G/g, h)
        x = self.blocks(x.reshape(pixels * group, images // group, hidden))  # (N*g, G/g, w)
        x = self.act_out(self.linear_out(x))  # (N*g, G/g, C)
        x = x.view(pixels, group, images // group, -1).transpose(1, 2)  # (N, G/g, g, C)
        return x.reshape(pixels, images, -1).transpose(0, 1)  # (G, N, C)
