"""What a trained autoencoder must beat: each image's mean colour, and PCA at the model's
code size (the best linear code of as many floats), both fit on the run's own training
images and scored on the same validation images as the model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from inrlab.data import first_images
from inrlab.models.contract import Autoencoder
from inrlab.train.image_metrics import psnr

VALIDATION_IMAGES = 512  # validation images the model and its baselines are scored on
TRAIN_IMAGES = 4096  # training images (as the train set reads them) PCA is fit on


@dataclass
class PCA:
    """A k-component PCA of flattened images: ``mean`` (D,), ``basis`` (k, D)."""

    mean: torch.Tensor
    basis: torch.Tensor

    @classmethod
    def fit(cls, images: torch.Tensor, components: int) -> "PCA":
        """Fit on (n, C, H, W) images; at most n - 1 components carry information."""
        flat = images.flatten(1).double()  # (n, D)
        mean = flat.mean(0)
        basis = torch.linalg.svd(flat - mean, full_matrices=False).Vh  # (min(n, D), D)
        return cls(mean, basis[:max(1, min(components, flat.shape[0] - 1))])

    @property
    def components(self) -> int:
        return self.basis.shape[0]

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Project (B, C, H, W) images on the components and back, clamped to [0, 1]."""
        flat = images.flatten(1).double() - self.mean  # (B, D)
        coefficients = flat @ self.basis.T  # (B, k): the code
        return (coefficients @ self.basis + self.mean).float().view_as(images).clamp(0, 1)


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """Each (B, C, H, W) image replaced by its mean colour."""
    return images.mean((2, 3), keepdim=True).expand_as(images)


def image_psnr(output: torch.Tensor, images: torch.Tensor) -> float:
    """PSNR (dB) of ``output`` clamped to [0, 1] against ``images`` over the whole set."""
    return psnr(F.mse_loss(output.float().clamp(0, 1), images.float()).item())


def code_floats(codes: torch.Tensor) -> int:
    """Floats per image of a batch of codes (B, ...)."""
    return math.prod(codes.shape[1:])


def baseline_scores(train_images: torch.Tensor, validation_images: torch.Tensor,
                    code_size: int | None) -> tuple[dict[str, float | int | None], PCA | None]:
    """(PSNR of the mean-colour and the PCA baselines on ``validation_images``, the PCA),
    PCA fit on ``train_images`` with ``code_size`` components. PCA is left out (None) when
    the code has at least as many floats as an image: a code that large stores the image."""
    scores: dict[str, float | int | None] = {
        "mean colour psnr": image_psnr(mean_colour(validation_images), validation_images),
        "pca components": None, "pca psnr": None}
    pca = None
    if code_size is not None and code_size < validation_images[0].numel():
        pca = PCA.fit(train_images, code_size)
        scores["pca components"] = pca.components
        scores["pca psnr"] = image_psnr(pca.reconstruct(validation_images), validation_images)
    return scores, pca


@torch.no_grad()
def compare_with_baselines(model: Autoencoder, train_set: Dataset, validation_set: Dataset,
                           count: int = VALIDATION_IMAGES, train_count: int = TRAIN_IMAGES
                           ) -> tuple[dict[str, float | int | None], PCA | None, torch.Tensor]:
    """(scores, the PCA or None, the validation images) for a model in eval mode with an
    ``encode``: its PSNR on the first ``count`` validation images beside each image's mean
    colour and PCA with as many components as its code has floats, fit on the first
    ``train_count`` training images."""
    images = first_images(validation_set, count)
    output = torch.cat([model(part) for part in images.split(64)])
    size = code_floats(model.encode(images[:1]))
    scores, pca = baseline_scores(first_images(train_set, train_count), images, size)
    spread = output.float().clamp(0, 1).flatten(2).std(2, correction=0).mean().item()
    return ({"images": images.shape[0], "code floats": size,
             "model psnr": image_psnr(output, images), "model output std": spread, **scores},
            pca, images)
