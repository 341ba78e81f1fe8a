"""The parts a ``LocalLatentDecoder`` is composed of, each registered in ``PARTS`` and given
as ``{name, args}`` (or a shorthand): the ``stage`` between the code and the MLP, the
``sampling`` scheme that reads the latent grid at a pixel, and the per-pixel ``mlp``.

A part's constructor takes what its decoder knows as keywords (``in_channels``, ``grid``,
...); a spec gives the rest, so a spec names only the idea's own settings.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.layers import (GridLinear, ResidualConvBlock, check_count,
                                  check_positive_int, check_shape)
from inrlab.models.layers import activation as make_activation
from inrlab.models.registry import Registry

PARTS = Registry(kinds=("stage", "sampling", "mlp"), noun="decoder part")
PIXEL_GEOMETRIES = ("corners", "areas")
UPSAMPLE_MODES = ("nearest", "bilinear")


# ------------------------------------------------------------------------------- stages
@PARTS.register("stage", tiny=dict(channels=4))
class ConvStage(nn.Sequential):
    """A convolutional stage over the latent grid (the synthesis transform of learned image
    codecs): a 3x3 convolution to ``channels`` (with ``global_code``, one Linear layer over
    the whole grid in its place, ``GridLinear``, initialised as that convolution), ``blocks``
    residual blocks at the code's grid size, then per factor 2 of ``upsample`` an x2
    upsampling (``upsample_mode``: ``"nearest"``, or ``"bilinear"``, whose features vary
    smoothly between the code's cells instead of in 2x2 blocks) and a 3x3 convolution with
    the activation. ``channels`` may be one width per resolution, ``1 + log2(upsample)`` of
    them (e.g. ``(128, 96, 64)`` for ``upsample=4``): wide where the grid is small and
    convolutions are cheap, narrower where it is fine."""

    def __init__(self, channels: int | Sequence[int], blocks: int = 1, upsample: int = 1,
                 upsample_mode: str = "nearest", global_code: bool = False,
                 activation: Any = "gelu", *, in_channels: int,
                 grid: Sequence[int] | None) -> None:
        self.upsample = check_upsample(upsample)
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode must be one of {', '.join(UPSAMPLE_MODES)}, "
                             f"got {upsample_mode!r}")
        if global_code and grid is None:
            raise ValueError("global_code needs a fixed grid (the Linear layer reads every cell)")
        widths = _stage_widths(channels, self.upsample)
        first = (GridLinear(in_channels, widths[0], grid, conv_init=3) if global_code
                 else nn.Conv2d(in_channels, widths[0], 3, padding=1))
        layers: list[nn.Module] = [first]
        layers += [ResidualConvBlock(widths[0], activation)
                   for _ in range(check_count("blocks", blocks))]
        interpolation = {} if upsample_mode == "nearest" else {"align_corners": False}
        for before, after in zip(widths, widths[1:]):
            layers += [nn.Upsample(scale_factor=2, mode=upsample_mode, **interpolation),
                       nn.Conv2d(before, after, 3, padding=1), make_activation(activation)]
        super().__init__(*layers)
        self.out_channels = widths[-1]


@PARTS.register("stage", tiny=dict())
class GlobalLinear(GridLinear):
    """The code read through one Linear layer over the whole grid (``GridLinear``, starting
    as a 1x1 convolution), to as many channels: each code value may carry something about
    any part of the tile, as ``EncoderConvGrid(global_code=True)`` writes it."""

    upsample = 1

    def __init__(self, *, in_channels: int, grid: Sequence[int] | None) -> None:
        if grid is None:
            raise ValueError("GlobalLinear needs a fixed grid (the Linear layer reads every cell)")
        super().__init__(in_channels, in_channels, grid, conv_init=1)


def check_upsample(upsample: Any) -> int:
    upsample = check_positive_int("upsample", upsample)
    if upsample & (upsample - 1):
        raise ValueError(f"upsample must be a power of 2, got {upsample!r}")
    return upsample


def _stage_widths(channels: int | Sequence[int], upsample: int) -> tuple[int, ...]:
    """One width per resolution of the stage: the code's grid, then each x2 step."""
    resolutions = upsample.bit_length()  # 1 + log2(upsample)
    if isinstance(channels, Sequence) and not isinstance(channels, str):
        if len(channels) != resolutions:
            raise ValueError(f"channels needs one width per resolution, 1 + log2(upsample) = "
                             f"{resolutions} for upsample={upsample}, got {channels!r}")
        return check_shape("channels", channels, resolutions)
    return (check_positive_int("channels", channels),) * resolutions


# ---------------------------------------------------------------------------- the MLP
@PARTS.register("mlp", tiny=dict(num_hidden=8, num_layers=2))
class PixelMLP(nn.Module):
    """The MLP that turns a pixel's latent features and its encoded offset into a colour:
    ``num_layers`` layers of ``num_hidden``, ``activation`` between them, ``activation_out``
    on the colour (None: linear, nothing to saturate).

    Its first Linear is applied in two parts: the latent part once per grid cell
    (``cells``), the position part once per pixel (``position``)."""

    def __init__(self, num_hidden: int = 128, num_layers: int = 3, activation: Any = "gelu",
                 activation_out: Any = "sigmoid", *, features: int, position_features: int,
                 out_channels: int) -> None:
        super().__init__()
        self.num_hidden = check_positive_int("num_hidden", num_hidden)
        check_positive_int("num_layers", num_layers)
        self.latent_in = nn.Linear(features, num_hidden)
        self.position_in = nn.Linear(position_features, num_hidden, bias=False)
        layers: list[nn.Module] = [make_activation(activation)]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(num_hidden, num_hidden), make_activation(activation)]
        layers.append(nn.Linear(num_hidden, out_channels))
        self.layers = nn.Sequential(*layers)
        self.act_out = make_activation(activation_out)

    def cells(self, features: torch.Tensor) -> torch.Tensor:
        """The latent part of the first layer at every cell: (B, F, h, w) -> (B, hidden, h, w)."""
        return F.conv2d(features, self.latent_in.weight[:, :, None, None], self.latent_in.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden)


