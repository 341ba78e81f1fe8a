"""Models as data: specs saved with every run, ``inrlab export`` to one safetensors file, and
``inrlab render``/``evaluate``/``inrlab.load_model`` rebuilding it from the registry alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from inrlab.experiment.trained import load_model
from inrlab.models import MODELS
from inrlab.models.decoders.parts import PARTS
from inrlab.models.registry import model_spec
from inrlab.storage.checkpoint import load_checkpoint
from inrlab.storage.model_file import read_model_file, write_model_file

SPEC_EXPERIMENT = """
experiment_name: spec/local
trainer: TrainAutoencoder
globals:
  SHAPE: (3, 8, 8)
train_set: |
  kali_patch_dataset(SHAPE, num_images=32)
validation_set: |
  kali_patch_dataset(SHAPE, num_images=8, validation=True)
batch_size: 16
learnrate: 0.003
optimizer: Adam
max_inputs: 64
model:
  name: EncoderDecoder
  args:
    encoder: {name: EncoderConvGrid, args: {shape: [3, 8, 8], latent_channels: 3, grid: [3, 3],
                                            channels: [4], num_blocks: 1}}
    decoder: {name: LocalLatentDecoder, args: {mlp: {num_hidden: 8, num_layers: 2}}}
"""


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_round_trips_through_its_plain_spec(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS.build({"name": name, "args": MODELS.get(name).tiny})
    spec = json.loads(json.dumps(model_spec(model)))  # plain JSON data
    rebuilt = MODELS.build(spec)
    rebuilt.load_state_dict(model.state_dict())  # the same parameters and buffers
    assert model_spec(rebuilt) == spec


@pytest.mark.parametrize("name", PARTS.names())
def test_every_decoder_part_builds_decodes_and_round_trips(name: str) -> None:
    """One contract for the parts too: each, with its tiny arguments, in a local-latent
    decoder that renders any size and rebuilds from its plain spec."""
    kind = PARTS.get(name).kind
    part = {"name": name, "args": PARTS.get(name).tiny}
    torch.manual_seed(0)
    decoder = MODELS.build({"name": "LocalLatentDecoder", "args": {
        "latent_channels": 3, "grid": [4, 4], "default_shape": [8, 8], kind: part}})
    code = torch.randn(2, 3, 4, 4)
    assert decoder(code).shape == (2, 3, 8, 8) and decoder(code, (5, 7)).shape == (2, 3, 5, 7)
    rebuilt = MODELS.build(json.loads(json.dumps(model_spec(decoder))))
    rebuilt.load_state_dict(decoder.state_dict())
    torch.testing.assert_close(rebuilt(code), decoder(code))


def test_a_parent_writes_out_what_it_filled_in() -> None:
    model = MODELS.build(yaml.safe_load(SPEC_EXPERIMENT)["model"])
    decoder = model_spec(model)["args"]["decoder"]["args"]
    assert decoder["latent_channels"] == 3 and decoder["grid"] == [3, 3]
    assert decoder["default_shape"] == [8, 8] and decoder["mlp"]["args"]["num_hidden"] == 8


def test_unknown_names_and_arguments_are_bad_input(tmp_path: Path, write, cli) -> None:
    bad_name = write("bad-name.yml", SPEC_EXPERIMENT.replace("EncoderConvGrid", "EncoderGrid"))
    code, _, err = cli("show", bad_name)
    assert code == 2 and "unknown model 'EncoderGrid'" in err and "bad-name.yml" in err
    bad_arg = write("bad-arg.yml", SPEC_EXPERIMENT.replace("mlp: {", "sampler: 1, mlp: {"))
    code, _, err = cli("show", bad_arg)
    assert code == 2 and "'LocalLatentDecoder' takes no argument 'sampler'" in err
    assert "sampling" in err and "key 'model'" in err
    bad_part = write("bad-part.yml", SPEC_EXPERIMENT.replace("num_layers: 2", "num_layer: 2"))
    code, _, err = cli("show", bad_part)
    assert code == 2 and "decoder part 'PixelMLP' takes no argument 'num_layer'" in err


@pytest.fixture
def exported(write, cli, tmp_path: Path) -> tuple[Path, Path]:
    """(run directory, model file) of a tiny spec run, trained and exported."""
    assert cli("run", write("spec.yml", SPEC_EXPERIMENT))[0] == 0
    run = tmp_path / "runs" / "spec" / "local"
    code, out, _ = cli("export", run)
    assert code == 0 and "model.safetensors" in out
    return run, run / "model.safetensors"


def test_runs_keep_the_resolved_spec(exported) -> None:
    run, _ = exported
    config = yaml.safe_load((run / "config.yaml").read_text())
    spec = config["inrlab"]["model_spec"]
    assert spec["args"]["decoder"]["args"]["grid"] == [3, 3]
    assert load_checkpoint(run / "checkpoint-last.pt")["model_spec"] == spec
    assert len(config["inrlab"]["source_sha256"]) == 64


def test_export_writes_weights_spec_and_provenance(exported) -> None:
    run, path = exported
    state, info = read_model_file(path)
    best = load_checkpoint(run / "checkpoint-best.pt")
    assert state.keys() == best["model"].keys()
    assert all(torch.equal(state[k], best["model"][k]) for k in state)
    assert info["spec"]["name"] == "EncoderDecoder" and info["input_shape"] == [3, 8, 8]
    provenance = info["provenance"]
    assert provenance["experiment_name"] == "spec/local"
    assert provenance["experiment_file"].endswith("spec.yml")
    assert len(provenance["experiment_sha256"]) == 64
    assert provenance["num_inputs"] == best["progress"]["num_inputs"]
    assert provenance["validation_psnr"] == pytest.approx(best["progress"]["validation"]["psnr"])
    assert info["inrlab_version"]


def test_render_from_the_file_gives_the_run_directorys_pixels(exported, cli,
                                                              tmp_path: Path) -> None:
    run, path = exported
    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).save(picture)
    assert cli("render", run, "--input", picture, "--size", "16", "-o", tmp_path / "a.png")[0] == 0
    assert cli("render", path, "--input", picture, "--size", "16", "-o", tmp_path / "b.png")[0] == 0
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert a.shape == (16, 16, 3) and np.array_equal(a, b)


def test_load_model_in_a_fresh_process_runs_no_code_and_no_pickle(exported,
                                                                  tmp_path: Path) -> None:
    """In an empty directory, with an audit hook installed once inrlab is imported: loading
    compiles nothing, executes nothing, unpickles nothing, and decodes what the run does."""
    run, path = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    images = torch.rand(2, 3, 8, 8)
    torch.save(images, tmp_path / "images.pt")
    expected = load_model(run)(images)
    script = textwrap.dedent(f"""
        import sys, torch, inrlab
        from inrlab.experiment import trained  # everything load_model needs, imported
        import safetensors.torch, inrlab.models
        images = torch.load({str(tmp_path / "images.pt")!r})
        seen = []
        def hook(event, args):
            if event in ("compile", "exec") or event.startswith("pickle"):
                seen.append(event)
        sys.addaudithook(hook)
        model = inrlab.load_model({str(path)!r})
        with torch.no_grad():
            out = model(images)
        sys.stdout.write(repr(seen) + "\\n")
        torch.save(out, "out.pt")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=empty, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert torch.equal(torch.load(empty / "out.pt"), expected)


