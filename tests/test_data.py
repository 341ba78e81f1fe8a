"""Datasets of the logs from local files: tiles, kali patches, MNIST idx, image folders."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from inrlab.data import (InterleaveDataset, image_folder_dataset, kali_patch_dataset,
                         mnist_dataset, random_shift, random_transpose, rpg_tile_dataset,
                         sprite_dataset)
from inrlab.errors import DataError


def sheet_config(tmp_path, rltiles, **fields) -> str:
    path = tmp_path / "tiles.ndjson"
    path.write_text(json.dumps({"name": "rl.png", "url": str(rltiles), "shape": [32, 32],
                                **fields}) + "\n")
    return str(path)


def test_rpg_tiles_from_the_rltiles_sheet(tmp_path, rltiles) -> None:
    config = sheet_config(tmp_path, rltiles)
    everything = rpg_tile_dataset((3, 32, 32), tile_config=config)
    train = rpg_tile_dataset((3, 32, 32), validation=False, tile_config=config)
    validation = rpg_tile_dataset((3, 32, 32), validation=True, tile_config=config)
    assert len(train) + len(validation) == len(everything) > 1500
    assert len(validation) == len(everything) // 21
    (tile,) = validation[0]
    assert tile.shape == (3, 32, 32) and tile.dtype == torch.float32
    assert 0.0 <= float(tile.min()) and float(tile.max()) <= 1.0
    again = rpg_tile_dataset((3, 32, 32), validation=True, tile_config=config)
    assert torch.equal(validation.images, again.images)  # a stable split
    gray = rpg_tile_dataset((1, 16, 16), validation=True, limit=10, tile_config=config)
    assert len(gray) == 10 and gray[0][0].shape == (1, 16, 16)


def test_tile_augmentation_is_batched_and_changes_tiles(tmp_path, rltiles) -> None:
    config = sheet_config(tmp_path, rltiles)
    plain = rpg_tile_dataset((3, 32, 32), limit=64, tile_config=config)
    augmented = rpg_tile_dataset((3, 32, 32), limit=64, random_shift=4, random_flip=True,
                                 num_repeat=2, tile_config=config)
    assert len(augmented) == 128
    torch.manual_seed(0)
    batch = augmented.batch(list(range(0, 128, 2)))
    assert batch.shape == (64, 3, 32, 32)
    assert not torch.equal(batch, plain.batch(list(range(64))))


def test_wrapped_shifts_and_transposes_only_move_pixels(tmp_path, rltiles) -> None:
    images = torch.rand(32, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    rolled = random_shift(images, 2, generator, wrap=True)
    for image, out in zip(images, rolled):  # each output is the image rolled by <= 2 pixels
        assert any(torch.equal(out, image.roll((dy, dx), (-2, -1)))
                   for dy in range(-2, 3) for dx in range(-2, 3))
    assert (random_shift(images, 2, generator) == 0).any()  # the seed's shift pads with 0
    swapped = random_transpose(images, generator=generator)
    kept = [torch.equal(out, image) for image, out in zip(images, swapped)]
    assert all(k or torch.equal(out, image.transpose(-1, -2))
               for k, image, out in zip(kept, images, swapped))
    assert 0 < sum(kept) < len(kept)
    with pytest.raises(ValueError, match="needs square images, got 8x6"):
        random_transpose(images[..., :6])

    config = sheet_config(tmp_path, rltiles)
    plain = rpg_tile_dataset((3, 32, 32), limit=64, tile_config=config)
    augmented = rpg_tile_dataset((3, 32, 32), limit=64, random_shift=4, shift_wrap=True,
                                 random_flip=True, random_transpose=True, tile_config=config)
    torch.manual_seed(0)
    batch, reference = augmented.batch(list(range(64))), plain.batch(list(range(64)))
    assert not torch.equal(batch, reference)
    # Rolls, flips and transposes permute each tile's pixels: the same values, no black fill.
    torch.testing.assert_close(batch.flatten(2).sort(-1).values,
                               reference.flatten(2).sort(-1).values)


@pytest.mark.parametrize("fields, message", [
    ({"shape": [2000, 32]}, "larger than the"),
    ({"ignore_tiles": [[99, 0]]}, "outside the sheet"),
    ({"url": "/no/such/sheet.png"}, "file not found"),
    ({"colour": 1}, "unknown field"),
])
def test_tile_config_errors(tmp_path, rltiles, fields, message) -> None:
    with pytest.raises(DataError, match=message):
        rpg_tile_dataset((3, 32, 32), tile_config=sheet_config(tmp_path, rltiles, **fields))


def test_corrupt_sheet_and_empty_result(tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    config = [{"name": "bad.png", "url": str(bad), "shape": [8, 8]}]
    with pytest.raises(DataError, match="cannot read the sheet image"):
        rpg_tile_dataset((3, 8, 8), tile_config=config)
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (16, 16)).save(blank)
    with pytest.raises(DataError, match="no tiles left"):
        rpg_tile_dataset((3, 8, 8), tile_config=[{"name": "b", "url": str(blank),
                                                  "shape": [8, 8]}])


def test_kali_patches_are_deterministic_per_index_and_seed() -> None:
    data = kali_patch_dataset((3, 32, 32), num_images=100)
    batch = data.batch([3, 7, 11])
    assert batch.shape == (3, 3, 32, 32) and 0 <= float(batch.min()) <= float(batch.max()) <= 1
    assert torch.equal(batch[1], data[7][0])
    assert torch.equal(batch, kali_patch_dataset((3, 32, 32), num_images=100).batch([3, 7, 11]))
    other = kali_patch_dataset((3, 32, 32), num_images=100, seed=1).batch([3, 7, 11])
    validation = kali_patch_dataset((3, 32, 32), num_images=100, validation=True).batch([3])
    assert not torch.equal(batch, other) and not torch.equal(batch[:1], validation)
    assert kali_patch_dataset((1, 16, 16), num_images=5)[0][0].shape == (1, 16, 16)


def test_sprites_are_one_scene_at_every_size() -> None:
    """The 64x64 render of an item is the truth of its 32x32 one's 2x: area-downscaled, it
    is the 32x32 render to ~38 dB (anti-aliasing differs at corners); edges are sharp."""
    small = sprite_dataset((3, 32, 32), num_images=64).batch(torch.arange(64))
    large = sprite_dataset((3, 64, 64), num_images=64).batch(torch.arange(64))
    assert small.shape == (64, 3, 32, 32) and 0 <= float(small.min()) <= float(small.max()) <= 1
    assert float(F.mse_loss(F.avg_pool2d(large, 2), small)) < 10 ** -3.5  # above 35 dB
    assert torch.equal(small[5], sprite_dataset((3, 32, 32), num_images=64)[5][0])
    validation = sprite_dataset((3, 32, 32), num_images=64, validation=True).batch([5])
    assert not torch.equal(small[5:6], validation)
    # flat or graded regions with sharp edges: most neighbours close, a few far apart
    step = (small[..., 1:] - small[..., :-1]).abs().amax(1)  # (B, H, W - 1)
    assert float((step < 0.03).float().mean()) > 0.75 and float((step > 0.2).float().mean()) > 0.03
    assert sprite_dataset((1, 16, 24), num_images=5)[0][0].shape == (1, 16, 24)
    with pytest.raises(ValueError, match="at most 1024"):
        sprite_dataset((3, 2048, 32))


def write_idx(path, images: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    raw = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_mnist_from_plain_and_gzipped_idx_files(tmp_path) -> None:
    digits = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte", digits, compress=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", digits[:2], compress=True)
    train = mnist_dataset(train=True, root=tmp_path)
    test = mnist_dataset(train=False, root=tmp_path, shape=(3, 32, 32))
    assert len(train) == 5 and len(test) == 2
    assert torch.allclose(train[1][0][0], torch.from_numpy(digits[1]).float() / 255)
    assert test[0][0].shape == (3, 32, 32)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(12) + b"x")
    with pytest.raises(DataError, match="truncated"):
        mnist_dataset(root=tmp_path)
    with pytest.raises(DataError, match="no t10k-images"):
        mnist_dataset(train=False, root=tmp_path / "missing")


def test_image_folder_whole_images_and_patches(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "c.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="not a readable image"):
        image_folder_dataset(tmp_path)
    (tmp_path / "c.png").unlink()
    whole = image_folder_dataset(tmp_path, shape=(3, 16, 16))
    patches = image_folder_dataset(tmp_path, shape=(1, 8, 8), patches=4)
    assert len(whole) == 2 and whole[0][0].shape == (3, 16, 16)
    assert len(patches) == 8 and patches[0][0].shape == (1, 8, 8)


def test_interleave_mixes_tiles_and_fractals(tmp_path, rltiles) -> None:
    tiles = rpg_tile_dataset((3, 32, 32), limit=10, tile_config=sheet_config(tmp_path, rltiles))
    fractals = kali_patch_dataset((3, 32, 32), num_images=4)
    mixed = InterleaveDataset([tiles, fractals])
    assert len(mixed) == 20
    assert torch.equal(mixed[0][0], tiles[0][0]) and torch.equal(mixed[1][0], fractals[0][0])


def test_unreachable_url_without_cache(tmp_path, monkeypatch) -> None:
    """Offline: the error names the file, every place looked and each way to provide it,
    and leaves no empty cache folder behind."""
    monkeypatch.setenv("INRLAB_CACHE_DIR", str(tmp_path / "cache"))
    config = [{"name": "gone.png", "url": "http://127.0.0.1:9/gone.png", "shape": [8, 8],
               "path": "sheets/gone.png"}]
    with pytest.raises(DataError) as raised:
        rpg_tile_dataset((3, 8, 8), tile_config=config)
    message = str(raised.value)
    assert "gone.png is needed and could not be downloaded from http://127.0.0.1:9" in message
    assert "sheets/gone.png" in message and str(tmp_path / "cache" / "tiles") in message
    assert "$INRLAB_CACHE_DIR" in message and "'path' to a local copy" in message
    assert not (tmp_path / "cache").exists()


def test_mnist_offline_names_both_files_and_the_root_argument(tmp_path, monkeypatch) -> None:
    from inrlab.data import mnist

    monkeypatch.setenv("INRLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "MNIST_MIRROR", "http://127.0.0.1:9/")
    with pytest.raises(DataError) as raised:
        mnist.mnist_dataset(train=False)
    message = str(raised.value)
    assert "train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]" in message
    assert "mnist_dataset(root=FOLDER)" in message and "$INRLAB_CACHE_DIR" in message
    assert not (tmp_path / "cache").exists()


def test_data_error_in_an_experiment_exits_2_naming_both_files(tmp_path, write, cli) -> None:
    from conftest import TINY_EXPERIMENT

    config = write("tiles.ndjson", '{"name": "x", "url": "/no/sheet.png", "shape": [8, 8]}\n')
    snippet = f"rpg_tile_dataset(SHAPE, tile_config='{config}')"
    text = TINY_EXPERIMENT.replace("${hid}", "8").replace(
        "kali_patch_dataset(SHAPE, num_images=64)", snippet)
    path = write("data.yml", text)
    code, _, err = cli("run", path)
    line = text.lstrip("\n").splitlines().index(f"  {snippet}") + 1
    assert code == 2
    assert f"{path}, line {line}, key 'train_set'" in err and "/no/sheet.png" in err


def _trainer(dataset, tmp_path, **settings):
    from inrlab.models import EncoderDecoder, EncoderMLP, ImageManifoldDecoder
    from inrlab.train import TrainAutoencoder
    from inrlab.storage.rundir import RunDir
    from inrlab.train.settings import make_settings

    model = EncoderDecoder(EncoderMLP((3, 8, 8), 4, hidden=(8,)),
                           ImageManifoldDecoder(4, 3, num_hidden=8, num_blocks=1,
                                                default_shape=(8, 8)))
    values = {"batch_size": 5, "learnrate": 0.01, "optimizer": "Adam", **settings}
    return TrainAutoencoder(model=model, train_sets=[(0, dataset)],
                            validation_sets=[(0, dataset)],
                            settings=make_settings(values, lambda key: {}),
                            run_dir=RunDir(tmp_path / "run"), device="cpu", tensorboard=False)


@pytest.mark.parametrize("make", [
    lambda: kali_patch_dataset((3, 8, 8), num_images=23),
    lambda: InterleaveDataset([kali_patch_dataset((3, 8, 8), num_images=5),
                               __import__("inrlab").ImageTensorDataset(torch.rand(9, 3, 8, 8))]),
    lambda: __import__("inrlab").ImageTensorDataset(
        torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8), num_repeat=2),
])
def test_whole_batches_on_the_device_match_the_data_loader(make, tmp_path) -> None:
    """The trainer takes batches straight from datasets that make them (no DataLoader,
    no collate): the same images in the same order, the last batch smaller."""
    from torch.utils.data import DataLoader

    from inrlab.train.batches import EpochSampler

    dataset = make()
    trainer = _trainer(dataset, tmp_path)
    assert trainer.batches._direct(dataset)
    direct = [batch[0] for batch in trainer.batches.train(0, 0)]
    sampler = EpochSampler(len(dataset), 0, 0)
    loaded = [batch[0] for batch in DataLoader(dataset, batch_size=5, sampler=sampler)]
    assert [b.shape[0] for b in direct] == [b.shape[0] for b in loaded]
    assert all(torch.equal(a, b) for a, b in zip(direct, loaded))
    validation = [batch[0] for batch in trainer.batches.validation(0)]
    assert torch.equal(torch.cat(validation), torch.stack([dataset[i][0]
                                                           for i in range(len(dataset))]))
    workers = _trainer(dataset, tmp_path, num_workers=1)
    assert not workers.batches._direct(dataset)  # worker processes use a DataLoader


def test_pixel_batches_of_an_epoch_are_the_same_from_any_starting_batch(tmp_path) -> None:
    """The loop renders pixel batches several at a time, each from a generator of its own
    batch number: a resumed epoch (skipping its first batches) gets the same batches as the
    whole epoch, whatever torch's generator holds, and a new seed or epoch others."""
    from inrlab.data import sprite_dataset

    data = sprite_dataset((3, 8, 8), num_images=23, max_scale=4, random_flip=True)

    def batches(skip: int, epoch: int = 0, **settings) -> list:
        torch.manual_seed(skip)  # the loop's generator: no part of the batches
        trainer = _trainer(data, tmp_path, **settings)
        trainer.batches.render_group_items = 10  # two batches of 5 per render
        return list(trainer.batches.train(epoch, skip, pixels=6))

    def same(a: tuple, b: tuple) -> bool:
        return (torch.equal(a[0], b[0]) and a[1].size == b[1].size
                and torch.equal(a[1].index, b[1].index)
                and torch.equal(a[1].colours, b[1].colours))

    whole = batches(0)
    assert [len(b[0]) for b in whole] == [5, 5, 5, 5, 3]
    assert len({b[1].size for b in whole}) > 1  # sizes drawn per batch
    for skip in (1, 3):
        assert all(same(a, b) for a, b in zip(batches(skip), whole[skip:], strict=True))
    assert not same(batches(0, epoch=1)[0], whole[0])
    assert not same(batches(0, seed=1)[0], whole[0])


