"""Reconstruction quality on the RLTiles sheet: validation L1, MSE and PSNR against inputs
and training time, for experiment files trained through inrlab's own runner (so every row
is reproducible with ``inrlab run FILE --max-inputs N``), plus the 2x test.

    python bench/quality.py --max-inputs 200000            # train (or resume) and report
    python bench/quality.py --max-inputs 200000 --report   # report runs that exist
    python bench/quality.py --two-x --max-inputs 300000    # the 16x16 -> 32x32 test
    python bench/quality.py experiments/rltiles-best.yml --report --refine-steps 100
    python bench/quality.py experiments/rltiles-wide.yml --report --generalisation
    python bench/quality.py experiments/rltiles-aligned.yml --checkpoint last \
        --refine-steps 300 --refine-learnrate 0.03 --codec-inputs 1000000
                                        # bytes table: + AVIF, learned codecs, ms per tile

Runs go to ``--runs-dir`` (default ``runs-bench``); an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inrlab.data.tiles import load_tiles, split_indices  # noqa: E402
from inrlab.experiment.build import build_entry  # noqa: E402
from inrlab.experiment.runner import RunOptions, load_run_weights, run_entry  # noqa: E402
from inrlab.experiment.spec import RunSpec, load_experiment  # noqa: E402
from inrlab.models import EncoderDecoder, UpscalingAutoencoder  # noqa: E402
from inrlab.models.posenc import resampled_pixel_grid  # noqa: E402
from inrlab.models.refine import refine_codes  # noqa: E402
from inrlab.report.baselines import image_psnr  # noqa: E402
from inrlab.report.figures import reproduction_sheet  # noqa: E402
from inrlab.report.render import read_image, render_run  # noqa: E402
from inrlab.storage.grids import save_png  # noqa: E402
from inrlab.train.image_metrics import psnr, ssim  # noqa: E402
from inrlab.storage.metrics import read_metrics  # noqa: E402
from inrlab.storage.rundir import CHECKPOINTS, RunDir  # noqa: E402
from inrlab.train.trainer import resolve_device  # noqa: E402
from throughput import print_machine  # noqa: E402
import learned_codec  # noqa: E402

EXPERIMENTS = [ROOT / "experiments" / "rltiles-baseline.yml",
               ROOT / "experiments" / "rltiles-best.yml"]
TWO_X = [ROOT / "experiments" / "rltiles-2x.yml", ROOT / "experiments" / "rltiles-upscale.yml"]
VALIDATION_RATIO = 9  # the experiment files' split: every 10th tile validates


def train(paths: list[Path], options: RunOptions,
          report_only: bool) -> list[tuple[RunSpec, RunDir]]:
    runs = []
    for path in paths:
        for spec in load_experiment(path):
            if not report_only:
                run_entry(spec, options)
            runs.append((spec, RunDir.for_experiment(options.runs_dir, spec.experiment_name)))
    return runs


def split_tiles(size: int, validation: bool, resample: str = "nearest") -> torch.Tensor:
    """The experiment files' training or validation tiles, (n, 3, size, size) in [0, 1]."""
    tiles = load_tiles(None, (3, size, size), resample)
    return tiles[split_indices(tiles.shape[0], validation, VALIDATION_RATIO)].float() / 255


def has_weights(run_dir: RunDir, checkpoint: str = "best") -> bool:
    """Whether the run left a checkpoint file ``trained_model`` can load ``checkpoint`` from."""
    return any(path.exists() for path in run_dir.weights(checkpoint))


def trained_model(spec: RunSpec, run_dir: RunDir, checkpoint: str = "best") -> torch.nn.Module:
    """The run's model in eval mode, with its best (else last) weights, or with
    ``checkpoint="last"`` the weights it ended with (no selection on the validation tiles)."""
    model = build_entry(spec, with_data=False).model
    load_run_weights(model, run_dir.path, checkpoint)
    return model.eval()


