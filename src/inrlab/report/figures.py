"""The report's pictures: loss curves of several runs, and reproduction sheets with renders
at higher resolution next to classic upscales."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from inrlab.report.grids import save_picture


@dataclass
class Curves:
    """One run's losses: (inputs, seconds, loss) per logged train and validation record."""

    label: str
    train: list[tuple[int, float, float]] = field(default_factory=list)
    validation: list[tuple[int, float, float]] = field(default_factory=list)


def curves_from_metrics(label: str, records: Sequence[dict[str, Any]]) -> Curves:
    curves = Curves(label)
    for record in records:
        loss, inputs, seconds = record.get("loss"), record.get("inputs"), record.get("time_s")
        if not all(isinstance(v, (int, float)) for v in (loss, inputs, seconds)):
            continue
        if not math.isfinite(loss) or loss <= 0:
            continue  # a log axis cannot show it
        target = {"train": curves.train, "validation": curves.validation}.get(record.get("kind"))
        if target is not None:
            target.append((int(inputs), float(seconds), float(loss)))
    return curves


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 2 * 3600:
        return "h", 3600.0
    if seconds >= 2 * 60:
        return "min", 60.0
    return "s", 1.0


def plot_losses(runs: Sequence[Curves], path: Path) -> None:
    """Train (solid) and validation (dashed, dots) loss of every run against inputs (top)
    and training time (bottom), log y, one colour per run, legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max((p[1] for run in runs for p in run.train + run.validation), default=0.0)
    unit, scale = _time_unit(longest)
    legend_rows = len(runs)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5 + 0.12 * legend_rows),
                                         constrained_layout=True)
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for index, run in enumerate(runs):
        colour = colours(index % colours.N)
        for points, style, suffix in ((run.train, "-", "train"),
                                      (run.validation, "--", "validation")):
            if not points:
                continue
            inputs, seconds, losses = zip(*points)
            marker = "o" if style == "--" else None
            label = f"{run.label} ({suffix})"
            top.plot(inputs, losses, style, color=colour, marker=marker, markersize=3,
                     linewidth=1.2, label=label)
            bottom.plot([s / scale for s in seconds], losses, style, color=colour,
                        marker=marker, markersize=3, linewidth=1.2)
    for axes, xlabel in ((top, "inputs (images seen)"), (bottom, f"training time ({unit})")):
        axes.set_yscale("log")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("loss (log scale)")
        axes.grid(True, which="both", alpha=0.3)
    top.set_title("train (solid) and validation (dashed) loss")
    if any(run.train or run.validation for run in runs):
        figure.legend(loc="outside lower center", ncol=2 if legend_rows > 4 else 1,
                      fontsize="small", frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ----------------------------------------------------------------------- reproductions
CELL = 128  # display size of one cell (pixels), images are scaled up with nearest neighbour
HEADER = 34


@torch.no_grad()
def reproduction_columns(model: torch.nn.Module, images: torch.Tensor,
                         scales: Sequence[int] = (2, 4)) -> list[tuple[str, torch.Tensor]]:
    """(title, images (N, C, h, w)) columns: original, reproduction and, for models that can
    render at any size (``encode`` + ``decode(code, shape)``), renders at each scale next to
    nearest-neighbour and bicubic upscales of the original."""
    height, width = images.shape[-2:]
    output = model(images)
    output = output[0] if isinstance(output, (tuple, list)) else output
    columns = [("original", images), ("reproduction", output.clamp(0, 1))]
    can_render = hasattr(model, "encode") and hasattr(model, "decode")
    if not can_render:
        return columns
    codes = render_code(model, images)
    for scale in scales:
        size = (height * scale, width * scale)
        columns += [
            (f"render {scale}x", model.decode(codes, size).clamp(0, 1)),
            (f"nearest {scale}x", F.interpolate(images, size=size, mode="nearest")),
            (f"bicubic {scale}x", F.interpolate(images, size=size, mode="bicubic",
                                                align_corners=False).clamp(0, 1)),
        ]
    return columns


def render_code(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The code to render ``images`` from at other sizes: ``model.render_code`` where the model
    has one (an upscaler encodes the image as it is), else ``model.encode``."""
    return getattr(model, "render_code", model.encode)(images)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def reproduction_sheet(columns: Sequence[tuple[str, torch.Tensor]], path: Path,
                       cell: int = CELL) -> tuple[int, int]:
    """One row per image, one titled column per entry; every picture is scaled with nearest
    neighbour to ``cell`` pixels on its longer side, so pixels stay crisp. Returns (W, H)."""
    count = columns[0][1].shape[0]
    gap = 6
    sheet = Image.new("RGB", (len(columns) * (cell + gap) + gap,
                              HEADER + count * (cell + gap) + gap), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    for c, (title, images) in enumerate(columns):
        left = gap + c * (cell + gap)
        draw.text((left + 2, 8), title, fill=(235, 235, 235), font=font)
        images = images.detach().float().clamp(0, 1).cpu()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        for r in range(count):
            array = (images[r, :3].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            picture = Image.fromarray(array)
            factor = cell / max(picture.size)
            size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
            sheet.paste(picture.resize(size, Image.NEAREST), (left, HEADER + gap // 2
                                                               + r * (cell + gap)))
    save_picture(sheet, path)
    return sheet.size