# --------------------------------------------------------------------------- samplings
Position = Callable[[torch.Tensor], torch.Tensor]  # offsets (..., N, 2) -> (..., N, hidden)


class Sampling(nn.Module):
    """How a pixel reads the (prepared) latent grid: ``forward(latent, coords, position,
    mlp)`` gives the colours before ``mlp.act_out``, (B, N, out).

    ``pixel_geometry`` says where the decoder puts an (H, W) render's pixels: ``"corners"``
    stretches it over the latent grid corner to corner (``pixel_grid``); ``"areas"`` treats
    each latent as the centre of one cell of an image the grid's size and each pixel as an
    area of that image (``resampled_pixel_grid``, the geometry of area downsampling), which
    suits latent maps with one latent per input pixel. ``unfold=True`` gives each latent its
    3x3 neighbourhood (LIIF's feature unfolding, zero-padded at the border): 9x the channels
    for the MLP's first layer, applied once per cell. ``pixel_size=True`` also feeds the
    rendered pixel's size in cell units (LIIF's cell decoding); trained at one resolution it
    is a constant that other sizes extrapolate, so it is off by default."""

    queries_per_pixel = 1
    min_grid = 1  # the smallest latent grid side it reads

    def __init__(self, pixel_geometry: str = "corners", unfold: bool = False,
                 pixel_size: bool = False) -> None:
        super().__init__()
        if pixel_geometry not in PIXEL_GEOMETRIES:
            raise ValueError(f"pixel_geometry must be one of {', '.join(PIXEL_GEOMETRIES)}, "
                             f"got {pixel_geometry!r}")
        self.pixel_geometry = pixel_geometry
        self.unfold = bool(unfold)
        self.pixel_size = bool(pixel_size)

    def features(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> what each cell hands the MLP: (B, 9C, h, w) when unfolding."""
        if not self.unfold:
            return grid
        return F.unfold(grid, 3, padding=1).view(grid.shape[0], -1, *grid.shape[-2:])

    def forward(self, latent: torch.Tensor, coords: torch.Tensor, position: Position,
                mlp: PixelMLP) -> torch.Tensor:
        raise NotImplementedError


def _cells(latent: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                  torch.Tensor, torch.Tensor]:
    """(rows, low, frac, scale): the latent grid as rows (B, gh*gw, h), each pixel's lower
    cell and its fractional position past it, in cell units (x, y)."""
    grid_h, grid_w = latent.shape[-2:]
    scale = coords.new_tensor([grid_w - 1, grid_h - 1])
    u = (coords + 1) / 2 * scale  # (..., N, 2)
    low = u.floor().clamp(min=torch.zeros_like(scale), max=scale - 1)  # (..., N, 2)
    # Rows of latents, (B, gh*gw, h): gathered rows come out (B, N, h) contiguous, so the
    # MLP's elementwise layers and their backward run on dense memory (a transposed gather
    # made bf16 GELU's backward 9x slower on a CPU).
    rows = latent.flatten(2).transpose(1, 2).contiguous()
    return rows, low, u - low, scale


def _gather(rows: torch.Tensor, cell: torch.Tensor, grid_w: int) -> torch.Tensor:
    """Rows of ``rows`` (B, gh*gw, h) at integer cell coordinates (..., N, 2) -> (B, N, h)."""
    index = (cell[..., 1] * grid_w + cell[..., 0]).long()  # (N,) or (B, N)
    if index.dim() == 1:
        return rows[:, index]
    return torch.gather(rows, 1, index.unsqueeze(-1).expand(-1, -1, rows.shape[2]))


@PARTS.register("sampling", tiny=dict())
class LocalEnsemble(Sampling):
    """LIIF's local ensemble: the MLP runs once for each of the 4 latents around the pixel,
    on the latent and the offset to it in cell units, and the 4 outputs are blended with
    bilinear weights -- continuous across cell borders."""

    queries_per_pixel = 4
    min_grid = 2

    def forward(self, latent: torch.Tensor, coords: torch.Tensor, position: Position,
                mlp: PixelMLP) -> torch.Tensor:
        rows, low, frac, _ = _cells(latent, coords)
        # Pixel centres outside the grid ("areas" puts the border ones half a pixel out) are
        # blended from the edge latents alone; the MLP still sees their true offsets.
        inside = frac.clamp(0, 1)
        outputs, weights = [], []
        for cy in (0.0, 1.0):
            for cx in (0.0, 1.0):
                corner = frac.new_tensor([cx, cy])
                hidden = _gather(rows, low + corner, latent.shape[-1])  # (B, N, h)
                hidden = hidden + position(frac - corner)
                outputs.append(mlp(hidden))  # (B, N, out)
                # bilinear weight = area of the rectangle opposite this corner
                weights.append((1 - (inside - corner).abs()).prod(-1, keepdim=True))  # (.., N, 1)
        return sum(w * o for w, o in zip(weights, outputs))  # (B, N, out)


@PARTS.register("sampling", tiny=dict())
class NearestLatent(Sampling):
    """One MLP call on the nearest latent and the offset to it: blocky edges at cell borders,
    a quarter of the ensemble's cost."""

    min_grid = 2

    def forward(self, latent: torch.Tensor, coords: torch.Tensor, position: Position,
                mlp: PixelMLP) -> torch.Tensor:
        rows, low, frac, _ = _cells(latent, coords)
        corner = (frac > 0.5).to(frac.dtype)
        hidden = _gather(rows, low + corner, latent.shape[-1])  # (B, N, h)
        return mlp(hidden + position(frac - corner))  # offsets in [-0.5, 0.5]


@PARTS.register("sampling", tiny=dict())
class BilinearLatent(Sampling):
    """One MLP call on the bilinearly interpolated latent and the encoded absolute
    position."""

    def forward(self, latent: torch.Tensor, coords: torch.Tensor, position: Position,
                mlp: PixelMLP) -> torch.Tensor:
        where = coords if coords.dim() == 3 else coords.expand(latent.shape[0], *coords.shape)
        sampled = F.grid_sample(latent, where.unsqueeze(2), mode="bilinear",
                                align_corners=True)  # (B, h, N, 1)
        # dense (B, N, h): on a transposed view the MLP's GELU backward ran ~5x slower on a
        # CPU (its input and gradient in different layouts), 6% of a quick-start step
        hidden = sampled.squeeze(-1).transpose(1, 2).contiguous()  # (B, N, h)
        return mlp(hidden + position(coords))  # (B or 1, N, h) broadcasts


SAMPLINGS = {"ensemble": "LocalEnsemble", "nearest": "NearestLatent",
             "bilinear": "BilinearLatent"}  # the shorthands a spec may write