def curves(runs: list[tuple[RunSpec, RunDir]]) -> None:
    print("\n| run | inputs | train time (s) | val L1 | val MSE | val PSNR (dB) | val SSIM |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for spec, run_dir in runs:
        for record in read_metrics(run_dir.metrics):
            if record.get("kind") == "validation" and "mse" in record:
                print(f"| {spec.experiment_name} | {record['inputs']:,} | "
                      f"{record['time_s']:.0f} | {record.get('l1', float('nan')):.4f} | "
                      f"{record['mse']:.5f} | {record['psnr']:.2f} | "
                      f"{record.get('ssim', float('nan')):.3f} |")


CODE_BUDGET = 102  # the log's code size for 3x32x32 (32 * 32 // 10)


@torch.no_grad()
def linear_bound() -> None:
    """The best any linear code can do: PCA fit on the training tiles (no augmentation),
    validation tiles projected on the first k components, at the code budget and beyond."""
    train_tiles = split_tiles(32, False).flatten(1)  # (n, 3072)
    valid = split_tiles(32, True).flatten(1)
    mean = train_tiles.mean(0)
    components = torch.linalg.svd(train_tiles - mean, full_matrices=False).Vh  # (n, 3072)
    print(f"\nLinear bound: PCA on the {train_tiles.shape[0]} training tiles, "
          "validation tiles projected on the first k components (clamped to [0, 1])")
    print("| k (floats per tile) | val L1 | val MSE | val PSNR (dB) | train PSNR (dB) |")
    print("|---:|---:|---:|---:|---:|")
    for k in (CODE_BUDGET, 4 * CODE_BUDGET, components.shape[0]):
        basis = components[:k]
        scores = []
        for images in (valid, train_tiles):
            projected = ((images - mean) @ basis.T @ basis + mean).clamp(0, 1)
            scores.append(((projected - images).abs().mean().item(),
                           F.mse_loss(projected, images).item()))
        (l1, mse), (_, train_mse) = scores
        print(f"| {k} | {l1:.4f} | {mse:.5f} | {psnr(mse):.2f} | {psnr(train_mse):.2f} |")


# ----------------------------------------------------------------- bytes per tile
CODECS = ("JPEG", "WEBP", "AVIF")
AVIF_SPEED = 0  # libavif's slowest, best-compressing encoder setting (0-10)


@dataclass
class Row:
    """One method of the bytes table: its size and scores on the validation tiles, and the
    milliseconds per tile it took to encode and to decode them all (one batch)."""

    name: str
    size: str
    psnr: float
    ssim: float
    encode_ms: float
    decode_ms: float


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """``function()``'s result and the seconds it took."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def payload_bytes(data: bytes, fmt: str) -> int:
    """The bytes of a Pillow ``fmt`` file that code this tile, its container left out. JPEG:
    the entropy-coded scan (headers and tables, the same for every tile of one quality, and
    the end marker excluded); WebP: the file less its RIFF and chunk headers (20 bytes);
    AVIF: the ``mdat`` box's content, the AV1 data (less the ISOBMFF ``ftyp`` and ``meta``
    boxes, 267 bytes from Pillow 13, and the ``mdat`` header)."""
    if fmt == "JPEG":
        scan = data.rfind(b"\xff\xda")
        header = int.from_bytes(data[scan + 2:scan + 4], "big")
        return len(data) - (scan + 2 + header) - 2
    if fmt == "WEBP":
        return len(data) - 20
    position = 0
    while position + 8 <= len(data):  # ISOBMFF top-level boxes: 32-bit size, 4-byte type
        size = int.from_bytes(data[position:position + 4], "big")
        if data[position + 4:position + 8] == b"mdat":
            return size - 8
        if size < 8:
            break
        position += size
    raise ValueError("an AVIF file without an mdat box")


def codec_round_trip(images: torch.Tensor, fmt: str, quality: int
                     ) -> tuple[torch.Tensor, float, float, float, float]:
    """(decoded images, mean file bytes, mean payload bytes, encode and decode seconds per
    tile) of Pillow's ``fmt`` at ``quality``, one tile after another."""
    options = {"JPEG": {"subsampling": 2, "optimize": True}, "WEBP": {"method": 6},
               "AVIF": {"speed": AVIF_SPEED}}[fmt]
    decoded, files, payloads, encode_s, decode_s = [], [], [], 0.0, 0.0
    for image in images:
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        buffer = io.BytesIO()
        _, seconds = timed(lambda: Image.fromarray(pixels).save(buffer, fmt, quality=quality,
                                                                **options))
        encode_s += seconds
        data = buffer.getvalue()

        def decode() -> np.ndarray:
            with Image.open(io.BytesIO(data)) as picture:
                return np.asarray(picture.convert("RGB"))

        back, seconds = timed(decode)
        decode_s += seconds
        decoded.append(torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255)
        files.append(len(data))
        payloads.append(payload_bytes(data, fmt))
    count = images.shape[0]
    return (torch.stack(decoded), float(np.mean(files)), float(np.mean(payloads)),
            encode_s / count, decode_s / count)