def test_export_refuses_a_snippet_model(tiny_experiment, cli, tmp_path: Path) -> None:
    assert cli("run", tiny_experiment, "--only", "1", "--max-inputs", "32")[0] == 0
    run = tmp_path / "runs" / "tiny" / "hid:8"
    code, _, err = cli("export", run, "-o", tmp_path / "m.safetensors")
    assert code == 2 and "Python snippet" in err and "{name, args} spec" in err
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(Exception, match="Python snippet"):
        load_model(run)


def test_bad_model_files_are_bad_input(tmp_path: Path, cli, exported) -> None:
    run, path = exported
    picture = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(picture)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    code, _, err = cli("render", junk, "--input", picture, "--size", "16")
    assert code == 2 and "no readable safetensors file" in err
    state, info = read_model_file(path)
    info["spec"]["args"]["decoder"]["name"] = "NoSuchDecoder"
    foreign = tmp_path / "foreign.safetensors"
    write_model_file(foreign, state, info)
    code, _, err = cli("render", foreign, "--input", picture, "--size", "16")
    assert code == 2 and "unknown model 'NoSuchDecoder'" in err and "foreign.safetensors" in err
    code, _, err = cli("export", run, "-o", tmp_path / "model.pt")
    assert code == 2 and "ends in .safetensors" in err


def test_evaluate_a_model_file_on_images(exported, cli, tmp_path: Path) -> None:
    run, path = exported
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(folder / f"{i}.png")
    code, _, err = cli("evaluate", path, "--bytes")
    assert code == 2 and "holds no images" in err and "--images" in err
    rows = {}
    for target in (run, path):
        code, out, err = cli("evaluate", target, "--images", folder, "--json", "--no-save",
                             "--avif-speed", "10")
        assert code == 0, err
        rows[target] = {row["method"]: row for row in json.loads(out)}
    assert rows[path]["code"]["psnr"] == pytest.approx(rows[run]["code"]["psnr"])
    assert "pca" in rows[run] and "pca" not in rows[path]  # PCA fits on the run's own tiles
    assert "jpeg" in rows[path]


SEQUENTIAL = """
experiment_name: plain/sequential
trainer: TrainAutoencoder
train_set: |
  kali_patch_dataset((3, 8, 8), num_images=16)
validation_set: |
  kali_patch_dataset((3, 8, 8), num_images=4, validation=True)
batch_size: 4
learnrate: 0.001
optimizer: Adam
max_inputs: 16
model: |
  nn.Sequential(nn.Flatten(1), nn.Linear(192, 192), nn.Unflatten(1, (3, 8, 8)))
"""


def test_a_snippets_own_module_goes_through_the_contract(write, cli, tmp_path: Path) -> None:
    """Any nn.Module trains, reports and loads through ModuleAutoencoder; its checkpoint keys
    are the module's own; what needs a code or an implicit decoder says so (exit 2)."""
    from torch import nn

    import inrlab
    from inrlab.models.adapter import ModuleAutoencoder

    path = write("sequential.yml", SEQUENTIAL)
    assert cli("run", path)[0] == 0
    run = tmp_path / "runs" / "plain" / "sequential"
    assert sorted(load_checkpoint(run / "checkpoint-last.pt")["model"]) == [
        "1.bias", "1.weight"]
    model = inrlab.load_run(run).model
    assert isinstance(model, ModuleAutoencoder) and not model.has_code
    images = torch.rand(2, 3, 8, 8)
    assert model(images).shape == images.shape
    plain = nn.Sequential(nn.Flatten(1), nn.Linear(192, 192), nn.Unflatten(1, (3, 8, 8)))
    plain.load_state_dict(load_checkpoint(run / "checkpoint-best.pt")["model"])
    assert torch.equal(plain(images), model(images))
    code, _, err = cli("report", path, "-o", tmp_path / "report")
    assert code == 0, err
    code, _, err = cli("evaluate", run, "--no-save")
    assert code == 2 and "Sequential is no inrlab Autoencoder" in err
    picture = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(picture)
    code, _, err = cli("render", run, "--input", picture, "--size", "16")
    assert code == 2 and "Sequential has no implicit decoder" in err
