"""Every class of bad input: one paragraph naming file, line and key; exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_EXPERIMENT


def tiny(**replace: str) -> str:
    """The tiny experiment with some top-level lines replaced (key -> new text or '')."""
    text = TINY_EXPERIMENT
    for key, new in replace.items():
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        end = start + 1
        while end < len(lines) and (lines[end].startswith(" ") or not lines[end]):
            end += 1
        lines[start:end] = [new] if new else []
        text = "\n".join(lines) + "\n"
    return "matrix:\n  hid: [8]\n" + text


CASES = {
    "yaml syntax": ("experiment_name: [unclosed\n", "invalid YAML", None),
    "control character": ("batch_size: 1\nexperiment_name: x\x1b\n",
                          "is not allowed in a YAML file", None),
    "not a mapping": ("- just\n- a list\n", "must be a YAML mapping", None),
    "missing key": (tiny(optimizer=""), "required key 'optimizer' is missing", "optimizer"),
    "unknown optimizer": (tiny(optimizer="optimizer: Adamm"), "unknown optimizer 'Adamm'",
                          "optimizer"),
    "unknown scheduler": (tiny(scheduler="scheduler: Cosine"), "unknown scheduler", "scheduler"),
    "unknown optimizer argument": (tiny(batch_size="batch_size: 16\noptimizer_args: "
                                                   "{betaz: [0.9, 0.99]}"),
                                   "Adam takes no argument 'betaz'", "optimizer_args"),
    "refused optimizer argument": (tiny(batch_size="batch_size: 16\noptimizer_args: "
                                                   "{betas: [2, 0.9]}"),
                                   "Adam refuses optimizer_args", "optimizer_args"),
    "optimizer arguments not a mapping": (tiny(batch_size="batch_size: 16\n"
                                                          "optimizer_args: 0.9"),
                                          "optimizer_args must be a mapping", "optimizer_args"),
    "unknown loss": (tiny(batch_size="batch_size: 16\nloss_function: l7"),
                     "unknown loss_function 'l7'", "loss_function"),
    "undefined variable": (tiny(batch_size="batch_size: ${bs}"), "${bs} is not defined",
                           "batch_size"),
    "filter raises": (tiny().replace("hid: [8]", "hid: [8]\n  $filter: ${hid} / 0"),
                      "ZeroDivisionError", "$filter"),
    "snippet raises": (tiny(globals="globals:\n  SHAPE: (3, 8, 8)\n  X: |\n    a = 1\n"
                                    "    undefined_name + a"),
                       "NameError", "globals.X"),
    "wrong type": (tiny(batch_size="batch_size: sixteen"), "batch_size must be int",
                   "batch_size"),
    "matrix null as text": (tiny(batch_size="batch_size: ${bs}").replace(
        "hid: [8]", "hid: [8]\n  bs: [null]"), "write it in the matrix as \"null\" (quoted)",
        "batch_size"),
    "unknown key": (tiny(batch_size="batch_size: 16\nbatch_sise: 3"), "unknown key 'batch_sise'",
                    "batch_sise"),
    "shape mismatch": (tiny(model="model: |\n  EncoderDecoder(EncoderConv2d(SHAPE, 6, "
                                  "channels=(4,)), ImageManifoldDecoder(6, 1, "
                                  "num_hidden=8, num_blocks=1))"),
                       "output shape (2, 1, 8, 8) differs from its input shape (2, 3, 8, 8)",
                       "model"),
    "empty dataset": (tiny(train_set="train_set: |\n  TensorDataset(torch.zeros(0, 3, 8, 8))"),
                      "train_set is empty", "train_set"),
    "include missing": (tiny(globals="globals: !include parts/nope.yml"),
                        "the file to include does not exist", None),
    "filter keeps nothing": (tiny().replace("hid: [8]", "hid: [8]\n  $filter: ${hid} > 100"),
                             "the $filter keeps none of the matrix entries", "$filter"),
    "unreadable loss sum": (tiny(batch_size="batch_size: 16\nloss_function: l2 +* gradient"),
                            "cannot read loss_function", "loss_function"),
    "scheduler without a step count": (tiny(scheduler="scheduler: ExponentialLR"),
                                       "takes 'gamma' after the optimizer", "scheduler"),
    "scheduler base class": (tiny(scheduler="scheduler: LRScheduler"),
                             "not a step count", "scheduler"),
    "NaN learning rate": (tiny(learnrate="learnrate: .nan"), "learnrate must be a finite",
                          "learnrate"),
    "infinite learning rate": (tiny(learnrate="learnrate: .inf"), "must be a finite",
                               "learnrate"),
    "negative clipping": (tiny(batch_size="batch_size: 16\ngradient_clipping: -1"),
                          "gradient_clipping must be positive", "gradient_clipping"),
    "negative checkpoint interval": (tiny(batch_size="batch_size: 16\n"
                                                     "checkpoint_every_seconds: -5"),
                                     "checkpoint_every_seconds must be positive",
                                     "checkpoint_every_seconds"),
    "no budget": (tiny(max_inputs="", scheduler=""), "no budget", None),
    "seed too large": (tiny(batch_size="batch_size: 16\nseed: 18446744073709551616"),
                       "seed must be at most", "seed"),
    "device mps": (tiny(batch_size="batch_size: 16\ndevice: mps"), "not supported", "device"),
    "bad model argument": (tiny(model="model: |\n  ImageManifoldDecoder(6, concat_residual="
                                      "[True, False], num_blocks=3)"),
                           "concat_residual must be a bool or a list of 3 bools", "model"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_located_message(case: str, write, cli) -> None:
    text, message, key = CASES[case]
    path = write("bad.yml", text)
    code, out, err = cli("run", path)
    assert code == 2, (out, err)
    assert message in err
    assert str(path) in err
    if case not in ("missing key", "no budget"):  # a missing key has no line to point at
        assert "line" in err
    if key:
        assert f"key '{key}'" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one paragraph


def test_snippet_error_names_the_file_line_of_the_failing_statement(write, cli) -> None:
    text = tiny(model="model: |\n  x = 1\n  y = x + 1\n  raise_here()\n")
    path = write("bad.yml", text)
    code, _, err = cli("show", path)
    line = text.splitlines().index("  raise_here()") + 1
    assert code == 2 and f"line {line}" in err and "raise_here()" in err


def test_debug_shows_traceback(write, cli) -> None:
    path = write("bad.yml", tiny(optimizer="optimizer: Nope"))
    code, _, err = cli("--debug", "run", path)
    assert code == 2 and "Traceback" in err


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory, by relative path."""
    return {str(f.relative_to(run)): f.read_bytes() for f in sorted(run.rglob("*"))
            if f.is_file()}


