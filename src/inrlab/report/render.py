"""``inrlab render``: encode images with a run's best checkpoint and render them at any size,
or render the path between two images' codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch

from inrlab.data.images import read_image_file, resize_nearest, set_channels
from inrlab.errors import InrlabError
from inrlab.experiment.trained import open_trained
from inrlab.models.contract import Autoencoder
from inrlab.models.refine import check_refinement, render_codes
from inrlab.storage.grids import image_grid, save_png, to_8_bits
from inrlab.storage.paths import check_output_directory, check_output_file
from inrlab.storage.rundir import CHECKPOINTS
from inrlab.train.trainer import resolve_device

SIZE = re.compile(r"^\s*(\d+)\s*(?:[x×,]\s*(\d+))?\s*$")
SCALE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*[x×]\s*$")
PRECISIONS = ("auto", "fp32", "bf16")
PROBE_PIXELS = 4096  # pixels per image on which "auto" compares bf16 with fp32
MAX_RENDER_PIXELS = 2**28  # output pixels (all images of one call) rendered without --max-pixels
MEMORY_SHARE = 0.25  # of the available memory a render's output may take
BYTES_PER_VALUE = 9  # per output value: the fp32 render, its clamped copy, the 8-bit file


def parse_size(text: str) -> tuple[int, int] | float:
    """``"64"`` -> (64, 64), ``"48x64"`` -> (48, 64) as (H, W), both at least 1; ``"2x"`` ->
    2.0, a scale of each input's own size (``render_size``)."""
    scale = SCALE.match(str(text))
    if scale:
        factor = float(scale.group(1))
        if not factor > 0:
            raise InrlabError(f"--size scale must be above 0, got '{text}'", key="--size")
        return factor
    match = SIZE.match(str(text))
    if not match:
        raise InrlabError(f"--size must be H, HxW or a scale (e.g. 64, 48x64 or 2x), got "
                          f"'{text}'", key="--size")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if height < 1 or width < 1:
        raise InrlabError(f"--size must be at least 1x1, got '{text}'", key="--size")
    return height, width


def render_size(size: tuple[int, int] | float, image: torch.Tensor) -> tuple[int, int]:
    """The (H, W) to render ``image`` (C, h, w) at: ``size`` itself, or a scale of (h, w)."""
    if isinstance(size, tuple):
        return size
    return max(1, round(image.shape[-2] * size)), max(1, round(image.shape[-1] * size))


def read_image(path: Path, shape: Sequence[int]) -> torch.Tensor:
    """An image file as (C, H, W) floats in [0, 1] in the model's channels and size (its own
    size where the model takes any); transparency is composited on black (like the tile
    sheets)."""
    rgb = read_image_file(path).float() / 255  # (3, H, W)
    image = set_channels(rgb, int(shape[0]))
    if shape[1] is not None and tuple(image.shape[-2:]) != tuple(shape[1:]):
        print(f"note: {path.name} is {image.shape[-1]}x{image.shape[-2]}, resized (nearest) to "
              f"the run's {shape[2]}x{shape[1]}")
        image = resize_nearest(image.unsqueeze(0), tuple(shape[1:]))[0]
    return image


def check_render_size(count: int, channels: int, size: tuple[int, int],
                      max_pixels: int | None = None, key: str = "--size") -> None:
    """Bad input, before anything is allocated, when ``count`` images of ``channels``
    channels rendered at ``size`` (H, W) would take more than a quarter of the available
    memory or more than ``max_pixels`` output pixels (default ``MAX_RENDER_PIXELS``;
    ``--max-pixels`` raises it, the memory bound stays)."""
    from inrlab.machine import available_memory

    pixels = count * size[0] * size[1]
    needed = pixels * channels * BYTES_PER_VALUE
    room = int(available_memory() * MEMORY_SHARE)
    limit = MAX_RENDER_PIXELS if max_pixels is None else max_pixels
    if pixels > limit or needed > room:
        why = (f"over the limit of {limit:,} output pixels (--max-pixels raises it)"
               if pixels > limit else f"more than a quarter of the {room * 4 / 2**30:.1f} GiB "
               "of memory available")
        raise InrlabError(f"rendering {count} image{'s' if count != 1 else ''} at "
                          f"{size[1]}x{size[0]} is {pixels:,} pixels and would take "
                          f"{needed / 2**30:.1f} GiB, {why}; ask for a smaller {key}",
                          key=key)


def checked_output(output: Path | None, count: int) -> bool:
    """Whether ``output`` is the one PNG file of a render of ``count`` outputs (else a
    directory), after checking it can be written there (bad input naming ``-o``)."""
    if output is None:
        return False
    single_file = output.suffix.lower() == ".png" and count == 1
    (check_output_file if single_file else check_output_directory)(output, "-o")
    return single_file


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InrlabError(f"--precision must be one of {', '.join(PRECISIONS)}, got "
                          f"'{precision}'", key="--precision")


@torch.no_grad()
def bf16_keeps_8_bits(model: Autoencoder, codes: torch.Tensor, size: tuple[int, int],
                      pixels: int = PROBE_PIXELS) -> bool:
    """Whether the decoder renders ``codes`` at ``size`` to the same 8-bit colours in bf16
    (autocast) as in fp32, on ``pixels`` random pixels of each image."""
    decoder = model.implicit_decoder
    count = size[0] * size[1]
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, count, (codes.shape[0], min(pixels, count)),
                          generator=generator).to(codes.device)  # (B, n)
    exact = decoder.query_pixels(codes, size, index)  # (B, n, C)
    with torch.autocast(codes.device.type, dtype=torch.bfloat16):
        low = decoder.query_pixels(codes, size, index)
    return torch.equal(to_8_bits(exact), to_8_bits(low))


