"""Experiment files: matrix order, slugs and ids, $filter, ${var}, $extends, !include."""

from __future__ import annotations

import json

import pytest

from inrlab.errors import InrlabError
from inrlab.experiment import load_experiment
from inrlab.experiment.matrix import matrix_id, matrix_slug

TRANSFORMER_MATRIX = """
matrix:
  opt: ["Adam"]
  lr: [0.001]
  patch: [4, 8]
  stride: [2, 4, 8]
  $filter: ${stride} <= ${patch}
  l: [2, 4, 8, 12, 16]
  head: [4, 8]
  hid: [64, 128, 256]

experiment_name: mnist/tr1_${matrix_slug}

trainer: TrainAutoencoder

globals:
  SHAPE: (1, 28, 28)
  CODE_SIZE: 28 * 28 // 10

train_set: |
  TransformDataset(
    TensorDataset(torchvision.datasets.MNIST("~/prog/data/datasets/", train=True).data),
    transforms=[lambda x: x.unsqueeze(0).float() / 255.],
  )

batch_size: 64
learnrate: ${lr}
optimizer: ${opt}
scheduler: CosineAnnealingLR
loss_function: l1
max_inputs: 1_000_000

model: |
  TransformerAutoencoder(
      shape=SHAPE, code_size=CODE_SIZE,
      patch_size=${patch},
      stride=${stride},
      num_layers=${l},
      num_hidden=${hid},
      num_heads=${head},
  )
"""


def test_slug_and_id_formats() -> None:
    params = {"cr": 10, "opt": "Adam", "lr": 0.001, "ks": [3, 3], "act": "nn.ReLU6()"}
    assert matrix_slug(params) == "cr:10_opt:Adam_lr:0.001_ks:3,3_act:nn.ReLU6"
    assert matrix_slug({"name": "x" * 200}) == "name:" + "x" * 96
    assert [matrix_id(1, 1), matrix_id(1, 10), matrix_id(10, 10)] == ["1", "1", "10"]
    assert [matrix_id(1, 100), matrix_id(100, 100)] == ["01", "100"]
    assert [matrix_id(1, 180), matrix_id(91, 180)] == ["001", "091"]


def test_transformer_matrix_lists_150_entries(write, cli) -> None:
    path = write("mnist.yml", TRANSFORMER_MATRIX)
    specs = load_experiment(path)
    assert len(specs) == 150
    assert len({s.entry.slug for s in specs}) == 150
    ids = [s.entry.id for s in specs]
    assert ids[0] == "001" and "060" in ids and "061" not in ids and "091" in ids
    assert ids[ids.index("060") + 1] == "091"  # ids are never renumbered after $filter
    assert specs[0].experiment_name == (
        "mnist/tr1_opt:Adam_lr:0.001_patch:4_stride:2_l:2_head:4_hid:64")
    # The first key varies slowest, the last fastest.
    assert [s.entry.params["hid"] for s in specs[:3]] == [64, 128, 256]
    assert specs[0].values["learnrate"] == 0.001 and specs[0].values["optimizer"] == "Adam"

    code, out, _ = cli("show", path, "--no-build", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 150
    assert {"matrix_id", "matrix_slug", "experiment_name"} <= set(rows[0])


def test_show_builds_models_and_counts_parameters(write, cli) -> None:
    path = write("mnist.yml", TRANSFORMER_MATRIX)
    code, out, _ = cli("show", path, "--json", "--only", "001", "150")
    rows = json.loads(out)
    assert code == 0 and [r["matrix_id"] for r in rows] == ["001", "150"]
    assert all(r["parameters"]["total"] > 0 for r in rows)
    assert rows[0]["parameters"]["total"] < rows[1]["parameters"]["total"]


def test_no_matrix_gives_one_entry_and_still_substitutes(write) -> None:
    path = write("one.yml", "experiment_name: single/${matrix_id}\nmodel: x\n")
    (spec,) = load_experiment(path)
    assert spec.experiment_name == "single/1"


def test_extends_and_include_relative_to_file(write) -> None:
    write("parts/model.yml", "num_hidden: ${hid}\nnum_blocks: 2\n")
    write("base/parent.yml", """
        experiment_name: base/${matrix_slug}
        learnrate: 0.1
        optimizer: Adam
        globals:
          A: 1
        """)
    child = write("child.yml", """
        $extends: base/parent.yml
        matrix:
          hid: [16, 32]
        learnrate: 1e-3
        decoder: !include parts/model.yml
        placeholders_in_flow: [${hid}, ${matrix_id}]
        """)
    specs = load_experiment(child)
    assert [s.experiment_name for s in specs] == ["base/hid:16", "base/hid:32"]
    first = specs[0].values
    assert first["learnrate"] == 0.001  # child wins; 1e-3 is a float here
    assert first["optimizer"] == "Adam" and first["globals"] == {"A": 1}
    assert first["decoder"] == {"num_hidden": 16, "num_blocks": 2}
    assert specs[1].values["placeholders_in_flow"] == [32, 2]


def test_filter_can_use_slug_and_id(write) -> None:
    path = write("f.yml", """
        matrix:
          a: [1, 2, 3]
          $filter: "'${matrix_id}' != '2' and ${a} > 0"
        experiment_name: f/${matrix_id}
        """)
    assert [s.entry.id for s in load_experiment(path)] == ["1", "3"]


@pytest.mark.parametrize("text, message, line", [
    ("matrix:\n  a: 3\nexperiment_name: x\n", "must be a non-empty list", 1),
    ("matrix:\n  a: []\nexperiment_name: x\n", "must be a non-empty list", 1),
    ("matrix:\n  matrix_id: [1]\nexperiment_name: x\n", "reserved", 1),
    ("matrix:\n  a: [1]\nexperiment_name: x\n# ${nope}\n", "${nope} is not defined", 4),
    ("experiment_name: x_${b}\n", "${b} is not defined", 1),
    ("matrix:\n  a: [1, 2]\nexperiment_name: x\n", "both get experiment_name", 3),
    ("experiment_name: ../escape\n", "relative path inside the runs", 1),
])
def test_matrix_and_name_errors(write, text: str, message: str, line: int) -> None:
    path = write("bad.yml", text)
    with pytest.raises(InrlabError) as info:
        load_experiment(path)
    assert message in str(info.value)
    assert info.value.path == str(path) and info.value.line == line
