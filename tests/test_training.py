"""Training end to end: run directory, results, resume, crashes, divergence."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from inrlab.storage.checkpoint import load_checkpoint
from inrlab.storage.metrics import read_metrics


def run_path(experiment: Path, slug: str) -> Path:
    return experiment.parent / "runs" / "tiny" / slug


def test_run_writes_the_run_directory_and_results(tiny_experiment, cli) -> None:
    code, out, _ = cli("run", tiny_experiment)
    assert code == 0
    assert "encoder params:" in out and "decoder params:" in out
    run = run_path(tiny_experiment, "hid:8")
    for name in ("config.yaml", "checkpoint-last.pt", "checkpoint-best.pt", "metrics.jsonl",
                 "result.json", "tensorboard", "images/reconstruction.png"):
        assert (run / name).exists(), name
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["num_inputs"] >= 256
    assert result["matrix_entry"] == {"hid": 8}
    assert set(result["parameters"]) == {"total", "trainable", "encoder", "decoder"}
    for key in ("train_loss", "validation_loss", "best_validation_loss", "training_time_s",
                "throughput", "validation_psnr", "validation_mse", "validation_ssim"):
        assert isinstance(result[key], float), key
    assert result["warnings"] == [] and 0 < result["validation_ssim"] < 1
    assert result["device"] == "cpu"
    kinds = {r["kind"] for r in read_metrics(run / "metrics.jsonl")}
    assert kinds == {"train", "validation"}

    code, out, _ = cli("results", tiny_experiment, "--sort", "hid-")
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert code == 0 and len(lines) == 4  # header, rule, two runs
    assert lines[2].split("|")[1].strip() == "12"  # sorted descending by hid
    code, out, _ = cli("results", tiny_experiment, "--json")
    rows = json.loads(out)
    assert {r["matrix_id"] for r in rows} == {"1", "2"} and rows[0]["inputs"] >= 256


def test_inrlab_run_treats_denormal_floats_as_zero(tiny_experiment, cli) -> None:
    """``inrlab run`` flushes denormal floats (below ~1.2e-38) to zero before it trains: a
    run whose activations reach them would otherwise step several times slower on a CPU."""
    torch.set_flush_denormal(False)  # the default (an earlier run in this process set it)
    tiny = torch.full((64,), 1e-39)
    assert (tiny * 1.5).abs().max() > 0  # the default: kept, and slow
    assert cli("run", tiny_experiment, "--only", "1")[0] == 0
    assert (tiny * 1.5).abs().max() == 0


def test_skip_and_resume_continue_counters(tiny_experiment, cli) -> None:
    assert cli("run", tiny_experiment, "--only", "1")[0] == 0
    run = run_path(tiny_experiment, "hid:8")
    first = json.loads((run / "result.json").read_text())
    code, out, _ = cli("run", tiny_experiment, "--only", "1", "--skip")
    assert code == 0 and "already complete" in out
    code, out, _ = cli("run", tiny_experiment, "--only", "1", "--max-inputs", "512")
    second = json.loads((run / "result.json").read_text())
    assert code == 0 and "from 256 inputs" in out
    assert second["num_inputs"] >= 512 and second["num_batches"] > first["num_batches"]
    inputs = [r["inputs"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert inputs == sorted(inputs) and len(inputs) == len(set(inputs))


def test_nan_loss_stops_with_status_diverged(write, cli) -> None:
    from conftest import TINY_EXPERIMENT

    text = TINY_EXPERIMENT.replace("learnrate: 0.003", "learnrate: 1e30").replace(
        "${hid}", "8").replace("scheduler: CosineAnnealingLR\n", "")
    path = write("nan.yml", text.replace("tiny/${matrix_slug}", "tiny/nan"))
    code, out, _ = cli("run", path)
    result = json.loads((path.parent / "runs" / "tiny" / "nan" / "result.json").read_text())
    assert code == 1 and result["status"] == "diverged" and "diverged" in out


@pytest.mark.parametrize("kills, seconds", [
    (4, (4.0, 7.0)),
    pytest.param(20, (1.5, 5.0), marks=pytest.mark.slow),  # issue 26's count: -m slow
])
def test_sigkill_at_random_moments_never_loses_the_run(write, tmp_path, kills: int,
                                                       seconds: tuple[float, float]) -> None:
    """SIGKILL at random moments (start-up, training, checkpoint writes): every checkpoint
    left reads back, progress never goes backwards, and a last run finishes from it."""
    from conftest import TINY_EXPERIMENT

    # a budget the killed processes cannot finish, so each restart resumes mid-run
    text = (TINY_EXPERIMENT.replace("${hid}", "8").replace("max_inputs: 256", "max_inputs: 1000000")
            .replace("tiny/${matrix_slug}", "tiny/kill")
            + "checkpoint_every_seconds: 0.3\nnum_workers: 0\n")
    path = write("kill.yml", text)
    run = tmp_path / "runs" / "tiny" / "kill"
    env = {**os.environ, "INRLAB_RUNS_DIR": str(tmp_path / "runs")}
    command = [sys.executable, "-m", "inrlab", "run", str(path), "--no-tensorboard"]
    rng = random.Random(1)
    seen = [0]
    for _ in range(kills):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(*seconds))
        process.send_signal(signal.SIGKILL)
        process.wait()
        for name in ("checkpoint-last.pt", "checkpoint-best.pt"):
            if (run / name).exists():
                load_checkpoint(run / name)  # never unreadable
        if (run / "checkpoint-last.pt").exists():
            inputs = load_checkpoint(run / "checkpoint-last.pt")["progress"]["num_inputs"]
            assert inputs >= seen[-1]
            seen.append(inputs)
    assert seen[-1] > 0, "no checkpoint was written before the kills"
    budget = seen[-1] + 512  # the last run finishes a little after the last checkpoint
    finished = subprocess.run([*command, "--max-inputs", str(budget)], env=env,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"from {seen[-1]:,} inputs" in finished.stdout
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["num_inputs"] >= budget


@pytest.mark.parametrize("precision", ["bf16"])
def test_bf16_precision_trains(tiny_experiment, cli, precision: str) -> None:
    text = tiny_experiment.read_text() + f"precision: {precision}\n"
    tiny_experiment.write_text(text)
    code, _, _ = cli("run", tiny_experiment, "--only", "1")
    result = json.loads((run_path(tiny_experiment, "hid:8") / "result.json").read_text())
    assert code == 0 and result["status"] == "complete"


@pytest.mark.parametrize("flags, speedup, chosen", [
    (None, None, "fp32"),                   # no bf16 units: nothing measured
    ("this CPU has AVX512-BF16 units", 2.5, "bf16"),  # the 2-core EPYC's ratio
    ("this CPU has AVX512-BF16 units", 0.59, "fp32"),  # the 2-core Xeon's
])
def test_auto_precision_takes_bf16_only_where_its_products_run_faster(
        monkeypatch, flags, speedup, chosen) -> None:
    """``precision: auto`` on a CPU: bf16 needs the units and a measured speed-up, and the
    reason printed with the run says which decided."""
    from inrlab.train import device

    probed = []

    def measure(where: str) -> float:
        probed.append(where)
        return speedup

    monkeypatch.setattr(device, "bf16_units", lambda _: flags)
    monkeypatch.setattr(device, "bf16_speedup", measure)
    precision, reason = device.resolve_precision("auto", torch.device("cpu"))
    assert precision == chosen
    assert probed == (["cpu"] if flags else [])
    if flags:
        assert ("faster" if chosen == "bf16" else "slower") in reason
    assert device.resolve_precision("fp32", torch.device("cpu")) == ("fp32",
                                                                   "set in the experiment")


def test_measuring_bf16_leaves_the_random_stream_alone() -> None:
    """The product timing that ``precision: auto`` runs while a trainer is built draws its
    operands from a generator of its own: what the caller draws next is unchanged."""
    from inrlab.machine import bf16_speedup

    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert bf16_speedup("cpu", n=64, repeats=1) > 0
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)


def test_optimizer_args_reach_the_optimizer(write, cli) -> None:
    """``optimizer_args`` are the optimizer's keyword arguments: the checkpoint's optimizer
    state carries them, beside the learning rate from ``learnrate``."""
    from conftest import TINY_EXPERIMENT

    text = TINY_EXPERIMENT.replace("optimizer: Adam", "optimizer: AdamW\noptimizer_args: "
                                   "{betas: [0.8, 0.95], weight_decay: 0.25}")
    path = write("tiny.yml", "matrix:\n  hid: [8]\n" + text)
    assert cli("run", path)[0] == 0
    group = load_checkpoint(run_path(path, "hid:8") / "checkpoint-last.pt")["optimizer"][
        "param_groups"][0]
    assert list(group["betas"]) == [0.8, 0.95] and group["weight_decay"] == 0.25
    assert group["initial_lr"] == 0.003


def test_run_prints_and_records_how_it_computes(tiny_experiment, cli) -> None:
    """By default a run chooses its precision and compile mode itself and says why; on a
    CPU its convolutions run channels-last, and its weights still load into a fresh model
    and reproduce the same outputs."""
    from inrlab.experiment import load_experiment
    from inrlab.experiment.build import build_entry
    from inrlab.experiment.trained import load_run_weights
    from inrlab.train.device import channels_last

    code, out, _ = cli("run", tiny_experiment, "--only", "1", "--device", "cpu")
    assert code == 0
    run = run_path(tiny_experiment, "hid:8")
    result = json.loads((run / "result.json").read_text())
    assert result["precision"] in ("bf16", "fp32") and result["compile"] is None
    assert f"precision {result['precision']} (" in out
    assert "eager (auto: eager on a cpu" in out
    assert "convolutions channels-last (NHWC) on the cpu" in out
    spec = load_experiment(tiny_experiment)[0]
    model = build_entry(spec, with_data=False).model.eval()
    load_run_weights(model, run, "last")  # saved channels-last, loads into a plain model
    images = torch.rand(2, 3, 8, 8)
    expected_output = model(images)
    keys = list(model.state_dict())
    assert channels_last(model, torch.device("cpu")) is not None
    assert any(w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last)
               and not w.is_contiguous() for w in model.state_dict().values())
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(images), expected_output, rtol=1e-5, atol=1e-6)


def test_compile_auto_compiles_only_long_runs_on_a_gpu() -> None:
    from inrlab.train.device import AUTO_COMPILE_MIN_STEPS, resolve_compile

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_compile("auto", cpu, 10**9)[0] is None
    assert resolve_compile("auto", gpu, AUTO_COMPILE_MIN_STEPS - 1)[0] is None
    assert resolve_compile("auto", gpu, None)[0] is None  # budget unknown (max_epoch)
    assert resolve_compile("auto", gpu, AUTO_COMPILE_MIN_STEPS) == (
        "default", f"auto: compiled for {AUTO_COMPILE_MIN_STEPS:,} steps on cuda")
    assert resolve_compile(True, cpu, 1) == ("default", "set in the experiment")
    assert resolve_compile("max-autotune", cpu, 1)[0] == "max-autotune"
    assert resolve_compile(False, gpu, 10**9)[0] is None


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(write, tmp_path, presses: int) -> None:
    """One Ctrl-C saves and exits 130; a second right after it (an impatient user) exits
    without a traceback and leaves a checkpoint that loads."""
    from conftest import TINY_EXPERIMENT

    text = (TINY_EXPERIMENT.replace("${hid}", "8").replace("max_inputs: 256", "max_inputs: 1000000")
            .replace("tiny/${matrix_slug}", "tiny/interrupt") + "checkpoint_every_seconds: 1000\n")
    path = write("interrupt.yml", text)
    env = {**os.environ, "INRLAB_RUNS_DIR": str(tmp_path / "runs")}
    # The child starts with Ctrl-C's default action, as from a shell, whatever this process
    # does with it; it trains on one thread so that processes an earlier test left running
    # (a sweep's Ray workers) cannot starve it past the timeouts below.
    process = subprocess.Popen([sys.executable, "-m", "inrlab", "run", str(path),
                                "--no-tensorboard"], env={**env, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = tmp_path / "runs" / "tiny" / "interrupt"
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or not read_metrics(run / "metrics.jsonl"):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        time.sleep(0.02)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 130 and "Traceback" not in err and "interrupted" in err
    if presses == 1:
        assert "checkpoint saved" in out
        state = load_checkpoint(run / "checkpoint-last.pt")
        assert state["progress"]["num_inputs"] > 0
    else:  # the second press may cut the save short: the atomic write keeps the last one
        if (run / "checkpoint-last.pt").exists():
            load_checkpoint(run / "checkpoint-last.pt")
    assert json.loads((run / "result.json").read_text())["status"] == "running"


def test_resume_after_an_epoch_boundary_does_not_validate_twice(tiny_experiment, cli) -> None:
    assert cli("run", tiny_experiment, "--only", "1")[0] == 0
    assert cli("run", tiny_experiment, "--only", "1", "--max-inputs", "320")[0] == 0
    run = run_path(tiny_experiment, "hid:8")
    counts = [r["inputs"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "validation"]
    assert len(counts) == len(set(counts)) and counts[-1] >= 320


def test_train_pixels_trains_on_a_pixel_subset_and_validates_on_all(tiny_experiment, cli) -> None:
    text = tiny_experiment.read_text() + "train_pixels: 20\n"
    tiny_experiment.write_text(text)
    code, _, _ = cli("run", tiny_experiment, "--only", "1")
    assert code == 0
    run = run_path(tiny_experiment, "hid:8")
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["validation_mse"] is not None
    assert 0 < result["validation"]["l1"] < 1 and result["validation"]["mse"] < 1
    assert (run / "images" / "reconstruction.png").is_file()
    code, table, _ = cli("results", tiny_experiment)
    assert code == 0 and "validation mse" in table and "validation psnr" in table


def test_train_jitter_trains_off_the_pixel_centres_and_rejects_bad_values(
        tiny_experiment, cli) -> None:
    text = tiny_experiment.read_text()
    tiny_experiment.write_text(text + "train_jitter: 0.5\n")
    code, _, err = cli("run", tiny_experiment, "--only", "1")
    assert code == 0, err
    result = json.loads((run_path(tiny_experiment, "hid:8") / "result.json").read_text())
    assert result["status"] == "complete" and 0 < result["validation"]["mse"] < 1

    tiny_experiment.write_text(text + "train_jitter: -0.5\n")
    code, _, err = cli("run", tiny_experiment, "--only", "2")
    assert code == 2 and "train_jitter" in err and "tiny.yml" in err and "Traceback" not in err


def test_train_pixels_needs_an_implicit_decoder(write, cli) -> None:
    path = write("mlp.yml", """
        experiment_name: mlp
        trainer: TrainAutoencoder
        train_set: |
          kali_patch_dataset((3, 8, 8), num_images=8)
        batch_size: 4
        learnrate: 0.001
        optimizer: Adam
        max_inputs: 8
        train_pixels: 16
        model: |
          nn.Sequential(nn.Flatten(1), nn.Linear(192, 192), nn.Unflatten(1, (3, 8, 8)))
        """)
    code, _, err = cli("run", path)
    assert code == 2 and "train_pixels" in err and "implicit decoder" in err


# A model forced into a constant output: the sigmoid of a huge negative bias is 0 everywhere
# and passes no gradient, the logs' "all-black start" that never ends.
STUCK_MODEL = """model: |
  m = EncoderDecoder(
      EncoderConv2d(SHAPE, 6, channels=(4,)),
      ImageManifoldDecoder(6, 3, num_hidden=8, num_blocks=1, default_shape=SHAPE[1:]),
  )
  nn.init.constant_(m.decoder.linear_out.bias, ${bias})
  m
