"""One row of an evaluation, how it is scored, and the images it is scored on.

An image set is a list of batches (B, C, H, W), one per image size, so images of several
sizes are scored in a few batched calls. PSNR is pooled over the set (the mean squared
error over every pixel of every image, as validation computes it); ``psnr_per_image`` is
the mean of each image's own PSNR (the super-resolution papers' convention); SSIM is the
mean of each image's.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from inrlab.train.image_metrics import psnr, ssim

Images = list[torch.Tensor]  # batches (B, C, H, W), one per image size


@dataclass
class Row:
    """One method's scores on a target's images.

    ``method``: ``code``/``refined code`` (the model's stored code), ``pca``, ``jpeg``,
    ``webp``, ``avif``; with ``scale``: ``render``/``refined render``, ``bicubic``,
    ``lanczos``, ``bicubic of reconstruction``, ``lanczos of reconstruction``. ``bytes``
    and ``bpp`` (per image, bits per pixel of the image scored) are None where the method
    is no codec; ``encode_ms``/``decode_ms`` per image; ``macs_per_pixel`` (the decoder's
    multiply-accumulates per rendered pixel) and ``parameters`` for the model's rows.
    """

    target: str
    method: str
    detail: str
    psnr: float
    psnr_per_image: float
    ssim: float
    bytes: float | None = None
    bpp: float | None = None
    encode_ms: float | None = None
    decode_ms: float | None = None
    macs_per_pixel: float | None = None
    parameters: int | None = None
    scale: float | None = None
    images: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Scores:
    psnr: float
    psnr_per_image: float
    ssim: float
    images: int


@torch.no_grad()
def score(outputs: Images, truths: Images) -> Scores:
    """PSNR (pooled and per image) and SSIM of ``outputs`` clamped to [0, 1] against
    ``truths``, batch by batch."""
    squared, pixels, per_image, similarity = 0.0, 0, [], []
    for output, truth in zip(outputs, truths, strict=True):
        output, truth = output.float().clamp(0, 1), truth.float()
        errors = (output - truth).square().flatten(1)  # (B, C*H*W)
        squared += errors.sum().item()
        pixels += errors.numel()
        per_image += [psnr(mse) for mse in errors.mean(1).tolist()]
        similarity += ssim(output, truth).tolist()
    count = len(per_image)
    return Scores(psnr(squared / pixels), sum(per_image) / count, sum(similarity) / count,
                  count)


def count_images(images: Images) -> int:
    return sum(batch.shape[0] for batch in images)


def count_pixels(images: Images) -> int:
    """Pixels (H x W, not values) over the whole set."""
    return sum(batch.shape[0] * batch.shape[-2] * batch.shape[-1] for batch in images)


def bits_per_pixel(bytes_per_image: float, images: Images) -> float:
    return 8 * bytes_per_image * count_images(images) / count_pixels(images)


def make_row(target: str, method: str, detail: str, outputs: Images, truths: Images,
             **fields: Any) -> Row:
    """A ``Row`` of ``outputs`` scored against ``truths``; ``bytes`` (per image) also
    fills in ``bpp``."""
    scores = score(outputs, truths)
    if fields.get("bytes") is not None:
        fields["bpp"] = bits_per_pixel(fields["bytes"], truths)
    return Row(target, method, detail, scores.psnr, scores.psnr_per_image, scores.ssim,
               images=scores.images, **fields)


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """``function()``'s result and the seconds it took."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def per_image_ms(seconds: float, images: Images | int) -> float:
    count = images if isinstance(images, int) else count_images(images)
    return 1e3 * seconds / max(1, count)


def group_by_size(images: Sequence[torch.Tensor]) -> Images:
    """Images (C, H, W) of any sizes as batches, one per size, in first-seen order."""
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for image in images:
        groups.setdefault(tuple(image.shape), []).append(image)
    return [torch.stack(group) for group in groups.values()]
