"""``inrlab evaluate``: a trained model's code against the codecs at the same bytes, and its
renders at other scales against the upscalers, on one set of images."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from inrlab.errors import InrlabError
from inrlab.evaluate import pillow
from inrlab.evaluate.model import (Refinement, check_model, code_rows, quantise_uniform,
                                   scale_rows)
from inrlab.evaluate.rows import (Images, Row, bits_per_pixel, group_by_size, make_row,
                                  per_image_ms, timed)
from inrlab.evaluate.targets import (Target, find_runs, image_files, load_target,
                                     read_images)
from inrlab.models.refine import check_refinement
from inrlab.report.baselines import PCA
from inrlab.storage.rundir import RunDir
from inrlab.train.trainer import resolve_device

DEFAULT_MAX_IMAGES = 1000  # images of a run's validation set scored (without --images)
CODECS = ("jpeg", "webp", "avif")
UPSCALERS = ("bicubic", "lanczos")
SHOWN = 6  # images in the scales sheet


def say(message: str) -> None:
    """Progress, on stderr: stdout keeps the table (or the JSON) alone."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class EvaluateOptions:
    """What ``inrlab evaluate`` computes (its flags)."""

    images: Path | None = None  # a folder of images; None: each run's validation set
    bytes: bool = False
    scales: Sequence[float] = ()
    refinement: Refinement = field(default_factory=Refinement)
    budget: float | None = None  # bytes per image of the anchors; None: the code's
    max_images: int = DEFAULT_MAX_IMAGES
    avif_speed: int = pillow.DEFAULT_AVIF_SPEED
    device: str = "auto"
    checkpoint: str = "best"

    def check(self) -> None:
        for scale in self.scales:
            if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 1):
                raise InrlabError(f"--scales takes factors above 1 (the truth is that many "
                                  f"times the input's size), got {scale}", key="--scales")
        refinement = self.refinement
        check_refinement(refinement.steps, refinement.learnrate, refinement.rate_weight)
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            raise InrlabError(f"--budget must be a number of bytes above 0, got {self.budget}",
                              key="--budget")
        if self.max_images < 1:
            raise InrlabError(f"--max-images must be at least 1, got {self.max_images}",
                              key="--max-images")
        if not 0 <= self.avif_speed <= 10:
            raise InrlabError(f"--avif-speed must be 0 (slowest, smallest) to 10, got "
                              f"{self.avif_speed}", key="--avif-speed")
        if self.images is not None:
            image_files(self.images)


@dataclass
class Evaluation:
    """Every row, and the rate-distortion points of the codecs (each quality tried), by
    target and method: (bits per pixel, PSNR)."""

    rows: list[Row] = field(default_factory=list)
    curves: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    # columns of the scales sheet: title -> the first images of the first image size
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)

    def rows_of(self, target: str) -> list[Row]:
        return [row for row in self.rows if row.target == target]


def resolve_targets(targets: Sequence[Path], runs_dir: Path, checkpoint: str) -> list[Target]:
    """Every run the targets name, loaded (before any image is read or scored); an
    experiment file's entries without a checkpoint yet are left out with a note."""
    found = [run for target in targets
             for run in find_runs(Path(target), runs_dir, checkpoint, note=say)]
    seen, loaded = set(), []
    for run_dir, name in found:
        path = run_dir.path if isinstance(run_dir, RunDir) else run_dir
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        say(f"loading {name or path}")
        target = load_target(run_dir, name, checkpoint)
        if any(other.name == target.name for other in loaded):  # same name, other runs dir
            target.name = str(path)
        loaded.append(target)
    return loaded


