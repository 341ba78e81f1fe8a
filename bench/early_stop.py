"""What ``inrlab run --early-stop`` spends and finds against the full matrix, on a matrix of
the logs' models: rpg-simple-cnn.yml's model and data with a learning-rate axis from 1e-5
to 1e-2 and two trials (10 entries), the budget reduced to fit.

Both arms go through the CLI as a user runs them, one after the other in this process, on
their own runs directories: the full matrix, then the same matrix with ``--early-stop``.
Figures: inputs trained (sum over entries) and the best entry's final validation loss of
each arm, and their ratios (targets: <= 40% of the inputs, best within 1%).

    python bench/early_stop.py                      # 6,000 inputs per entry
    python bench/early_stop.py --max-inputs 20000   # closer to the logs' schedule
    python bench/early_stop.py --report             # the table of existing runs

Needs the RLTiles sheet (../shared/datasets, or downloaded once to the cache).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from inrlab.cli import main
from inrlab.machine import print_machine

ROOT = Path(__file__).resolve().parents[1]
MATRIX = """matrix:
  ch: [[16, 24, 32]]
  lr: [0.00001, 0.0001, 0.001, 0.003, 0.01]
  trial: [1, 2]
$extends: {parent}
experiment_name: bench/early-stop/${{matrix_slug}}
learnrate: ${{lr}}
seed: ${{trial}}
max_inputs: {budget}
warmup_inputs: {warmup}  # the logs' all-black start would make every entry alike
num_epochs_between_validations: null
num_inputs_between_validations: {every}
"""


def results(runs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs.rglob("result.json"))]


def arm_figures(runs: Path) -> tuple[int, float, str, int]:
    """(inputs trained, best final validation loss, its entry, entries complete)."""
    rows = results(runs)
    done = [r for r in rows if r["status"] == "complete"]
    best = min(done, key=lambda r: r["validation_loss"])
    return (sum(r["num_inputs"] for r in rows), best["validation_loss"], best["matrix_slug"],
            len(done))


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-inputs", type=int, default=6000)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs-bench/early-stop"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    args = parser.parse_args()
    print_machine("cpu")
    budget = args.max_inputs
    text = MATRIX.format(parent=ROOT / "experiments" / "logs" / "rpg-simple-cnn.yml",
                         budget=budget, warmup=budget // 6, every=max(64, budget // 10))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "early-stop.yml"
        path.write_text(text)
        seconds = {}
        for arm, flags in (("full", []), ("early-stop", ["--early-stop"])):
            runs = args.runs_dir / arm
            if args.report:
                continue
            started = time.monotonic()
            code = main(["run", str(path), "--runs-dir", str(runs), "--no-tensorboard",
                         *flags])
            seconds[arm] = time.monotonic() - started
            print(f"{arm}: exit {code}, {seconds[arm]:.0f} s")
    full = arm_figures(args.runs_dir / "full")
    early = arm_figures(args.runs_dir / "early-stop")
    print(f"\n10 entries x {budget:,} inputs (rpg-simple-cnn's model, lr 1e-5..1e-2, 2 trials)")
    print("| arm | inputs trained | best validation loss | best entry | complete |")
    print("|---|---|---|---|---|")
    for arm, (inputs, loss, entry, done) in (("full matrix", full), ("--early-stop", early)):
        print(f"| {arm} | {inputs:,} | {loss:.5f} | {entry} | {done} |")
    print(f"inputs: {early[0] / full[0]:.2f}x the full matrix's; best loss: "
          f"{early[1] / full[1]:.4f}x ({100 * (early[1] / full[1] - 1):+.2f}%)")
    if seconds:
        print(f"time: full {seconds['full']:.0f} s, early stop {seconds['early-stop']:.0f} s "
              f"({seconds['early-stop'] / seconds['full']:.2f}x)")


if __name__ == "__main__":
    main_bench()
