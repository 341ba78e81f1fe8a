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

from inrlab.models.contract import Autoencoder
from inrlab.storage.grids import save_picture


SHARED_METRICS = {"psnr": "validation PSNR (dB)", "ssim": "validation SSIM"}


@dataclass
class Curves:
    """One run's curves: (inputs, seconds, value) per logged train and validation record of
    the loss, and of each validation metric in ``SHARED_METRICS``."""

    label: str
    loss_function: str = ""
    train: list[tuple[int, float, float]] = field(default_factory=list)
    validation: list[tuple[int, float, float]] = field(default_factory=list)
    metrics: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)


def curves_from_metrics(label: str, records: Sequence[dict[str, Any]],
                        loss_function: str = "") -> Curves:
    curves = Curves(label, loss_function)
    for record in records:
        kind, inputs, seconds = record.get("kind"), record.get("inputs"), record.get("time_s")
        if not all(isinstance(v, (int, float)) for v in (inputs, seconds)):
            continue
        loss = record.get("loss")
        target = {"train": curves.train, "validation": curves.validation}.get(kind)
        # A log axis cannot show a loss of 0 or less.
        if target is not None and _finite(loss) and loss > 0:
            target.append((int(inputs), float(seconds), float(loss)))
        if kind == "validation":
            for name in SHARED_METRICS:
                if _finite(record.get(name)):
                    curves.metrics.setdefault(name, []).append(
                        (int(inputs), float(seconds), float(record[name])))
    return curves


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 2 * 3600:
        return "h", 3600.0
    if seconds >= 2 * 60:
        return "min", 60.0
    return "s", 1.0


def shared_metrics(runs: Sequence[Curves]) -> list[str]:
    """The validation metrics every run with validation records has (PSNR, SSIM): the
    panels that compare runs whatever loss each one trained with."""
    validated = [run for run in runs if run.validation or run.metrics]
    return [name for name in SHARED_METRICS
            if validated and all(run.metrics.get(name) for run in validated)]


def plot_losses(runs: Sequence[Curves], path: Path) -> None:
    """Curves of every run against inputs (left) and training time (right), one colour per
    run, legend below: a loss panel per loss function (train solid, validation dashed, log
    y), then a panel per validation metric all runs share. Losses of different functions
    never share an axis: an L1 curve below an MSE curve says nothing about which is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(run.loss_function or "?", []).append(index)
    metrics = shared_metrics(runs)
    rows = len(groups) + len(metrics)
    longest = max((p[1] for run in runs for p in run.train + run.validation), default=0.0)
    unit, scale = _time_unit(longest)
    figure, axes = plt.subplots(rows, 2, figsize=(13, 3.4 * rows + 0.5 + 0.12 * len(runs)),
                                constrained_layout=True, squeeze=False)
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    colour = [colours(index % colours.N) for index in range(len(runs))]
    several = len(groups) > 1

    def draw(row: int, points: Sequence[tuple[int, float, float]], style: str, index: int,
             label: str | None) -> None:
        if not points:
            return
        inputs, seconds, values = zip(*points)
        marker = "o" if style == "--" else None
        axes[row][0].plot(inputs, values, style, color=colour[index], marker=marker,
                          markersize=3, linewidth=1.2, label=label)
        axes[row][1].plot([s / scale for s in seconds], values, style, color=colour[index],
                          marker=marker, markersize=3, linewidth=1.2)

    for row, (loss_function, members) in enumerate(groups.items()):
        for index in members:
            run = runs[index]
            name = f"{run.label} [{loss_function}]" if several else run.label
            draw(row, run.train, "-", index, name)
            draw(row, run.validation, "--", index, None if run.train else name)
        title = f"{loss_function} loss: train (solid), validation (dashed)"
        if several:
            title += (f" -- {len(members)} of {len(runs)} runs; the loss functions differ, "
                      "compare runs by the metric panels below")
        axes[row][0].set_title(title, loc="left", fontsize="medium")
        for axis in axes[row]:
            axis.set_yscale("log")
            axis.set_ylabel(f"{loss_function} loss (log)")
    for offset, name in enumerate(metrics):
        row = len(groups) + offset
        for index, run in enumerate(runs):
            draw(row, run.metrics.get(name, []), "--", index, None)
        axes[row][0].set_title(f"{SHARED_METRICS[name]}, every run (higher is better)",
                               loc="left", fontsize="medium")
        for axis in axes[row]:
            axis.set_ylabel(SHARED_METRICS[name])
    for row in range(rows):
        axes[row][0].set_xlabel("inputs (images seen)")
        axes[row][1].set_xlabel(f"training time ({unit})")
        for axis in axes[row]:
            axis.grid(True, which="both", alpha=0.3)
    if any(run.train or run.validation for run in runs):
        figure.legend(loc="outside lower center", ncol=2 if len(runs) > 4 else 1,
                      fontsize="small", frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ----------------------------------------------------------------------- reproductions
CELL = 128  # display size of one cell (pixels), images are scaled up with nearest neighbour
HEADER = 34


@torch.no_grad()
def reproduction_columns(model: Autoencoder, images: torch.Tensor,
                         scales: Sequence[int] = (2, 4), pca: Any = None,
                         refined: tuple[str, torch.Tensor] | None = None
                         ) -> list[tuple[str, torch.Tensor]]:
    """(title, images (N, C, h, w)) columns: original, reproduction, ``refined`` (a titled
    column of reproductions from refined codes, when given), the PCA reconstruction at the
    model's code size (``pca``, a ``baselines.PCA``, when given) and, for models that can
    render at any size (``encode`` + ``decode(code, shape)``), renders at each scale next to
    bicubic upscales of the original and of the PCA reconstruction. (A nearest-neighbour
    upscale would look exactly like the original: every picture is shown that way.)"""
    height, width = images.shape[-2:]
    output = model(images)
    columns = [("original", images), ("reproduction", output.clamp(0, 1))]
    if refined is not None:
        columns.append((refined[0], refined[1].clamp(0, 1)))
    linear = pca.reconstruct(images) if pca is not None else None
    if linear is not None:
        columns.append((f"PCA, {pca.components} floats", linear))
    if not model.renders_any_size:
        return columns

    def bicubic(pictures: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(pictures, size=size, mode="bicubic", align_corners=False).clamp(0, 1)

    from inrlab.report.render import check_render_size

    codes = model.render_code(images)
    for scale in scales:
        size = (height * scale, width * scale)
        check_render_size(images.shape[0], images.shape[1], size, key="report renders")
        columns += [(f"render {scale}x", model.decode(codes, size).clamp(0, 1)),
                    (f"bicubic {scale}x", bicubic(images, size))]
        if linear is not None:
            columns.append((f"PCA bicubic {scale}x", bicubic(linear, size)))
    return columns


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
