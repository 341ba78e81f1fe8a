"""Learned image codecs, the anchors inrlab's codes are compared with: Balle et al.'s
factorized-prior and scale-hyperprior models ("Variational image compression with a scale
hyperprior", ICLR 2018), sized for 32x32 tiles. They are autoencoders like any other here:
trained by ``inrlab run`` (``experiments/anchors/``), their integer latents entropy coded
to real bytes (``compress``/``decompress``) and scored by ``inrlab evaluate``.

Shapes for a (3, 32, 32) tile: latent y (latent, 4, 4), hyper-latent z (hidden, 1, 1). Any
image whose sides are multiples of 8 works.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.bottleneck.arithmetic import decode_levels, encode_levels
from inrlab.models.bottleneck.learned import (SCALE_LEVELS, SYMBOL_RANGE, FactorizedDensity,
                                              gaussian_likelihood, gaussian_tables, quantize,
                                              scale_table, total_bits)
from inrlab.models.contract import Autoencoder, CodeCost
from inrlab.models.registry import register_model

INITIAL_RATE_WEIGHT = 1e-4  # where a byte target's controller starts
CONTROL_STEP = 0.01  # the controller's step on log(rate weight) per training batch


class GDN(nn.Module):
    """Generalised divisive normalisation: ``x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``
    over channels, or with ``inverse`` its approximate inverse (multiply by the root)."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        gamma = self.gamma.abs().view(channels, channels, 1, 1)
        norm = torch.sqrt(F.conv2d(x * x, gamma, self.beta.abs() + 1e-6))  # (B, C, H, W)
        return x * norm if self.inverse else x / norm


def down(cin: int, cout: int, kernel: int = 5) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=2, padding=kernel // 2)


def up(cin: int, cout: int, kernel: int = 5) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=kernel // 2,
                              output_padding=1)


