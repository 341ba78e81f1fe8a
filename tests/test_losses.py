"""Loss names, weighted sums of them, and the image losses (edge-aware, SSIM)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from inrlab.errors import InrlabError
from inrlab.train.losses import gradient_loss, loss_function, ssim_loss


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 3, 8, 8, generator=generator)


@pytest.mark.parametrize("name, reference", [
    ("l1", F.l1_loss), ("MAE", F.l1_loss), ("l2", F.mse_loss), ("MSELoss", F.mse_loss),
    ("L1Loss", F.l1_loss), ("smooth_l1_loss", F.smooth_l1_loss),
    ("ce", F.cross_entropy), ("CrossEntropyLoss", F.cross_entropy),
    ("kl_div", lambda x, y: F.kl_div(x, y, reduction="sum") / x.shape[0]),
])
def test_loss_names_of_the_seed_and_of_torch(pair, name, reference) -> None:
    output, target = pair
    if name in ("ce", "CrossEntropyLoss", "kl_div"):
        target = target.softmax(1)
    if name == "kl_div":
        output = output.log_softmax(1)
    assert torch.allclose(loss_function(name)(output, target), reference(output, target))


def test_a_weighted_sum_of_losses_is_the_sum_of_its_weighted_terms(pair) -> None:
    output, target = pair
    total = loss_function("l2 + 0.25 * gradient + 1e-1*ssim")(output, target)
    expected = (F.mse_loss(output, target) + 0.25 * gradient_loss(output, target)
                + 0.1 * ssim_loss(output, target))
    assert torch.allclose(total, expected)


@pytest.mark.parametrize("spec, message", [
    ("l7", "unknown loss_function 'l7'"),
    ("relu", "unknown loss_function 'relu'"),  # a torch function, but not a loss
    ("BatchNorm2d", "unknown loss_function 'BatchNorm2d'"),  # a torch.nn class, not a loss
    ("l2 +", "cannot read loss_function 'l2 +'"),
    ("l2 - gradient", "terms are joined by '+'"),
])
def test_unreadable_or_unknown_losses_are_errors_on_the_key(spec, message) -> None:
    with pytest.raises(InrlabError, match=re.escape(message)) as error:
        loss_function(spec)
    assert error.value.key == "loss_function"


def test_the_edge_loss_sees_blur_and_ignores_a_brightness_offset() -> None:
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0  # a vertical step edge
    blurred = F.avg_pool2d(F.pad(edge, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert gradient_loss(edge + 0.2, edge) == pytest.approx(0.0, abs=1e-7)
    assert F.mse_loss(edge + 0.2, edge) > F.mse_loss(blurred, edge)  # MSE prefers the blur
    assert gradient_loss(blurred, edge) > gradient_loss(edge + 0.2, edge) + 0.05
    assert ssim_loss(edge, edge) == pytest.approx(0.0, abs=1e-6)
    assert ssim_loss(blurred, edge) > 0.05


def test_an_image_loss_on_scattered_pixels_says_to_leave_train_pixels_out() -> None:
    with pytest.raises(ValueError, match="leave train_pixels out"):
        gradient_loss(torch.rand(2, 256, 3), torch.rand(2, 256, 3))


def test_an_experiment_trains_with_an_edge_aware_sum_and_rejects_it_on_pixels(
        write, cli, tmp_path) -> None:
    from conftest import TINY_EXPERIMENT

    text = TINY_EXPERIMENT.replace("max_inputs: 256", "max_inputs: 64\n"
                                   "loss_function: l2 + 0.1 * gradient")
    code, _, err = cli("run", write("edge.yml", "matrix:\n  hid: [8]\n" + text))
    assert code == 0, err
    result = json.loads((tmp_path / "runs" / "tiny" / "hid:8" / "result.json").read_text())
    assert result["status"] == "complete" and result["best_validation_loss"] > 0

    # The local-latent decoder can train on scattered pixels, which an edge loss cannot see.
    pixels = text.replace("loss_function:", "train_pixels: 16\nloss_function:").replace(
        "ImageManifoldDecoder(6, 3, num_hidden=${hid}, num_blocks=1, default_shape=SHAPE[1:])",
        "LocalLatentDecoder(latent_channels=6, grid=None, num_output_channels=3, "
        "num_hidden=${hid}, default_shape=SHAPE[1:])").replace(
        "EncoderConv2d(SHAPE, 6, channels=(4,))", "EncoderConvMap(3, 6, channels=8)")
    path = write("pixels.yml", "matrix:\n  hid: [8]\n" + pixels)
    code, _, err = cli("run", path)
    assert code == 2 and "Traceback" not in err
    assert "loss_function" in err and "leave train_pixels out" in err and "pixels.yml" in err