def test_a_dataset_that_renders_no_pixels_alone_gives_its_whole_batches(tmp_path) -> None:
    """With pixels asked of a dataset without ``pixel_batches`` (kali patches), every batch
    of the epoch comes whole, as without pixels (the step then draws the pixels), also in
    a resumed epoch."""
    data = kali_patch_dataset((3, 8, 8), num_images=23)
    trainer = _trainer(data, tmp_path)
    trainer.batches.render_group_items = 10  # asked two batches at a time
    plain = list(trainer.batches.train(0, 0))
    for skip in (0, 2):
        asked = list(trainer.batches.train(0, skip, pixels=6))
        assert all(len(batch) == 1 for batch in asked)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(asked, plain[skip:], strict=True))


def test_augmentation_runs_where_the_images_are() -> None:
    from inrlab.data import ImageTensorDataset

    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) / 216
    dataset = ImageTensorDataset(images, random_shift=2, random_flip=True)
    moved = dataset.on_device("cpu")
    assert moved is dataset  # already there
    torch.manual_seed(3)
    first = dataset.batch(torch.tensor([0, 1, 1]))
    torch.manual_seed(3)
    second = dataset.batch([0, 1, 1])
    assert torch.equal(first, second) and first.device.type == "cpu"
    # Shifted copies keep their pixels (padding with 0 aside) and stay in [0, 1].
    assert first.shape == (3, 3, 6, 6) and 0 <= float(first.min()) and float(first.max()) <= 1
    kali = kali_patch_dataset((3, 8, 8), num_images=4).on_device("cpu")
    assert kali.batch(torch.arange(4)).shape == (4, 3, 8, 8)