class LearnedCodec(Autoencoder):
    """Analysis ``g_a`` (three stride-2 convolutions with GDN), synthesis ``g_s`` (their
    transposes with inverse GDN), and an entropy model (``bits``, ``compress``).

    The code is the integer latent y: ``encode`` rounds it in eval mode (what is stored);
    in training it returns y unrounded, ``decode`` rounds it straight through, and the rate
    (``code_cost``) prices it with uniform noise in place of rounding, as the paper trains.

    The rate term is ``rate_weight`` x bits per image value; with ``target_bytes`` the weight
    steers itself instead (a dual ascent on the rate constraint, kept in the model's state
    so a resumed run goes on from it): each training batch multiplies it by
    ``(stored bytes / target_bytes) ** 0.01``, the stored bytes priced on the rounded
    latents exactly as ``compress`` codes them, so training ends at the byte budget.
    """

    def __init__(self, in_channels: int = 3, hidden: int = 64, latent: int = 96,
                 rate_weight: float | None = None, target_bytes: float | None = None) -> None:
        super().__init__()
        if (rate_weight is None) == (target_bytes is None):
            raise ValueError("give a codec either rate_weight (fixed) or target_bytes (the "
                             "weight steered to that many stored bytes per image)")
        for name, value in (("rate_weight", rate_weight), ("target_bytes", target_bytes)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"{name} must be a number above 0, got {value!r}")
        self.in_channels, self.latent = int(in_channels), int(latent)
        self.target_bytes = None if target_bytes is None else float(target_bytes)
        start = INITIAL_RATE_WEIGHT if rate_weight is None else float(rate_weight)
        self.register_buffer("log_rate_weight", torch.tensor(math.log(start),
                                                             dtype=torch.float64))
        self.g_a = nn.Sequential(down(in_channels, hidden), GDN(hidden), down(hidden, hidden),
                                 GDN(hidden), down(hidden, latent))
        self.g_s = nn.Sequential(up(latent, hidden), GDN(hidden, inverse=True),
                                 up(hidden, hidden), GDN(hidden, inverse=True),
                                 up(hidden, in_channels))

    @property
    def input_shape(self) -> tuple[int, int | None, int | None]:
        return (self.in_channels, None, None)

    @property
    def entropy_coded(self) -> bool:
        return True

    @property
    def rate_weight(self) -> float:
        return math.exp(self.log_rate_weight.item())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        y = self.g_a(images)  # (B, M, H/8, W/8)
        return y if self.training else y.round().clamp(-SYMBOL_RANGE, SYMBOL_RANGE)

    def decode(self, codes: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        rounded = codes + (codes.round() - codes).detach()  # straight through in training
        output = self.g_s(rounded)  # (B, C, 8h, 8w)
        if shape is not None and tuple(output.shape[-2:]) != tuple(shape):
            raise ValueError(f"{type(self).__name__} decodes a {tuple(codes.shape[-2:])} "
                             f"latent to {tuple(output.shape[-2:])} only, not {tuple(shape)}")
        return output

    def bits(self, y: torch.Tensor, noisy: bool) -> torch.Tensor:
        """The size in bits of each image's latents ``y`` -> (B,): with uniform noise in
        place of rounding (training's differentiable price) or rounded (what is stored)."""
        raise NotImplementedError

    def code_cost(self, codes: torch.Tensor, pixels: int) -> CodeCost:
        with torch.autocast(codes.device.type, enabled=False):  # likelihoods need fp32
            codes = codes.float()
            bits = self.bits(codes, noisy=self.training)  # (B,)
            with torch.no_grad():
                stored = bits if not self.training else self.bits(codes, noisy=False)
        stored_bytes = stored.mean() / 8
        if self.training and self.target_bytes is not None:
            ratio = max(stored_bytes.item(), 1 / 8) / self.target_bytes
            self.log_rate_weight += CONTROL_STEP * math.log(ratio)
        weight = self.rate_weight
        loss = weight * bits.mean() / (pixels * self.in_channels)
        return CodeCost(loss, {"code_bytes": stored_bytes,
                               "rate_weight": torch.tensor(weight)})

    def _symbol_lists(self, levels: torch.Tensor) -> list[int]:
        return (levels.flatten().long() + SYMBOL_RANGE).tolist()


@register_model("autoencoder", tiny=dict(in_channels=3, hidden=4, latent=4, rate_weight=0.01))
class FactorizedPrior(LearnedCodec):
    """The paper's baseline: each latent channel coded with one learned density
    (``LearnedCodec`` says the rest)."""

    anchor_method = "factorized prior"

    def __init__(self, in_channels: int = 3, hidden: int = 64, latent: int = 96,
                 rate_weight: float | None = None, target_bytes: float | None = None) -> None:
        super().__init__(in_channels, hidden, latent, rate_weight, target_bytes)
        self.density = FactorizedDensity(latent)

    def bits(self, y: torch.Tensor, noisy: bool) -> torch.Tensor:
        return total_bits(self.density.likelihood(quantize(y, noisy)))

    def _tables(self, code_shape: Sequence[int]) -> list[list[int]]:
        tables = self.density.tables()
        per_channel = math.prod(code_shape[1:])
        return [tables[c] for c in range(self.latent) for _ in range(per_channel)]

    @torch.no_grad()
    def compress(self, codes: torch.Tensor) -> list[bytes]:
        tables = self._tables(codes.shape[1:])
        return [encode_levels(self._symbol_lists(code), tables) for code in codes.cpu()]

    @torch.no_grad()
    def decompress(self, blobs: Sequence[bytes], code_shape: Sequence[int]) -> torch.Tensor:
        tables = self._tables(code_shape)
        codes = [torch.tensor(decode_levels(blob, tables)) - SYMBOL_RANGE for blob in blobs]
        device = self.log_rate_weight.device
        return torch.stack(codes).float().view(len(blobs), *code_shape).to(device)


@register_model("autoencoder", tiny=dict(in_channels=3, hidden=4, latent=4, rate_weight=0.01))
class ScaleHyperprior(LearnedCodec):
    """The paper's hyperprior model: a hyper-latent ``z = h_a(|y|)`` (coded with a
    factorized density) carries each latent's scale ``h_s(z)``; a latent is coded under a
    zero-mean Gaussian of its scale (``LearnedCodec`` says the rest)."""

    anchor_method = "scale hyperprior"

    def __init__(self, in_channels: int = 3, hidden: int = 64, latent: int = 96,
                 rate_weight: float | None = None, target_bytes: float | None = None) -> None:
        super().__init__(in_channels, hidden, latent, rate_weight, target_bytes)
        self.hidden = int(hidden)
        self.h_a = nn.Sequential(nn.Conv2d(latent, hidden, 3, padding=1), nn.ReLU(),
                                 down(hidden, hidden), nn.ReLU(), down(hidden, hidden))
        self.h_s = nn.Sequential(up(hidden, hidden), nn.ReLU(), up(hidden, hidden), nn.ReLU(),
                                 nn.Conv2d(hidden, latent, 3, padding=1), nn.ReLU())
        self.density = FactorizedDensity(hidden)
        self.register_buffer("scales", scale_table(), persistent=False)

    def _scales(self, z: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Each latent's scale from ``z``, cropped to the latent grid ``shape`` (h, w)."""
        return self.h_s(z)[..., :shape[0], :shape[1]]  # (B, M, h, w)

    def bits(self, y: torch.Tensor, noisy: bool) -> torch.Tensor:
        # z from what is stored: the rounded latents (their noisy stand-in while training)
        z = quantize(self.h_a((y if noisy else y.round()).abs()), noisy)  # (B, N, h/4, w/4)
        return total_bits(self.density.likelihood(z),
                          gaussian_likelihood(quantize(y, noisy),
                                              self._scales(z, y.shape[-2:])))

    def _scale_index(self, z: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Each latent's table: the first known scale at or above its scale -> (B, M*h*w)."""
        scales = self._scales(z, shape).flatten(1)
        return torch.searchsorted(self.scales, scales.contiguous()).clamp_max(SCALE_LEVELS - 1)

    def _z_shape(self, code_shape: Sequence[int]) -> tuple[int, int, int]:
        height, width = code_shape[-2:]
        return (self.hidden, math.ceil(math.ceil(height / 2) / 2),
                math.ceil(math.ceil(width / 2) / 2))

    @torch.no_grad()
    def compress(self, codes: torch.Tensor) -> list[bytes]:
        z = self.h_a(codes.abs()).round().clamp(-SYMBOL_RANGE, SYMBOL_RANGE)  # (B, N, h', w')
        z_tables, y_tables = self.density.tables(), gaussian_tables(self.scales)
        per_channel = z[0, 0].numel()
        z_symbol_tables = [z_tables[c] for c in range(self.hidden) for _ in range(per_channel)]
        blobs = []
        for code, hyper in zip(codes, z):
            # one image at a time, as the decoder computes it (the same scales to the bit)
            index = self._scale_index(hyper[None], code.shape[-2:])[0].tolist()
            blobs.append(encode_levels(self._symbol_lists(torch.cat([hyper.flatten(),
                                                                     code.flatten()])),
                                       z_symbol_tables + [y_tables[i] for i in index]))
        return blobs

    @torch.no_grad()
    def decompress(self, blobs: Sequence[bytes], code_shape: Sequence[int]) -> torch.Tensor:
        z_tables, y_tables = self.density.tables(), gaussian_tables(self.scales)
        z_shape = self._z_shape(code_shape)
        per_channel = z_shape[1] * z_shape[2]
        z_count, y_count = math.prod(z_shape), math.prod(code_shape)
        device = self.scales.device
        decoded = []
        for blob in blobs:
            index: list[int] = []

            def table(stored: list[int]) -> list[int]:
                if len(stored) < z_count:
                    return z_tables[len(stored) // per_channel]
                if not index:  # z is complete: the latents' scales follow from it
                    z = torch.tensor(stored, dtype=torch.float, device=device) - SYMBOL_RANGE
                    index.extend(self._scale_index(z.view(1, *z_shape),
                                                   code_shape[-2:])[0].tolist())
                return y_tables[index[len(stored) - z_count]]

            stored = decode_levels(blob, table, z_count + y_count)
            decoded.append(torch.tensor(stored[z_count:], dtype=torch.float) - SYMBOL_RANGE)
        return torch.stack(decoded).view(len(blobs), *code_shape).to(device)
