"""inrlab: implicit neural representation autoencoders for images.

The public API, for notebooks and scripts (the CLI is ``inrlab``)::

    import inrlab
    tiles = inrlab.rpg_tile_dataset((3, 32, 32), validation=False, random_shift=4)
    run = inrlab.fit(model, tiles, experiment_name="nb/first", batch_size=64,
                       learnrate=1e-3, optimizer="Adam", max_inputs=100_000)
    inrlab.load_run("runs/nb/first").model
    inrlab.load_model("model.safetensors")  # a model file from `inrlab export`

Names load on first use, so ``import inrlab`` (and the CLI) stays quick. (``fit`` trains;
``inrlab.train`` is the subpackage of the training loop.)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    # running and loading
    "run": "inrlab.api", "fit": "inrlab.api", "load_run": "inrlab.api", "Run": "inrlab.api",
    "load_model": "inrlab.experiment.trained",
    "InrlabError": "inrlab.errors",
    "load_experiment": "inrlab.experiment.spec",
    # data
    **{name: "inrlab.data" for name in (
        "rpg_tile_dataset", "kali_patch_dataset", "sprite_dataset", "mnist_dataset",
        "image_folder_dataset", "KaliPatchDataset", "SpriteDataset", "TransformDataset",
        "ImageTensorDataset", "InterleaveDataset",
        "LimitDataset", "first_images", "load_tile_config", "load_tiles", "random_flip",
        "random_shift", "random_transpose", "resize_nearest", "set_channels")},
    # models
    **{name: "inrlab.models" for name in (
        "MODELS", "register_model", "count_parameters", "ImplicitDecoder",
        "ImageManifoldDecoder", "LocalLatentDecoder", "ModulatedSirenDecoder", "EncoderConv2d",
        "EncoderConvGrid", "EncoderConvMap", "EncoderMLP", "DalleEncoder", "ResNetEncoder",
        "resnet18_open", "EncoderDecoder", "UpscalingAutoencoder", "DalleManifoldAutoencoder",
        "TransformerAutoencoder")},
    # trainers
    **{name: "inrlab.train" for name in (
        "Trainer", "TrainAutoencoder", "TrainAutoencoderSpecial", "TrainSettings")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inrlab' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