@pytest.mark.parametrize("change, message", [
    (("optimizer: Adam", "optimizer: Nope"), "unknown optimizer"),
    (("batch_size: 16", "batch_size: 16\nloss_function: nope"), "unknown loss_function"),
    # A real loss, but one that cannot take an image and its target: found before training.
    (("batch_size: 16", "batch_size: 16\nloss_function: nll_loss"),
     "loss_function 'nll_loss' fails on the model's output"),
])
@pytest.mark.parametrize("flags", [[], ["--reset"]])
def test_failing_rerun_leaves_every_file_of_a_finished_run(tiny_experiment, cli, change,
                                                           message, flags) -> None:
    assert cli("run", tiny_experiment, "--only", "hid:8")[0] == 0
    run = tiny_experiment.parent / "runs" / "tiny" / "hid:8"
    before = _snapshot(run)
    assert json.loads(before["result.json"])["status"] == "complete"
    tiny_experiment.write_text(tiny_experiment.read_text().replace(*change))
    code, _, err = cli("run", tiny_experiment, "--only", "hid:8", *flags)
    assert code == 2 and message in err and "Traceback" not in err
    assert _snapshot(run) == before


def test_plain_rerun_of_a_complete_entry_changes_nothing(tiny_experiment, cli) -> None:
    assert cli("run", tiny_experiment, "--only", "hid:8")[0] == 0
    run = tiny_experiment.parent / "runs" / "tiny" / "hid:8"
    before = _snapshot(run)
    code, out, _ = cli("run", tiny_experiment, "--only", "hid:8")
    assert code == 0 and "is complete (256 inputs): nothing to train" in out
    assert _snapshot(run) == before
    # A larger budget continues the run from its last checkpoint.
    code, out, _ = cli("run", tiny_experiment, "--only", "hid:8", "--max-inputs", "320")
    assert code == 0 and "from 256 inputs" in out
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["num_inputs"] >= 320


