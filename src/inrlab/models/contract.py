"""The one contract every autoencoder implements. Trainers, ``inrlab render``, the report and
``inrlab.load_run`` call these methods; none of them probes a model for attributes (a
snippet's own module is wrapped in ``adapter.ModuleAutoencoder`` first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from inrlab.models.decoders.base import ImplicitDecoder


@dataclass
class CodeCost:
    """What a model's code adds to a training step: ``loss`` (added to the reconstruction
    loss, already weighted) and ``metrics`` reported beside it (e.g. ``code_bytes``)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Encoder(nn.Module):
    """Images (B, *shape) -> codes (B, *code_shape).

    ``shape``: the (C, H, W) it takes (H and W None: any size). ``code_shape``: one image's
    code, e.g. (C,) for a flat code or (C, gh, gw) for a latent grid, with None along an
    axis that follows the image's size. An ``EncoderDecoder`` given its decoder as a
    ``{name, args}`` spec tells the decoder this shape, so a file states it once.
    """

    shape: tuple[int, int | None, int | None]
    code_shape: tuple[int | None, ...]


class Autoencoder(nn.Module):
    """``images -> encode -> code -> decode at a shape -> images``.

    Subclasses implement ``encode``, ``decode`` and ``input_shape``; the rest has defaults:

    - ``input_shape``: the (C, H, W) the encoder takes; H and W are None when it takes any
      size (a fully convolutional encoder: images are encoded as they are).
    - ``decode(codes, shape)``: images (B, C, H, W) at ``shape`` (H, W); None means the
      training size. A model whose decoder renders one size only raises ValueError for
      another (``renders_any_size`` is False).
    - ``render_code(images)``: the code renders at other sizes start from (``encode``; an
      upscaler encodes the images as they are instead of downsampled).
    - ``implicit_decoder``: the decoder when it can be queried at single pixels (training on
      a subset of pixels, bf16 probes when rendering), else None.
    - ``code_cost(codes, pixels)``: what the code adds to a training step on images of
      ``pixels`` pixels (a rate term), or None.
    - ``anchor_method``: the name evaluation tables give the model when it is one of the
      field's codecs that inrlab's models are compared with (a learned codec), else None.
    - ``has_code``: whether ``encode`` gives a code at all (False for a snippet's own module
      seen through ``ModuleAutoencoder``: its "code" is the image itself, so nothing scores,
      prices or compares it).
    - ``refinable``: whether codes can be refined per image at test time
      (``models.refine``: a separate encoder and bottleneck).
    - ``parameter_parts()``: the modules whose parameters are counted apart (``encoder``,
      ``decoder``; None where the model has no such part).
    - How the code is stored: ``entropy_coded`` codes go through ``compress(codes)`` (a
      ``bytes`` per image) and ``decompress(blobs, code_shape)``; otherwise a code of
      ``code_bits`` bits per value is packed at that, and a float code (None) is stored as
      floats.
    """

    anchor_method: str | None = None
    has_code: bool = True

    @property
    def class_name(self) -> str:
        """The model's class name for messages (a wrapped module's own)."""
        return type(self).__name__

    @property
    def refinable(self) -> bool:
        return False

    def parameter_parts(self) -> dict[str, nn.Module | None]:
        return {part: named_part(self, part) for part in ("encoder", "decoder")}

    @property
    def input_shape(self) -> tuple[int, int | None, int | None]:
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def render_code(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    @property
    def implicit_decoder(self) -> ImplicitDecoder | None:
        return None

    @property
    def renders_any_size(self) -> bool:
        return self.implicit_decoder is not None

    def code_cost(self, codes: torch.Tensor, pixels: int) -> CodeCost | None:
        return None

    @property
    def entropy_coded(self) -> bool:
        return False

    @property
    def code_bits(self) -> int | None:
        return None

    def compress(self, codes: torch.Tensor) -> list[bytes]:
        """Each stored code (``encode`` in eval mode) as bytes."""
        raise NotImplementedError(f"{type(self).__name__} has no entropy-coded code")

    def decompress(self, blobs: Sequence[bytes], code_shape: Sequence[int]) -> torch.Tensor:
        """The codes (B, *code_shape) that ``compress`` stored in ``blobs``."""
        raise NotImplementedError(f"{type(self).__name__} has no entropy-coded code")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), images.shape[-2:])


def named_part(module: nn.Module, name: str) -> nn.Module | None:
    part = getattr(module, name, None)
    return part if isinstance(part, nn.Module) else None