def evaluate(targets: Sequence[Target], options: EvaluateOptions) -> Evaluation:
    """Score every target on its images (``options.images``, else its validation set):
    ``--bytes`` rows and ``--scales`` rows (``--bytes`` when neither is asked for)."""
    options.check()
    device = resolve_device(options.device)
    files = image_files(options.images) if options.images is not None else None
    evaluation = Evaluation()
    anchors = [t for t in targets if check_model(t.model, t.name).anchor_method]
    read: dict[int, list[torch.Tensor]] = {}  # --images, read once per channel count
    for target in targets:
        model = target.model.to(device)
        channels = model.input_shape[0]
        if files is not None:
            if channels not in read:
                read[channels] = read_images(files, channels, say)
            named = list(zip(files, read[channels]))
        else:
            say(f"{target.name}: reading its validation set")
            images = target.validation_images(options.max_images)
            named = [(Path(f"validation image {i}"), image) for i, image in enumerate(images)]
        if options.bytes or not options.scales:
            say(f"{target.name}: code against the codecs at the same bytes per image")
            bytes_rows(target, [(n, i.to(device)) for n, i in named], options, evaluation,
                       [a for a in anchors if a is not target])
        for scale in options.scales:
            say(f"{target.name}: {scale:g}x renders against the upscalers")
            scale_table(target, [(n, i.to(device)) for n, i in named], scale, options,
                        evaluation, label=target.name if len(targets) > 1 else "")
    if not evaluation.rows:
        raise InrlabError("nothing to score: no target gave a row (the lines above say why)")
    return evaluation


def bytes_rows(target: Target, named: list[tuple[Path, torch.Tensor]], options: EvaluateOptions,
               evaluation: Evaluation, anchors: Sequence[Target] = ()) -> None:
    """The ``--bytes`` rows of one target: its code, then PCA, JPEG, WebP and AVIF at the
    code's bytes per image (or more; ``--budget``: at those bytes instead), then each
    learned codec among the targets (``anchors``) at the bytes it was trained for."""
    model, name = target.model, target.name
    images = group_by_size([image for _, image in named])
    train = _train_images(target, images)
    rows, budget = code_rows(model, name, images, train, options.refinement)
    budget = options.budget or budget
    evaluation.rows += rows
    for row in rows:
        evaluation.curves.setdefault((name, row.method), []).append((row.bpp, row.psnr))
    code_floats = math.prod(model.encode(images[0][:1]).shape[1:])
    if train is not None:
        pca_rows = [pca_row(name, images[0], train, components, bits)
                    for components, bits in pca_settings(code_floats, budget)]
        evaluation.rows += pca_rows
        evaluation.curves[(name, "pca")] = [(row.bpp, row.psnr) for row in pca_rows]
    for codec in CODECS:
        say(f"{name}: {codec} at {budget:.1f} bytes per image")
        found = pillow.at_budget([i.cpu() for i in images], codec, budget, options.avif_speed)
        coded = found.coded
        detail = (f"quality {coded.quality}; payload {coded.payload:.1f} bytes per image, "
                  f"file {coded.file_bytes:.1f} ({pillow.HEADERS[codec]} excluded)")
        if not found.reached:
            detail += "; quality 100 stays under the code's bytes"
        evaluation.rows.append(make_row(
            name, codec, detail, coded.decoded, [i.cpu() for i in images], bytes=coded.payload,
            encode_ms=1e3 * coded.encode_s, decode_ms=1e3 * coded.decode_s))
        evaluation.curves[(name, codec)] = [(bits_per_pixel(size, images), psnr)
                                            for size, psnr in found.curve]
    for anchor in anchors:
        codec = anchor.model.to(images[0].device)
        try:
            row = code_rows(codec, name, images, None, Refinement())[0][0]
        except InrlabError as e:
            say(f"{name}: no {codec.anchor_method} row: {e}")
            continue
        row.method, row.detail = codec.anchor_method, f"{anchor.name}: {row.detail}"
        evaluation.rows.append(row)
        evaluation.curves[(name, row.method)] = [(row.bpp, row.psnr)]


def _train_images(target: Target, images: Images) -> torch.Tensor | None:
    """The run's training images when they have the scored images' size (PCA is fit on
    them, a float code's 8-bit range taken from their codes), else None (saying why)."""
    train = target.train_images() if len(images) == 1 else None
    if train is None or train.shape[1:] != images[0].shape[1:]:
        why = ("a model file holds no training images" if target.spec is None
               else "PCA needs images of the training images' size")
        say(f"{target.name}: no pca row: {why}")
        return None
    return train.to(images[0].device)


