"""inrlab from plain Python: the package's top level, training without YAML, loading runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import inrlab

TINY_SPEC = {"name": "EncoderDecoder", "args": {
    "encoder": {"name": "EncoderConv2d", "args": {"shape": (3, 8, 8), "code_size": 6,
                                                  "channels": (4,)}},
    "decoder": {"name": "ImageManifoldDecoder", "args": {
        "num_input_channels": 6, "num_hidden": 8, "num_blocks": 1, "default_shape": (8, 8)}},
}}
SETTINGS = dict(batch_size=16, learnrate=0.003, optimizer="Adam", max_inputs=64,
                tensorboard=False)


def test_every_public_name_is_reachable_from_the_top_level() -> None:
    assert {"run", "fit", "load_run", "rpg_tile_dataset", "kali_patch_dataset",
            "mnist_dataset", "EncoderDecoder", "ImageManifoldDecoder", "TrainAutoencoder",
            "TrainAutoencoderSpecial"} <= set(inrlab.__all__)
    for name in inrlab.__all__:
        assert getattr(inrlab, name) is not None, name
    namespace: dict = {}
    exec("from inrlab import *", namespace)
    assert callable(namespace["rpg_tile_dataset"]) and callable(namespace["load_run"])
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        inrlab.nope  # noqa: B018


def test_top_level_data_helpers_read_the_tile_sheet(rltiles) -> None:
    tiles = inrlab.rpg_tile_dataset((3, 32, 32), validation=True, limit=5)
    images = [item[0] if isinstance(item, (tuple, list)) else item for item in tiles]
    assert len(images) == 5 and images[0].shape == (3, 32, 32)


def test_import_stays_light() -> None:
    code = "import sys, inrlab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_fit_a_registry_spec_without_yaml_and_load_it_back(tmp_path) -> None:
    train_set = inrlab.kali_patch_dataset((3, 8, 8), num_images=64)
    validation_set = inrlab.kali_patch_dataset((3, 8, 8), num_images=16, validation=True)
    run = inrlab.fit(TINY_SPEC, train_set, validation_set, experiment_name="nb/spec",
                     runs_dir=tmp_path, **SETTINGS)
    assert run.status == "complete" and run.result["num_inputs"] == 64
    assert [r["inputs"] for r in run.metrics("validation")][-1] == 64

    loaded = inrlab.load_run(tmp_path / "nb" / "spec")  # rebuilt from config.yaml alone
    assert loaded.config["batch_size"] == 16 and loaded.status == "complete"
    images = torch.stack([validation_set[i][0] for i in range(3)])
    assert loaded.reconstruct(images).shape == (3, 3, 8, 8)
    assert loaded.reconstruct(images, size=(16, 24)).shape == (3, 3, 16, 24)
    assert torch.allclose(loaded.reconstruct(images), run.reconstruct(images), atol=1e-6)
    refined = loaded.reconstruct(images, refine_steps=20)  # codes fit to these images
    assert ((refined - images) ** 2).mean() < ((loaded.reconstruct(images) - images) ** 2).mean()

    before = (tmp_path / "nb" / "spec" / "result.json").read_bytes()
    again = inrlab.fit(TINY_SPEC, train_set, validation_set, experiment_name="nb/spec",
                       runs_dir=tmp_path, **SETTINGS)
    assert again.status == "complete"
    assert (tmp_path / "nb" / "spec" / "result.json").read_bytes() == before


def test_fit_a_model_object_needs_it_again_to_load(tmp_path) -> None:
    model = inrlab.EncoderDecoder(
        inrlab.EncoderMLP((3, 8, 8), 6, hidden=(16,)),
        inrlab.ImageManifoldDecoder(6, 3, num_hidden=8, num_blocks=1, default_shape=(8, 8)))
    train_set = inrlab.kali_patch_dataset((3, 8, 8), num_images=32)
    run = inrlab.fit(model, train_set, experiment_name="nb/object", runs_dir=tmp_path,
                     trainer="TrainAutoencoderSpecial", feature_loss_weight=0.001, **SETTINGS)
    assert run.status == "complete" and run.model is model
    with pytest.raises(inrlab.InrlabError, match="pass the same architecture"):
        inrlab.load_run(tmp_path / "nb" / "object").model  # noqa: B018
    fresh = inrlab.EncoderDecoder(
        inrlab.EncoderMLP((3, 8, 8), 6, hidden=(16,)),
        inrlab.ImageManifoldDecoder(6, 3, num_hidden=8, num_blocks=1, default_shape=(8, 8)))
    loaded = inrlab.load_run(tmp_path / "nb" / "object", model=fresh)
    assert torch.equal(loaded.model.encoder.layers[1].weight, model.encoder.layers[1].weight)


def test_fit_rejects_unknown_settings(tmp_path) -> None:
    train_set = inrlab.kali_patch_dataset((3, 8, 8), num_images=32)
    with pytest.raises(inrlab.InrlabError, match="unknown key 'batch_sise'"):
        inrlab.fit(TINY_SPEC, train_set, experiment_name="nb/x", runs_dir=tmp_path,
                   batch_sise=3, **SETTINGS)
    assert not (tmp_path / "nb").exists()


def test_run_an_experiment_file_from_python(tiny_experiment, tmp_path) -> None:
    runs = inrlab.run(tiny_experiment, runs_dir=tmp_path / "r", only=["hid:8"],
                      tensorboard=False)
    assert [r.path.name for r in runs] == ["hid:8"]
    assert runs[0].status == "complete" and runs[0].config["model"].strip().startswith(
        "EncoderDecoder(")
    assert runs[0].model.decoder.linear_in.out_features == 8
