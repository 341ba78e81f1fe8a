"""Write the sprites' validation stream as PNG files, at any size: the high-resolution
truth for ``inrlab evaluate --images DIR --scales S``.

    python scripts/validation_sprites.py sprites-64 --size 64
    inrlab evaluate experiments/sprites/render-scales.yml --images sprites-64 --scales 2

Item ``i`` is the same scene at every size (``inrlab.data.sprites``), so the 64x64 file is
the truth of the 32x32 validation sprite the run was validated on; no run trained on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from inrlab.data.sprites import sprite_dataset
from inrlab.storage.grids import save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder to write sprite-NNNN.png into")
    parser.add_argument("--size", type=int, default=64, help="side in pixels (default 64)")
    parser.add_argument("--count", type=int, default=256,
                        help="how many (default 256, the validation set of experiments/sprites/)")
    parser.add_argument("--seed", type=int, default=0, help="the dataset's seed (default 0)")
    args = parser.parse_args()
    data = sprite_dataset((3, args.size, args.size), args.count, validation=True, seed=args.seed)
    for index, image in enumerate(data.batch(torch.arange(args.count))):
        save_png(image, args.output / f"sprite-{index:04d}.png")
    print(f"wrote {args.count} validation sprites of {args.size}x{args.size} to {args.output}")


if __name__ == "__main__":
    main()
