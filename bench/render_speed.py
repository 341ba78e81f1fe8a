"""Seconds, pixels per second and peak memory of one large render of the first quick start's
model (``experiments/kali/local-latents.yml``: the local-latent decoder of an 8x8 grid of
4-float latents, LIIF's ensemble of four MLP passes per pixel),
through the decoder's chunked rendering as ``inrlab render`` runs it; the progress bar it
shows on stderr is the one ``inrlab render`` shows. The weights are the untrained ones of the
file's seed: the time does not depend on their values.

    python bench/render_speed.py                 # 4096x4096
    python bench/render_speed.py --size 1024 \
        --file experiments/quantised-codes/rltiles-context-areas.yml
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from inrlab.experiment.build import build_entry
from inrlab.experiment.spec import load_experiment
from inrlab.machine import print_machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path,
                        default=ROOT / "experiments" / "kali" / "local-latents.yml")
    parser.add_argument("--size", type=int, default=4096, help="render side (default 4096)")
    args = parser.parse_args()
    print_machine("cpu")
    spec = load_experiment(args.file)[0]
    model = build_entry(spec, with_data=False).model.eval()
    channels, height, width = model.input_shape
    images = torch.rand(1, channels, height or 32, width or 32)
    with torch.no_grad():
        codes = model.render_code(images)
        with FlopCounterMode(display=False) as counter:
            model.decode(codes, (64, 64))
        macs = counter.get_total_flops() / 2 / 64**2
        model.decode(codes, (256, 256))  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        model.decode(codes, (args.size, args.size))
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pixels = args.size**2
    print(f"{spec.experiment_name}: {args.size}x{args.size} render in {seconds:.1f} s, "
          f"{pixels / seconds / 1e3:,.0f} kpixels/s, decoder {macs:,.0f} MACs/pixel "
          f"({macs * pixels / seconds / 1e9:.1f} GMAC/s); peak RSS {peak / 2**20:,.0f} MiB "
          f"({(peak - before) / 2**20:,.0f} MiB above the process before the render)")


if __name__ == "__main__":
    main()
