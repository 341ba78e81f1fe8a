"""Autoencoders: an encoder producing a code and a decoder rendering it."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.models.decoders.manifold import ImageManifoldDecoder
from inrlab.models.entropy import LevelPrior, decode_levels, encode_levels
from inrlab.models.encoders.dalle import DalleEncoder
from inrlab.models.layers import check_positive_int, check_shape
from inrlab.models.quantize import CodeQuantizer
from inrlab.models.registry import MODELS, register_model


def _module(value: Any, role: str) -> nn.Module:
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
class EncoderDecoder(nn.Module):
    """``forward(x) = decoder(encoder(x))``; an implicit decoder renders at the input's size.

    ``code_bits``: the code is stored in that many bits per value (uniform over
    ``[-code_limit, code_limit]``, see ``CodeQuantizer``): ``encode`` rounds in eval mode
    (so renders, reports and validation see the stored code) and adds the rounding noise in
    training (``code_noise``; else straight-through rounding).

    ``rate_weight`` (needs ``code_bits``): the stored code is entropy coded, so its size
    follows its content; a ``LevelPrior`` learns how likely each level is, and training
    adds ``rate_weight`` times the code's size in bits per pixel to the loss (0 measures
    the size without pressing on it). ``compress``/``decompress`` give the bytes.
    ``code_context="neighbours"``: each value is coded given its already-stored left and
    upper neighbours in the latent grid (``LevelPrior``'s ``context``), about 16% fewer
    bytes for the same code on the RLTiles sheet; ``"none"``: each channel's levels alone.
    """

    def __init__(self, encoder: Any, decoder: Any, code_bits: int | None = None,
                 code_limit: float = 2.0, code_noise: bool = True,
                 rate_weight: float | None = None, code_context: str = "none") -> None:
        super().__init__()
        self.encoder = _module(encoder, "encoder")
        self.decoder = _module(decoder, "decoder")
        self.quantizer = (CodeQuantizer(code_bits, code_limit, code_noise)
                          if code_bits is not None else None)
        self.rate_weight = None if rate_weight is None else _check_at_least(
            "rate_weight", rate_weight, 0, "0")
        self.prior = None
        if self.rate_weight is not None:
            if self.quantizer is None:
                raise ValueError("rate_weight needs code_bits: only a quantised code has a "
                                 "size in bytes")
            self.prior = LevelPrior(2**self.quantizer.bits, context=code_context)
        elif code_context != "none":
            raise ValueError("code_context needs rate_weight: only an entropy-coded code has "
                             "a context")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        code = self.encoder(x)
        if self.quantizer is None:
            return code
        if self.prior is not None and self.training:
            self.prior.observe(self.quantizer.quantize(code))
        return self.quantizer(code)

    def code_rate(self, code: torch.Tensor) -> torch.Tensor | None:
        """Bits per image, (B,), that the entropy-coded ``code`` (as from ``encode``) takes;
        differentiable, so it can be a loss. None when the code is not entropy coded."""
        if self.prior is None:
            return None
        q = self.quantizer
        return self.prior.bits((code.clamp(-q.limit, q.limit) + q.limit) / q.step)

    @torch.no_grad()
    def compress(self, codes: torch.Tensor) -> list[bytes]:
        """Each stored code (as ``encode`` gives in eval mode) as bytes, arithmetic coded
        with the learned prior: ``model.compress(model.eval().encode(images))``."""
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

    def render_code(self, images: torch.Tensor) -> torch.Tensor:
        """The code that renders of ``images`` at other sizes start from (``inrlab render``
        and the report's renders): the encoding, unless a subclass says otherwise."""
        return self.encode(images)

    def stored_code(self, raw: torch.Tensor) -> torch.Tensor:
        """What the model stores of an encoder output ``raw``: the quantised code (rounded,
        with a straight-through gradient) when the model quantises, else ``raw``."""
        return raw if self.quantizer is None else self.quantizer.round_straight_through(raw)

    def refine_codes(self, images: torch.Tensor, steps: int, learnrate: float = 0.01,
                     rate_weight: float | None = None,
                     report: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Test-time refinement: the stored codes of ``images`` after ``steps`` Adam steps
        on each image's encoder output (``render_code``'s start), against the squared error
        of the stored code's render at the images' size -- plus ``rate_weight`` (default:
        the model's) times its bits per pixel when the code is entropy coded. The weights
        stay as they are (only the codes get gradients); call it in eval mode. Encoding
        spends the compute; the decoder still gets only a stored code. ``report(step,
        renders)`` sees the renders before each step and after the last."""
        shape = tuple(images.shape[-2:])
        with torch.no_grad():
            raw = self.encoder(images)
        raw.requires_grad_(True)
        optimizer = torch.optim.Adam([raw], lr=learnrate)
        weight = self.rate_weight if rate_weight is None else rate_weight
        for step in range(steps + 1):
            if report is not None:
                with torch.no_grad():
                    report(step, self.decode(self.stored_code(raw), shape))
            if step == steps:
                break
            with torch.enable_grad():  # also when called under no_grad
                loss = F.mse_loss(self.decode(self.stored_code(raw), shape), images)
                if self.prior is not None and weight:
                    # priced between levels (the stored levels' price has no useful gradient)
                    loss = loss + weight * self.code_rate(raw).mean() / (shape[0] * shape[1])
                raw.grad, = torch.autograd.grad(loss, [raw])
            optimizer.step()
        return self.stored_code(raw).detach()

    def decode(self, code: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        if isinstance(self.decoder, ImplicitDecoder):
            return self.decoder(code, shape)
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x.shape[-2:])


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
    The encoder must accept any size (e.g. ``EncoderConvMap`` with
    ``LocalLatentDecoder(grid=None, pixel_geometry="areas")``).
    """

    def __init__(self, encoder: Any, decoder: Any, factor: float = 2,
                 max_factor: float | None = None) -> None:
        super().__init__(encoder, decoder)
        self.factor = _check_at_least("factor", factor, 1.0, "1")
        self.max_factor = None if max_factor is None else _check_at_least(
            "max_factor", max_factor, self.factor, f"factor ({factor})")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.factor
        if self.training and self.max_factor is not None:
            factor += (self.max_factor - factor) * torch.rand(()).item()
        size = [max(1, round(side / factor)) for side in x.shape[-2:]]
        return self.encoder(F.interpolate(x, size=size, mode="area"))  # (B, C, h, w) averages

    def render_code(self, images: torch.Tensor) -> torch.Tensor:
        """The latent map of ``images`` at their own size (no downsampling): renders at
        ``factor`` times that size are the upscales the model was trained for."""
        return self.encoder(images)

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
        decoder_batch_norm_images: int | None = None,
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
