"""Reconstruction quality on the RLTiles sheet: validation L1, MSE and PSNR against inputs
and training time, for experiment files trained through inrlab's own runner (so every row
is reproducible with ``inrlab run FILE --max-inputs N``), plus the 2x test.

    python bench/quality.py --max-inputs 200000            # train (or resume) and report
    python bench/quality.py --max-inputs 200000 --report   # report runs that exist
    python bench/quality.py --two-x --max-inputs 100000    # the 16x16 -> 32x32 test

Runs go to ``--runs-dir`` (default ``runs-bench``); an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inrlab.data.tiles import load_tiles, split_indices  # noqa: E402
from inrlab.experiment.build import build_entry  # noqa: E402
from inrlab.experiment.runner import RunOptions, load_run_weights, run_entry  # noqa: E402
from inrlab.experiment.spec import RunSpec, load_experiment  # noqa: E402
from inrlab.models.posenc import resampled_pixel_grid  # noqa: E402
from inrlab.train.log import read_metrics  # noqa: E402
from inrlab.train.rundir import RunDir  # noqa: E402

EXPERIMENTS = [ROOT / "experiments" / "rltiles-baseline.yml",
               ROOT / "experiments" / "rltiles-best.yml"]
TWO_X = ROOT / "experiments" / "rltiles-2x.yml"
VALIDATION_RATIO = 9  # the experiment files' split: every 10th tile validates


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-12))


def train(paths: list[Path], options: RunOptions, report_only: bool) -> list[tuple[RunSpec, RunDir]]:
    runs = []
    for path in paths:
        for spec in load_experiment(path):
            if not report_only:
                run_entry(spec, options)
            runs.append((spec, RunDir.for_experiment(options.runs_dir, spec.experiment_name)))
    return runs


def curves(runs: list[tuple[RunSpec, RunDir]]) -> None:
    print("\n| run | inputs | train time (s) | val L1 | val MSE | val PSNR (dB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec, run_dir in runs:
        for record in read_metrics(run_dir.metrics):
            if record.get("kind") == "validation" and "mse" in record:
                print(f"| {spec.experiment_name} | {record['inputs']:,} | "
                      f"{record['time_s']:.0f} | {record.get('l1', float('nan')):.4f} | "
                      f"{record['mse']:.5f} | {record['psnr']:.2f} |")


@torch.no_grad()
def two_x(spec: RunSpec, run_dir: RunDir) -> None:
    """Encode the 16x16 validation tiles, render 32x32, score against the true 32x32 tiles."""
    model = build_entry(spec, with_data=False).model
    load_run_weights(model, run_dir.path)
    model.eval()
    tiles = load_tiles(None, (3, 32, 32))
    keep = split_indices(tiles.shape[0], True, VALIDATION_RATIO)
    truth = tiles[keep].float() / 255  # (B, 3, 32, 32)
    low = load_tiles(None, (3, 16, 16), "area")[keep].float() / 255  # as rltiles-2x.yml reads
    codes = model.encode(low)
    decoder = model.decoder
    own = model.decode(codes, (16, 16)).clamp(0, 1)
    coords = resampled_pixel_grid((16, 16), (32, 32))  # area geometry, like bicubic below
    area = decoder.query(codes, coords).transpose(1, 2).reshape(truth.shape).clamp(0, 1)
    corner = model.decode(codes, (32, 32)).clamp(0, 1)  # pixel_grid's corner-aligned geometry
    bicubic = F.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    bilinear = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    nearest = F.interpolate(low, size=(32, 32), mode="nearest")
    print(f"\n2x test: {truth.shape[0]} validation tiles, 16x16 (area) -> 32x32, "
          f"run {run_dir.path}")
    print("| method | PSNR vs true 32x32 (dB) |\n|---|---:|")
    for name, image in [("decoder render, area geometry", area),
                        ("decoder render, corner-aligned grid", corner),
                        ("bicubic upscale of the 16x16 input", bicubic),
                        ("bilinear upscale of the 16x16 input", bilinear),
                        ("nearest upscale of the 16x16 input", nearest)]:
        print(f"| {name} | {psnr(F.mse_loss(image, truth).item()):.2f} |")
    print(f"(the decoder's own 16x16 reconstruction: {psnr(F.mse_loss(own, low).item()):.2f} dB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", type=Path, default=EXPERIMENTS)
    parser.add_argument("--max-inputs", type=int, default=None,
                        help="training budget per run (default: each file's max_inputs)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs-bench")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", action="store_true", help="only report existing runs")
    parser.add_argument("--two-x", action="store_true", help="run the 2x test instead")
    args = parser.parse_args()
    options = RunOptions(runs_dir=args.runs_dir, device=args.device, skip=True,
                         max_inputs=args.max_inputs, tensorboard=False, quiet=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"budget {args.max_inputs or 'per file'} inputs")
    if args.two_x:
        runs = train([TWO_X], options, args.report)
        curves(runs)
        two_x(*runs[0])
    else:
        curves(train(args.experiments, options, args.report))


if __name__ == "__main__":
    main()