num_inputs_between_validations: 32
"""


def stuck_experiment(write, bias: float) -> Path:
    from conftest import TINY_EXPERIMENT

    text = TINY_EXPERIMENT[:TINY_EXPERIMENT.index("model: |")] + STUCK_MODEL
    return write("stuck.yml", f"matrix:\n  bias: [{bias}]\n" + text)


def test_a_run_stuck_at_a_constant_output_is_reported(write, cli) -> None:
    path = stuck_experiment(write, -60.0)
    code, out, _ = cli("run", path)
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning: stuck")]
    assert len(warnings) == 1  # once, not at every validation
    assert "since 32 inputs" in warnings[0] and "at each of the last 3 validations" in warnings[0]
    run = path.parent / "runs" / "tiny" / "bias:-60.0"
    result = json.loads((run / "result.json").read_text())
    assert [w["kind"] for w in result["warnings"]] == ["stuck"]
    assert result["warnings"][0]["inputs"] == 32 and result["warnings"][0]["detected"] == 96
    assert result["validation"]["output_std"] < 1e-6
    records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "warning"]
    assert [(r["inputs"], r["warning"]) for r in records] == [(96, "stuck")]
    code, out, _ = cli("results", path)
    assert code == 0 and " warnings " in out.splitlines()[0] and "stuck from 32" in out


def test_the_stuck_check_fires_on_a_constant_output_while_the_loss_drifts() -> None:
    from inrlab.train.monitors import check_stuck
    from inrlab.train.settings import make_settings
    from inrlab.train.state import Progress

    class Log:
        def __init__(self) -> None:
            self.records: list = []

        def write(self, kind: str, inputs: int, values: dict) -> None:
            self.records.append((inputs, values["warning"]))

    settings = make_settings({"batch_size": 1, "learnrate": 1.0, "optimizer": "SGD"},
                             lambda key: {})
    progress, log = Progress(), Log()
    # (inputs, loss, output_std): varied outputs at a flat loss (a plateau, not stuck); two
    # constant outputs, then varied again (not 3 in a row); then a constant output per image
    # while the loss keeps falling 4% per validation (the mean colour being learnt: the
    # quick start's old failure); the way out of it.
    history = [(10, 0.25, 0.2), (20, 0.25, 0.2), (30, 0.25, 0.2),
               (40, 0.30, 0.001), (50, 0.29, 0.002), (60, 0.28, 0.1),
               (70, 0.300, 0.002), (80, 0.288, 0.002), (90, 0.276, 0.002),
               (100, 0.265, 0.002), (110, 0.20, 0.05)]
    for inputs, loss, spread in history:
        progress.num_inputs = inputs
        check_stuck(settings, progress, {"loss": loss, "output_std": spread}, log)
    (warning,) = progress.warnings
    assert warning["kind"] == "stuck" and warning["inputs"] == 70
    assert warning["detected"] == 90 and warning["until"] == 110
    assert log.records == [(90, "stuck"), (110, "stuck_ended")]


def test_a_loss_warmup_trains_on_its_loss_first_and_validates_on_the_main_one(
        write, cli) -> None:
    from conftest import TINY_EXPERIMENT

    text = "matrix:\n  hid: [8]\n" + TINY_EXPERIMENT.replace(
        "trainer: TrainAutoencoderSpecial", "trainer: TrainAutoencoder")
    path = write("warm.yml", text + "warmup_inputs: 64\nloss_function: l1\n"
                 "num_inputs_between_validations: 32\n")
    code, out, _ = cli("run", path)
    assert code == 0, out
    assert "loss warm-up (l2) done at 64 inputs; training on l1 from here" in out
    run = next((path.parent / "runs").rglob("metrics.jsonl")).parent
    records = read_metrics(run / "metrics.jsonl")
    train = {r["inputs"]: r for r in records if r["kind"] == "train"}
    validation = [r for r in records if r["kind"] == "validation"]
    # While warming up the logged train loss is the MSE (below the L1 of errors < 1);
    # validation always reports the main loss, so its curve stays comparable throughout.
    assert all(abs(r["loss"] - r["l1"]) < 1e-6 for r in validation)
    assert train[32]["loss"] < validation[0]["loss"]
    bad = write("bad.yml", text + "warmup_inputs: 64\nwarmup_loss_function: l3\n")
    code, _, err = cli("run", bad)
    assert code == 2 and "key 'warmup_loss_function'" in err and "unknown loss_function" in err


def test_the_seed_fixes_the_initial_weights(tiny_experiment) -> None:
    import torch

    from inrlab.experiment import build_entry, load_experiment

    spec = load_experiment(tiny_experiment)[0]
    first = build_entry(spec, with_data=False).model.state_dict()
    torch.rand(100)  # whatever ran before in the process
    second = build_entry(spec, with_data=False).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    spec.values["seed"] = 1
    other = build_entry(spec, with_data=False).model.state_dict()
    assert not torch.equal(first["encoder.linear.weight"], other["encoder.linear.weight"])


def test_run_ends_each_entry_with_its_status_psnr_and_directory_and_results_say_where(
        tiny_experiment, cli, tmp_path) -> None:
    code, out, _ = cli("run", tiny_experiment)
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("==> ")]
    runs = tmp_path / "runs"
    assert len(lines) == 2 and all(re.match(r"==> complete: validation PSNR \d+\.\d\d dB, 256 "
                                            r"inputs in \d+ s; run in ", line) for line in lines)
    assert lines[0].endswith(str(runs / "tiny" / "hid:8"))
    assert f"next: 'inrlab results {tiny_experiment}'" in out
    code, out, _ = cli("results", tiny_experiment, "--runs-dir", tmp_path / "elsewhere")
    assert code == 0 and "no results yet" in out and str(tmp_path / "elsewhere") in out


def test_one_process_at_a_time_trains_a_run_and_a_killed_holders_lock_is_taken_over(
        tiny_experiment, cli, tmp_path) -> None:
    run = tmp_path / "runs" / "tiny" / "hid:8"
    hold = ("import sys, time\nfrom pathlib import Path\n"
            "from inrlab.storage.rundir import RunDir\n"
            "with RunDir(Path(sys.argv[1])).lock():\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = cli("run", tiny_experiment, "--only", "hid:8")
        assert code == 2 and f"is being trained by process {holder.pid} on " in err
        assert sorted(p.name for p in run.iterdir()) == [".lock", ".lock-holder.json"]
    finally:
        holder.kill()
        holder.wait()
    (run / ".checkpoint-last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a killed write
    code, out, _ = cli("run", tiny_experiment, "--only", "hid:8")
    assert code == 0 and f"taking over the lock of process {holder.pid} on " in out
    assert "removed .checkpoint-last.pt.x1y2.tmp" in out and not list(run.glob("*.tmp"))
    assert json.loads((run / "result.json").read_text())["status"] == "complete"
    assert not (run / ".lock-holder.json").exists()  # released at the end


def test_a_run_never_nests_in_another_and_reset_deletes_no_other_run(write, cli,
                                                                     tmp_path) -> None:
    from conftest import TINY_EXPERIMENT

    def experiment(name: str) -> Path:
        text = TINY_EXPERIMENT.replace("experiment_name: tiny/${matrix_slug}",
                                       f"experiment_name: {name}")
        return write(f"{name.replace('/', '_')}.yml", "matrix:\n  hid: [8]\n" + text)

    assert cli("run", experiment("base/interrupted"))[0] == 0
    inner = tmp_path / "runs" / "base" / "interrupted"
    before = {p: p.read_bytes() for p in inner.rglob("*") if p.is_file()}
    for name, message in [("base", "holds the run"),
                          ("base/interrupted/images", "would lie inside the run")]:
        for extra in ((), ("--reset",)):
            code, _, err = cli("run", experiment(name), *extra)
            assert code == 2 and message in err and "key 'experiment_name'" in err
    assert {p: p.read_bytes() for p in inner.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("change", ["architecture", "optimizer"])
def test_a_rerun_that_cannot_resume_leaves_every_file_of_the_run_as_it_was(
        change, write, cli, tmp_path) -> None:
    from conftest import TINY_EXPERIMENT

    text = "matrix:\n  hid: [8]\n" + TINY_EXPERIMENT.replace(
        "experiment_name: tiny/${matrix_slug}", "experiment_name: kept")
    assert cli("run", write("first.yml", text), "--max-inputs", "64")[0] == 0
    run = tmp_path / "runs" / "kept"
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "status": "running"}))  # interrupted
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    changed = (text.replace("hid: [8]", "hid: [12]") if change == "architecture"
               else text.replace("optimizer: Adam", "optimizer: SGD"))
    code, _, err = cli("run", write("second.yml", changed))
    assert code == 2 and "was trained with another configuration" in err
    assert ("optimizer: Adam -> SGD" if change == "optimizer" else "num_hidden=12") in err
    after = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before


def test_a_complete_run_rerun_with_other_values_is_refused_not_taken_as_done(
        write, cli, tmp_path) -> None:
    """A file edited after its run finished: `inrlab run` names what changed (exit 2, the
    run untouched) instead of calling the old run complete; a larger budget continues it."""
    from conftest import TINY_EXPERIMENT

    text = "matrix:\n  hid: [8]\n" + TINY_EXPERIMENT.replace(
        "experiment_name: tiny/${matrix_slug}", "experiment_name: kept")
    assert cli("run", write("first.yml", text), "--max-inputs", "64")[0] == 0
    run = tmp_path / "runs" / "kept"
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    code, _, err = cli("run", write("second.yml", text.replace("learnrate: 0.003",
                                                               "learnrate: 0.01")))
    assert code == 2 and "learnrate: 0.003 -> 0.01" in err and "line 13, key 'learnrate'" in err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    code, out, _ = cli("run", write("third.yml", text), "--max-inputs", "96")  # more budget
    assert code == 0 and json.loads((run / "result.json").read_text())["num_inputs"] >= 96
    assert cli("run", tmp_path / "second.yml", "--reset", "--max-inputs", "32")[0] == 0
    assert "learnrate: 0.01" in (run / "config.yaml").read_text()


def test_configuration_changes_compare_models_by_spec(tmp_path) -> None:
    from inrlab.experiment.runner import configuration_changes

    stored = tmp_path / "config.yaml"
    flat = {"name": "LocalLatentDecoder", "args": {"num_hidden": 64}}
    spec = {"name": "LocalLatentDecoder", "args": {"mlp": {"name": "PixelMLP",
                                                           "args": {"num_hidden": 64}}}}
    composed = {"name": "LocalLatentDecoder", "args": {"mlp": {"num_hidden": 64}}}
    stored.write_text(yaml.safe_dump({"model": flat, "max_inputs": 10,
                                      "inrlab": {"model_spec": spec}}))
    same = {"model": composed, "max_inputs": 20, "inrlab": {"model_spec": spec}}
    assert configuration_changes(stored, same) == []  # another form, the same model; budget
    wider = {"name": "LocalLatentDecoder", "args": {"mlp": {"name": "PixelMLP",
                                                            "args": {"num_hidden": 96}}}}
    assert configuration_changes(stored, {**same, "inrlab": {"model_spec": wider}}) == [
        "model.args.mlp.args.num_hidden: 64 -> 96"]
    stored.write_text(yaml.safe_dump({"model": flat, "inrlab": {"source": "old.yml"}}))
    assert configuration_changes(stored, same) == []  # a run from before specs: not compared
    stored.write_text("{broken")
    assert configuration_changes(stored, same) == []


def test_a_runs_directory_that_cannot_be_written_is_bad_input(tiny_experiment, cli,
                                                             tmp_path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    code, _, err = cli("run", tiny_experiment, "--runs-dir", blocked)
    assert code == 2 and f"--runs-dir {blocked} is a file" in err and "Traceback" not in err
    assert blocked.read_text() == "not a directory"


def test_a_full_disk_is_named_when_a_checkpoint_write_fails(tmp_path, monkeypatch) -> None:
    import errno
    import shutil
    from collections import namedtuple

    from inrlab.storage import checkpoint

    def zip_writer_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", zip_writer_fails)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 0))
    with pytest.raises(OSError) as info:
        checkpoint.save_checkpoint(tmp_path / "checkpoint-last.pt", {})
    assert info.value.errno == errno.ENOSPC and "No space left" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_a_model_built_with_nan_values_is_bad_input_before_anything_is_written(
        write, cli, tmp_path) -> None:
    """A snippet that runs its model on torch.empty in training mode (the ResNet log did, to
    probe a shape) can leave NaN in BatchNorm's running statistics: every validation is NaN
    while training looks fine. It is refused, naming the key and the values."""
    from conftest import TINY_EXPERIMENT

    text = "matrix:\n  hid: [8]\n" + TINY_EXPERIMENT.replace("""model: |
  EncoderDecoder(""", """model: |
  model = EncoderDecoder(""").replace("""default_shape=SHAPE[1:]),
  )""", """default_shape=SHAPE[1:]),
  )
  model.decoder.blocks[0].branch[0].running_var.fill_(float("nan"))
  model""")
    path = write("nan.yml", text)
    code, _, err = cli("run", path)
    assert code == 2 and "key 'model'" in err and "NaN" in err and "running_var" in err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_output_to_a_file_gets_a_line_every_so_often(tiny_experiment, cli, monkeypatch) -> None:
    """Not a terminal (the captured output here): no progress bar, so training prints a line
    at least every LINE_EVERY_S seconds, and validations that do not improve the best are
    printed at most that often."""
    import json

    from inrlab.train import trainer

    monkeypatch.setattr(trainer, "LINE_EVERY_S", 0.0)
    code, out, _ = cli("run", tiny_experiment, "--only", "1")
    assert code == 0 and "training @ 16 of 256 inputs:" in out and "images/s, loss" in out
    monkeypatch.setattr(trainer, "LINE_EVERY_S", 1e9)
    code, out, _ = cli("run", tiny_experiment, "--only", "2")
    assert code == 0 and "training @" not in out
    run = tiny_experiment.parent / "runs" / "tiny" / "hid:12" / "metrics.jsonl"
    losses = [json.loads(line)["loss"] for line in run.read_text().splitlines()
              if '"validation"' in line]
    improvements = sum(loss < min(losses[:i], default=float("inf"))
                       for i, loss in enumerate(losses))
    assert out.count("validation @") == improvements


def test_each_run_writes_tensorboard_hparams_of_its_matrix_values(tiny_experiment, cli,
                                                                  tmp_path) -> None:
    """TensorBoard's HParams tab compares a matrix: each run's event files say its matrix
    values and the validation metrics it is compared by."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert cli("run", tiny_experiment)[0] == 0
    seen = {}
    for hid in (8, 12):
        events = EventAccumulator(str(tmp_path / "runs" / "tiny" / f"hid:{hid}" / "tensorboard"))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        data = [plugin_data_pb2.HParamsPluginData.FromString(v) for v in content.values()]
        start = next(d.session_start_info for d in data if d.HasField("session_start_info"))
        experiment = next(d.experiment for d in data if d.HasField("experiment"))
        seen[hid] = start.hparams["hid"].number_value
        metrics = {m.name.tag for m in experiment.metric_infos}
        assert {"validation_loss", "validation_psnr"} <= metrics
        assert "validation_psnr" in events.Tags()["scalars"]  # the values the tab shows
    assert seen == {8: 8.0, 12: 12.0}


