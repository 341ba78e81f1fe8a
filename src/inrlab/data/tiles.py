"""Tiles cut from sprite sheets, driven by the seed's ndjson tile config.

One JSON object per line and sheet: ``name`` (cache path), ``url`` (http(s), ``file://`` or
a local path), optional ``path`` (a local copy tried first; relative to the working
directory, then to the config file, then to the checkout inrlab runs from), ``shape``
([h, w] tile size), ``limit`` ([h, w]: crop the sheet to its top-left region first),
``offset`` ([y, x] pixels dropped from the top and left), ``stride`` ([y, x], default: the
tile size), ``ignore_lines`` (tile rows to skip), ``ignore_tiles`` ([row, col] pairs to
skip), ``remove_transparent`` (default true).

Transparent pixels are composited on black (RGB multiplied by alpha); tiles without any
variation (e.g. fully transparent) are dropped; tiles are resized to the requested shape
with nearest neighbour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from inrlab.data.cache import cache_dir, fetch
from inrlab.data.images import read_image_file, resize, set_channels
from inrlab.data.tensor import ImageTensorDataset
from inrlab.errors import DataError

CONFIGS = Path(__file__).parent / "configs"
DEFAULT_TILE_CONFIG = CONFIGS / "rltiles.ndjson"
_FIELDS = {"name", "url", "path", "shape", "limit", "offset", "stride", "ignore_lines",
           "ignore_tiles", "remove_transparent"}


@dataclass
class TileSheet:
    name: str
    url: str
    shape: tuple[int, int]
    path: str | None = None
    limit: tuple[int, int] | None = None
    offset: tuple[int, int] = (0, 0)
    stride: tuple[int, int] | None = None
    ignore_lines: list[int] = field(default_factory=list)
    ignore_tiles: list[tuple[int, int]] = field(default_factory=list)
    remove_transparent: bool = True
    source: str = "<tile config>"  # "file, line N" for error messages
    base_dir: Path | None = None


def builtin_tile_configs() -> list[str]:
    """Names of the tile configs that ship with inrlab (``tile_config="kenney"``)."""
    return sorted(path.stem for path in CONFIGS.glob("*.ndjson"))


def load_tile_config(config: str | Path | Sequence[dict[str, Any]] | None) -> list[TileSheet]:
    """Sheets from an ndjson file, a built-in config's name (``builtin_tile_configs``), a
    list of entries (dicts) and/or such files and names, or the default RLTiles config."""
    if config is None:
        config = DEFAULT_TILE_CONFIG
    if isinstance(config, (str, Path)):
        path = Path(config).expanduser()
        if not path.is_file() and str(config) in builtin_tile_configs():
            path = CONFIGS / f"{config}.ndjson"
        if not path.is_file():
            raise DataError("tile config not found (built-in configs: "
                            f"{', '.join(builtin_tile_configs())})", path=path)
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    rows.append((json.loads(line), f"{path}, line {number}", path.parent))
                except json.JSONDecodeError as e:
                    raise DataError(f"invalid JSON in tile config: {e.msg}", path=path,
                                    line=number) from None
    else:  # entries, or configs by name or path, their sheets in this order
        sheets = []
        for i, row in enumerate(config):
            if isinstance(row, (str, Path)):
                sheets += load_tile_config(row)
            else:
                sheets.append(_sheet(row, f"tile config entry {i + 1}", None))
        return sheets
    return [_sheet(row, where, base) for row, where, base in rows]


def _sheet(row: Any, where: str, base: Path | None) -> TileSheet:
    if not isinstance(row, dict):
        raise DataError(f"{where}: each tile config entry must be a JSON object")
    unknown = set(row) - _FIELDS
    missing = {"name", "shape"} - set(row)
    if "url" not in row and "path" not in row:
        missing.add("url")
    if unknown:
        raise DataError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
    if missing:
        raise DataError(f"{where}: missing field(s) {sorted(missing)}")

    def pair(key: str) -> tuple[int, int] | None:
        value = row.get(key)
        if value is None:
            return None
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and v >= 0 for v in value)):
            raise DataError(f"{where}: '{key}' must be [y, x] (two integers >= 0), got {value!r}")
        return (value[0], value[1])

    shape = pair("shape")
    if shape is None or min(shape) <= 0:
        raise DataError(f"{where}: 'shape' must be the tile size [height, width] > 0")
    return TileSheet(
        name=str(row["name"]), url=str(row.get("url") or row["path"]), shape=shape,
        path=row.get("path"), limit=pair("limit"), offset=pair("offset") or (0, 0),
        stride=pair("stride"), ignore_lines=list(row.get("ignore_lines", [])),
        ignore_tiles=[tuple(t) for t in row.get("ignore_tiles", [])],
        remove_transparent=bool(row.get("remove_transparent", True)), source=where,
        base_dir=base,
    )


# The checkout this package runs from (``src/inrlab/data`` -> the repository root), so the
# default config's ``../shared/...`` copy is found from any working directory.
CHECKOUT = Path(__file__).resolve().parents[3]


def _sheet_file(sheet: TileSheet) -> Path:
    candidates = []
    if sheet.path:
        candidates = [Path(sheet.path).expanduser(), (sheet.base_dir or Path.cwd()) / sheet.path,
                      CHECKOUT / sheet.path]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    ways = [f"give the tile config entry '{sheet.name}' ({sheet.source}) a 'path' to a local "
            "copy, or pass tile_config= a config whose entries name local files"]
    if sheet.path:
        ways.insert(0, f"put the sheet at {sheet.path} (relative to the working directory or "
                       "the checkout, e.g. ../shared/datasets/ beside it)")
    return fetch(sheet.url, cache_dir() / "tiles" / sheet.name, looked=candidates, ways=ways)


def cut_tiles(sheet: TileSheet, file: Path | None = None) -> torch.Tensor:
    """All kept tiles of one sheet as uint8 (N, 3, h, w), in row-major order."""
    file = file or _sheet_file(sheet)
    try:
        pixels = read_image_file(file, composite=False)  # (4, H, W)
    except DataError as e:
        raise DataError(f"{sheet.source}: cannot read the sheet image ({e.message})",
                        path=file) from None
    if sheet.limit:
        pixels = pixels[:, : sheet.limit[0], : sheet.limit[1]]
    pixels = pixels[:, sheet.offset[0]:, sheet.offset[1]:]
    (tile_h, tile_w), (height, width) = sheet.shape, pixels.shape[1:]
    stride_y, stride_x = sheet.stride or sheet.shape
    rows = (height - tile_h) // stride_y + 1 if height >= tile_h else 0
    cols = (width - tile_w) // stride_x + 1 if width >= tile_w else 0
    if rows <= 0 or cols <= 0:
        raise DataError(f"{sheet.source}: tile shape {tile_h}x{tile_w} is larger than the "
                        f"{height}x{width} sheet", path=file)
    for r, c in sheet.ignore_tiles:
        if not (0 <= r < rows and 0 <= c < cols):
            raise DataError(f"{sheet.source}: ignore_tiles entry [{r}, {c}] is outside the "
                            f"sheet's {rows} rows x {cols} columns", path=file)
    tiles = pixels.unfold(1, tile_h, stride_y).unfold(2, tile_w, stride_x)  # (4, R, C, h, w)
    tiles = tiles.permute(1, 2, 0, 3, 4)  # (R, C, 4, h, w)
    keep = torch.ones(rows, cols, dtype=torch.bool)
    for r in sheet.ignore_lines:
        if 0 <= r < rows:
            keep[r] = False
    for r, c in sheet.ignore_tiles:
        keep[r, c] = False
    tiles = tiles[keep]  # (N, 4, h, w)
    rgb, alpha = tiles[:, :3].float(), tiles[:, 3:].float() / 255.0
    if sheet.remove_transparent:
        rgb = rgb * alpha
    rgb = rgb.round().to(torch.uint8)
    varied = rgb.flatten(1).float().std(1) > 0
    return rgb[varied]


def load_tiles(config: str | Path | Sequence[dict[str, Any]] | None,
               shape: Sequence[int], resample: str = "nearest") -> torch.Tensor:
    """Tiles of every sheet in the config, uint8 (N, C, H, W) resized to ``shape``."""
    sheets = load_tile_config(config)
    parts = [resize(cut_tiles(sheet), tuple(shape[1:]), resample) for sheet in sheets]
    tiles = set_channels(torch.cat(parts), int(shape[0])) if parts else torch.empty(0)
    if tiles.shape[0] == 0:
        raise DataError(f"no tiles left in {config or DEFAULT_TILE_CONFIG} after filtering")
    return tiles


def split_indices(count: int, validation: bool | None, ratio: int) -> torch.Tensor:
    """Deterministic split by position: ``ratio`` items for training, then 1 for validation."""
    index = torch.arange(count)
    if validation is None:
        return index
    is_validation = index % (ratio + 1) == ratio
    return index[is_validation if validation else ~is_validation]


def rpg_tile_dataset(
    shape: Sequence[int],
    validation: bool | None = None,
    limit: int | None = None,
    shuffle: bool = False,
    interleave: bool = False,
    random_shift: int = 0,
    random_flip: bool = False,
    num_repeat: int = 1,
    tile_config: str | Path | Sequence[dict[str, Any]] | None = None,
    validation_ratio: int = 20,
    seed: int = 0,
    resample: str = "nearest",
    shift_wrap: bool = False,
    random_transpose: bool = False,
) -> ImageTensorDataset:
    """The logs' RPG tile dataset: (C, H, W) float tiles in [0, 1].

    ``validation``: True = every 21st tile (``validation_ratio`` 20 : 1), False = the others,
    None = all. ``shuffle`` permutes the tiles once with ``seed`` (then ``limit`` takes a
    fixed random subset); ``interleave`` alternates between sheets. Augmentation
    (``random_shift`` pixels, filled with black or, with ``shift_wrap``, rolled around;
    ``random_flip`` with p = 0.4 horizontal / 0.2 vertical; ``random_transpose`` swapping x
    and y with p = 0.5) is drawn anew at every read. Training loaders shuffle map-style
    datasets every epoch. Tiles of another size than ``shape`` are resized with ``resample``
    ("nearest" or "area", see ``resize``).
    """
    tiles = load_tiles(tile_config, shape, resample)
    if interleave:
        tiles = _interleave_sheets(tile_config, shape, tiles)
    tiles = tiles[split_indices(tiles.shape[0], validation, validation_ratio)]
    if shuffle:
        tiles = tiles[torch.randperm(tiles.shape[0], generator=torch.Generator().manual_seed(seed))]
    if limit is not None:
        tiles = tiles[:limit]
    if tiles.shape[0] == 0:
        raise DataError("the tile dataset is empty after the split and limit")
    return ImageTensorDataset(tiles, random_shift=random_shift, random_flip=random_flip,
                              num_repeat=num_repeat, shift_wrap=shift_wrap,
                              random_transpose=random_transpose)


def _interleave_sheets(config: Any, shape: Sequence[int], tiles: torch.Tensor) -> torch.Tensor:
    counts = [cut_tiles(sheet).shape[0] for sheet in load_tile_config(config)]
    sheet_of = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    rank = torch.cat([torch.arange(n) for n in counts])
    order = torch.argsort(rank * len(counts) + sheet_of, stable=True)
    return tiles[order]