def test_truncated_last_checkpoint_falls_back_to_best(tiny_experiment, cli) -> None:
    assert cli("run", tiny_experiment, "--only", "hid:8")[0] == 0
    run = tiny_experiment.parent / "runs" / "tiny" / "hid:8"
    last = run / "checkpoint-last.pt"
    last.write_bytes(last.read_bytes()[:100])
    code, out, _ = cli("run", tiny_experiment, "--only", "hid:8", "--max-inputs", "320")
    assert code == 0
    assert "cannot resume from checkpoint-last.pt" in out
    assert "resumed from checkpoint-best.pt" in out
    assert json.loads((run / "result.json").read_text())["num_inputs"] >= 320


def test_ray_sweeps_without_ray_say_how_to_install_it(tiny_experiment, cli, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    code, _, err = cli("run", tiny_experiment, "--ray")
    assert code == 2 and "pip install -e '.[ray]'" in err


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs N (N >= 1)"),
    (["--ray", "auto", "--jobs", "2"], "cluster's resources decide"),
    (["--jobs", "2", "--reset"], "--reset is not available"),
    (["--jobs", "2", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
])
def test_bad_sweep_options_are_clear_errors(tiny_experiment, cli, args, message) -> None:
    code, _, err = cli("run", tiny_experiment, *args)
    assert code == 2 and message in err


def test_the_load_key_starts_from_another_run_and_a_bad_one_keeps_the_old_run(
        tiny_experiment, cli) -> None:
    assert cli("run", tiny_experiment)[0] == 0  # hid:8 and hid:12
    runs = tiny_experiment.parent / "runs" / "tiny"
    before = _snapshot(runs / "hid:8")
    original = tiny_experiment.read_text()
    for source, message in [(runs / "hid:12", "size mismatch"),  # another architecture
                            (runs / "missing", "no readable checkpoint")]:
        tiny_experiment.write_text(original + f"load: {source}\n")
        code, _, err = cli("run", tiny_experiment, "--only", "hid:8", "--reset")
        assert code == 2 and f"cannot start from the weights of {source}" in err
        assert message in err and "load" in err and "Traceback" not in err
        assert _snapshot(runs / "hid:8") == before  # --reset removed nothing
    # A readable source of the same architecture: the fresh run starts from its best weights.
    tiny_experiment.write_text(original.replace("experiment_name: tiny/", "experiment_name: "
                                                "again/") + f"load: {runs / 'hid:8'}\n")
    code, out, err = cli("run", tiny_experiment, "--only", "hid:8")
    assert code == 0, err
    assert f"loaded weights from {runs / 'hid:8' / 'checkpoint-best.pt'}" in out


def test_only_patterns_that_match_no_entry_name_the_closest(tiny_experiment, cli) -> None:
    for command in ("run", "show"):
        code, out, err = cli(command, tiny_experiment, "--only", "hid:9")
        assert code == 2 and not out
        assert "--only hid:9 matches no matrix entry of 2 (the closest are hid:8" in err
        code, out, err = cli(command, tiny_experiment, "--only", "hid:8", "zzz")
        assert code == 2 and "--only zzz matches no matrix entry" in err
    assert not (tiny_experiment.parent / "runs").exists()


def test_only_takes_an_id_with_or_without_its_zero_padding(write, cli) -> None:
    path = write("twelve.yml", "matrix:\n  n: [" + ", ".join(map(str, range(12))) + "]\n"
                 "experiment_name: twelve/${matrix_slug}\ntrainer: TrainAutoencoder\n"
                 "train_set: kali_patch_dataset((3, 8, 8), num_images=8)\n"
                 "batch_size: 4\nlearnrate: 0.001\noptimizer: Adam\nmax_inputs: 8\n"
                 "model: {name: EncoderDecoder, args: {encoder: {name: EncoderConv2d, args: "
                 "{shape: [3, 8, 8], code_size: 4, channels: [4]}}, decoder: {name: "
                 "ImageManifoldDecoder, args: {num_hidden: 8, num_blocks: 1}}}}\n")
    for pattern in ("1", "01", "001"):
        code, out, _ = cli("show", path, "--json", "--no-build", "--only", pattern)
        assert code == 0 and [r["matrix_id"] for r in json.loads(out)] == ["01"]


def test_a_key_written_twice_warns_and_the_later_value_counts(write, cli) -> None:
    path = write("twice.yml", tiny(max_inputs="max_inputs: 32\nmax_inputs: 48"))
    code, out, err = cli("run", path)
    assert code == 0, err
    assert "line 17, key 'max_inputs': also set at line 16; the later value counts" in err
    assert err.count("also set at") == 1  # once per file, not once per entry and pass
    result = json.loads((path.parent / "runs" / "tiny" / "hid:8" / "result.json").read_text())
    assert result["num_inputs"] == 48


def test_a_run_directory_given_for_an_experiment_file_says_which_commands_take_it(
        tiny_experiment, cli) -> None:
    assert cli("run", tiny_experiment, "--only", "hid:8")[0] == 0
    run = tiny_experiment.parent / "runs" / "tiny" / "hid:8"
    code, _, err = cli("results", run)
    assert code == 2 and "not an experiment file" in err and "inrlab report" in err


def test_the_device_key_is_read_and_a_bad_one_is_located(write, cli, tmp_path) -> None:
    path = write("dev.yml", tiny(batch_size="batch_size: 16\ndevice: cpu"))
    assert cli("run", path)[0] == 0
    result = json.loads((tmp_path / "runs" / "tiny" / "hid:8" / "result.json").read_text())
    assert result["device"] == "cpu"
    path = write("tpu.yml", tiny(batch_size="batch_size: 16\ndevice: tpu"))
    code, _, err = cli("run", path)
    assert code == 2 and "tpu.yml, line 13, key 'device': unknown device 'tpu'" in err
    # --device wins over the file's key
    assert cli("run", path, "--device", "cpu", "--reset")[0] == 0


@pytest.mark.parametrize("key", ["run_dir", "train_sets", "settings"])
def test_the_trainers_own_arguments_are_not_experiment_keys(write, cli, key) -> None:
    code, _, err = cli("run", write("own.yml", tiny(batch_size=f"batch_size: 16\n{key}: 3")))
    assert code == 2 and f"key '{key}': unknown key '{key}'" in err
    assert err.count(" model,") <= 1  # each known key listed once


def test_max_inputs_zero_is_bad_input(tiny_experiment, cli) -> None:
    code, _, err = cli("run", tiny_experiment, "--max-inputs", "0")
    assert code == 2 and "--max-inputs must be at least 1" in err


FAILING_CHANGES = {
    "architecture": ("hid: [8]", "hid: [12]"),
    "optimizer class": ("optimizer: Adam", "optimizer: SGD"),
    "LBFGS": ("optimizer: Adam", "optimizer: LBFGS"),
    "SparseAdam": ("optimizer: Adam", "optimizer: SparseAdam"),
    "num_workers -1": ("batch_size: 16", "batch_size: 16\nnum_workers: -1"),
    "NaN learnrate": ("learnrate: 0.003", "learnrate: .nan"),
    "negative clipping": ("batch_size: 16", "batch_size: 16\ngradient_clipping: -1"),
    "ExponentialLR": ("scheduler: CosineAnnealingLR", "scheduler: ExponentialLR"),
    "device mps": ("batch_size: 16", "batch_size: 16\ndevice: mps"),
    "seed 2**64": ("batch_size: 16", "batch_size: 16\nseed: 18446744073709551616"),
}


@pytest.mark.parametrize("state", ["interrupted", "complete"])
@pytest.mark.parametrize("change", sorted(FAILING_CHANGES))
def test_a_rerun_that_fails_leaves_every_file_of_an_interrupted_or_complete_run(
        state, change, write, cli, tmp_path) -> None:
    """Each way a re-run can fail on its entry -- a checkpoint it cannot resume, an
    optimizer that cannot step, bad settings -- leaves every byte of the run's files as they
    were, whether the run was interrupted or complete, and exits 2 or 1 without a traceback
    (1: the first step failed, after the run's files were restored)."""
    from conftest import TINY_EXPERIMENT

    text = "matrix:\n  hid: [8]\n" + TINY_EXPERIMENT.replace(
        "experiment_name: tiny/${matrix_slug}", "experiment_name: kept")
    assert cli("run", write("first.yml", text), "--max-inputs", "64")[0] == 0
    run = tmp_path / "runs" / "kept"
    if state == "interrupted":
        result = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps({**result, "status": "running"}))
    before = _snapshot(run)
    code, _, err = cli("run", write("second.yml", text.replace(*FAILING_CHANGES[change])),
                       "--max-inputs", "128")
    assert code in (1, 2) and "Traceback" not in err, err
    assert _snapshot(run) == before


