"""The quick start as a new user runs it: ``inrlab run experiments/quickstart.yml`` timed as
a whole command, then the run's validation PSNR beside each image's mean colour and PCA at
the model's code size on the same validation images, and the spread of its outputs.

    python bench/quickstart.py                 # train anew into runs-bench/quickstart
    python bench/quickstart.py --report        # only score the existing run

Prints the CPU's flags and GEMM rates first: the time depends on them (bf16 units or not).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from inrlab.experiment.build import build_entry
from inrlab.experiment.trained import load_run_weights
from inrlab.experiment.spec import load_experiment
from inrlab.report.baselines import compare_with_baselines
from inrlab.storage.rundir import RunDir
from inrlab.machine import print_machine

ROOT = Path(__file__).resolve().parents[1]

QUICKSTART = ROOT / "experiments" / "quickstart.yml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=QUICKSTART)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs-bench"))
    parser.add_argument("--report", action="store_true", help="score the existing run only")
    args = parser.parse_args()
    print_machine("cpu")
    spec = load_experiment(args.file)[0]
    run_dir = RunDir.for_experiment(args.runs_dir, spec.experiment_name)
    if not args.report:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "inrlab", "run", str(args.file), "--reset",
                        "--no-tensorboard", "--runs-dir", str(args.runs_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"`inrlab run {args.file.name}`: {time.perf_counter() - start:.0f} s wall "
              "(start-up, data, training, validations, checkpoints)")
    result = run_dir.read_result() or {}
    print(f"training time {result.get('training_time_s', 0):.0f} s for "
          f"{result.get('num_inputs', 0):,} inputs ({result.get('throughput')} images/s, "
          f"precision {result.get('precision')})")
    built = build_entry(spec, with_data=True)
    load_run_weights(built.model, run_dir.path)
    torch.manual_seed(0)
    scores, _, _ = compare_with_baselines(built.model.eval(), built.train_sets[0][1],
                                          built.validation_sets[0][1])
    print(f"\nOn the {scores['images']} validation images "
          f"(code of {scores['code floats']} floats):")
    print("| method | PSNR (dB) |\n|---|---:|")
    print(f"| {spec.experiment_name} (output pixel std {scores['model output std']:.3f}) | "
          f"{scores['model psnr']:.2f} |")
    print(f"| PCA, {scores['pca components']} components | {scores['pca psnr']:.2f} |")
    print(f"| each image's mean colour | {scores['mean colour psnr']:.2f} |")
    print(f"\nmodel - mean colour: {scores['model psnr'] - scores['mean colour psnr']:+.2f} dB, "
          f"model - PCA: {scores['model psnr'] - scores['pca psnr']:+.2f} dB")


if __name__ == "__main__":
    main()
