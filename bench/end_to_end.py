"""End-to-end training throughput: whole ``inrlab run`` steps of experiment files (data,
augmentation, loss, optimizer, logging and validation cadence), next to the decoder alone
and the seed's per-image algorithm on the same model, with the FLOP rate as a share of the
measured GEMM rates. Called by ``python bench/throughput.py --end-to-end FILE...``.

Each file's first matrix entry (or ``--entry``) runs through ``inrlab.run`` in a temporary
runs directory for ``--max-inputs`` images; ``--set key=value`` overrides experiment keys
(e.g. ``batch_size=512 learnrate=0.003``) through a child file that ``$extends`` the original.
Reported images/s are ``result.json``'s throughput (training time: validation and
checkpoints excluded) and the wall clock of the whole run (everything included).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

import inrlab
from inrlab.models import ImageManifoldDecoder
from inrlab.models.decoders.base import ImplicitDecoder


def child_file(original: Path, overrides: dict[str, Any], directory: Path) -> Path:
    """An experiment file that extends ``original`` with ``overrides`` (a shallow merge)."""
    lines = [f"$extends: {json.dumps(str(original.resolve()))}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in overrides.items()]
    path = directory / f"{original.stem}-bench.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs, values read as JSON where they parse (numbers, true, null)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            overrides[key] = json.loads(text)
        except ValueError:
            overrides[key] = text
    return overrides


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Callable[[], Any], device: torch.device, seconds: float) -> float:
    """Median seconds per call of ``step`` over about ``seconds`` (after 3 warm-up calls)."""
    for _ in range(3):
        step()
    _synchronize(device)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 3:
        start = time.perf_counter()
        step()
        _synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def training_flops(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """FLOPs of one forward + backward of ``module`` on ``inputs`` (torch's counter:
    matrix products and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        output = module(*inputs)
        output.float().sum().backward()
    module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def decoder_only(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                 seconds: float, seed_decode: Callable[..., torch.Tensor] | None = None
                 ) -> tuple[float, float]:
    """(images/s, training FLOPs per image) of the decoder alone: forward, MSE, backward and
    an Adam step on the codes of ``images``; with ``seed_decode`` (the seed's per-image
    algorithm, global-code manifold decoders only), that instead of inrlab's decoder."""
    decoder = model.decoder
    with torch.no_grad():
        codes = model.encode(images).detach()  # (B, *code)
    shape = tuple(images.shape[-2:])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)

    def forward(code: torch.Tensor) -> torch.Tensor:
        if seed_decode is not None:
            return seed_decode(decoder, code, shape)
        return decoder(code, shape)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(forward(codes).float(), images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    decoder.train()
    flops = training_flops(_Call(forward), [codes]) / images.shape[0]
    return images.shape[0] / timed_steps(step, device, seconds), flops


class _Call(torch.nn.Module):
    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.function(code)


def end_to_end(files: Sequence[Path], device_name: str, max_inputs: int,
               overrides: dict[str, Any], entry: str | None, rates: dict[str, float],
               seed_decode: Callable[..., torch.Tensor], seconds: float = 5.0) -> None:
    """Print one table row per experiment file (see the module docstring)."""
    device = torch.device(device_name)
    rows = []
    for file in files:
        with tempfile.TemporaryDirectory() as tmp:
            path = child_file(Path(file), overrides, Path(tmp)) if overrides else Path(file)
            specs = inrlab.load_experiment(path)
            spec = next((s for s in specs if entry in (None, s.entry.id, s.entry.slug)),
                        specs[0])
            start = time.perf_counter()
            (run,) = inrlab.run(path, runs_dir=Path(tmp) / "runs", device=device_name,
                                max_inputs=max_inputs, only=[spec.entry.id], tensorboard=False)
            wall = time.perf_counter() - start
            result = run.result or {}
            model = run.model.to(device)
            batch = int(run.config.get("batch_size", 64))
            images = torch.rand(batch, *model.input_shape, device=device)
            alone, flops = (decoder_only(model, images, device, seconds)
                            if isinstance(getattr(model, "decoder", None), ImplicitDecoder)
                            else (float("nan"), float("nan")))
            seed = (decoder_only(model, images[:64], device, seconds, seed_decode)[0]
                    if isinstance(getattr(model, "decoder", None), ImageManifoldDecoder)
                    else float("nan"))
            pixels = run.config.get("train_pixels")
            if pixels:  # the trained step decodes only these pixels
                flops *= min(1.0, pixels / (images.shape[-1] * images.shape[-2]))
            throughput = float(result.get("throughput") or float("nan"))
            achieved = throughput * flops
            rows.append(f"| {file} | {batch} | {throughput:,.0f} | "
                        f"{result['num_inputs'] / wall:,.0f}"
                        f" | {result.get('validation_loss') or float('nan'):.5f}"
                        f" | {result.get('validation_psnr') or float('nan'):.2f}"
                        f" | {alone:,.0f} | {seed:,.0f} | {flops / 1e9:.3f}"
                        f" | {achieved / 1e12:.3f} | {achieved / rates['float32']:.1%}"
                        f" | {achieved / rates['bfloat16']:.1%} |")
    print(f"\n### End to end through inrlab run ({max_inputs:,} inputs each"
          + (f", overrides {overrides}" if overrides else "") + f", {device})\n")
    print("| file | batch | images/s (training time) | images/s (wall) | validation loss | "
          "validation PSNR | decoder alone img/s | seed per-image decoder img/s | "
          "decoder GFLOP/image | end-to-end decoder TFLOP/s | of fp32 GEMM | of bf16 GEMM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