@pytest.mark.parametrize("command", ["render", "report", "results", "run", "evaluate"])
def test_output_paths_under_a_file_are_bad_input_before_any_work(command, tiny_experiment, cli,
                                                                 tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = {"render": ["render", "some-run", "--input", "x.png", "--size", "2x", "-o",
                       blocker / "x.png"],
            "report": ["report", tiny_experiment, "-o", blocker / "report"],
            "results": ["results", tiny_experiment, "--runs-dir", blocker],
            "run": ["run", tiny_experiment, "--runs-dir", blocker / "runs"],
            "evaluate": ["evaluate", "some-run", "-o", blocker / "out"]}[command]
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    assert str(blocker) in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_a_fresh_run_with_lbfgs_trains_and_sparse_adam_is_bad_input(write, cli,
                                                                     tmp_path) -> None:
    from conftest import TINY_EXPERIMENT

    text = "matrix:\n  hid: [8]\n" + TINY_EXPERIMENT
    code, out, err = cli("run", write("lbfgs.yml", text.replace(
        "optimizer: Adam", "optimizer: LBFGS").replace("tiny/", "lbfgs/")), "--max-inputs", "48")
    assert code == 0, err
    result = json.loads((tmp_path / "runs" / "lbfgs" / "hid:8" / "result.json").read_text())
    assert result["status"] == "complete" and result["num_inputs"] >= 48
    code, out, err = cli("run", write("sparse.yml", text.replace(
        "optimizer: Adam", "optimizer: SparseAdam").replace("tiny/", "sparse/")))
    assert code == 2 and "key 'optimizer'" in err and "sparse gradients" in err
    assert "Traceback" not in err and not (tmp_path / "runs" / "sparse").exists()


def test_a_data_error_shared_by_every_entry_is_printed_once(write, cli) -> None:
    config = write("tiles.ndjson", '{"name": "x", "url": "/no/sheet.png", "shape": [8, 8]}\n')
    text = ("matrix:\n  hid: [8, 12, 16]\n" + TINY_EXPERIMENT).replace(
        "kali_patch_dataset(SHAPE, num_images=64)",
        f"rpg_tile_dataset(SHAPE, tile_config='{config}')")
    code, out, err = cli("run", write("data.yml", text))
    assert code == 2 and err.count("file not found") == 1
    assert err.count("the same error as 'tiny/hid:8'") == 2