@torch.no_grad()
def decode_at_precision(model: Autoencoder, codes: torch.Tensor, size: tuple[int, int],
                        precision: str = "auto") -> tuple[torch.Tensor, str]:
    """(images (B, C, H, W) in [0, 1] as fp32, the precision used) of ``codes`` rendered
    at ``size``. ``"bf16"`` runs the decoder under bf16 autocast; ``"auto"`` does so on a
    CUDA device when a probe of pixels comes out the same to 8 bits as in fp32
    (``bf16_keeps_8_bits``), and renders in fp32 otherwise and on a CPU."""
    check_precision(precision)
    if precision == "auto":
        implicit = model.implicit_decoder is not None
        precision = ("bf16" if codes.device.type == "cuda" and implicit
                     and bf16_keeps_8_bits(model, codes, size) else "fp32")
    if precision == "bf16":
        with torch.autocast(codes.device.type, dtype=torch.bfloat16):
            images = model.decode(codes, size)
    else:
        images = model.decode(codes, size)
    return images.float().clamp(0, 1), precision


@torch.no_grad()
def render_run(run_path: Path, inputs: Sequence[Path], size: tuple[int, int] | float,
               output: Path | None = None, interpolate: Sequence[Path] | None = None,
               steps: int = 8, device: str = "auto", precision: str = "auto",
               refine_steps: int = 0, refine_learnrate: float = 0.01,
               checkpoint: str = "best", max_pixels: int | None = None) -> list[Path]:
    """Render each input (and the interpolation path, if asked) at ``size`` on ``device``
    (or, given a float, at that scale of each input's size as the model encodes it) in
    ``precision`` (``decode_at_precision``), from the encoder's codes or, with
    ``refine_steps``, those codes refined for each image (Adam at ``refine_learnrate``);
    returns the PNG files written. ``checkpoint``: "best" (else the last) or "last" weights.
    Rendering goes in pixel chunks sized by the device's memory, so memory stays bounded;
    a size whose output would not fit is bad input first (``check_render_size``)."""
    if steps < 2:
        raise InrlabError(f"--steps must be at least 2 (both ends), got {steps}", key="--steps")
    check_refinement(refine_steps, refine_learnrate)
    check_precision(precision)
    single_file = checked_output(output, len(inputs) + bool(interpolate))
    if max_pixels is not None and max_pixels < 1:
        raise InrlabError(f"--max-pixels must be at least 1, got {max_pixels}",
                          key="--max-pixels")
    where = resolve_device(device)
    if checkpoint not in CHECKPOINTS:
        raise InrlabError(f"--checkpoint must be best or last, got {checkpoint!r}",
                          key="--checkpoint")
    trained = open_trained(run_path, checkpoint)
    model = trained.model
    if not model.renders_any_size:
        raise InrlabError(f"{model.class_name} has no implicit decoder, so it cannot "
                          "render at other sizes", path=run_path)
    shape = model.input_shape
    model.to(where)
    wanted = f"{size[0]}x{size[1]}" if isinstance(size, tuple) else f"{size:g}x scale"
    print(f"rendering with {trained.source} ({trained.name}) at {wanted} on {where}")
    jobs = [(f"{Path(p).stem}", [Path(p)]) for p in inputs]
    if interpolate:
        a, b = (Path(p) for p in interpolate)
        jobs.append((f"interpolate-{a.stem}-{b.stem}", [a, b]))
    images = {p: read_image(p, shape) for _, paths in jobs for p in paths}  # fail before writing
    for _, paths in jobs:
        if len({tuple(images[p].shape) for p in paths}) > 1:
            raise InrlabError(f"--interpolate needs two images of one size; "
                              f"{paths[0].name} and {paths[1].name} differ", key="--interpolate")
    for _, paths in jobs:  # every size checked before anything is rendered or written
        count = steps if len(paths) == 2 else 1
        check_render_size(count, shape[0], render_size(size, images[paths[0]]), max_pixels)
    home = run_path if trained.run_dir is not None else run_path.parent  # a model file's folder
    directory = output if output is not None and not single_file else home / "renders"
    written = []
    for stem, paths in jobs:
        height, width = render_size(size, images[paths[0]])
        name = f"{stem}-{height}x{width}.png"
        codes = render_codes(model, torch.stack([images[p] for p in paths]).to(where),
                            refine_steps, refine_learnrate)
        if len(paths) == 2:
            weights = torch.linspace(0, 1, steps, device=where)
            weights = weights.view(-1, *([1] * (codes.dim() - 1)))
            codes = codes[0] * (1 - weights) + codes[1] * weights  # (steps, *code)
        rendered, used = decode_at_precision(model, codes, (height, width), precision)
        rendered = rendered.cpu()
        picture = rendered[0] if rendered.shape[0] == 1 else image_grid(rendered, steps, 2)
        if picture.shape[0] == 1:
            picture = picture.expand(3, -1, -1)
        path = output if single_file else directory / name
        save_png(picture, path)
        written.append(path)
        print(f"wrote {path} ({used})")
    return written