def codec_at_budget(images: torch.Tensor, fmt: str, budget: float
                    ) -> tuple[int, tuple[torch.Tensor, float, float, float, float]]:
    """The lowest quality whose mean payload is at least ``budget`` bytes (the codec gets the
    same or more bytes than the model), with its round trip (``codec_round_trip``)."""
    low, high = 0, 100  # payload grows with quality: bisect for the lowest that is enough
    while low < high:
        middle = (low + high) // 2
        if codec_round_trip(images, fmt, middle)[2] >= budget:
            high = middle
        else:
            low = middle + 1
    return low, codec_round_trip(images, fmt, low)


def quantise_uniform(values: torch.Tensor, reference: torch.Tensor, bits: int) -> torch.Tensor:
    """``values`` (n, d) rounded to ``bits`` bits per value, uniform over each column's
    range in ``reference`` (the training codes)."""
    low, high = reference.min(0).values, reference.max(0).values
    levels = 2**bits - 1
    scale = (high - low).clamp_min(1e-12) / levels
    return ((values.clamp(low, high) - low) / scale).round() * scale + low


def score(images: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    images = images.clamp(0, 1)
    return psnr(F.mse_loss(images, truth).item()), ssim(images, truth).mean().item()


@torch.no_grad()
def bytes_table(runs: list[tuple[RunSpec, RunDir]], budget: int = CODE_BUDGET,
                refine_steps: int = 0, refine_learnrate: float = 0.01,
                refine_rate_weight: float | None = None, checkpoint: str = "best",
                codec_inputs: int = 0,
                codec_cache: Path = ROOT / "runs-bench" / "learned-codecs") -> None:
    """Every method on the validation tiles at about ``budget`` bytes per tile: PCA with 8-
    and 4-bit coefficients, JPEG, WebP and AVIF at the same or more bytes, with
    ``codec_inputs`` the learned codecs of ``learned_codec.py`` trained for that many
    inputs at their ``TRAINING_TARGET_BYTES`` (cached in ``codec_cache``), each run's code in
    fp32, fp16 and 8 bits (a quantising model's stored code), and with ``refine_steps``
    that code refined for each tile (Adam at ``refine_learnrate``; an entropy-coded code
    with its model's ``rate_weight``, or ``refine_rate_weight``), with encode and decode
    times (the refinement's counted as encoding)."""
    train_tiles, valid = split_tiles(32, False), split_tiles(32, True)
    count = valid.shape[0]
    rows: list[Row] = []
    mean = train_tiles.flatten(1).mean(0)
    basis = torch.linalg.svd(train_tiles.flatten(1) - mean, full_matrices=False).Vh
    for bits in (8, 4):
        k = budget * 8 // bits
        train_scores = (train_tiles.flatten(1) - mean) @ basis[:k].T
        scores, encode_s = timed(lambda: quantise_uniform(
            (valid.flatten(1) - mean) @ basis[:k].T, train_scores, bits))
        decoded, decode_s = timed(lambda: (scores @ basis[:k] + mean).view_as(valid))
        rows.append(Row(f"PCA, {k} components at {bits} bits", f"{k * bits // 8}",
                        *score(decoded, valid), 1e3 * encode_s / count, 1e3 * decode_s / count))
    for fmt in CODECS:
        quality, (decoded, file_bytes, payload, encode_s, decode_s) = codec_at_budget(
            valid, fmt, budget)
        rows.append(Row(f"{fmt} quality {quality} (Pillow)", f"{payload:.0f} (file "
                        f"{file_bytes:.0f})", *score(decoded, valid), 1e3 * encode_s,
                        1e3 * decode_s))
    for name in learned_codec.CODECS if codec_inputs else []:
        codec = learned_codec.trained_codec(name, train_tiles, codec_inputs,
                                            learned_codec.TRAINING_TARGET_BYTES[name],
                                            codec_cache)
        decoded, sizes, encode_s, decode_s = learned_codec.round_trip(codec, valid)
        rows.append(Row(f"{name} (Balle et al. 2018), {codec_inputs:,} inputs",
                        learned_codec.size_range(sizes), *score(decoded, valid),
                        1e3 * encode_s, 1e3 * decode_s))
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for spec, run_dir in runs:
        if not has_weights(run_dir, checkpoint):
            continue
        model = trained_model(spec, run_dir, checkpoint)
        if not isinstance(model, EncoderDecoder) or isinstance(model, UpscalingAutoencoder):
            continue
        model_table, curve = model_rows(model, spec.experiment_name, valid, train_tiles,
                                        refine_steps, refine_learnrate, refine_rate_weight)
        rows += model_table
        if curve:
            curves[f"{run_dir.path} ({checkpoint} weights)"] = curve
    print(f"\nBytes per tile: the {count} validation tiles, about {budget} bytes each; "
          "encode and decode ms per tile, the tiles in one batch (the codecs: one after "
          "another)")
    print_rows(rows)
    for name, curve in curves.items():
        # the amortisation gap: how the codes of the table's refinement improve step by step
        print(f"\nCode refinement of {name} on the {count} validation tiles, as in the "
              f"bytes table (Adam at {refine_learnrate:g}):")
        print("| Adam steps on the codes | val PSNR (dB) | val SSIM |\n|---:|---:|---:|")
        for step, step_psnr, step_ssim in curve:
            print(f"| {step} | {step_psnr:.2f} | {step_ssim:.3f} |")


REFINE_REPORT_STEPS = (0, 10, 30, 100, 300, 1000)  # where the refinement curve is scored


def model_rows(model: EncoderDecoder, name: str, valid: torch.Tensor, train_tiles: torch.Tensor,
               refine_steps: int, refine_learnrate: float, refine_rate_weight: float | None
               ) -> tuple[list[Row], list[tuple[int, float, float]]]:
    """The bytes table's rows of one trained model: its stored (or entropy-coded) code, and
    with ``refine_steps`` that code refined per tile (the refinement counts as encoding);
    and the refinement's curve, (steps, PSNR, SSIM) at ``REFINE_REPORT_STEPS`` and the last
    (its few extra decodes, about 1/50 of a 300-step refinement, count in the encode time)."""
    codes, encode_s = timed(lambda: model.encode(valid))
    quantizer = model.bottleneck.quantizer
    refined, curve = None, []
    if refine_steps:  # an entropy-coded code is refined at a rate weight, a stored one not
        rate_weight = refine_rate_weight if model.bottleneck.entropy_coded else None
        refined, refine_s = timed(lambda: refine_codes(
            model, valid, refine_steps, refine_learnrate, rate_weight,
            report=lambda step, renders: curve.append((step, *score(renders, valid))),
            report_at={*REFINE_REPORT_STEPS, refine_steps}))
    if quantizer is None:
        train_codes = model.encode(train_tiles)
        rows = float_code_rows(model, name, codes, valid, train_codes, encode_s)
        if refined is not None:
            rows += float_code_rows(model, f"{name} after {refine_steps} refinement steps",
                                    refined, valid, train_codes, refine_s)
        return rows, curve
    if model.bottleneck.entropy_coded:
        rows = [entropy_coded_row(model, f"{name}, entropy-coded {quantizer.bits}-bit code",
                                  codes, valid, encode_s)]
        if refined is not None:
            weight = (model.bottleneck.rate_weight if refine_rate_weight is None
                      else refine_rate_weight)
            rows.append(entropy_coded_row(model, f"{name}, entropy-coded code after "
                                          f"{refine_steps} refinement steps (rate weight "
                                          f"{weight:g})", refined, valid, refine_s))
        return rows, curve
    size = f"{quantizer.code_bytes(codes[0].numel())}"
    rows = [stored_row(model, f"{name}, stored {quantizer.bits}-bit code", size, codes, valid,
                       encode_s)]
    if refined is not None:
        rows.append(stored_row(model, f"{name}, stored code after {refine_steps} refinement "
                               "steps", size, refined, valid, refine_s))
    return rows, curve


def stored_row(model: torch.nn.Module, name: str, size: str, codes: torch.Tensor,
               truth: torch.Tensor, encode_s: float) -> Row:
    """A table row for codes stored as they are: decoded in one batch and scored."""
    decoded, decode_s = timed(lambda: model.decode(codes, tuple(truth.shape[-2:])))
    count = truth.shape[0]
    return Row(name, size, *score(decoded, truth), 1e3 * encode_s / count,
               1e3 * decode_s / count)


def print_rows(rows: list[Row]) -> None:
    print("| method | bytes per tile | val PSNR (dB) | val SSIM | encode ms | decode ms |\n"
          "|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row.name} | {row.size} | {row.psnr:.2f} | {row.ssim:.3f} | "
              f"{row.encode_ms:.2f} | {row.decode_ms:.2f} |")


def float_code_rows(model: torch.nn.Module, name: str, codes: torch.Tensor, truth: torch.Tensor,
                    train_codes: torch.Tensor, encode_s: float = float("nan")) -> list[Row]:
    """Table rows for float codes stored as they are, in fp16 and at 8 bits per value
    (uniform over each value's range in ``train_codes``, the training tiles' encodings);
    ``encode_s``: the seconds that made ``codes``."""
    values = codes[0].numel()
    eight = quantise_uniform(codes.flatten(1), train_codes.flatten(1), 8).view_as(codes)
    return [stored_row(model, f"{name}, fp32 code", f"{4 * values}", codes, truth, encode_s),
            stored_row(model, f"{name}, fp16 code", f"{2 * values}", codes.half().float(),
                       truth, encode_s),
            stored_row(model, f"{name}, 8-bit code", f"{values}", eight, truth, encode_s)]


def entropy_coded_row(model: torch.nn.Module, name: str, codes: torch.Tensor,
                      truth: torch.Tensor, encode_s: float) -> Row:
    """A table row for stored codes that are entropy coded: their real sizes in bytes
    (compressed, then decompressed and checked equal), the decoded images' scores, and the
    times with the coding (``encode_s``: the seconds that made ``codes``)."""
    blobs, compress_s = timed(lambda: model.compress(codes))
    back, decompress_s = timed(lambda: model.decompress(blobs, codes.shape[1:]))
    if not torch.equal(back, codes):
        raise AssertionError(f"{name}: the decompressed codes differ from the stored ones")
    row = stored_row(model, name, learned_codec.size_range(learned_codec.blob_sizes(blobs)),
                     back, truth, encode_s + compress_s)
    row.decode_ms += 1e3 * decompress_s / truth.shape[0]
    return row


@torch.no_grad()
def two_x(spec: RunSpec, run_dir: RunDir, checkpoint: str = "best") -> None:
    """Encode the 16x16 validation tiles, render 32x32, score against the true 32x32 tiles."""
    model = trained_model(spec, run_dir, checkpoint)
    truth = split_tiles(32, True)  # (B, 3, 32, 32)
    low = split_tiles(16, True, "area")  # as rltiles-2x.yml reads them
    if isinstance(model, UpscalingAutoencoder):
        # trained to render 2x its input; here it encodes the 16x16 input as it is
        codes = model.render_code(low)
        renders = [("upscaler render (16x16 encoded as is)", model.decode(codes, (32, 32))),
                   ("`inrlab render --size 2x` of the 16x16 PNGs (8-bit files)",
                    cli_renders(run_dir, low, checkpoint))]
        if model.input_shape[1] is None:  # any size: its 8x8 -> 16x16 upscale as well
            own = ("8x8 -> 16x16 upscale of the same tiles", model(low))
        else:  # a code of the 16x16 tile: what its 2x render says the 16x16 tile is
            own = ("16x16 reconstruction (its 32x32 render area-averaged)",
                   F.interpolate(renders[0][1], size=(16, 16), mode="area"))
            renders.append(("bicubic upscale of that 16x16 reconstruction",
                            renders_bicubic(own[1])))
    else:
        codes = model.encode(low)
        own = ("own 16x16 reconstruction", model.decode(codes, (16, 16)))
        renders = code_renders(model, codes, (16, 16), (32, 32)) + [
            ("bicubic upscale of the model's own 16x16 reconstruction", renders_bicubic(own[1]))]
    bottleneck = getattr(model, "bottleneck", None)
    coded = ""
    if bottleneck is not None and bottleneck.entropy_coded:  # an anchor at equal bytes
        sizes = learned_codec.blob_sizes(model.compress(codes))
        coded = f"; its code of a 16x16 tile: {learned_codec.size_range(sizes)} bytes"
        quality, (avif, _, payload, _, _) = codec_at_budget(low, "AVIF", sizes.mean().item())
        renders.append((f"bicubic upscale of AVIF q{quality} of the 16x16 input "
                        f"({payload:.1f} payload bytes)", renders_bicubic(avif)))
    sheet = run_dir.path.parent / f"two-x-{run_dir.path.name}.png"
    reproduction_sheet([("16x16 input", low[:8]), ("bicubic 2x", renders_bicubic(low[:8])),
                        ("model 2x", renders[0][1][:8]), ("true 32x32", truth[:8])], sheet)
    print(f"\n2x test: {truth.shape[0]} validation tiles, 16x16 (area) -> 32x32, "
          f"run {run_dir.path}")
    print("| method | PSNR vs true 32x32 (dB) |\n|---|---:|")
    for name, image in renders + [
            ("bicubic upscale of the 16x16 input", renders_bicubic(low)),
            ("bilinear upscale of the 16x16 input",
             F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)),
            ("nearest upscale of the 16x16 input", F.interpolate(low, size=(32, 32)))]:
        print(f"| {name} | {image_psnr(image, truth):.2f} |")
    half = F.interpolate(low, scale_factor=0.5, mode="area")
    print(f"(the model's {own[0]}: {image_psnr(own[1], low):.2f} dB; "
          f"bicubic 8x8 -> 16x16: {image_psnr(renders_bicubic(half), low):.2f} dB{coded})")
    print(f"first 8 tiles side by side: {sheet}")


