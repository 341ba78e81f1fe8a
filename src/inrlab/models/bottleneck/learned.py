"""Learned entropy models of integer latents (Balle et al., "Variational image compression
with a scale hyperprior", ICLR 2018): a factorized density per channel, and zero-mean
Gaussians of given scales, each with the arithmetic coder's frequency tables.

CompressAI implements these, but it cannot be installed here: version 1.2.8 requires
torchvision (whose PyPI wheels do not load beside the torch 2.13 CPU wheel), torch-geometric
and numpy < 2. So they are written after the paper, coded with ``arithmetic.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.bottleneck.prior import cumulative_frequencies

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 64.0, 64  # the Gaussian scales the coder knows
SYMBOL_RANGE = 40  # latents are coded as integers in [-40, 40] (the rest clipped)
LIKELIHOOD_MIN = 1e-9  # the least probability the rate prices (about 30 bits)


class _LowerBound(torch.autograd.Function):
    """``x.clamp_min(bound)`` whose gradient also flows below the bound where descent
    would raise ``x``: a plain clamp leaves a scale or likelihood stuck under its bound
    with no gradient, so the latents it prices at ~30 bits are never pulled back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``x`` clamped to ``bound`` from below; gradients as ``_LowerBound`` says."""
    return _LowerBound.apply(x, bound)


def quantize(values: torch.Tensor, noisy: bool) -> torch.Tensor:
    """``values`` rounded, or with uniform noise of the rounding's width (training)."""
    return values + torch.empty_like(values).uniform_(-0.5, 0.5) if noisy else values.round()


def total_bits(*likelihoods: torch.Tensor) -> torch.Tensor:
    """-log2 of the likelihoods, summed per image -> (B,)."""
    return sum(-torch.log2(lower_bound(p, LIKELIHOOD_MIN)).flatten(1).sum(1)
               for p in likelihoods)


def symbols() -> torch.Tensor:
    """The integers the coder stores, -R..R, as floats."""
    return torch.arange(-SYMBOL_RANGE, SYMBOL_RANGE + 1, dtype=torch.float)


class FactorizedDensity(nn.Module):
    """A learned density per channel, shared over positions (the paper's appendix 6.1): a
    monotone cumulative ``c(x) = sigmoid(f(x))``, ``f`` a per-channel chain of small
    layers with non-negative weights; a value's likelihood after rounding is
    ``c(x + 1/2) - c(x - 1/2)``."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3),
                 init_scale: float = 10.0) -> None:
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            start = math.log(math.expm1(1 / scale / fan_out))
            self.matrices.append(nn.Parameter(torch.full((channels, fan_out, fan_in), start)))
            self.biases.append(nn.Parameter(torch.rand(channels, fan_out, 1) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, fan_out, 1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for values ``x`` (C, K) of each channel -> (C, K)."""
        h = x.unsqueeze(1)  # (C, 1, K)
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            h = torch.matmul(F.softplus(matrix), h) + bias  # (C, width, K)
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h.squeeze(1)

    def likelihood(self, values: torch.Tensor) -> torch.Tensor:
        """Probability of each rounded (or noisy) value of ``values`` (B, C, H, W)."""
        batch, channels = values.shape[:2]
        x = values.transpose(0, 1).reshape(channels, -1)  # (C, B*H*W)
        lower, upper = self.logits(x - 0.5), self.logits(x + 0.5)
        sign = -torch.sign(lower + upper).detach()  # subtract in the tail with more precision
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return p.view(channels, batch, *values.shape[2:]).transpose(0, 1)

    def tables(self) -> list[list[int]]:
        """Per channel, the coder's cumulative frequencies of the symbols -R..R."""
        channels = self.matrices[0].shape[0]
        with torch.no_grad():
            p = self.likelihood(symbols().to(self.biases[0].device)
                                .expand(channels, -1)[None, :, None])  # (1, C, 1, K)
        return cumulative_frequencies(p.view(channels, -1).cpu())


def gaussian_likelihood(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Probability of each rounded value under a zero-mean Gaussian of its own scale: the
    Gaussian's mass on ``[value - 1/2, value + 1/2]``, taken on the lower tail."""
    scales = lower_bound(scales, SCALE_MIN)
    magnitude = values.abs()
    normal = torch.distributions.Normal(0.0, 1.0)
    return normal.cdf((0.5 - magnitude) / scales) - normal.cdf((-0.5 - magnitude) / scales)


def scale_table() -> torch.Tensor:
    """The scales the coder has tables for, log-spaced; a scale is coded with the nearest
    one at or above it (the encoder and decoder pick the same from the same ``z``)."""
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def gaussian_tables(scales: torch.Tensor) -> list[list[int]]:
    """The coder's cumulative frequencies of -R..R under each of ``scales``."""
    return cumulative_frequencies(gaussian_likelihood(symbols(), scales.cpu()[:, None]))