RESUMED_DATA = {
    "kali patches, flipped": """
        train_set: |
          kali_patch_dataset((3, 8, 8), num_images=48, random_flip=True)
        validation_set: |
          kali_patch_dataset((3, 8, 8), num_images=8, validation=True)
        model: |
          EncoderDecoder(EncoderConv2d((3, 8, 8), 6, channels=(4,)),
                         ImageManifoldDecoder(6, 3, num_hidden=8, num_blocks=1,
                                              default_shape=(8, 8)))
        """,
    "sprite pixel batches at random scales": """
        train_set: |
          sprite_dataset((3, 8, 8), num_images=48, max_scale=4, random_flip=True)
        validation_set: |
          sprite_dataset((3, 8, 8), num_images=8, validation=True)
        train_pixels: 16
        model: |
          UpscalingAutoencoder(
              EncoderConvGrid((3, 8, 8), latent_channels=2, grid=(4, 4), channels=(4,)),
              LocalLatentDecoder(2, grid=(4, 4), num_hidden=8, num_layers=2,
                                 default_shape=(8, 8)), factor=1)
        """,
}


@pytest.mark.parametrize("data", RESUMED_DATA, ids=list(RESUMED_DATA))
def test_a_run_resumed_midway_trains_as_the_uninterrupted_one(write, tmp_path,
                                                               data: str) -> None:
    """Stopped at 160 inputs and resumed, a run with random augmentation (drawn from the
    generator its checkpoint saved) ends with the uninterrupted run's exact losses; also a
    run whose batches draw their size and scored pixels (pixel batches)."""
    from inrlab.experiment.runner import RunOptions, run_entry
    from inrlab.experiment.spec import load_experiment
    from inrlab.storage.metrics import read_metrics

    path = write("aug.yml", """
        experiment_name: aug
        trainer: TrainAutoencoder
        batch_size: 16
        learnrate: 0.003
        optimizer: Adam
        scheduler: CosineAnnealingLR
        max_inputs: 480
        precision: fp32
        num_epochs_between_validations: null
        num_inputs_between_validations: 160
        """ + RESUMED_DATA[data])
    (spec,) = load_experiment(path)
    losses = {}
    for arm, stops in (("whole", [None]), ("resumed", [160, None])):
        for stop in stops:
            run_entry(spec, RunOptions(runs_dir=tmp_path / arm, tensorboard=False, quiet=True,
                                       pause_at=stop))
        records = read_metrics(tmp_path / arm / "aug" / "metrics.jsonl")
        losses[arm] = [(r["inputs"], r["loss"]) for r in records if r["kind"] == "validation"]
    assert losses["resumed"] == losses["whole"] and len(losses["whole"]) == 3
