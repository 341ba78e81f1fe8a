"""A local-latent implicit decoder (after LIIF, arXiv 2012.09161): the code is a small grid
of latent vectors; a pixel is decoded from the latents around it and its offset to them.

Latent cell centres follow the pixel convention of ``posenc``: ``linspace(-1, 1, g)`` along
each side, so the corner latents sit on the corner pixels whatever the render size.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.decoders.base import ImplicitDecoder, image_arguments
from inrlab.models.layers import (GridLinear, ResidualConvBlock, check_count,
                                  check_positive_int, check_shape)
from inrlab.models.layers import activation as make_activation
from inrlab.models.posenc import positional_encoding, resampled_pixel_grid
from inrlab.models.registry import register_model

SAMPLINGS = ("ensemble", "nearest", "bilinear")
PIXEL_GEOMETRIES = ("corners", "areas")
UPSAMPLE_MODES = ("nearest", "bilinear")


@register_model("decoder", tiny=dict(latent_channels=3, grid=(3, 3), num_output_channels=3,
                                     num_hidden=8, num_layers=2, default_shape=(8, 8)))
class LocalLatentDecoder(ImplicitDecoder):
    """Decode a (C, gh, gw) latent grid at any pixel position.

    ``sampling``:
      - ``"ensemble"`` (LIIF's local ensemble): the MLP runs once for each of the 4 latents
        around the pixel, on ``[latent, enc(offset)]`` with the offset in cell units, and the
        4 outputs are blended with bilinear weights -- continuous across cell borders;
      - ``"nearest"``: one MLP call on the nearest latent and the offset to it (blocky edges
        at cell borders, a quarter of the cost);
      - ``"bilinear"``: one MLP call on the bilinearly interpolated latent and the encoded
        absolute position.
    ``grid=None`` accepts latent grids of any size (at least 2x2 for "ensemble" and
    "nearest"), e.g. the per-pixel latent map of ``EncoderConvMap``.
    ``pixel_geometry`` says where ``forward(code, (H, W))`` puts the pixels: ``"corners"``
    stretches any render size over the latent grid corner to corner (``pixel_grid``);
    ``"areas"`` treats each latent as the centre of one cell of an image the grid's size
    and each rendered pixel as an area of that image (``resampled_pixel_grid``, the
    geometry of area downsampling: an (H, W) render of an (h, w) latent map places pixels
    exactly where averaging (H, W) down to (h, w) took them from). ``"areas"`` suits
    latent maps with one latent per input pixel, as ``EncoderConvMap`` gives.
    ``unfold=True`` gives each latent its 3x3 neighbourhood (LIIF's feature unfolding,
    zero-padded at the grid's border): the MLP sees 9x the channels around every cell, at
    the cost of a 9x wider first layer applied once per cell.
    ``pixel_size=True`` also feeds the rendered pixel's size in cell units (LIIF's cell
    decoding). Trained at one resolution that input is a constant, and rendering at another
    size extrapolates it, so it is off by default.
    ``conv_channels`` puts a convolutional stage between the code and the MLP (the synthesis
    transform of learned image codecs): a 3x3 convolution to ``conv_channels``,
    ``conv_blocks`` residual blocks at the code's grid size, then per factor 2 of
    ``upsample`` an x2 upsampling (``upsample_mode``: ``"nearest"``, or ``"bilinear"``,
    whose features vary smoothly between the code's cells instead of in 2x2 blocks) and a
    3x3 convolution with the activation. The MLP then decodes that finer feature grid
    (``upsample`` x the code's grid along each side) as it would a latent grid: the code
    stays as small as it is while each pixel's MLP sees features computed from a wide
    neighbourhood of latents. ``conv_channels`` may also be one width per resolution,
    ``1 + log2(upsample)`` of them (e.g. ``(128, 96, 64)`` for ``upsample=4``): wide where
    the grid is small and convolutions are cheap, narrower where it is fine.
    ``global_code=True`` (needs a fixed ``grid``) reads the code through one Linear layer
    over the whole grid (``GridLinear``) in place of the stage's first 3x3 convolution (or,
    without a conv stage, before the MLP, to ``latent_channels``), initialised as the
    convolution it replaces (a 1x1 one without a stage): each code value may then carry
    something about any part of the tile, as ``EncoderConvGrid(global_code=True)`` writes it.

    ``pos_embedding`` encodes the offset to the latent: a name of ``positional_encoding``
    (``"sincos"`` with frequencies (1, 2, 4); ``"gaussian"``/``"learned"`` with 16 features
    of scale 1.0) or a ``{name, args}`` spec with other arguments.

    The first Linear is applied in two parts: its latent part once per grid cell, its
    position part once per pixel (shared by all images when the coordinates are).
    """

    def __init__(
        self,
        latent_channels: int,
        grid: Sequence[int] | None = (4, 4),
        num_output_channels: int = 3,
        num_hidden: int = 128,
        num_layers: int = 3,
        sampling: str = "ensemble",
        pixel_size: bool = False,
        pixel_geometry: str = "corners",
        unfold: bool = False,
        conv_channels: int | Sequence[int] | None = None,
        conv_blocks: int = 1,
        upsample: int = 1,
        upsample_mode: str = "nearest",
        global_code: bool = False,
        default_shape: Sequence[int] | None = None,
        activation: Any = "gelu",
        activation_out: Any = "sigmoid",
        pos_embedding: str | dict[str, Any] = "sincos",
    ) -> None:
        super().__init__()
        self.latent_channels = check_positive_int("latent_channels", latent_channels)
        self.grid = check_shape("grid", grid, 2) if grid is not None else None
        check_positive_int("num_hidden", num_hidden)
        check_positive_int("num_layers", num_layers)
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if sampling != "bilinear" and self.grid is not None and min(self.grid) < 2:
            raise ValueError(f"sampling '{sampling}' needs a grid of at least 2x2, got {grid!r}")
        self.sampling = sampling
        if pixel_geometry not in PIXEL_GEOMETRIES:
            raise ValueError(f"pixel_geometry must be one of {', '.join(PIXEL_GEOMETRIES)}, "
                             f"got {pixel_geometry!r}")
        self.pixel_geometry = pixel_geometry
        self.takes_pixel_size = bool(pixel_size)
        self.set_io((self.latent_channels, *(self.grid or (None, None))), num_output_channels,
                    default_shape)
        # offsets span about one cell: lower frequencies and scale than a whole-image encoding
        self.encoding = positional_encoding(pos_embedding, freqs=(1, 2, 4), num_features=16,
                                            sigma=1.0)
        position_features = self.encoding.out_features + (2 if pixel_size else 0)
        self.unfold = bool(unfold)
        self.upsample = check_positive_int("upsample", upsample)
        if self.upsample & (self.upsample - 1):
            raise ValueError(f"upsample must be a power of 2, got {upsample!r}")
        if conv_channels is None and (self.upsample > 1):
            raise ValueError("upsample needs a conv stage: set conv_channels as well")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode must be one of {', '.join(UPSAMPLE_MODES)}, "
                             f"got {upsample_mode!r}")
        conv_blocks = check_count("conv_blocks", conv_blocks)
        if global_code and self.grid is None:
            raise ValueError("global_code needs a fixed grid (the Linear layer reads every cell)")
        self.conv = None
        features = self.latent_channels
        if conv_channels is not None:
            widths = _stage_widths(conv_channels, self.upsample)
            first = (GridLinear(self.latent_channels, widths[0], self.grid, conv_init=3)
                     if global_code
                     else nn.Conv2d(self.latent_channels, widths[0], 3, padding=1))
            self.conv = _conv_stage(first, widths, conv_blocks, activation, upsample_mode)
            features = widths[-1]
        elif global_code:
            self.conv = GridLinear(self.latent_channels, self.latent_channels, self.grid,
                                   conv_init=1)
        self.latent_in = nn.Linear(features * (9 if self.unfold else 1), num_hidden)
        self.position_in = nn.Linear(position_features, num_hidden, bias=False)
        layers: list[nn.Module] = [make_activation(activation)]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(num_hidden, num_hidden), make_activation(activation)]
        layers.append(nn.Linear(num_hidden, self.out_channels))
        self.mlp = nn.Sequential(*layers)
        self.act_out = make_activation(activation_out)
        self.max_width = num_hidden * (4 if sampling == "ensemble" else 1)

    @classmethod
    def code_arguments(cls, code_shape: Sequence[int | None],
                       image_shape: Sequence[int | None]) -> dict[str, Any]:
        """``latent_channels`` and ``grid`` (None for a map that follows the image size)."""
        grid = tuple(code_shape[1:]) if None not in code_shape[1:] else None
        return {"latent_channels": code_shape[0], "grid": grid,
                **image_arguments(image_shape)}

    def prepare(self, code: torch.Tensor) -> torch.Tensor:
        """The first layer's latent part at every cell of the (upsampled) grid:
        (B, C, gh, gw) -> (B, num_hidden, upsample * gh, upsample * gw)."""
        if self.sampling != "bilinear" and min(code.shape[-2:]) < 2:
            raise ValueError(f"sampling '{self.sampling}' needs a latent grid of at least 2x2, "
                             f"got {code.shape[-2]}x{code.shape[-1]}")
        code = code.to(self.latent_in.weight.dtype)
        if self.conv is not None:
            code = self.conv(code)  # (B, conv_channels, upsample * gh, upsample * gw)
        if self.unfold:  # (B, C, gh, gw) -> (B, 9C, gh, gw): each cell with its neighbours
            code = F.unfold(code, 3, padding=1).view(code.shape[0], -1, *code.shape[-2:])
        return F.conv2d(code, self.latent_in.weight[:, :, None, None],
                        self.latent_in.bias)  # (B, h, gh, gw)

    def query(self, code: torch.Tensor, coords: torch.Tensor,
              pixel_size: tuple[float, float] | None = None) -> torch.Tensor:
        # code (B, C, gh, gw); coords (N, 2) or (B, N, 2) -> (B, N, out)
        return self.query_prepared(self.prepare(code), coords, pixel_size=pixel_size)

    def query_prepared(self, latent: torch.Tensor, coords: torch.Tensor,
                       pixel_size: tuple[float, float] | None = None) -> torch.Tensor:
        # latent (B, h, gh, gw) from prepare; coords (N, 2) or (B, N, 2) -> (B, N, out)
        batch = latent.shape[0]
        grid_h, grid_w = latent.shape[-2:]
        coords = coords.to(self.latent_in.weight.dtype)
        extra = None
        if self.takes_pixel_size:
            size = (pixel_size if pixel_size is not None
                    else self._query_options(*self.resolve_shape(None))["pixel_size"])
            cell = coords.new_tensor([size[0] * (grid_w - 1) / 2, size[1] * (grid_h - 1) / 2])
            extra = cell.expand(*coords.shape[:-1], 2)  # (..., N, 2)

        if self.sampling == "bilinear":
            where = coords if coords.dim() == 3 else coords.expand(batch, *coords.shape)
            sampled = F.grid_sample(latent, where.unsqueeze(2), mode="bilinear",
                                    align_corners=True)  # (B, h, N, 1)
            hidden = sampled.squeeze(-1).transpose(1, 2)  # (B, N, h)
            hidden = hidden + self._position(coords, extra)  # (B or 1, N, h) broadcasts
            return self.act_out(self.mlp(hidden))

        # Cell coordinates u in [0, g - 1] along each axis; (x, y) order as in coords.
        scale = coords.new_tensor([grid_w - 1, grid_h - 1])
        u = (coords + 1) / 2 * scale  # (..., N, 2)
        low = u.floor().clamp(min=torch.zeros_like(scale), max=scale - 1)  # (..., N, 2)
        frac = u - low  # in [0, 1] inside the grid, beyond it outside
        # Rows of latents, (B, gh*gw, h): gathered rows come out (B, N, h) contiguous, so the
        # MLP's elementwise layers and their backward run on dense memory (a transposed
        # gather made bf16 GELU's backward 9x slower on a CPU).
        flat = latent.flatten(2).transpose(1, 2).contiguous()
        if self.sampling == "nearest":
            corner = (frac > 0.5).to(u.dtype)
            hidden = self._gather(flat, low + corner, grid_w)  # (B, N, h)
            offset = frac - corner  # in [-0.5, 0.5]
            hidden = hidden + self._position(offset, extra)
            return self.act_out(self.mlp(hidden))

        # Pixel centres outside the grid ("areas" puts the border ones half a pixel out) are
        # blended from the edge latents alone; the MLP still sees their true offsets.
        inside = frac.clamp(0, 1)
        outputs, weights = [], []
        for cy in (0.0, 1.0):
            for cx in (0.0, 1.0):
                corner = u.new_tensor([cx, cy])
                hidden = self._gather(flat, low + corner, grid_w)  # (B, N, h)
                hidden = hidden + self._position(frac - corner, extra)
                outputs.append(self.mlp(hidden))  # (B, N, out)
                # bilinear weight = area of the rectangle opposite this corner
                weights.append((1 - (inside - corner).abs()).prod(-1, keepdim=True))  # (.., N, 1)
        blended = sum(w * o for w, o in zip(weights, outputs))  # (B, N, out)
        return self.act_out(blended)

    def _pixel_grid(self, code: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if self.pixel_geometry == "corners":
            return super()._pixel_grid(code, height, width)
        grid = [size * self.upsample for size in code.shape[-2:]]
        return resampled_pixel_grid(grid, (height, width), device=code.device,
                                    dtype=self.latent_in.weight.dtype)

    def _position(self, offset: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        features = self.encoding(offset)  # (..., N, P)
        if extra is not None:
            features = torch.cat([features, extra], dim=-1)
        return self.position_in(features)

    @staticmethod
    def _gather(flat: torch.Tensor, cell: torch.Tensor, grid_w: int) -> torch.Tensor:
        """Rows of ``flat`` (B, gh*gw, h) at integer cell coordinates (..., N, 2) -> (B, N, h)."""
        index = (cell[..., 1] * grid_w + cell[..., 0]).long()  # (N,) or (B, N)
        if index.dim() == 1:
            return flat[:, index]
        return torch.gather(flat, 1, index.unsqueeze(-1).expand(-1, -1, flat.shape[2]))


def _stage_widths(conv_channels: int | Sequence[int], upsample: int) -> tuple[int, ...]:
    """One width per resolution of the conv stage: the code's grid, then each x2 step."""
    resolutions = upsample.bit_length()  # 1 + log2(upsample)
    if isinstance(conv_channels, Sequence) and not isinstance(conv_channels, str):
        if len(conv_channels) != resolutions:
            raise ValueError(f"conv_channels needs one width per resolution, 1 + log2(upsample) "
                             f"= {resolutions} for upsample={upsample}, got {conv_channels!r}")
        return check_shape("conv_channels", conv_channels, resolutions)
    return (check_positive_int("conv_channels", conv_channels),) * resolutions


def _conv_stage(first: nn.Module, widths: Sequence[int], blocks: int,
                act_fn: Any, mode: str = "nearest") -> nn.Sequential:
    """``first`` (the code to ``widths[0]`` channels), ``blocks`` residual blocks, then per
    further width an x2 upsampling (``mode``), a 3x3 conv to that width and the activation."""
    layers: list[nn.Module] = [first]
    layers += [ResidualConvBlock(widths[0], act_fn) for _ in range(blocks)]
    interpolation = {} if mode == "nearest" else {"align_corners": False}
    for before, after in zip(widths, widths[1:]):
        layers += [nn.Upsample(scale_factor=2, mode=mode, **interpolation),
                   nn.Conv2d(before, after, 3, padding=1), make_activation(act_fn)]
    return nn.Sequential(*layers)
