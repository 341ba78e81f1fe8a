"""Wall-clock time of ``inrlab evaluate``: a trained run's bytes table (its code, PCA,
JPEG, WebP and AVIF at its bytes, on its validation images) as a whole command, timed over
several runs in fresh processes (imports, model and data loading included).

    inrlab run experiments/quantised-codes/rltiles-context-areas.yml --max-inputs 20000
    python bench/evaluate_speed.py rltiles/context-areas/rate:0.0035
    python bench/evaluate_speed.py RUN --flags --scales 2 --images DIR   # any other flags

Prints the machine, then seconds per command (median, min, max) and the images scored.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from inrlab.machine import print_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory or an experiment name in the runs dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=["--bytes"],
                        help="inrlab evaluate's flags (default --bytes); the rest of the line")
    args = parser.parse_args()
    print_machine("cpu")
    command = [sys.executable, "-m", "inrlab", "evaluate", args.run, *args.flags, "--json",
               "--no-save"]
    print("command:", " ".join(command[1:]))
    seconds, rows = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"inrlab evaluate failed (exit {done.returncode}):\n{done.stderr}")
        rows = json.loads(done.stdout)
    print(f"{len(rows)} rows on {rows[0]['images']} images: {statistics.median(seconds):.1f} s "
          f"median ({min(seconds):.1f}-{max(seconds):.1f}) over {args.repeats} runs")


if __name__ == "__main__":
    main()
