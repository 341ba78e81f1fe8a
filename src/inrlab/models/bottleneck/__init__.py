"""What an autoencoder stores of its code: ``Bottleneck`` (quantiser, level prior, rate,
compress/decompress), built from ``quantize.py``, ``prior.py`` and the coder in
``arithmetic.py``."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.bottleneck.arithmetic import decode_levels, encode_levels
from inrlab.models.bottleneck.prior import CONTEXTS, LevelPrior
from inrlab.models.bottleneck.quantize import CodeQuantizer

__all__ = ["Bottleneck", "CodeQuantizer", "LevelPrior", "CONTEXTS", "encode_levels",
           "decode_levels"]


class Bottleneck(nn.Module):
    """Turns an encoder's output (the *raw* code) into the code the decoder gets.

    ``bits`` None: the raw code passes unchanged. Else each value is stored in ``bits`` bits
    (``CodeQuantizer`` over ``[-limit, limit]``): rounded in eval mode, with the rounding
    noise (``noise``) or straight-through rounding in training.

    ``rate_weight`` (needs ``bits``): the stored code is entropy coded with a learned
    ``LevelPrior`` (``context``: "none" or "neighbours"), ``rate`` prices it in bits, and
    training adds ``rate_weight`` times its bits per pixel to the loss (0 measures the size
    without pressing on it). ``compress``/``decompress`` give the bytes.
    """

    def __init__(self, bits: int | None = None, limit: float = 2.0, noise: bool = True,
                 rate_weight: float | None = None, context: str = "none") -> None:
        super().__init__()
        self.quantizer = CodeQuantizer(bits, limit, noise) if bits is not None else None
        self.rate_weight = None if rate_weight is None else _at_least_zero(rate_weight)
        self.prior = None
        if self.rate_weight is not None:
            if self.quantizer is None:
                raise ValueError("rate_weight needs code_bits: only a quantised code has a "
                                 "size in bytes")
            self.prior = LevelPrior(2**self.quantizer.bits, context=context)
        elif context != "none":
            raise ValueError("code_context needs rate_weight: only an entropy-coded code has "
                             "a context")

    @property
    def entropy_coded(self) -> bool:
        return self.prior is not None

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """The code the decoder gets for the encoder output ``raw``; in training the prior
        also observes the levels."""
        if self.quantizer is None:
            return raw
        if self.prior is not None and self.training:
            self.prior.observe(self.quantizer.quantize(raw))
        return self.quantizer(raw)

    def stored(self, raw: torch.Tensor) -> torch.Tensor:
        """The stored value of ``raw`` (rounded, with a straight-through gradient) when the
        code is quantised, else ``raw``: what code refinement optimises through."""
        return raw if self.quantizer is None else self.quantizer.round_straight_through(raw)

    def bits(self, code: torch.Tensor) -> torch.Tensor:
        """Bits per image, (B,), that the entropy-coded ``code`` takes (differentiable, also
        between levels, so it prices a raw code too)."""
        q = self.quantizer
        return self.prior.bits((code.clamp(-q.limit, q.limit) + q.limit) / q.step)

    def rate_loss(self, bits: torch.Tensor, pixels: int,
                  weight: float | None = None) -> torch.Tensor:
        """``weight`` (default ``rate_weight``) times the mean bits per pixel, for ``bits``
        per image (as ``bits(code)`` gives) of images of ``pixels`` pixels: the term
        training and refinement add to the loss."""
        weight = self.rate_weight if weight is None else weight
        return weight * (bits.float().mean() / pixels)

    @torch.no_grad()
    def compress(self, codes: torch.Tensor) -> list[bytes]:
        """Each stored code (as the bottleneck gives in eval mode) as bytes, arithmetic
        coded with the learned prior."""
        if self.prior is None:
            raise ValueError("compress needs an entropy-coded code (rate_weight)")
        levels = self.quantizer.quantize(codes).cpu()  # (B, C, ...)
        return [encode_levels(code.flatten().tolist(), tables)
                for code, tables in zip(levels, self.prior.symbol_tables(levels))]

    @torch.no_grad()
    def decompress(self, blobs: Sequence[bytes], code_shape: Sequence[int]) -> torch.Tensor:
        """The codes (B, *code_shape) that ``compress`` stored in ``blobs``."""
        if self.prior is None:
            raise ValueError("decompress needs an entropy-coded code (rate_weight)")
        next_table = self.prior.next_table(code_shape)
        count = int(torch.Size(code_shape).numel())
        levels = torch.tensor([decode_levels(blob, next_table, count) for blob in blobs],
                              device=self.prior.histogram.device)
        return self.quantizer.dequantize(levels.view(len(blobs), *code_shape))


def _at_least_zero(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"rate_weight must be a number >= 0, got {value!r}")
    return float(value)
