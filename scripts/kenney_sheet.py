"""Build ``src/inrlab/data/sheets/kenney-cc0.png``: Kenney's CC0 game art (kenney.nl) as
shipped inside the ``arcade`` wheel on PyPI, as one sheet of 32x32 tiles.

The square images of the wheel's tile, item, enemy and top-down tank folders are
downscaled to 32x32 (box filter, alpha kept) and laid out 16 to a row, sorted by path; the
sheet is read like any tile sheet through ``src/inrlab/data/configs/kenney.ndjson``
(``rpg_tile_dataset(SHAPE, tile_config="kenney")``).

    pip download arcade==3.3.3 --no-deps -d /tmp/arcade
    python scripts/kenney_sheet.py /tmp/arcade/arcade-3.3.3-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "src" / "inrlab" / "data" / "sheets" / "kenney-cc0.png"
FOLDERS = ("tiles", "items", "enemies", "topdown_tanks")
TILE = 32
PER_ROW = 16


def square_images(wheel: Path) -> list[tuple[str, Image.Image]]:
    """(path, RGBA image) of every square PNG in FOLDERS of the wheel's image assets."""
    found = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if (name.endswith(".png") and len(parts) == 6 and parts[3] == "images"
                    and parts[4] in FOLDERS):
                image = Image.open(io.BytesIO(archive.read(name))).convert("RGBA")
                if image.width == image.height >= TILE:
                    found.append((name, image))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="the arcade wheel (pip download arcade)")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    images = square_images(args.wheel)
    rows = (len(images) + PER_ROW - 1) // PER_ROW
    sheet = Image.new("RGBA", (PER_ROW * TILE, rows * TILE), (0, 0, 0, 0))
    for index, (_, image) in enumerate(images):
        tile = image.resize((TILE, TILE), Image.BOX)
        sheet.paste(tile, ((index % PER_ROW) * TILE, (index // PER_ROW) * TILE))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"{len(images)} tiles from {args.wheel.name} -> {args.output} "
          f"({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
