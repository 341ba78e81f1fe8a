"""Data throughput: augmented RPG tiles/s and kali patches/s, through a DataLoader as the
trainer uses it, next to the training throughput of the largest model of the logs.

    python bench/data_throughput.py [--seconds 5] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from inrlab.data import kali_patch_dataset, rpg_tile_dataset
from inrlab.models import DalleManifoldAutoencoder


def images_per_second(loader: DataLoader, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for (batch,) in loader:
            count += batch.shape[0]
            if time.perf_counter() - start >= seconds:
                break
    return count / (time.perf_counter() - start)


def training_images_per_second(batch_size: int, seconds: float) -> float:
    """Full training steps of the log's largest decoder (8x2x300) on 1x32x32 tiles."""
    model = DalleManifoldAutoencoder((1, 32, 32), vocab_size=128, n_hid=64, n_blk_per_group=1,
                                     act_fn="gelu", space_to_depth=True, decoder_n_blk=8,
                                     decoder_n_layer=2, decoder_n_hid=300)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    images = torch.rand(batch_size, 1, 32, 32)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss = (model(images) - images).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        count += batch_size
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    tiles = rpg_tile_dataset((3, 32, 32), validation=False, random_shift=4, random_flip=True)
    kali = kali_patch_dataset((3, 32, 32), num_images=50_000)
    rows = {
        "rpg tiles (shift 4 + flips)": images_per_second(
            DataLoader(tiles, batch_size=args.batch_size, shuffle=True), args.seconds),
        "kali patches": images_per_second(
            DataLoader(kali, batch_size=args.batch_size, shuffle=True), args.seconds),
    }
    train = training_images_per_second(args.batch_size, args.seconds)
    print(f"threads: {torch.get_num_threads()}, batch size {args.batch_size}")
    print(f"{'training, DalleManifoldAutoencoder 8x2x300':45s} {train:10.0f} img/s")
    for name, rate in rows.items():
        print(f"{name:45s} {rate:10.0f} img/s  = {rate / train:6.1f}x training")


if __name__ == "__main__":
    main()