def pca_settings(code_floats: int, budget: float) -> list[tuple[int, int]]:
    """(components, bits per coefficient) of the PCA rows at ``budget`` bytes per image: as
    many components as the code has floats, in as many bits as fit (1 to 16; no such row
    when one bit each is over the budget: it would score another number of bytes); and as
    many components as fit at 8 and at 4 bits."""
    bits_each = int(8 * budget // code_floats)
    settings = [(code_floats, min(16, bits_each))] if bits_each >= 1 else []
    settings += [(max(1, int(8 * budget // bits)), bits) for bits in (8, 4)]
    return list(dict.fromkeys(settings))


@torch.no_grad()
def pca_row(name: str, images: torch.Tensor, train: torch.Tensor, components: int,
            bits: int) -> Row:
    """PCA with ``components`` components fit on ``train``, each coefficient stored in
    ``bits`` bits (uniform over its range on the training images)."""
    pca = PCA.fit(train.cpu(), components)
    mean, basis = pca.mean.float(), pca.basis.float()
    reference = (train.cpu().flatten(1) - mean) @ basis.T  # (n, k) training coefficients

    def encode() -> torch.Tensor:
        return quantise_uniform((images.cpu().flatten(1) - mean) @ basis.T, reference, bits)

    coefficients, encode_s = timed(encode)
    decoded, decode_s = timed(lambda: (coefficients @ basis + mean).view(images.shape))
    count = images.shape[0]
    fitted = "" if pca.components == components else f" (of {components} asked: the " \
        "training images carry no more)"
    plural = "s" if bits != 1 else ""
    return make_row(name, "pca", f"{pca.components} components at {bits} bit{plural}{fitted}",
                    [decoded], [images.cpu()], bytes=math.ceil(pca.components * bits / 8),
                    encode_ms=per_image_ms(encode_s, count),
                    decode_ms=per_image_ms(decode_s, count))


def scale_table(target: Target, named: list[tuple[Path, torch.Tensor]], scale: float,
                options: EvaluateOptions, evaluation: Evaluation, label: str = "") -> None:
    """The ``--scales`` rows at ``scale``: each image is the truth, its box-filtered
    downscale (8 bits) the input, and the model's render, bicubic and Lanczos of the input
    and of the model's own decode of it are scored against the truth."""
    model, name = target.model, target.name
    if not model.renders_any_size:
        say(f"{name}: no {scale:g}x rows: {type(model).__name__} decodes at its input's size "
            "only")
        return
    for path, image in named:
        if min(image.shape[-2:]) < scale:
            raise InrlabError(f"{path} is {image.shape[-1]}x{image.shape[-2]}, too small for "
                              f"--scales {scale:g} (each side needs at least {scale:g} "
                              "pixels)", key="--scales", path=path)
    truths = group_by_size([image for _, image in named])
    lows = [(max(1, round(t.shape[-2] / scale)), max(1, round(t.shape[-1] / scale)))
            for t in truths]
    fixed = model.input_shape[1:]
    if fixed[0] is not None and any(low != tuple(fixed) for low in lows):
        wanted = f"{round(fixed[1] * scale)}x{round(fixed[0] * scale)}"
        raise InrlabError(f"{name} encodes {fixed[1]}x{fixed[0]} images only; --scales "
                          f"{scale:g} of {truths[0].shape[-1]}x{truths[0].shape[-2]} images "
                          f"gives {lows[0][1]}x{lows[0][0]} inputs: give --images of {wanted} "
                          "pixels", key="--scales")
    device = truths[0].device
    cpu_truths = [t.cpu() for t in truths]
    inputs = pillow.resample(cpu_truths, lows, "box")  # (B, C, h, w), 8-bit values
    sizes = [tuple(t.shape[-2:]) for t in truths]
    rows, renders, own = scale_rows(model, name, [i.to(device) for i in inputs], truths, scale,
                           options.refinement)
    upscaled = {method: pillow.resample(inputs, sizes, method) for method in UPSCALERS}
    for method in UPSCALERS:
        rows.append(make_row(name, method, f"Pillow {method} of the 8-bit input",
                             upscaled[method], cpu_truths, scale=scale))
    for method in UPSCALERS:
        rows.append(make_row(name, f"{method} of reconstruction", f"Pillow {method} of the "
                             "model's own decode of the input (8-bit)",
                             pillow.resample([o.cpu() for o in own], sizes, method),
                             cpu_truths, scale=scale))
    evaluation.rows += rows
    shown = slice(0, SHOWN)
    pictures = evaluation.pictures
    pictures.setdefault("truth", cpu_truths[0][shown])
    pictures.setdefault(f"input (1/{scale:g})", inputs[0][shown])
    pictures.setdefault(f"lanczos {scale:g}x", upscaled["lanczos"][0][shown])
    pictures[f"{label} render {scale:g}x".strip()] = renders[0][shown].cpu()