def code_renders(model: EncoderDecoder, codes: torch.Tensor, trained: tuple[int, int],
                 size: tuple[int, int]) -> list[tuple[str, torch.Tensor]]:
    """A code model's renders at ``size`` of codes of ``trained``-size images, the one with
    pixels placed as area downsampling (and bicubic) places them first: a decoder in "areas"
    pixel geometry renders so itself; one in "corners" geometry stretches the pixels corner
    to corner, so its queries at the area-placed centres come first, then its own render."""
    own = model.decode(codes, size)  # (B, C, *size), the decoder's own pixel geometry
    if getattr(model.decoder, "pixel_geometry", "corners") == "areas":
        return [("decoder render, area geometry (its own)", own)]
    coords = resampled_pixel_grid(trained, size)  # area-placed centres in the trained frame
    area = model.decoder.query(codes, coords).transpose(1, 2).reshape(own.shape)
    return [("decoder render, area-placed queries", area),
            ("decoder render, corner-aligned grid (its own)", own)]


def cli_renders(run_dir: RunDir, images: torch.Tensor, checkpoint: str) -> torch.Tensor:
    """``images`` written as PNG files, rendered at 2x by ``inrlab render``'s own code path
    (``render_run``, fp32), and read back: what a user of the command gets."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = []
        for i, image in enumerate(images):
            path = Path(tmp) / f"tile-{i:04d}.png"
            save_png(image, path)
            inputs.append(path)
        with contextlib.redirect_stdout(io.StringIO()):  # a line per file written
            written = render_run(run_dir.path, inputs, 2.0, Path(tmp) / "out", device="cpu",
                                 precision="fp32", checkpoint=checkpoint)
        return torch.stack([read_image(path, (images.shape[1], None, None))
                            for path in written])


def renders_bicubic(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    size = (images.shape[-2] * factor, images.shape[-1] * factor)
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


@torch.no_grad()
def generalisation(runs: list[tuple[RunSpec, RunDir]], checkpoint: str = "best") -> None:
    """Each run on the tiles it was trained on (as they are, no augmentation) against the
    held-out ones: a small gap means more tiles would not help at this budget, a large one
    that the model memorises its training set."""
    tiles = {"train": split_tiles(32, False), "validation": split_tiles(32, True)}
    print(f"\nGeneralisation: PSNR on the {tiles['train'].shape[0]} training tiles (no "
          f"augmentation) and the {tiles['validation'].shape[0]} validation tiles")
    print("| run | training tiles (dB) | validation tiles (dB) | gap (dB) |\n|---|---:|---:|---:|")
    for spec, run_dir in runs:
        if not has_weights(run_dir, checkpoint):
            continue
        model = trained_model(spec, run_dir, checkpoint)
        train, valid = (image_psnr(torch.cat([model(batch) for batch in images.split(256)]),
                                   images) for images in tiles.values())
        print(f"| {spec.experiment_name} | {train:.2f} | {valid:.2f} | {train - valid:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", type=Path,
                        help="experiment files (default: the quality rows, or with --two-x "
                             "rltiles-2x.yml and rltiles-upscale.yml)")
    parser.add_argument("--max-inputs", type=int, default=None,
                        help="training budget per run (default: each file's max_inputs)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs-bench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="only report existing runs")
    parser.add_argument("--two-x", action="store_true", help="run the 2x test instead")
    parser.add_argument("--refine-steps", type=int, default=0,
                        help="also optimise the validation codes of each run for N steps")
    parser.add_argument("--refine-learnrate", type=float, default=0.01,
                        help="Adam learning rate of the refinement (default 0.01)")
    parser.add_argument("--generalisation", action="store_true",
                        help="also score each run on its (unaugmented) training tiles")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                        help="the weights scored: best (default: the run's best validation "
                             "loss, else its last) or last (those it ended with)")
    parser.add_argument("--codec-inputs", type=int, default=1_000_000,
                        help="training images of each learned codec in the bytes table "
                             "(default 1,000,000, inrlab's best; trained once, then cached "
                             "under the runs dir; 0 leaves them out)")
    parser.add_argument("--refine-rate-weight", type=float, default=None,
                        help="rate weight of the refinement of entropy-coded codes (default: "
                             "the model's rate_weight); higher keeps the codes shorter")
    args = parser.parse_args()
    options = RunOptions(runs_dir=args.runs_dir, device=args.device, skip=True,
                         max_inputs=args.max_inputs, tensorboard=False, quiet=True)
    print_machine(str(resolve_device(args.device)))
    print(f"budget {args.max_inputs or 'per file'} inputs")
    if args.two_x:
        runs = train(args.experiments or TWO_X, options, args.report)
        curves(runs)
        for spec, run_dir in runs:
            two_x(spec, run_dir, args.checkpoint)
    else:
        runs = train(args.experiments or EXPERIMENTS, options, args.report)
        curves(runs)
        linear_bound()
        bytes_table(runs, refine_steps=args.refine_steps,
                    refine_learnrate=args.refine_learnrate,
                    refine_rate_weight=args.refine_rate_weight, checkpoint=args.checkpoint,
                    codec_inputs=args.codec_inputs,
                    codec_cache=args.runs_dir / "learned-codecs")
        if args.generalisation:
            generalisation(runs, args.checkpoint)


if __name__ == "__main__":
    main()
