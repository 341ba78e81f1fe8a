"""How many inputs the logs' configurations spend at a constant output (the sigmoid's
all-black start), with the seed's loss from the first step and with the remedy
``warmup_inputs`` (MSE for the first N images, then the file's loss), and the validation
loss each reaches at the end of the same budget.

Each arm trains the entry through inrlab's own runner from the same initial weights and
data order; only validation is made denser (every ``--every`` inputs, on the first
``--validation-limit`` validation images) so the end of the constant phase is seen.

    python bench/constant_start.py                         # rpg-simple-cnn.yml, 100k inputs
    python bench/constant_start.py --arm seed               # one arm (run two at once)
    python bench/constant_start.py --report                 # the table of existing runs
    python bench/constant_start.py experiments/logs/rpg-resnet.yml --max-inputs 20000

Runs go to ``--runs-dir`` (default ``runs-bench/constant-start``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from inrlab.data import LimitDataset
from inrlab.experiment.build import (build_entry, build_trainer, run_config,
                                     run_device)
from inrlab.experiment.runner import RunOptions, fit_run
from inrlab.experiment.spec import RunSpec, load_experiment
from inrlab.storage.metrics import read_metrics
from inrlab.storage.rundir import RunDir
from inrlab.train.settings import TrainSettings
from inrlab.machine import print_machine

ROOT = Path(__file__).resolve().parents[1]

CONSTANT = TrainSettings.stuck_output_std  # an output pixel std at most this is constant


def arms(warmup: int) -> dict[str, dict[str, object]]:
    return {"seed": {}, f"warmup{warmup}": {"warmup_inputs": warmup}}


def run_arm(spec: RunSpec, name: str, overrides: dict[str, object], args: argparse.Namespace
            ) -> RunDir:
    run_dir = RunDir.for_experiment(args.runs_dir, f"{spec.experiment_name}/{name}")
    built = build_entry(spec, overrides={
        "max_inputs": args.max_inputs, "num_inputs_between_validations": args.every,
        "num_epochs_between_validations": None, "stuck_validations": 0, **overrides,
        **({"precision": args.precision} if args.precision else {})})
    built.validation_sets = [(start, LimitDataset(dataset, args.validation_limit))
                             for start, dataset in built.validation_sets]
    options = RunOptions(runs_dir=args.runs_dir, tensorboard=False, quiet=True,
                         reset=not args.resume)
    trainer = build_trainer(spec, built, run_dir, run_device(spec, None), tensorboard=False)
    fit_run(trainer, run_config(spec, built.model), options)
    return run_dir


def constant_phase(run_dir: RunDir) -> tuple[int | None, float | None, int]:
    """(inputs at the first validation whose output is not constant, or None; the last
    validation loss; the inputs trained)."""
    records = [r for r in read_metrics(run_dir.metrics) if r.get("kind") == "validation"]
    escaped = next((r["inputs"] for r in records if r.get("output_std", 0) > CONSTANT), None)
    last = records[-1] if records else {}
    return escaped, last.get("loss"), int(last.get("inputs") or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path,
                        default=[ROOT / "experiments" / "logs" / "rpg-simple-cnn.yml"])
    parser.add_argument("--max-inputs", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1024,
                        help="validation cadence in inputs (the resolution of the figures)")
    parser.add_argument("--validation-limit", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3000, help="the remedy's warmup_inputs")
    parser.add_argument("--arm", choices=("seed", "warmup"), default=None,
                        help="train only this arm (default: both, one after the other)")
    parser.add_argument("--all-entries", action="store_true",
                        help="every matrix entry (default: the first of each file)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="the same precision for both arms (default: the file's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="continue existing runs")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs-bench/constant-start"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine("cpu")
    rows = []
    for path in args.files:
        specs = load_experiment(path)
        for spec in specs if args.all_entries else specs[:1]:
            figures = {}
            for name, overrides in arms(args.warmup).items():
                if not args.report and (args.arm is None or name.startswith(args.arm)):
                    run_arm(spec, name, overrides, args)
                run_dir = RunDir.for_experiment(args.runs_dir, f"{spec.experiment_name}/{name}")
                if run_dir.metrics.exists():
                    figures[name] = constant_phase(run_dir)
            rows.append((spec.experiment_name, figures))
    print(f"\nInputs at a constant output (validation output pixel std <= {CONSTANT}, checked "
          f"every {args.every:,} inputs on {args.validation_limit} validation images)")
    print("| entry | arm | constant until | validation loss | at inputs |")
    print("|---|---|---:|---:|---:|")
    for name, figures in rows:
        for arm, (escaped, loss, inputs) in figures.items():
            until = f"{escaped:,}" if escaped is not None else f"> {inputs:,} (never left)"
            print(f"| {name} | {arm} | {until} | {loss:.5f} | {inputs:,} |")
        seed, warm = figures.get("seed"), figures.get(f"warmup{args.warmup}")
        if seed and warm and warm[0]:
            bound = "" if seed[0] is not None else ">= "
            print(f"| {name} | ratio seed / warmup | {bound}{(seed[0] or seed[2]) / warm[0]:.1f}x"
                  " | | |")


if __name__ == "__main__":
    main()
