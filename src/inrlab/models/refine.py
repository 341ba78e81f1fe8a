"""Codes to render from: the encoder's, or refined per image at test time."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F

from inrlab.errors import InrlabError
from inrlab.models.autoencoders import EncoderDecoder
from inrlab.models.contract import Autoencoder


def check_refinement(steps: int, learnrate: float, rate_weight: float | None = None) -> None:
    """Bad input, named by the CLI flags, unless ``steps`` >= 0, ``learnrate`` > 0 and
    ``rate_weight`` (when given) >= 0; NaN fails too."""
    if steps < 0:
        raise InrlabError(f"--refine-steps must be 0 or more, got {steps}", key="--refine-steps")
    if not learnrate > 0:
        raise InrlabError(f"--refine-learnrate must be above 0, got {learnrate}",
                          key="--refine-learnrate")
    if rate_weight is not None and not rate_weight >= 0:
        raise InrlabError(f"--refine-rate-weight must be 0 or more, got {rate_weight}",
                          key="--refine-rate-weight")


def render_codes(model: Autoencoder, images: torch.Tensor, refine_steps: int = 0,
                 refine_learnrate: float = 0.01) -> torch.Tensor:
    """The codes to render ``images`` from at other sizes: ``model.render_code``, or with
    ``refine_steps`` those codes refined for each image (``refine_codes``)."""
    if not refine_steps:
        return model.render_code(images)
    if not model.refinable:
        raise InrlabError(f"{model.class_name} has no separate encoder and bottleneck: "
                          "its codes cannot be refined", key="--refine-steps")
    return refine_codes(model, images, refine_steps, refine_learnrate)


def refine_codes(model: EncoderDecoder, images: torch.Tensor, steps: int,
                 learnrate: float = 0.01, rate_weight: float | None = None,
                 report: Callable[[int, torch.Tensor], None] | None = None,
                 report_at: Collection[int] | None = None) -> torch.Tensor:
    """Test-time refinement: the stored codes of ``images`` after ``steps`` Adam steps on
    each image's encoder output (``render_code``'s start), against the squared error of the
    stored code's render at the images' size -- plus ``rate_weight`` (default: the model's)
    times its bits per pixel when the code is entropy coded. The weights stay as they are
    (only the codes get gradients); call it in eval mode. Encoding spends the compute; the
    decoder still gets only a stored code. ``report(step, renders)`` sees the renders
    before each step and after the last, or only at the steps in ``report_at`` (each
    report decodes every image once more, so a timed refinement reports rarely)."""
    shape = tuple(images.shape[-2:])
    bottleneck = model.bottleneck
    with torch.no_grad():
        raw = model.encoder(images)
    raw.requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=learnrate)
    weight = bottleneck.rate_weight if rate_weight is None else rate_weight
    for step in range(steps + 1):
        if report is not None and (report_at is None or step in report_at):
            with torch.no_grad():
                report(step, model.decode(bottleneck.stored(raw), shape))
        if step == steps:
            break
        with torch.enable_grad():  # also when called under no_grad
            loss = F.mse_loss(model.decode(bottleneck.stored(raw), shape), images)
            if bottleneck.entropy_coded and weight:
                # priced between levels (the stored levels' price has no useful gradient)
                loss = loss + bottleneck.rate_loss(bottleneck.bits(raw), shape[0] * shape[1],
                                                   weight)
            raw.grad, = torch.autograd.grad(loss, [raw])
        optimizer.step()
    return bottleneck.stored(raw).detach()
