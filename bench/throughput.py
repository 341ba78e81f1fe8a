"""Training throughput of the logs' manifold autoencoders: the seed system's per-image
algorithm (written here as the reference) against inrlab's default path and its speed
levers, all in one process with interleaved timing; plus the equal-loss check of each lever
and the memory and time of a 1024x1024 render.

    python bench/throughput.py                    # all configurations, CPU
    python bench/throughput.py --device cuda      # on a GPU
    python bench/throughput.py --compile          # also time torch.compile (slow to warm up)
    python bench/throughput.py --quality-inputs 0 # skip the equal-loss check
    python bench/throughput.py --bf16             # bf16 modes even without bf16 hardware
    python bench/throughput.py --logs             # every manifold model of experiments/logs
    python bench/throughput.py --layouts          # encoder NCHW/NHWC, decoder chunk sizes
    python bench/throughput.py --end-to-end experiments/float-codes/rltiles-baseline.yml \
        experiments/float-codes/rltiles-best.yml --device cuda --max-inputs 200000 \
        [--set batch_size=512]
                                                  # whole `inrlab run` steps

Figures: images/s of full training steps (forward, loss, backward, optimizer) at batch 64;
ratios to the reference (a); the decoder's achieved FLOP rate as a fraction of this run's
own fp32 and bf16 GEMM rates (torch.matmul 2048x2048).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import inrlab

from inrlab.data.tiles import rpg_tile_dataset
from inrlab.experiment.build import build_entry
from inrlab.experiment.spec import load_experiment
from inrlab.machine import print_machine, synchronize
from inrlab.models.contract import Autoencoder
from inrlab.models import (DalleManifoldAutoencoder, EncoderConv2d, EncoderDecoder,
                           ImageManifoldDecoder)
from inrlab.models.decoders.base import ImplicitDecoder, render_chunk_elements
from inrlab.models.posenc import pixel_grid
from inrlab.storage.grids import to_8_bits
from inrlab.report.render import bf16_keeps_8_bits, decode_at_precision
from inrlab.train.autoencoder import TrainAutoencoderSpecial
from inrlab.storage.rundir import RunDir
from inrlab.train.autoencoder import CodeStatisticsOptions
from inrlab.train.device import autocast, resolve_precision
from inrlab.train.settings import make_settings

ROOT = Path(__file__).resolve().parents[1]

BATCH = 64


# ------------------------------------------------------------------ the seed's algorithm
def seed_decode(decoder: ImageManifoldDecoder, codes: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
    """The seed system's decoder forward, on inrlab's parameters: a Python loop over the
    batch; per image the code is repeated for every pixel and concatenated to the pixel's
    embedding, one Linear on the concatenation, BatchNorm statistics over that image's
    pixels only."""
    coords = pixel_grid(shape, device=codes.device)  # (N, 2)
    embedding = decoder.encoding(coords)  # (N, P)
    images = []
    for code in codes:  # the seed's loop over the batch
        x = torch.cat([code.expand(embedding.shape[0], -1), embedding], dim=1)  # (N, c + P)
        x = decoder.act_in(decoder.linear_in(x))
        x = decoder.blocks(x)  # BatchNorm over this image's N rows
        x = decoder.act_out(decoder.linear_out(x))  # (N, C)
        images.append(x.t().reshape(decoder.out_channels, *shape))
    return torch.stack(images)


def decoder_flops_per_image(decoder: ImageManifoldDecoder, pixels: int,
                            split_first_layer: bool) -> float:
    """Training FLOPs (forward + backward = 3x forward, 2 per multiply-add) of the decoder's
    Linear layers for one image."""
    macs_per_pixel = 0
    for module in decoder.modules():
        if isinstance(module, torch.nn.Linear):
            in_features = module.in_features
            if module is decoder.linear_in and split_first_layer:
                in_features = decoder.encoding.out_features  # the code part is per image
            macs_per_pixel += in_features * module.out_features
    return 3 * 2 * macs_per_pixel * pixels


# ------------------------------------------------------------------------ configurations
def dalle_small(decoder_blocks: int, decoder_hidden: int) -> torch.nn.Module:
    return DalleManifoldAutoencoder((1, 32, 32), vocab_size=128, n_hid=64, n_blk_per_group=1,
                                    act_fn="gelu", space_to_depth=True,
                                    decoder_n_blk=decoder_blocks, decoder_n_layer=2,
                                    decoder_n_hid=decoder_hidden)


def cnn_manifold() -> torch.nn.Module:
    return EncoderDecoder(
        EncoderConv2d((3, 32, 32), 102, channels=(16, 24, 32)),
        ImageManifoldDecoder(102, 3, num_hidden=256, num_blocks=2, num_layers_per_block=2,
                             default_shape=(32, 32)))


CONFIGS: dict[str, tuple[Callable[[], torch.nn.Module], int]] = {
    "DalleManifoldAutoencoder small, decoder 4x2x64 (1x32x32)": (lambda: dalle_small(4, 64), 1),
    "DalleManifoldAutoencoder, decoder 8x2x128 (1x32x32)": (lambda: dalle_small(8, 128), 1),
    "EncoderConv2d + manifold 2x2x256 (3x32x32, code 102)": (cnn_manifold, 3),
}


@dataclass
class Mode:
    name: str
    precision: str = "fp32"
    train_pixels: int | None = None
    compile: bool = False
    reference: bool = False
    batch_norm_images: int | None | str = "default"  # the decoder's own unless set


# ------------------------------------------------------------ the logs' configurations
LOGS = ROOT / "experiments" / "logs"


def log_models() -> dict[str, Callable[[], torch.nn.Module]]:
    """Every distinct model of ``experiments/logs/*.yml`` whose decoder is the seed's
    manifold decoder, built by inrlab's own experiment path: "file: entry" -> builder
    (entries that differ only in training keys build the same model and appear once)."""
    models: dict[str, Callable[[], torch.nn.Module]] = {}
    seen: set[tuple] = set()
    for path in sorted(LOGS.glob("*.yml")):
        for spec in load_experiment(path):
            model = build_entry(spec, with_data=False).model
            decoder = getattr(model, "implicit_decoder", None)
            if not isinstance(model, Autoencoder) or not isinstance(decoder,
                                                                    ImageManifoldDecoder):
                continue
            signature = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
            if signature in seen:
                continue
            seen.add(signature)
            name = f"{path.name}: {spec.values.get('matrix_slug') or spec.experiment_name}"
            models[name] = lambda spec=spec: build_entry(spec, with_data=False).model
    return models


def layouts_table(device: str, repeats: int = 3) -> None:
    """What the CPU defaults were chosen from: each configuration's encoder forward +
    backward with contiguous (NCHW) against channels-last (NHWC) convolutions, and its
    decoder forward + backward (per-image statistics) in chunks of 1k-16k pixel rows against
    the seed's loop; ms per batch of 64, median of ``repeats`` interleaved rounds."""
    from inrlab.models.decoders import manifold

    default_bytes = manifold.CPU_CHUNK_BYTES
    print(f"\n### Memory layouts and chunk sizes, batch {BATCH} (ms per forward + backward)\n")
    print("| configuration | encoder NCHW | encoder NHWC | decoder: seed's loop | "
          "1k rows | 2k | 4k | 8k | 16k | default (2 MiB per activation) |")
    print("|---|" + "---:|" * 10)
    for config, (build, channels) in CONFIGS.items():
        torch.manual_seed(0)
        model = build().to(device).train()
        nhwc = build().to(device).train().to(memory_format=torch.channels_last)
        images = torch.rand(BATCH, channels, 32, 32, device=device)
        codes = torch.randn(BATCH, model.decoder.code_size, device=device, requires_grad=True)

        def decoder(rows: int | None) -> None:
            if rows is None:
                output = seed_decode(model.decoder, codes, (32, 32))
            else:
                manifold.CPU_CHUNK_BYTES = rows * 4 * model.decoder.max_width
                output = model.decoder(codes)
            output.sum().backward()

        steps: dict[str, Callable[[torch.Tensor], Any]] = {
            "NCHW": lambda x: model.encoder(x).sum().backward(),
            "NHWC": lambda x: nhwc.encoder(x).sum().backward(),
            "seed": lambda x: decoder(None),
            **{str(rows): lambda x, rows=rows: decoder(rows)
               for rows in (1024, 2048, 4096, 8192, 16384)},
            "default": lambda x: decoder(default_bytes // (4 * model.decoder.max_width))}
        try:
            seconds = time_modes({k: (lambda x, f=f: f(x) or torch.zeros(()))
                                  for k, f in steps.items()}, images, device, repeats, 1)
        finally:
            manifold.CPU_CHUNK_BYTES = default_bytes
        print(f"| {config} | " + " | ".join(f"{1e3 * t:.0f}" for t in seconds.values()) + " |",
              flush=True)


def quickstart_layouts(rounds: int = 7, steps: int = 10) -> None:
    """The quick start's training steps (``experiments/quickstart.yml``: its model, trainer
    and options, a random batch) with the trainer's channels-last convolutions against the
    same trainer with PyTorch's default layout, interleaved; CPU."""
    import inrlab.train.trainer as trainer_module
    from inrlab.experiment.build import build_trainer

    spec = load_experiment(ROOT / "experiments" / "quickstart.yml")[0]
    nhwc = trainer_module.channels_last
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout in (("NCHW", lambda model, device: None), ("NHWC", nhwc)):
            trainer_module.channels_last = layout
            try:
                trainers[name] = build_trainer(spec, build_entry(spec), RunDir(Path(tmp) / name),
                                               torch.device("cpu"), tensorboard=False)
            finally:
                trainer_module.channels_last = nhwc
        reference = trainers["NCHW"]
        batch = (torch.rand(reference.settings.batch_size, *reference.model.input_shape),)
        seconds = time_modes({name: lambda x, t=t: t.step(x)["loss"]
                              for name, t in trainers.items()}, batch, "cpu", rounds, steps)
    size = batch[0].shape[0]
    print(f"\nquick start training steps (batch {size}): " + ", ".join(
        f"{name} {size / t:.0f} img/s" for name, t in seconds.items()) +
        f" ({seconds['NCHW'] / seconds['NHWC']:.2f}x)")


def first_losses(build: Callable[[], torch.nn.Module], mode: Mode, images: list[torch.Tensor],
                 run_path: Path) -> list[float]:
    """The training losses of ``mode`` on ``images`` (one batch each), from the weights
    ``build`` makes (the same in every call: the entry's seed)."""
    model = build()
    step = step_function(make_trainer(model, mode, "cpu", run_path, images[0]), mode)
    return [float(step(batch).detach()) for batch in images]


def logs_table(device: str, rates: dict[str, float], rounds: int, steps_per_round: int,
               fewest_pixels: int, only: str | None = None, loss_steps: int = 8) -> None:
    """The logs' manifold models: the seed's per-image loop (a) against inrlab's default in
    fp32 (b), the automatic precision (c, where it differs from fp32) and ``train_pixels``
    (d), images/s at batch 64 on random images; (b)'s decoder FLOP rate as a share of the
    measured fp32 GEMM rate and (c)'s of the bf16 one (the decoder's FLOPs over the whole
    step's time); and the largest relative difference of (b)'s first
    ``loss_steps`` training losses from (a)'s (same weights, same batches)."""
    auto, why = resolve_precision("auto", torch.device(device))
    modes = [Mode("(a) seed's loop", reference=True), Mode("(b) default fp32")]
    # (c): issue 44's target is its share of the bf16 GEMM rate
    low = Mode(f"(c) precision auto: {auto}", precision=auto) if auto != "fp32" else None
    if low is not None:
        modes.append(low)
    modes.append(Mode(f"(d) {auto} + train_pixels {fewest_pixels}", precision=auto,
                      train_pixels=fewest_pixels))
    print(f"\n### The logs' manifold models (experiments/logs), batch {BATCH}\n")
    print(f"precision auto on this {device}: {auto} ({why})\n")
    print("| model | " + " | ".join(f"{m.name} img/s" for m in modes) +
          " | (b)'s decoder, of fp32 GEMM" + (f" | (c)'s decoder, of {auto} GEMM" if low else "")
          + f" | (b) vs (a), first {loss_steps} losses |")
    print("|---|" + "---:|" * (len(modes) + 2 + bool(low)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in log_models().items():
            if only and only not in name:
                continue
            model = build()
            shape = model.input_shape
            images = torch.rand(BATCH, *shape, device=device)
            initial = model.state_dict()
            steps = {}
            for mode in modes:
                model = build()
                model.load_state_dict(initial)
                steps[mode.name] = step_function(make_trainer(model, mode, device, Path(tmp),
                                                              images), mode)
            seconds = time_modes(steps, images, device, rounds, steps_per_round)
            reference = seconds[modes[0].name]
            cells = [f"{BATCH / seconds[m.name]:,.0f}" +
                     ("" if m.reference else f" ({reference / seconds[m.name]:.2f}x)")
                     for m in modes]
            generator = torch.Generator().manual_seed(0)
            batches = [torch.rand(BATCH, *shape, generator=generator) for _ in range(loss_steps)]
            seed_losses = first_losses(build, modes[0], batches, Path(tmp))
            ours = first_losses(build, modes[1], batches, Path(tmp))
            gap = max(abs(a - b) / abs(a) for a, b in zip(seed_losses, ours))
            flops = BATCH * decoder_flops_per_image(model.decoder, math.prod(shape[1:]), True)
            shares = [flops / seconds[modes[1].name] / rates["float32"]]
            if low is not None:
                shares.append(flops / seconds[low.name] / rates["bfloat16"])
            print(f"| {name} | " + " | ".join(cells) + " | "
                  + " | ".join(f"{share:.0%}" for share in shares) + f" | {gap:.1e} |",
                  flush=True)


def make_trainer(model: torch.nn.Module, mode: Mode, device: str, run_path: Path,
                 images: torch.Tensor) -> TrainAutoencoderSpecial:
    settings = make_settings({"batch_size": BATCH, "learnrate": 3e-4, "optimizer": "AdamW",
                              "loss_function": "l2", "precision": mode.precision,
                              "compile": mode.compile, "max_inputs": 1_000_000},
                             lambda key: {})
    if mode.batch_norm_images != "default":
        model.decoder.batch_norm_images = mode.batch_norm_images
    dataset = torch.utils.data.TensorDataset(images)
    options = CodeStatisticsOptions(train_pixels=mode.train_pixels)
    trainer = TrainAutoencoderSpecial(model=model, train_sets=[(0, dataset)], settings=settings,
                                      run_dir=RunDir(run_path), device=device,
                                      tensorboard=False, options=options)
    if mode.reference:  # the seed's code keeps its convolutions in PyTorch's default layout
        trainer.model.to(memory_format=torch.contiguous_format)
    return trainer


def step_function(trainer: TrainAutoencoderSpecial, mode: Mode) -> Callable[[torch.Tensor], float]:
    """One full training step on a batch, as inrlab's loop does it (or the reference)."""
    model = trainer.model

    def step(images: torch.Tensor) -> float:
        if not mode.reference:
            return trainer.step((images,))["loss"]  # the training loop's own step
        with autocast(trainer.precision, trainer.device):
            codes = model.encode(images)
            output = seed_decode(model.decoder, codes, tuple(images.shape[-2:]))
            loss = trainer.losses(images, output, codes)["loss"]
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        return loss

    return step


def time_modes(steps: dict[str, Callable[[torch.Tensor], Any]], images: torch.Tensor,
               device: str, rounds: int, steps_per_round: int) -> dict[str, float]:
    """Median seconds per step of each mode, measured in interleaved rounds."""
    for step in steps.values():  # warm-up (allocations, autotuning, compilation)
        for _ in range(3):
            step(images)
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                loss = step(images)
            float(loss.detach())
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / steps_per_round)
    return {name: statistics.median(values) for name, values in samples.items()}


def equal_loss(build: Callable[[], torch.nn.Module], modes: list[Mode], channels: int,
               device: str, inputs: int, run_path: Path) -> dict[str, tuple[float, float]]:
    """Validation MSE (all pixels, fp32, eval mode) after ``inputs`` training images on RLTiles
    from the same initial weights and data order, per mode; plus the fp32 run with another
    data order (seed) as the noise scale."""
    shape = (channels, 32, 32)
    train = rpg_tile_dataset(shape, validation=False, random_flip=True)
    validation = rpg_tile_dataset(shape, validation=True).batch(list(range(64))).to(device)
    torch.manual_seed(0)
    initial = build().state_dict()
    results = {}
    for mode in modes + [Mode("fp32, other data order")]:
        model = build()
        model.load_state_dict(initial)
        trainer = make_trainer(model, mode, device, run_path, validation)
        step = step_function(trainer, mode)
        order_seed = 1 if mode.name == "fp32, other data order" else 0
        generator = torch.Generator().manual_seed(order_seed)
        seen = 0
        torch.manual_seed(order_seed)
        while seen < inputs:
            index = torch.randperm(len(train), generator=generator)[:BATCH].tolist()
            step(train.batch(index).to(device))
            seen += BATCH
        model.eval()
        with torch.no_grad():
            output = model(validation).float().clamp(0, 1)
        results[mode.name] = F.mse_loss(output, validation).item()
    return results


def encoder_share(trainer: TrainAutoencoderSpecial, images: torch.Tensor, device: str,
                  seconds_per_step: float, repeats: int = 5) -> str:
    """Where a step's time goes: the encoder's forward + backward alone on the same batch,
    against the whole step."""
    encoder = trainer.model.encoder
    encoder(images).sum().backward()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        encoder(images).sum().backward()
    synchronize(device)
    encoder_seconds = (time.perf_counter() - start) / repeats
    trainer.optimizer.zero_grad(set_to_none=True)
    return (f"encoder forward + backward {encoder_seconds * 1000:.0f} ms of the "
            f"{seconds_per_step * 1000:.0f} ms step ({encoder_seconds / seconds_per_step:.0%})")


def _status_bytes(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return float(line.split()[1]) * 1024
    return float("nan")


@contextlib.contextmanager
def peak_rss() -> Any:
    """Peak resident memory (bytes) of the block, on Linux: VmHWM after resetting it."""
    box: dict[str, float] = {}
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    if reset:
        box["before"] = _status_bytes("VmRSS:")
    yield box
    if reset:
        box["peak"] = _status_bytes("VmHWM:")


def render_1024(device: str, blocks: int, hidden: int, precision: str = "fp32") -> str:
    """Seconds and peak memory of one 1024x1024 render (eval mode, pixel chunks) in
    ``precision`` (as ``inrlab render --precision``); for bf16 also how many of the 8-bit
    values differ from the fp32 render and whether ``--precision auto`` would take bf16."""
    torch.manual_seed(0)
    model = dalle_small(blocks, hidden).to(device).eval()
    code = torch.randn(1, 128, device=device)
    with torch.no_grad():
        decode_at_precision(model, code, (64, 64), precision)  # warm-up
        synchronize(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with peak_rss() as rss:
            start = time.perf_counter()
            image, _ = decode_at_precision(model, code, (1024, 1024), precision)
            synchronize(device)
            seconds = time.perf_counter() - start
    if device.startswith("cuda"):
        above = (torch.cuda.max_memory_allocated() - base) / 2**20
        memory = f"peak GPU memory above the model {above:.0f} MiB"
    elif "peak" in rss:
        memory = f"peak RSS {(rss['peak'] - rss['before']) / 2**20:.0f} MiB above the process's"
    else:
        memory = "memory not measurable here"
    flops = decoder_flops_per_image(model.decoder, 1024 * 1024, True) / 3  # forward only
    line = (f"- decoder {blocks}x2x{hidden}, {precision}: {seconds * 1e3:.1f} ms "
            f"({flops / 1e9:.0f} GFLOP, {flops / seconds / 1e9:.0f} GFLOP/s), {memory}")
    if precision == "bf16":
        exact, _ = decode_at_precision(model, code, (1024, 1024), "fp32")
        changed = (to_8_bits(exact) != to_8_bits(image)).float().mean().item()
        keeps = bf16_keeps_8_bits(model, code, (1024, 1024))
        line += (f"; 8-bit values differing from fp32: {changed:.2%}, --precision auto "
                 f"takes {'bf16' if keeps else 'fp32'}")
    return line


# ------------------------------------------------------------------- end to end
# End-to-end training throughput: whole ``inrlab run`` steps of experiment files (data,
# augmentation, loss, optimizer, logging and validation cadence), next to the decoder alone
# and the seed's per-image algorithm on the same model, with the FLOP rate as a share of the
# measured GEMM rates: ``python bench/throughput.py --end-to-end FILE...``.
#
# Each file's first matrix entry (or ``--entry``) runs through ``inrlab.run`` in a temporary
# runs directory for ``--max-inputs`` images; ``--set key=value`` overrides experiment keys
# (e.g. ``batch_size=512 learnrate=0.003``) through a child file that ``$extends`` the original.
# Reported images/s are ``result.json``'s throughput (training time: validation and
# checkpoints excluded) and the wall clock of the whole run (everything included).

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--train-pixels", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--compile", action="store_true", help="also time compile: true")
    parser.add_argument("--quality-inputs", type=int, default=6400,
                        help="training images for the equal-loss check (0: skip it)")
    parser.add_argument("--only", default=None, help="substring of one configuration name")
    parser.add_argument("--bf16", action="store_true",
                        help="time and check bf16 even where its GEMM is slower than fp32")
    parser.add_argument("--end-to-end", nargs="+", type=Path, default=None, metavar="FILE",
                        help="time whole `inrlab run` steps of these experiment files instead")
    parser.add_argument("--max-inputs", type=int, default=100_000,
                        help="with --end-to-end: training images per file (default 100,000)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --end-to-end: override experiment keys, e.g. batch_size=512")
    parser.add_argument("--layouts", action="store_true",
                        help="time encoder memory layouts and decoder chunk sizes instead")
    parser.add_argument("--logs", action="store_true",
                        help="time every manifold model of experiments/logs/*.yml instead")
    parser.add_argument("--entry", default=None,
                        help="with --end-to-end: matrix_id or slug (default: the first entry)")
    args = parser.parse_args()
    device = args.device
    print(f"batch {BATCH}")
    rates = print_machine(device)
    if args.end_to_end:
        end_to_end(args.end_to_end, device, args.max_inputs, parse_overrides(args.set),
                   args.entry, rates, seed_decode)
        return
    if args.layouts:
        layouts_table(device, args.rounds)
        quickstart_layouts()
        return
    if args.logs:
        logs_table(device, rates, args.rounds, args.steps_per_round, min(args.train_pixels),
                   args.only)
        return
    # bf16 pays only where the hardware has it (AMX/AVX512-BF16 CPUs, GPUs); on others its
    # GEMM runs far below fp32 and timing it would only take minutes.
    bf16 = args.bf16 or rates["bfloat16"] >= rates["float32"]
    if not bf16:
        print("bf16 GEMM is slower than fp32 on this machine: bf16 modes left out (--bf16 "
              "keeps them)")
    fastest = "bf16" if rates["bfloat16"] >= rates["float32"] else "fp32"
    modes = [Mode("(a) reference: per-image loop, fp32", reference=True),
             Mode("(b) inrlab default: per-image statistics, fp32"),
             Mode("(c) whole-batch statistics (batch_norm_images: null)",
                  batch_norm_images=None)]
    modes += [Mode(f"(c) train_pixels {n}", train_pixels=n) for n in args.train_pixels]
    fewest = min(args.train_pixels)
    modes += [Mode("(c) batch_norm_images 4", batch_norm_images=4),
              Mode(f"(c) batch_norm_images 4 + train_pixels {fewest}", batch_norm_images=4,
                   train_pixels=fewest)]
    if bf16:
        modes += [Mode("(c) bf16", precision="bf16"),
                  Mode(f"(c) bf16 + train_pixels {fewest}", precision="bf16", train_pixels=fewest)]
    if args.compile:
        modes += [Mode("(c) compile", compile=True),
                  Mode(f"(c) compile + {fastest} + train_pixels {fewest}", precision=fastest,
                       train_pixels=fewest, compile=True)]
    with tempfile.TemporaryDirectory() as tmp:
        for config, (build, channels) in CONFIGS.items():
            if args.only and args.only not in config:
                continue
            images = torch.rand(BATCH, channels, 32, 32, device=device)
            torch.manual_seed(0)
            initial = build().state_dict()
            steps, trainers = {}, {}
            for mode in modes:
                model = build()
                model.load_state_dict(initial)
                trainers[mode.name] = make_trainer(model, mode, device, Path(tmp), images)
                steps[mode.name] = step_function(trainers[mode.name], mode)
            seconds = time_modes(steps, images, device, args.rounds, args.steps_per_round)
            decoder = build().decoder
            print(f"\n### {config}\n")
            print("| mode | images/s | vs (a) | decoder GFLOP/s | of fp32 GEMM | of bf16 GEMM |")
            print("|---|---:|---:|---:|---:|---:|")
            reference = seconds[modes[0].name]
            for mode in modes:
                pixels = min(mode.train_pixels or 1024, 1024)
                flops = BATCH * decoder_flops_per_image(decoder, pixels, not mode.reference)
                rate = flops / seconds[mode.name]
                of_bf16 = f"{rate / rates['bfloat16']:.0%}" if bf16 else "n/a (no bf16 here)"
                print(f"| {mode.name} | {BATCH / seconds[mode.name]:,.0f} | "
                      f"{reference / seconds[mode.name]:.1f}x | {rate / 1e9:.0f} | "
                      f"{rate / rates['float32']:.0%} | {of_bf16} |")
            fastest_mode = min(modes, key=lambda m: seconds[m.name])
            print(f"\n{fastest_mode.name}: " + encoder_share(
                trainers[fastest_mode.name], images, device, seconds[fastest_mode.name]))
            if args.quality_inputs:
                losses = equal_loss(build, modes, channels, device, args.quality_inputs,
                                    Path(tmp))
                print(f"\nvalidation MSE (64 RLTiles validation tiles) after "
                      f"{args.quality_inputs:,} inputs from the same start:")
                for mode_name, mse in losses.items():
                    print(f"- {mode_name}: {mse:.5f} ({10 * math.log10(1 / mse):.2f} dB)")
    chunk = render_chunk_elements(torch.device(device))
    print("\n1024x1024 render from one code (eval, no gradients, chunks of "
          f"{chunk:,} floats per hidden activation):")
    for blocks, hidden in ((4, 64), (8, 128)):
        print(render_1024(device, blocks, hidden))
        if device.startswith("cuda"):  # a CPU without bf16 units emulates it slowly
            print(render_1024(device, blocks, hidden, "bf16"))


if __name__ == "__main__":
    main()
