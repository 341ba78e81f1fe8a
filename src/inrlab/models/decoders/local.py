"""A local-latent implicit decoder (after LIIF, arXiv 2012.09161): the code is a small grid
of latent vectors; a pixel is decoded from the latents around it and its offset to them.

Latent cell centres follow the pixel convention of ``posenc``: ``linspace(-1, 1, g)`` along
each side, so the corner latents sit on the corner pixels whatever the render size.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.decoders.base import ImplicitDecoder, image_arguments
from inrlab.models.decoders.parts import PARTS, SAMPLINGS
from inrlab.models.layers import check_positive_int, check_shape, keep_state_keys
from inrlab.models.posenc import positional_encoding, resampled_pixel_grid
from inrlab.models.registry import UpgradesArguments, register_model


@register_model("decoder", tiny=dict(latent_channels=3, grid=(3, 3), num_output_channels=3,
                                     default_shape=(8, 8),
                                     mlp={"num_hidden": 8, "num_layers": 2}))
class LocalLatentDecoder(ImplicitDecoder, metaclass=UpgradesArguments):
    """Decode a (C, gh, gw) latent grid at any pixel position, from parts given as
    ``{name, args}`` specs (``decoders.parts``; docs/api.md lists them):

    - ``stage``: what turns the code into the feature grid the MLP reads, None for the code
      itself; ``ConvStage`` (convolutions, residual blocks and x2 upsamplings: the MLP then
      reads a finer grid, ``upsample`` x the code's along each side) or ``GlobalLinear``.
    - ``sampling``: how a pixel reads that grid: ``LocalEnsemble`` (LIIF's blend of the 4
      latents around it; ``"ensemble"``), ``NearestLatent`` (``"nearest"``),
      ``BilinearLatent`` (``"bilinear"``), with where pixels sit (``pixel_geometry``),
      LIIF's feature unfolding and cell decoding as their arguments.
    - ``mlp``: ``PixelMLP``'s width, depth and activations; a mapping of its arguments alone
      will do.
    - ``pos_embedding``: how the offset to the latent is encoded: a name of
      ``positional_encoding`` (``"sincos"`` with frequencies (1, 2, 4); ``"gaussian"`` /
      ``"learned"`` with 16 features of scale 1.0) or a ``{name, args}`` spec.

    ``grid=None`` accepts latent grids of any size (at least 2x2 for the ensemble and
    nearest samplings), e.g. the per-pixel latent map of ``EncoderConvMap``. Latent cell
    centres follow ``posenc``'s pixel convention: the corner latents sit on the corner
    pixels whatever the render size.

    Earlier versions took every setting as its own argument (``num_hidden``,
    ``conv_channels``, ``unfold``, ...); ``upgrade_arguments`` translates those, so older
    snippets, specs and checkpoints build and load as they did.
    """

    def __init__(
        self,
        latent_channels: int,
        grid: Sequence[int] | None = (4, 4),
        num_output_channels: int = 3,
        default_shape: Sequence[int] | None = None,
        mlp: Any = None,
        sampling: Any = "ensemble",
        stage: Any = None,
        pos_embedding: str | dict[str, Any] = "sincos",
    ) -> None:
        super().__init__()
        self.latent_channels = check_positive_int("latent_channels", latent_channels)
        self.grid = check_shape("grid", grid, 2) if grid is not None else None
        self.sampling = _part(sampling, "sampling", SAMPLINGS)
        if self.grid is not None and min(self.grid) < self.sampling.min_grid:
            raise ValueError(f"{type(self.sampling).__name__} needs a grid of at least "
                             f"{self.sampling.min_grid}x{self.sampling.min_grid}, got {grid!r}")
        self.takes_pixel_size = self.sampling.pixel_size
        self.set_io((self.latent_channels, *(self.grid or (None, None))), num_output_channels,
                    default_shape)
        # offsets span about one cell: lower frequencies and scale than a whole-image encoding
        self.encoding = positional_encoding(pos_embedding, freqs=(1, 2, 4), num_features=16,
                                            sigma=1.0)
        self.stage = (None if stage is None else
                      _part(stage, "stage", in_channels=self.latent_channels, grid=self.grid))
        self.upsample = 1 if self.stage is None else self.stage.upsample
        features = self.latent_channels if self.stage is None else self.stage.out_channels
        self.mlp = _part(mlp if mlp is not None else {}, "mlp",
                         features=features * (9 if self.sampling.unfold else 1),
                         position_features=self.encoding.out_features
                         + (2 if self.sampling.pixel_size else 0),
                         out_channels=self.out_channels)
        self.max_width = self.mlp.num_hidden * self.sampling.queries_per_pixel
        keep_state_keys(self, STORED_AS)

    @classmethod
    def upgrade_arguments(cls, args: dict[str, Any]) -> dict[str, Any]:
        """Arguments in this version's form, from those of earlier versions (every setting
        its own argument: ``num_hidden``, ``conv_channels``, ``unfold``, ...)."""
        old = {k: args[k] for k in FLAT_ARGUMENTS if k in args}
        if not old:
            return dict(args)
        new = {k: v for k, v in args.items() if k not in old}
        activation = old.get("activation", "gelu")
        mlp = {k: old[k] for k in ("num_hidden", "num_layers", "activation", "activation_out")
               if k in old}
        new["mlp"] = {**mlp, **(new.get("mlp") or {})}
        reading = {k: old[k] for k in ("pixel_geometry", "unfold", "pixel_size") if k in old}
        if reading:
            name = SAMPLINGS.get(new.get("sampling", "ensemble"), new.get("sampling"))
            new["sampling"] = {"name": name, "args": reading}
        if old.get("conv_channels") is not None:
            new["stage"] = {"name": "ConvStage", "args": {
                "channels": old["conv_channels"], "blocks": old.get("conv_blocks", 1),
                "upsample": old.get("upsample", 1),
                "upsample_mode": old.get("upsample_mode", "nearest"),
                "global_code": old.get("global_code", False), "activation": activation}}
        elif old.get("upsample", 1) != 1:
            raise ValueError("upsample needs a conv stage: set conv_channels as well")
        elif old.get("global_code"):
            new["stage"] = {"name": "GlobalLinear"}
        return new

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
        least = self.sampling.min_grid
        if min(code.shape[-2:]) < least:
            raise ValueError(f"{type(self.sampling).__name__} needs a latent grid of at least "
                             f"{least}x{least}, got {code.shape[-2]}x{code.shape[-1]}")
        code = code.to(self.mlp.latent_in.weight.dtype)
        if self.stage is not None:
            code = self.stage(code)  # (B, stage channels, upsample * gh, upsample * gw)
        return self.mlp.cells(self.sampling.features(code))  # (B, h, gh, gw)

    def query(self, code: torch.Tensor, coords: torch.Tensor,
              pixel_size: tuple[float, float] | None = None) -> torch.Tensor:
        # code (B, C, gh, gw); coords (N, 2) or (B, N, 2) -> (B, N, out)
        return self.query_prepared(self.prepare(code), coords, pixel_size=pixel_size)

    def query_prepared(self, latent: torch.Tensor, coords: torch.Tensor,
                       pixel_size: tuple[float, float] | None = None) -> torch.Tensor:
        # latent (B, h, gh, gw) from prepare; coords (N, 2) or (B, N, 2) -> (B, N, out)
        grid_h, grid_w = latent.shape[-2:]
        coords = coords.to(self.mlp.latent_in.weight.dtype)
        extra = None
        if self.takes_pixel_size:
            size = (pixel_size if pixel_size is not None
                    else self._query_options(*self.resolve_shape(None))["pixel_size"])
            cell = coords.new_tensor([size[0] * (grid_w - 1) / 2, size[1] * (grid_h - 1) / 2])
            extra = cell.expand(*coords.shape[:-1], 2)  # (..., N, 2)

        def position(offset: torch.Tensor) -> torch.Tensor:
            features = self.encoding(offset)  # (..., N, P)
            if extra is not None:
                features = torch.cat([features, extra], dim=-1)
            return self.mlp.position_in(features)  # (..., N, h)

        return self.mlp.act_out(self.sampling(latent, coords, position, self.mlp))

    def _pixel_grid(self, code: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if self.sampling.pixel_geometry == "corners":
            return super()._pixel_grid(code, height, width)
        grid = [size * self.upsample for size in code.shape[-2:]]
        return resampled_pixel_grid(grid, (height, width), device=code.device,
                                    dtype=self.mlp.latent_in.weight.dtype)


# Checkpoints keep the keys of the version whose layers were the decoder's own attributes.
STORED_AS = {"stage.": "conv.", "mlp.latent_in.": "latent_in.",
             "mlp.position_in.": "position_in.", "mlp.layers.": "mlp.", "mlp.act_out.": "act_out."}
FLAT_ARGUMENTS = ("num_hidden", "num_layers", "activation", "activation_out", "pixel_size",
                  "pixel_geometry", "unfold", "conv_channels", "conv_blocks", "upsample",
                  "upsample_mode", "global_code")


def _part(value: Any, role: str, shorthands: dict[str, str] | None = None,
          **context: Any) -> nn.Module:
    """The decoder part ``value`` names: a built module as it is, a ``{name, args}`` spec, a
    shorthand name (``"ensemble"``), or (the MLP) a mapping of its arguments alone."""
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, str):
        value = {"name": (shorthands or {}).get(value, value)}
    elif isinstance(value, dict) and "name" not in value and role == "mlp":
        value = {"name": "PixelMLP", "args": value}
    if not isinstance(value, dict):
        raise ValueError(f"{role} must be a {{name, args}} spec of a decoder part, got {value!r}")
    kind = PARTS.get(value["name"]).kind
    if kind != role:
        raise ValueError(f"{role} must name a {role} part; {value['name']} is a {kind}")
    return PARTS.build(value, **context)
