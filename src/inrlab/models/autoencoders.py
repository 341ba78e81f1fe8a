"""Autoencoders: an encoder producing a code and a decoder rendering it."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.bottleneck import Bottleneck
from inrlab.models.contract import Autoencoder, CodeCost, Encoder
from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.models.decoders.manifold import ImageManifoldDecoder
from inrlab.models.encoders.dalle import DalleEncoder
from inrlab.models.layers import check_positive_int, check_shape, keep_state_keys
from inrlab.models.registry import MODELS, register_model


def _module(value: Any, role: str, encoder: nn.Module | None = None) -> nn.Module:
    """``value`` itself, or built from its ``{name, args}`` spec; a decoder spec gets the
    arguments that follow from ``encoder`` (``ImplicitDecoder.code_arguments``) where it
    leaves them out."""
    if isinstance(value, dict) and isinstance(encoder, Encoder) and "name" in value:
        cls = MODELS.get(value["name"]).cls
        if isinstance(cls, type) and issubclass(cls, ImplicitDecoder):
            given = value.get("args") or {}
            value = {**value, "args": {**cls.code_arguments(encoder.code_shape, encoder.shape),
                                       **given}}
    if isinstance(value, dict):
        return MODELS.build(value)
    if not isinstance(value, nn.Module):
        raise TypeError(f"{role} must be an nn.Module or a {{name, args}} spec, got {value!r}")
    return value


@register_model("autoencoder", tiny=dict(
    encoder={"name": "EncoderConv2d", "args": {"shape": (3, 8, 8), "code_size": 6,
                                                "channels": (4,)}},
    decoder={"name": "ImageManifoldDecoder", "args": {"num_input_channels": 6,
             "num_output_channels": 3, "num_hidden": 8, "num_blocks": 1,
             "default_shape": (8, 8)}},
))
class EncoderDecoder(Autoencoder):
    """``forward(x) = decoder(bottleneck(encoder(x)))``; an implicit decoder renders at the
    input's size, or at any other.

    ``code_bits``, ``code_limit``, ``code_noise``, ``rate_weight``, ``code_context`` build
    the ``Bottleneck``: ``code_bits`` stores each value in that many bits (uniform over
    ``[-code_limit, code_limit]``; rounded in eval mode, so renders, reports and validation
    see the stored code, and with the rounding noise in training, ``code_noise``, else
    straight-through rounding). ``rate_weight`` (needs ``code_bits``) entropy codes the
    stored code with a learned prior, and training adds ``rate_weight`` times its size in
    bits per pixel to the loss (0 measures the size without pressing on it).
    ``code_context="neighbours"`` codes each value given its already-stored left and upper
    neighbours in the latent grid, about 16% fewer bytes for the same code on the RLTiles
    sheet. ``compress``/``decompress`` give the bytes.

    ``encoder`` and ``decoder`` are modules or ``{name, args}`` specs; a decoder spec may
    leave out what the encoder fixes (its code channels and grid, the output channels, the
    default size): ``{"name": "LocalLatentDecoder", "args": {"mlp": {"num_hidden": 64}}}``
    after an ``EncoderConvGrid`` decodes its latent grid.
    """

    spec_arguments = ("decoder",)  # built here, with the encoder's code shape filled in

    def __init__(self, encoder: Any, decoder: Any, code_bits: int | None = None,
                 code_limit: float = 2.0, code_noise: bool = True,
                 rate_weight: float | None = None, code_context: str = "none") -> None:
        super().__init__()
        self.encoder = _module(encoder, "encoder")
        self.decoder = _module(decoder, "decoder", self.encoder)
        self.bottleneck = Bottleneck(code_bits, code_limit, code_noise, rate_weight,
                                     code_context)
        # The bottleneck's state keeps the keys it had before it was a module of its own
        # ("prior.histogram"), so checkpoints of earlier versions load.
        keep_state_keys(self, {"bottleneck.prior.": "prior.",
                               "bottleneck.quantizer.": "quantizer."})

    @property
    def refinable(self) -> bool:
        return True

    @property
    def input_shape(self) -> tuple[int, int | None, int | None]:
        if isinstance(self.encoder, Encoder):
            return self.encoder.shape
        # a snippet's own encoder (e.g. an nn.Sequential): the size the decoder renders
        decoder = self.implicit_decoder
        if decoder is not None and decoder.default_shape is not None:
            return (decoder.out_channels, *decoder.default_shape)
        raise ValueError(f"cannot tell which image size {type(self.encoder).__name__} encodes "
                         "(it is no inrlab Encoder, and the decoder has no default_shape)")

    @property
    def implicit_decoder(self) -> ImplicitDecoder | None:
        return self.decoder if isinstance(self.decoder, ImplicitDecoder) else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.encoder(x))

    def decode(self, code: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        if self.implicit_decoder is not None:
            return self.decoder(code, shape)
        output = self.decoder(code)
        if shape is not None and tuple(output.shape[-2:]) != tuple(shape):
            raise ValueError(f"{type(self.decoder).__name__} renders {tuple(output.shape[-2:])} "
                             f"only, not {tuple(shape)}: it is not an implicit decoder")
        return output

    def code_cost(self, codes: torch.Tensor, pixels: int) -> CodeCost | None:
        if not self.bottleneck.entropy_coded:
            return None
        bits = self.bottleneck.bits(codes).float()  # (B,)
        return CodeCost(self.bottleneck.rate_loss(bits, pixels),
                        {"code_bytes": bits.mean() / 8})

    @property
    def entropy_coded(self) -> bool:
        return self.bottleneck.entropy_coded

    @property
    def code_bits(self) -> int | None:
        quantizer = self.bottleneck.quantizer
        return None if quantizer is None else quantizer.bits

    def compress(self, codes: torch.Tensor) -> list[bytes]:
        """Each stored code (as ``encode`` gives in eval mode) as bytes:
        ``model.compress(model.eval().encode(images))``."""
        return self.bottleneck.compress(codes)

    def decompress(self, blobs: Sequence[bytes], code_shape: Sequence[int]) -> torch.Tensor:
        """The codes (B, *code_shape) that ``compress`` stored in ``blobs``."""
        return self.bottleneck.decompress(blobs, code_shape)


def _check_at_least(name: str, value: Any, minimum: float, says: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name} must be a number >= {says}, got {value!r}")
    return float(value)


@register_model("autoencoder", tiny=dict(
    encoder={"name": "EncoderConvMap", "args": {"in_channels": 3, "latent_channels": 4,
                                                 "channels": 4, "num_blocks": 1}},
    decoder={"name": "LocalLatentDecoder", "args": {"latent_channels": 4, "grid": None,
             "num_output_channels": 3, "num_hidden": 8, "num_layers": 2,
             "default_shape": (8, 8)}},
))
class UpscalingAutoencoder(EncoderDecoder):
    """Learns to upscale with training images only (LIIF's self-supervised recipe): ``encode(x)``
    encodes ``x`` area-downsampled by ``factor`` (each side to ``round(side / factor)``),
    and the loss compares the render at ``x``'s size with ``x``. The decoder thus learns the
    detail between the low-resolution pixels.

    ``max_factor``: in training mode each call draws the factor uniformly from
    ``[factor, max_factor]`` (one per batch), as LIIF does, so the decoder learns every
    sub-pixel offset and renders cleanly at any scale in that range, not only at ``factor``
    (a decoder trained at exactly 2x shows a grid pattern at 4x). Eval mode (validation)
    always uses ``factor``.

    To upscale an image, encode it as it is and render larger: ``upscale(images, shape)``
    (``render_code`` gives that code, so ``inrlab render`` and the report's renders upscale).
    A fully convolutional encoder (e.g. ``EncoderConvMap`` with
    ``LocalLatentDecoder(grid=None, pixel_geometry="areas")``) encodes any size. A
    fixed-size one (``EncoderConvGrid`` of the low-resolution shape) makes a code model that
    learns to render its code at ``factor`` times the size it encodes: it encodes images of
    any size area-downsampled to its shape, so it trains on images ``factor`` times that
    shape, or on batches of random sizes (``sprite_dataset(..., max_scale=4)`` with
    ``factor=1``: every render scale from 1x to 4x); it takes no ``max_factor``, and
    ``render_code`` downsamples images of the training size as ``encode`` does.
    ``code_bits`` and the rest build the code's ``Bottleneck`` as in ``EncoderDecoder``;
    ``rate_weight`` prices the code's bits per pixel of the image it is scored on
    (``factor**2`` times the pixels it encodes).
    """

    def __init__(self, encoder: Any, decoder: Any, factor: float = 2,
                 max_factor: float | None = None, code_bits: int | None = None,
                 code_limit: float = 2.0, code_noise: bool = True,
                 rate_weight: float | None = None, code_context: str = "none") -> None:
        super().__init__(encoder, decoder, code_bits, code_limit, code_noise, rate_weight,
                         code_context)
        self.factor = _check_at_least("factor", factor, 1.0, "1")
        self.max_factor = None if max_factor is None else _check_at_least(
            "max_factor", max_factor, self.factor, f"factor ({factor})")
        if self.max_factor is not None and self.input_shape[1] is not None:
            raise ValueError(f"max_factor needs an encoder that takes any size; "
                             f"{type(self.encoder).__name__} takes {self.input_shape} only")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        fixed = self.input_shape[1:]
        if fixed[0] is not None:  # a fixed-size encoder: images of any size down to its own
            size = list(fixed)
        else:
            factor = self.factor
            if self.training and self.max_factor is not None:
                factor += (self.max_factor - factor) * torch.rand(()).item()
            size = [max(1, round(side / factor)) for side in x.shape[-2:]]
        if list(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="area")  # (B, C, h, w) averages
        return super().encode(x)

    def render_code(self, images: torch.Tensor) -> torch.Tensor:
        """The code of ``images`` at their own size (no downsampling): renders at ``factor``
        times that size are the upscales the model was trained for. A fixed-size encoder
        encodes them as ``encode`` does (images of another size, e.g. the training size,
        area-downsampled to its shape)."""
        if self.input_shape[1] is not None:
            return self.encode(images)
        return super().encode(images)

    def upscale(self, images: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Render ``images`` (B, C, h, w), encoded at their own size, at ``shape`` (H, W)."""
        return self.decode(self.render_code(images), shape)


@register_model("autoencoder", tiny=dict(shape=(1, 16, 16), vocab_size=8, n_hid=8,
                                         n_blk_per_group=1, decoder_n_hid=8, decoder_n_blk=1,
                                         space_to_depth=True))
class DalleManifoldAutoencoder(EncoderDecoder):
    """The first log's model: small DALL-E encoder -> Linear -> code of ``vocab_size`` floats,
    decoded by an ``ImageManifoldDecoder`` with the log period's 6-value sin embedding.

    Log config (1x32x32, vocab 128, n_hid 64, 1 block/group, GELU, space_to_depth, decoder
    4x2x64): encoder 1,725,264 and decoder 42,497 parameters.
    """

    def __init__(
        self,
        shape: Sequence[int],
        vocab_size: int = 128,
        n_hid: int = 256,
        n_blk_per_group: int = 2,
        group_count: int = 4,
        act_fn: Any = "relu",
        space_to_depth: bool = False,
        decoder_n_hid: int = 256,
        decoder_n_blk: int = 2,
        decoder_n_layer: int = 2,
        decoder_concat_residual: bool | Sequence[bool] = False,
        decoder_pos_embedding: str = "sin",
        decoder_batch_norm_images: int | None = 1,
    ) -> None:
        shape = check_shape("shape", shape, 3)
        check_positive_int("vocab_size", vocab_size)
        if space_to_depth and (shape[1] % 8 or shape[2] % 8):
            raise ValueError(f"space_to_depth needs height and width divisible by 8, got {shape}")
        if min(shape[1:]) < 8:
            raise ValueError(f"DalleManifoldAutoencoder needs images of at least 8x8, got {shape}")
        dalle = DalleEncoder(input_channels=shape[0], vocab_size=vocab_size, n_hid=n_hid,
                             n_blk_per_group=n_blk_per_group, group_count=group_count,
                             act_fn=act_fn, space_to_depth=space_to_depth)
        features = vocab_size * (shape[1] // 8) * (shape[2] // 8)
        encoder = nn.Sequential(dalle, nn.Flatten(1), nn.Linear(features, vocab_size))
        decoder = ImageManifoldDecoder(
            num_input_channels=vocab_size, num_output_channels=shape[0],
            num_hidden=decoder_n_hid, num_blocks=decoder_n_blk,
            num_layers_per_block=decoder_n_layer, concat_residual=decoder_concat_residual,
            default_shape=shape[1:], pos_embedding=decoder_pos_embedding,
            batch_norm_images=decoder_batch_norm_images,
        )
        super().__init__(encoder, decoder)
        self.shape = shape

    @property
    def input_shape(self) -> tuple[int, int | None, int | None]:
        return self.shape  # type: ignore[return-value]
