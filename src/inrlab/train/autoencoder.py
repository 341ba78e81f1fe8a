"""Autoencoder trainers: the input is also the target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from inrlab.data.batched import PixelSample, random_pixels
from inrlab.errors import InrlabError
from inrlab.storage.grids import reconstruction_grid, save_png
from inrlab.train.image_metrics import ssim
from inrlab.train.trainer import Trainer

NUM_IMAGES_SHOWN = 32


@dataclass
class AutoencoderOptions:
    # decode N random pixels per image in training (validation decodes every pixel)
    train_pixels: int | None = None
    # query each training pixel up to this many pixel spacings off its centre (uniform per
    # axis; 0.5 covers the pixel's area) and score it against the pixel's colour
    train_jitter: float = 0.0


@dataclass
class CodeStatisticsOptions(AutoencoderOptions):
    feature_loss_weight: float = 1e-4
    feature_target_std: float = 0.5


class TrainAutoencoder(Trainer):
    """Reconstruction loss between the model's output and its input (element 0 of a batch).

    The model is an ``Autoencoder`` (``inrlab.models.contract``); any other module comes
    wrapped (``ModuleAutoencoder``) and is trained on its output alone. With ``train_pixels:
    N`` a training step decodes only N random pixels of each image (the model needs an
    implicit decoder); validation always decodes every pixel. Validation also reports
    ``l1``, ``mse`` (and from it ``psnr``), ``ssim`` and ``output_std`` (the spread of each
    output over its pixels, ~0 for a constant output) of the output clamped to [0, 1], and
    after each validation draws the first 32 validation images above their reproductions to
    ``images/reconstruction.png`` and TensorBoard ``validation_reconstruction``.

    A model whose code has a cost (``code_cost``: an entropy-coded code's rate) adds it to
    ``loss`` and reports ``loss_reconstruction`` and the cost's metrics (``code_bytes``).
    """

    options_class: ClassVar[type] = AutoencoderOptions

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(reconstruction, codes; None for a model without a code of its own)."""
        codes = self.model.encode(images)
        decoded = self.model.decode(codes, images.shape[-2:])
        return decoded, codes if self.model.has_code else None

    def reconstruct_pixels(self, images: torch.Tensor, count: int | None, jitter: float = 0.0,
                           sample: PixelSample | None = None
                           ) -> tuple[torch.Tensor, PixelSample, torch.Tensor]:
        """(decoded (B, n, C), the sample it is scored on, codes) at ``count`` random pixels
        per image (None: every pixel), or at the pixels of a ``sample`` the dataset rendered
        (of ``images`` at another size); ``jitter`` as ``ImplicitDecoder.query_pixels``."""
        decoder = self.model.implicit_decoder
        if decoder is None:
            key = "train_pixels" if count else "train_jitter"
            raise InrlabError(f"{key} needs a model with an implicit decoder; "
                              f"{self.model.class_name} has none", key=key)
        if sample is None:
            sample = sample_pixels(images, count)
        codes = self.model.encode(images)
        decoded = decoder.query_pixels(codes, sample.size, sample.index, jitter)  # (B, n, C)
        return decoded, sample, codes

    def sampled_pixels(self) -> int | None:
        # A jittered query is scored against its pixel's colour, and training_noise goes
        # into input and target alike: both need the images' own pixels. An encoder that
        # takes any size would encode the larger render itself. (No implicit decoder: the
        # step says that train_pixels needs one.)
        if (self.options.train_jitter or self.settings.training_noise
                or self.model.implicit_decoder is None or self.model.input_shape[1] is None):
            return None
        return self.options.train_pixels

    def train_step(self, batch: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        images = batch[0]
        sample = batch[1] if len(batch) > 1 and isinstance(batch[1], PixelSample) else None
        if sample is not None or self.options.train_pixels or self.options.train_jitter:
            output, sample, codes = self.reconstruct_pixels(
                images, self.options.train_pixels, self.options.train_jitter, sample)
            losses = self.losses(sample.colours, output, codes)
            return self.with_code_cost(losses, codes, sample.size[0] * sample.size[1])
        output, codes = self.reconstruct(images)
        _check_shapes(images, output, codes)
        return self.with_code_cost(self.losses(images, output, codes), codes,
                                   images.shape[-2] * images.shape[-1])

    def validation_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images = batch[0]
        output, codes = self.reconstruct(images)
        _check_shapes(images, output, codes)
        losses = self.with_code_cost(self.losses(images, output, codes), codes,
                                     images.shape[-2] * images.shape[-1])
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

    def with_code_cost(self, losses: dict[str, torch.Tensor], codes: torch.Tensor | None,
                       pixels: int) -> dict[str, torch.Tensor]:
        """``losses`` plus what the model's code costs (``Autoencoder.code_cost``) for an
        image of ``pixels`` pixels (the size it is scored at)."""
        if codes is None:
            return losses
        cost = self.model.code_cost(codes, pixels)
        if cost is None:
            return losses
        return {**losses, "loss": losses["loss"] + cost.loss,
                "loss_reconstruction": losses.get("loss_reconstruction", losses["loss"]),
                **cost.metrics}

    @torch.no_grad()
    def write_images(self) -> None:
        shown = []
        count = 0
        for batch in self.batches.validation(self.progress.epoch):
            shown.append(batch[0])
            count += shown[-1].shape[0]
            if count >= NUM_IMAGES_SHOWN:
                break
        if not shown:
            return
        images = torch.cat(shown)[:NUM_IMAGES_SHOWN]
        self.model.eval()
        output, _ = self.reconstruct(images)
        self.model.train()
        grid = reconstruction_grid(images.float().cpu(), output.float().clamp(0, 1).cpu())
        save_png(grid, self.run_dir.images / "reconstruction.png", scale=2)
        self.log.image("validation_reconstruction", grid, self.progress.num_inputs)


def sample_pixels(images: torch.Tensor, count: int | None) -> PixelSample:
    """``count`` distinct random pixels of each image of (B, C, H, W) (None: every pixel)."""
    batch, channels, height, width = images.shape
    index = random_pixels(batch, height, width, count, images.device)  # (B, n)
    colours = images.flatten(2).gather(2, index.unsqueeze(1).expand(-1, channels, -1))
    return PixelSample((height, width), index, colours.transpose(1, 2))  # (B, n, C)


class TrainAutoencoderSpecial(TrainAutoencoder):
    """Adds the logs' code-statistics constraint on the codes of each batch:
    ``loss_batch_std = |feature_target_std - codes.std(0).mean()|`` and
    ``loss_batch_mean = |codes.mean()|``, weighted by ``feature_loss_weight``."""

    options_class: ClassVar[type] = CodeStatisticsOptions

    def losses(self, target: torch.Tensor, output: torch.Tensor,
               codes: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if codes is None:
            raise InrlabError(f"TrainAutoencoderSpecial constrains the codes, and "
                              f"{self.model.class_name} is no Autoencoder (no encode)",
                              key="trainer")
        reconstruction_loss = self.loss_function(output.float(), target.float())
        codes = codes.float().flatten(1)  # (B, code)
        std = codes.std(0).mean() if codes.shape[0] > 1 else codes.new_zeros(())
        loss_std = (self.options.feature_target_std - std).abs()
        loss_mean = codes.mean().abs()
        loss = reconstruction_loss
        if self.options.feature_loss_weight:
            loss = loss + self.options.feature_loss_weight * (loss_std + loss_mean)
        return {"loss": loss, "loss_reconstruction": reconstruction_loss,
                "loss_batch_std": loss_std, "loss_batch_mean": loss_mean}


def _check_shapes(images: torch.Tensor, output: torch.Tensor,
                  codes: torch.Tensor | None = None) -> None:
    if output.shape != images.shape:
        extra = f", codes {tuple(codes.shape)}" if codes is not None else ""
        raise InrlabError(f"the model's output shape {tuple(output.shape)} differs from its "
                          f"input shape {tuple(images.shape)}{extra}; an autoencoder must "
                          "reproduce its input", key="model")
