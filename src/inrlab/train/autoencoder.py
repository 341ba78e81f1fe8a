"""Autoencoder trainers: the input is also the target."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

from inrlab.errors import InrlabError
from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.storage.grids import reconstruction_grid, save_png
from inrlab.train.image_metrics import ssim
from inrlab.train.trainer import Trainer

NUM_IMAGES_SHOWN = 32


class TrainAutoencoder(Trainer):
    """Reconstruction loss between the model's output and its input (element 0 of a batch).

    With ``train_pixels: N`` a training step decodes only N random pixels of each image
    (the model needs ``encode()`` and an implicit ``decoder``); validation always decodes
    every pixel. Validation also reports ``l1``, ``mse`` (and from it ``psnr``), ``ssim``
    and ``output_std`` (the spread of each output over its pixels, ~0 for a constant output)
    of the output clamped to [0, 1], and after each validation draws the first 32
    validation images above their reproductions to ``images/reconstruction.png`` and
    TensorBoard ``validation_reconstruction``.

    A model whose code is entropy coded (``code_rate(codes)`` gives bits per image, e.g.
    ``EncoderDecoder(rate_weight=...)``) also reports ``code_bytes`` (the mean size of a
    code, estimated from its prior) and ``loss_reconstruction``, and its ``loss`` adds
    ``model.rate_weight`` times the code's bits per pixel.
    """

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        model = self.model
        if hasattr(model, "encode"):
            return model.encode(images)
        if hasattr(model, "encoder"):
            return model.encoder(images)
        raise InrlabError(f"{type(model).__name__} has no encode() or .encoder, which this "
                          "trainer needs for the code statistics", key="model")

    def decode(self, codes: torch.Tensor, shape: Any) -> torch.Tensor:
        model = self.model
        if hasattr(model, "decode"):
            return model.decode(codes, shape) if _takes_shape(model.decode) else model.decode(codes)
        return model.decoder(codes)

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(reconstruction, codes or None)."""
        if self._rated():
            return self.encode_decode(images)
        output = self.model(images)
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output, None

    def encode_decode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, codes) through ``encode`` and ``decode``, keeping the codes."""
        codes = self.encode(images)
        return self.decode(codes, images.shape[-2:]), codes

    def reconstruct_pixels(self, images: torch.Tensor, count: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoded, target, codes) at ``count`` random pixels per image, both (B, n, C)."""
        decoder = getattr(self.model, "decoder", None)
        if not isinstance(decoder, ImplicitDecoder):
            raise InrlabError(f"train_pixels needs a model with an implicit decoder "
                              f"(.decoder with query()); {type(self.model).__name__} has none",
                              key="train_pixels")
        batch, channels, height, width = images.shape
        count = min(count, height * width)
        scores = torch.rand(batch, height * width, device=images.device)
        index = scores.topk(count, dim=1, sorted=False).indices  # (B, n) distinct pixels
        target = images.flatten(2).gather(2, index.unsqueeze(1).expand(-1, channels, -1))
        codes = self.encode(images)
        decoded = decoder.query_pixels(codes, (height, width), index)  # (B, n, C)
        return decoded, target.transpose(1, 2), codes  # target (B, C, n) -> (B, n, C)

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images = batch[0]
        if self.settings.train_pixels:
            output, target, codes = self.reconstruct_pixels(images, self.settings.train_pixels)
            return self.with_rate(self.losses(target, output, codes), codes, images)
        output, codes = self.reconstruct(images)
        _check_shapes(images, output, codes)
        return self.with_rate(self.losses(images, output, codes), codes, images)

    def validation_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images = batch[0]
        output, codes = self.reconstruct(images)
        _check_shapes(images, output, codes)
        losses = self.with_rate(self.losses(images, output, codes), codes, images)
        clamped = output.float().clamp(0, 1)
        losses["l1"] = F.l1_loss(clamped, images.float())
        losses["mse"] = F.mse_loss(clamped, images.float())
        losses["ssim"] = ssim(clamped, images).mean()
        # Spread of each output image over its pixels: ~0 for a constant (collapsed) output.
        losses["output_std"] = clamped.flatten(2).std(2, correction=0).mean()
        return losses

    def losses(self, target: torch.Tensor, output: torch.Tensor,
               codes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Losses of a reconstruction of ``target``; ``codes`` may be None."""
        return {"loss": self.loss_function(output.float(), target.float())}

    def with_rate(self, losses: dict[str, torch.Tensor], codes: torch.Tensor | None,
                  images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``losses`` with the code's size added, for a model whose code is entropy coded."""
        if not self._rated() or codes is None:
            return losses
        bits = self.model.code_rate(codes).float()  # (B,)
        rate = bits.mean() / (images.shape[-2] * images.shape[-1])  # bits per pixel
        return {**losses, "loss": losses["loss"] + self.model.rate_weight * rate,
                "loss_reconstruction": losses.get("loss_reconstruction", losses["loss"]),
                "code_bytes": bits.mean() / 8}

    def _rated(self) -> bool:
        return getattr(self.model, "rate_weight", None) is not None and hasattr(
            self.model, "code_rate")

    @torch.no_grad()
    def write_images(self) -> None:
        shown = []
        count = 0
        for batch in self._validation_batches():
            shown.append(batch[0] if isinstance(batch, (tuple, list)) else batch)
            count += shown[-1].shape[0]
            if count >= NUM_IMAGES_SHOWN:
                break
        if not shown:
            return
        images = torch.cat(shown)[:NUM_IMAGES_SHOWN].to(self.device)
        self.model.eval()
        output, _ = self.reconstruct(images)
        self.model.train()
        grid = reconstruction_grid(images.float().cpu(), output.float().clamp(0, 1).cpu())
        save_png(grid, self.run_dir.images / "reconstruction.png", scale=2)
        self.log.image("validation_reconstruction", grid, self.progress.num_inputs)


class TrainAutoencoderSpecial(TrainAutoencoder):
    """Adds the logs' code-statistics constraint on the codes of each batch:
    ``loss_batch_std = |feature_target_std - codes.std(0).mean()|`` and
    ``loss_batch_mean = |codes.mean()|``, weighted by ``feature_loss_weight``."""

    def __init__(self, *, feature_loss_weight: float = 1e-4, feature_target_std: float = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_loss_weight = float(feature_loss_weight)
        self.feature_target_std = float(feature_target_std)

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encode_decode(images)

    def losses(self, target: torch.Tensor, output: torch.Tensor,
               codes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        reconstruction = self.loss_function(output.float(), target.float())
        codes = codes.float().flatten(1)  # (B, code)
        std = codes.std(0).mean() if codes.shape[0] > 1 else codes.new_zeros(())
        loss_std = (self.feature_target_std - std).abs()
        loss_mean = codes.mean().abs()
        loss = reconstruction
        if self.feature_loss_weight:
            loss = loss + self.feature_loss_weight * (loss_std + loss_mean)
        return {"loss": loss, "loss_reconstruction": reconstruction,
                "loss_batch_std": loss_std, "loss_batch_mean": loss_mean}


def _takes_shape(method: Any) -> bool:
    try:
        return len(inspect.signature(method).parameters) >= 2
    except (TypeError, ValueError):
        return False


def _check_shapes(images: torch.Tensor, output: torch.Tensor,
                  codes: torch.Tensor | None = None) -> None:
    if output.shape != images.shape:
        extra = f", codes {tuple(codes.shape)}" if codes is not None else ""
        raise InrlabError(f"the model's output shape {tuple(output.shape)} differs from its "
                          f"input shape {tuple(images.shape)}{extra}; an autoencoder must "
                          "reproduce its input", key="model")
