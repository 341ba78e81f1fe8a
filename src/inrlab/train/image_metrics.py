"""Image-quality measures for validation and benchmarks, batched over images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error (images in [0, peak])."""
    return 10 * math.log10(peak * peak / max(mse, 1e-12))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * sigma * sigma))
    return weights / weights.sum()  # (size,)


def ssim(images: torch.Tensor, references: torch.Tensor, peak: float = 1.0,
         window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each image to its reference, (B,).

    Gaussian-weighted local statistics (11 taps, sigma 1.5) over the positions where the
    whole window fits, per channel, averaged over channels and positions; constants
    ``(0.01 peak)^2`` and ``(0.03 peak)^2``. Images smaller than the window use the largest
    odd window that fits (and a sigma scaled with it). Always computed in fp32, also inside
    a bf16 autocast region (bf16 local statistics move the score by ~0.005).
    """
    with torch.autocast(images.device.type, enabled=False):
        return _ssim_fp32(images.float(), references.float(), peak, window, sigma)


def _ssim_fp32(x: torch.Tensor, y: torch.Tensor, peak: float, window: int,
               sigma: float) -> torch.Tensor:
    batch, channels, height, width = x.shape
    size = min(window, height, width)
    size -= 1 - size % 2  # odd
    taps = _gaussian_window(size, sigma * size / window, x.device)
    # One depthwise separable convolution over the 5 maps a channel needs.
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    groups = 5 * channels
    rows = taps.view(1, 1, size, 1).expand(groups, 1, size, 1)
    cols = taps.view(1, 1, 1, size).expand(groups, 1, 1, size)
    local = F.conv2d(F.conv2d(maps, rows, groups=groups), cols, groups=groups)
    mu_x, mu_y, xx, yy, xy = local.split(channels, dim=1)  # each (B, C, h, w)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return score.flatten(1).mean(1)  # (B,)
