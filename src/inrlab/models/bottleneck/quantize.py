"""Codes stored in a few bits per value: uniform quantisation with a fixed range.

A code quantised to 8 bits per value takes one byte per value, so a model's code budget can
be compared with image codecs in bytes per image (``inrlab evaluate --bytes``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from inrlab.models.layers import check_positive_int


class CodeQuantizer(nn.Module):
    """Uniform ``bits``-bit quantisation of every code value over ``[-limit, limit]``.

    Eval mode rounds to the ``2**bits`` levels (what is stored). Training mode, by default,
    adds uniform noise of one quantisation step instead (``noise=True``, the usual
    differentiable stand-in for rounding: the decoder learns to tolerate the rounding
    error); ``noise=False`` rounds with a straight-through gradient. Values beyond the
    range are clamped (no gradient there, so the encoder learns to stay inside).
    """

    def __init__(self, bits: int = 8, limit: float = 2.0, noise: bool = True) -> None:
        super().__init__()
        self.bits = check_positive_int("code_bits", bits)
        if self.bits > 16:
            raise ValueError(f"code_bits must be at most 16, got {bits}")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            raise ValueError(f"code_limit must be a positive number, got {limit!r}")
        self.limit = float(limit)
        self.noise = bool(noise)
        self.step = 2 * self.limit / (2**self.bits - 1)

    def quantize(self, code: torch.Tensor) -> torch.Tensor:
        """The stored integers (int32, 0 .. 2**bits - 1) of ``code``."""
        return ((code.clamp(-self.limit, self.limit) + self.limit) / self.step).round().int()

    def dequantize(self, levels: torch.Tensor) -> torch.Tensor:
        return levels.float() * self.step - self.limit

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.dequantize(self.quantize(code)).to(code.dtype)
        if self.noise:
            code = code.clamp(-self.limit, self.limit)
            return code + (torch.rand_like(code) - 0.5) * self.step
        return self.round_straight_through(code)

    def round_straight_through(self, code: torch.Tensor) -> torch.Tensor:
        """The stored value of ``code`` (clamped, rounded), with the gradient of the
        clamped code: what training with ``noise=False`` and test-time code refinement
        optimise through."""
        code = code.clamp(-self.limit, self.limit)
        rounded = self.dequantize(self.quantize(code)).to(code.dtype)
        return code + (rounded - code).detach()

    def code_bytes(self, values: int) -> int:
        """Bytes that ``values`` quantised values take, packed."""
        return math.ceil(values * self.bits / 8)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, limit={self.limit}, noise={self.noise}"