def test_a_mixture_with_a_per_item_member_goes_through_the_data_loader(tmp_path) -> None:
    from torch.utils.data import TensorDataset

    mixed = InterleaveDataset([kali_patch_dataset((3, 8, 8), num_images=5),
                               TensorDataset(torch.rand(4, 3, 8, 8))])
    assert not mixed.makes_batches
    assert not _trainer(mixed, tmp_path).batches._direct(mixed)
    assert len(list(_trainer(mixed, tmp_path).batches.train(0, 0))) == 2  # 10 items, batch 5


def test_the_default_sheet_is_found_from_any_working_directory(rltiles, tmp_path,
                                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # ../shared is not beside this directory
    monkeypatch.setenv("INRLAB_CACHE_DIR", str(tmp_path / "cache"))  # and nothing cached
    assert len(rpg_tile_dataset((3, 32, 32), validation=True)) > 70


def test_the_shipped_kenney_sheet_adds_tiles_and_keeps_the_rltiles_split(
        rltiles, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the built-in config finds its sheet from anywhere
    monkeypatch.setenv("INRLAB_CACHE_DIR", str(tmp_path / "cache"))
    kenney = rpg_tile_dataset((3, 32, 32), tile_config="kenney")
    assert len(kenney) == 249 and kenney[0][0].shape == (3, 32, 32)
    alone = rpg_tile_dataset((3, 32, 32), validation=False, validation_ratio=9)
    both = rpg_tile_dataset((3, 32, 32), validation=False, validation_ratio=9,
                            tile_config=["rltiles", "kenney"])
    assert len(both) == len(alone) + 224  # 9 of every 10 Kenney tiles
    assert torch.equal(both.images[:len(alone)], alone.images)  # the RLTiles ones unchanged
    with pytest.raises(DataError, match="built-in configs: kenney, rltiles"):
        rpg_tile_dataset((3, 32, 32), tile_config="kenny")


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA", "I;16"])
def test_sheets_of_every_pixel_format_read_as_the_same_tiles(tmp_path, mode) -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    expected = torch.from_numpy(gray).float().div(255).expand(3, 16, 24)
    if mode == "I;16":  # a 16-bit grayscale PNG: 0..65535 (Pillow's own convert clips it)
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(gray, "L").convert(mode)
    image.save(tmp_path / "sheet.png")
    config = [{"name": "sheet.png", "url": str(tmp_path / "sheet.png"), "shape": [8, 8]}]
    tiles = torch.stack([t for (t,) in rpg_tile_dataset((3, 8, 8), tile_config=config)])
    rows = [expected[:, r:r + 8, c:c + 8] for r in (0, 8) for c in (0, 8, 16)]
    assert torch.allclose(tiles, torch.stack(rows), atol=1 / 255)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (and holds no image data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case, reason", [
    ("missing", "does not exist"), ("directory", "is a directory"),
    ("empty", "not a readable image"), ("text", "not a readable image"),
    ("svg", "not a readable image"), ("truncated", "not a readable image"),
    ("bomb", "decompression bomb")])
def test_every_unreadable_image_file_is_a_data_error_naming_it(case, reason, tmp_path) -> None:
    import io

    from PIL import Image

    from inrlab.data.images import read_image_file

    path = tmp_path / f"{case}.png"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a picture")
    elif case == "svg":
        path = tmp_path / "picture.svg"
        path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    elif case == "truncated":
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (9, 200, 30)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[:60])
    elif case == "bomb":
        path.write_bytes(_png_claiming(60000, 60000))
    with pytest.raises(DataError) as raised:
        read_image_file(path)
    assert reason in str(raised.value) and path.name in str(raised.value)
