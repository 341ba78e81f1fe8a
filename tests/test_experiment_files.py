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
    ("experiment_name: ../escape\n", "relative path inside the runs", 1),
    ("experiment_name: runs/" + "x" * 300 + "\n", "at most 255 bytes per folder name", 1),
    ('experiment_name: "a\\0b"\n', "control character", 1),
])
def test_matrix_and_name_errors(write, text: str, message: str, line: int) -> None:
    path = write("bad.yml", text)
    with pytest.raises(InrlabError) as info:
        load_experiment(path)
    assert message in str(info.value)
    assert info.value.path == str(path) and info.value.line == line


# Every matrix rule of the seed system (seed-system-spec.md, section 1.2 and decision 1), with
# values of every YAML type. Expected slugs are the seed's: str(value)[:96], then only
# letters, digits and .,-_: kept.
EVERY_TYPE = """
matrix:
  flag: [true, false]
  none: [null]
  lr: [1e-3, 0.5, 2.0e-4]
  ks: [[3, 5], {a: 1, b: "x y"}]
  name: ["with space/and slash", "k.e,p-t_ü!"]
experiment_name: types/${matrix_slug}
value: "${flag}|${none}|${lr}|${ks}|${name}"
"""


def test_matrix_values_of_every_yaml_type(write, cli) -> None:
    path = write("types.yml", EVERY_TYPE)
    code, out, _ = cli("show", path, "--no-build", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 * 1 * 3 * 2 * 2
    assert [r["matrix_id"] for r in rows[:3]] == ["01", "02", "03"]  # 24 -> 2 digits
    assert rows[0]["matrix_slug"] == "flag:True_none:None_lr:1e-3_ks:3,5_name:withspaceandslash"
    assert rows[1]["matrix_slug"].endswith("_name:k.e,p-t_ü")
    # The last key varies fastest, then ks, then lr (1e-3 is YAML 1.1's string "1e-3").
    assert [r["matrix_slug"].split("_")[2:4] for r in rows[:8:2]] == [
        ["lr:1e-3", "ks:3,5"], ["lr:1e-3", "ks:a:1,b:xy"], ["lr:0.5", "ks:3,5"],
        ["lr:0.5", "ks:a:1,b:xy"]]
    assert rows[4]["matrix_slug"].split("_")[2] == "lr:0.5"
    assert rows[8]["matrix_slug"].split("_")[2] == "lr:0.0002"  # str(2.0e-4)
    assert rows[12]["experiment_name"] == "types/" + rows[12]["matrix_slug"]
    assert rows[12]["matrix_slug"].startswith("flag:False_")
    specs = load_experiment(path)
    assert specs[0].entry.params == {"flag": True, "none": None, "lr": "1e-3", "ks": [3, 5],
                                     "name": "with space/and slash"}
    # ${var} inserts str(value) into the text, which YAML then reads again.
    assert specs[0].values["value"] == "True|None|1e-3|[3, 5]|with space/and slash"
    assert specs[2].values["value"].startswith("True|None|1e-3|{'a': 1, 'b': 'x y'}|")


def test_substituted_numbers_are_typed_by_yaml(write) -> None:
    path = write("lr.yml", """
        matrix:
          lr: [1e-3, 5e-4]
          hid: [64]
        experiment_name: lr/${matrix_slug}
        learnrate: ${lr}
        nested:
          deep: [${hid}, "${lr}"]
        text: "lr=${lr} hid=${hid}"
        """)
    specs = load_experiment(path)
    assert [s.experiment_name for s in specs] == ["lr/lr:1e-3_hid:64", "lr/lr:5e-4_hid:64"]
    assert specs[1].values["learnrate"] == 0.0005  # a float once substituted
    assert specs[1].values["nested"] == {"deep": [64, "5e-4"]}
    assert specs[1].values["text"] == "lr=5e-4 hid=64"


def test_ids_are_counted_before_filter_and_keys_may_be_any_text(write) -> None:
    path = write("keys.yml", """
        matrix:
          $filter: |
            ${learn-rate} > 0.01
            and '${matrix_id}' != '09'
          learn-rate: [0.1, 0.001, 0.5]
          2: [a, b, c, d]
        experiment_name: k/${matrix_id}_${matrix_slug}
        value: ${learn-rate}
        """)
    specs = load_experiment(path)
    # 12 entries (2 digits); lr 0.001 (ids 05-08) and id 09 are filtered out, no renumbering.
    assert [s.entry.id for s in specs] == ["01", "02", "03", "04", "10", "11", "12"]
    assert specs[0].experiment_name == "k/01_learn-rate:0.1_2:a"
    assert specs[-1].entry.params == {"learn-rate": 0.5, "2": "d"}
    assert specs[-1].values["value"] == 0.5


def test_entries_sharing_a_run_directory_list_but_do_not_run(write, cli) -> None:
    path = write("dup.yml", """
        matrix:
          act: ["gelu", "'gelu'"]
        experiment_name: dup/${matrix_slug}
        """)
    code, out, err = cli("show", path, "--no-build", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["matrix_slug"] for r in rows] == ["act:gelu", "act:gelu"]
    assert "both get experiment_name 'dup/act:gelu'" in err
    code, _, err = cli("run", path)
    assert code == 2 and "both get experiment_name" in err and "line 3" in err


def test_a_matrix_over_the_entry_limit_is_refused_before_it_is_built(
        write, cli, monkeypatch) -> None:
    """10 lists of 10 values: 10^10 entries, refused at once (the product is counted, not
    built); the environment variable raises the limit."""
    keys = "\n".join(f"  k{i}: [{', '.join(str(v) for v in range(10))}]" for i in range(10))
    path = write("huge.yml", f"matrix:\n{keys}\nexperiment_name: huge/${{matrix_slug}}\n")
    code, _, err = cli("show", path, "--no-build")
    assert code == 2 and "10,000,000,000 entries" in err and "INRLAB_MAX_MATRIX_ENTRIES" in err
    assert "key 'matrix'" in err
    small = write("small.yml", "matrix:\n  a: [1, 2, 3]\nexperiment_name: s/${matrix_slug}\n")
    monkeypatch.setenv("INRLAB_MAX_MATRIX_ENTRIES", "2")
    assert cli("show", small, "--no-build")[0] == 2
    monkeypatch.setenv("INRLAB_MAX_MATRIX_ENTRIES", "3")
    assert cli("show", small, "--no-build")[0] == 0


def test_nested_yaml_aliases_that_expand_to_billions_are_refused(write, cli) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    bomb = write("bomb.yml", "\n".join(levels) + "\nexperiment_name: bomb\n")
    code, _, err = cli("show", bomb, "--no-build")
    assert code == 2 and "once its YAML aliases (*name) are expanded" in err
    loop = write("loop.yml", "a: &a [1, *a]\nexperiment_name: loop\n")
    code, _, err = cli("show", loop, "--no-build")
    assert code == 2 and "once its YAML aliases" in err
    fine = write("fine.yml", "a: &a [1, 2]\nb: [*a, *a]\nexperiment_name: fine\n")
    assert cli("show", fine, "--no-build")[0] == 0
