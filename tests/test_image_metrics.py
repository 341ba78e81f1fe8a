"""SSIM and PSNR as the validation metrics and the results table report them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inrlab.train.image_metrics import psnr, ssim


def reference_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al.'s SSIM written out position by position (one channel, 'valid' window)."""
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    scores = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            scores.append((2 * ma * mb + c1) * (2 * cov + c2)
                          / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(scores))


def test_ssim_matches_the_definition_per_image_and_channel() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 20, 24, generator=generator)
    noisy = (images + 0.1 * torch.randn(2, 3, 20, 24, generator=generator)).clamp(0, 1)
    scores = ssim(noisy, images)
    assert scores.shape == (2,)
    for b in range(2):
        expected = np.mean([reference_ssim(noisy[b, c].double().numpy(),
                                           images[b, c].double().numpy()) for c in range(3)])
        assert scores[b].item() == pytest.approx(expected, abs=1e-5)


def test_ssim_is_computed_in_fp32_inside_a_bf16_autocast_region() -> None:
    # Validation runs under the trainer's autocast when precision is bf16; the metric must
    # not change with it.
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 32, 32, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
    exact = ssim(blurred, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = ssim(blurred, images)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact)


def test_ssim_orders_degradations_and_fits_small_images() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 1, 8, 8, generator=generator)  # smaller than the 11-tap window
    assert torch.allclose(ssim(images, images), torch.ones(4))
    light = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    heavy = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    assert (ssim(heavy, images) < ssim(light, images)).all()
    assert (ssim(torch.zeros_like(images), images) < 0.05).all()


def test_psnr_of_an_mse() -> None:
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.0) == pytest.approx(120.0) and math.isfinite(psnr(0.0))
