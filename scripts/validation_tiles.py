"""Write the RLTiles validation tiles as PNG files, the high-resolution truth for
``inrlab evaluate --images DIR --scales S`` (e.g. the 32x32 tiles for the 16x16 models).

    python scripts/validation_tiles.py tiles-32 --size 32
    inrlab evaluate experiments/upscalers/rltiles-2x.yml --images tiles-32 --scales 2

The split is the experiment files' (``validation_ratio=9``: every 10th tile), so these are
tiles no rltiles-*.yml model trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inrlab.data.tiles import load_tiles, split_indices
from inrlab.storage.grids import save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder to write tile-NNNN.png into")
    parser.add_argument("--size", type=int, default=32, help="tile side in pixels (default 32)")
    parser.add_argument("--validation-ratio", type=int, default=9,
                        help="training tiles per validation tile (default 9, the files')")
    parser.add_argument("--tile-config", default=None,
                        help="a tile config (default: the RLTiles sheet)")
    args = parser.parse_args()
    tiles = load_tiles(args.tile_config, (3, args.size, args.size))
    chosen = tiles[split_indices(tiles.shape[0], True, args.validation_ratio)]
    for index, tile in enumerate(chosen):
        save_png(tile.float() / 255, args.output / f"tile-{index:04d}.png")
    print(f"wrote {chosen.shape[0]} tiles of {args.size}x{args.size} to {args.output}")


if __name__ == "__main__":
    main()
