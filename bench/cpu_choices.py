"""The choices a CPU run makes for itself, measured in one process on the quick start's
model: the optimizer step (per-tensor loop, foreach, fused), the precision that
``precision: auto`` picks (bf16 products against fp32 ones, and a whole training step in
each), and what a step with ``train_pixels`` gets from the data (whole renders at the
batch's size, or only the scored pixels, ``BatchedDataset.pixel_batches``, one batch at a
time or several rendered together as the loop does).

    python bench/cpu_choices.py
    python bench/cpu_choices.py experiments/kali/local-latents.yml --steps 100

Prints the CPU's flags and GEMM rates first. The precision table's steps run on batches
drawn beforehand as the loop draws them (pixel batches where it uses them), so it times no
data rendering.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from inrlab.experiment.build import build_entry, build_trainer
from inrlab.experiment.spec import load_experiment
from inrlab.machine import bf16_speedup, print_machine
from inrlab.storage.rundir import RunDir
from inrlab.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def optimizer_step_ms(model: torch.nn.Module, mode: dict, steps: int) -> float:
    """Median milliseconds of one AdamW step over ``model``'s parameters (random gradients)."""
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **mode)
    for _ in range(5):
        optimizer.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@contextlib.contextmanager
def cpu_trainer(file: Path) -> Iterator[Trainer]:
    """The trainer of the file's first entry on the CPU, its run directory temporary, and
    torch's generator seeded for the batches it draws."""
    spec = load_experiment(file)[0]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(spec, build_entry(spec), RunDir(Path(tmp) / "run"),
                                torch.device("cpu"), tensorboard=False)
        torch.manual_seed(0)
        yield trainer


def training_step_ms(file: Path, precision: str, steps: int) -> float:
    """Median milliseconds of the training loop's own step (``Trainer.step``: forward,
    backward, optimizer and scheduler) for the file's first entry in ``precision``, on 20
    of its training batches rendered beforehand, as the loop draws them."""
    with cpu_trainer(file) as trainer:
        trainer.precision = precision
        batches = trainer.batches.train(epoch=0, skip_batches=0,
                                        pixels=trainer.sampled_pixels())
        cached = [next(batches) for _ in range(20)]
        times = []
        for i in range(steps + 5):
            start = time.perf_counter()
            trainer.step(cached[i % len(cached)])
            if i >= 5:  # the first steps allocate
                times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def loop_ms(file: Path, pixel_batches: bool, steps: int, together: bool = True) -> float:
    """Mean milliseconds of data + training step as ``fit`` runs them (the mean: each batch
    draws its own size), with batches of whole renders or pixel batches (rendered several
    at a time as the loop does, or ``together=False`` one by one); the caller alternates
    the kinds, round by round, so a drifting machine shows in all."""
    with cpu_trainer(file) as trainer:
        if not together:
            trainer.batches.render_group_items = 1
        pixels = trainer.sampled_pixels() if pixel_batches else None
        batches = trainer.batches.train(epoch=0, skip_batches=0, pixels=pixels)
        for _ in range(5):  # the first steps allocate
            trainer.step(next(batches))
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(next(batches))  # the data, timed with the step
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path,
                        default=ROOT / "experiments" / "quickstart.yml")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    print_machine("cpu")
    model = build_entry(load_experiment(args.file)[0], with_data=False).model
    tensors = sum(1 for _ in model.parameters())
    print(f"\n{args.file.name}: AdamW step over {tensors} parameter tensors (median ms)")
    print("| implementation | ms | vs. per-tensor loop |\n|---|---:|---:|")
    modes = {"per-tensor loop (the CPU default)": {"foreach": False},
             "foreach": {"foreach": True}, "fused (inrlab)": {"fused": True}}
    ms = {name: optimizer_step_ms(model, mode, args.steps) for name, mode in modes.items()}
    loop = ms["per-tensor loop (the CPU default)"]
    for name, value in ms.items():
        print(f"| {name} | {value:.2f} | {loop / value:.2f}x |")
    print(f"\nbf16 / fp32 rate of 512x512 products (what `precision: auto` measures): "
          f"{bf16_speedup('cpu'):.2f}x; of 1024x1024: {bf16_speedup('cpu', 1024):.2f}x")
    print(f"\n{args.file.name}: whole training step, cached batches (median ms)")
    print("| precision | ms | vs. fp32 |\n|---|---:|---:|")
    fp32 = training_step_ms(args.file, "fp32", args.steps)
    bf16 = training_step_ms(args.file, "bf16", args.steps)
    print(f"| fp32 | {fp32:.1f} | 1.00x |\n| bf16 | {bf16:.1f} | {fp32 / bf16:.2f}x |")
    print(f"\n{args.file.name}: data + training step as the loop runs them (mean ms, "
          "3 rounds alternating)")
    kinds = {"whole renders at the batch's size": (False, True),
             "pixel batches (the scored pixels alone), one by one": (True, False),
             "pixel batches rendered together (inrlab)": (True, True)}
    rounds: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(3):
        for name, (pixel_batches, together) in kinds.items():
            rounds[name].append(loop_ms(args.file, pixel_batches, args.steps, together))
    print("| batches | ms per round | vs. whole renders |\n|---|---|---:|")
    whole = rounds["whole renders at the batch's size"]
    for name, times in rounds.items():
        ratio = statistics.median(w / t for w, t in zip(whole, times))
        print(f"| {name} | {', '.join(f'{t:.1f}' for t in times)} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
