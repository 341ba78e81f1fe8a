"""Datasets: RPG tile sheets, kali-set fractal patches, procedural sprites, MNIST, image
folders, plumbing."""

from inrlab.data.folder import image_folder_dataset
from inrlab.data.images import (random_flip, random_shift, random_transpose, resize_nearest,
                                set_channels)
from inrlab.data.kali import KaliPatchDataset, kali_patch_dataset
from inrlab.data.mix import InterleaveDataset, LimitDataset, first_images, plain_images
from inrlab.data.mnist import mnist_dataset
from inrlab.data.sprites import SpriteDataset, sprite_dataset
from inrlab.data.tensor import ImageTensorDataset, TransformDataset
from inrlab.data.tiles import load_tile_config, load_tiles, rpg_tile_dataset

__all__ = [
    "image_folder_dataset", "random_flip", "random_shift", "random_transpose", "resize_nearest",
    "set_channels",
    "KaliPatchDataset", "kali_patch_dataset", "InterleaveDataset", "LimitDataset", "first_images",
    "plain_images",
    "mnist_dataset", "SpriteDataset", "sprite_dataset", "ImageTensorDataset", "TransformDataset",
    "load_tile_config", "load_tiles",
    "rpg_tile_dataset",
]
