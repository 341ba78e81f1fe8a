"""``inrlab report`` and ``inrlab render`` on real (tiny) runs, and their bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from conftest import TINY_EXPERIMENT


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-entry tiny matrix trained once for the whole module: (experiment file, runs)."""
    import textwrap

    from inrlab.cli import main

    root = tmp_path_factory.mktemp("report")
    path = root / "tiny.yml"
    path.write_text("matrix:\n  hid: [8, 12]\n" + textwrap.dedent(TINY_EXPERIMENT))
    runs = root / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs), "--no-tensorboard"]) == 0
    return path, runs


def test_report_of_an_experiment_file_writes_all_four_outputs(trained, cli, tmp_path) -> None:
    path, runs = trained
    out = tmp_path / "report"
    code, stdout, _ = cli("report", path, "--runs-dir", runs, "-o", out)
    assert code == 0 and "report.html" in stdout
    width, height = Image.open(out / "loss.png").size
    assert width >= 800 and height >= 600
    for slug in ("hid:8", "hid:12"):
        sheet = Image.open(out / "runs" / "tiny" / slug / "reproductions.png")
        # 8 columns (original, reproduction, 3 at 2x, 3 at 4x) of 128 px, 8 rows of 8x8 tiles
        assert sheet.size[0] >= 8 * 128 and sheet.size[1] >= 8 * 128
    results = (out / "results.md").read_text()
    assert "hid:8" in results and "hid:12" in results and "validation psnr" in results
    page = (out / "report.html").read_text()
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert references and all(r.startswith("data:image/png;base64,") for r in references)
    assert "http://" not in page and "https://" not in page
    assert page.count("<section>") == 2 and "config.yaml" in page and "parameters: total" in page


def test_report_of_run_directories_labels_runs_by_what_differs(trained, cli, tmp_path) -> None:
    _, runs = trained
    out = tmp_path / "dirs"
    code, _, _ = cli("report", runs / "tiny" / "hid:8", runs / "tiny" / "hid:12", "-o", out)
    assert code == 0
    page = (out / "report.html").read_text()
    assert "<h2>hid=8</h2>" in page and "<h2>hid=12</h2>" in page


def test_report_with_refined_codes_shows_their_reproductions_and_psnr(trained, cli,
                                                                      tmp_path) -> None:
    _, runs = trained
    run = runs / "tiny" / "hid:8"
    sheets, pages = {}, {}
    for steps in ("0", "30"):
        out = tmp_path / f"refined-{steps}"
        code, _, err = cli("report", run, "--refine-steps", steps, "--refine-learnrate", "0.05",
                           "-o", out)
        assert code == 0, err
        sheets[steps] = Image.open(out / "runs" / "tiny" / "hid:8" / "reproductions.png").size
        pages[steps] = (out / "report.html").read_text()
    assert sheets["30"][0] > sheets["0"][0] and sheets["30"][1] == sheets["0"][1]  # a column
    assert "refined" not in pages["0"]
    found = re.search(r"model ([\d.]+) dB.*each code refined for 30 Adam steps at 0.05 on its "
                      r"image: ([\d.]+) dB", pages["30"], re.S)
    assert found and float(found[2]) > float(found[1])
    code, _, err = cli("report", run, "--refine-steps", "-1", "-o", tmp_path / "bad")
    assert code == 2 and "--refine-steps must be 0 or more" in err
    assert not (tmp_path / "bad").exists()


def test_report_survives_a_half_written_metrics_line_and_missing_metrics(
        trained, cli, tmp_path) -> None:
    import shutil

    _, runs = trained
    broken = tmp_path / "broken"
    shutil.copytree(runs / "tiny" / "hid:8", broken)
    with open(broken / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "inputs": 99')  # a crash mid-write
    empty = tmp_path / "empty"
    shutil.copytree(runs / "tiny" / "hid:12", empty)
    (empty / "metrics.jsonl").unlink()
    code, _, err = cli("report", broken, empty, "-o", tmp_path / "out")
    assert code == 0 and "has no metrics" in err
    assert (tmp_path / "out" / "loss.png").is_file()


def test_report_bad_targets_are_clear_errors(trained, cli, tmp_path) -> None:
    path, _ = trained
    code, _, err = cli("report", tmp_path / "nope", "-o", tmp_path / "o")
    assert code == 2 and "neither an experiment file nor a run directory" in err
    (tmp_path / "notarun").mkdir()
    code, _, err = cli("report", tmp_path / "notarun", "-o", tmp_path / "o")
    assert code == 2 and "not an inrlab run directory" in err
    code, _, err = cli("report", path, "--runs-dir", tmp_path / "empty-runs", "-o", tmp_path / "o")
    assert code == 2 and "nothing to report" in err


def test_render_at_several_sizes_and_an_interpolation(trained, cli, tmp_path) -> None:
    _, runs = trained
    run = runs / "tiny" / "hid:8"
    picture = tmp_path / "tile.png"
    Image.new("RGBA", (8, 8), (200, 40, 40, 255)).save(picture)
    other = tmp_path / "other.png"
    Image.new("RGB", (16, 16), (20, 200, 40)).save(other)  # another size: resized, noted
    for size in ("32", "64x64", "512x512"):
        code, _, err = cli("render", run, "--input", picture, "--size", size,
                           "-o", tmp_path / f"out-{size}.png")
        assert code == 0, err
        h, _, w = size.partition("x")
        assert Image.open(tmp_path / f"out-{size}.png").size == (int(w or h), int(h))
    code, out, _ = cli("render", run, "--input", picture, other, "--size", "24x40",
                       "--interpolate", picture, other, "--steps", "5", "-o", tmp_path / "many")
    assert code == 0 and "resized (nearest)" in out
    assert Image.open(tmp_path / "many" / "tile-24x40.png").size == (40, 24)
    strip = Image.open(tmp_path / "many" / "interpolate-tile-other-24x40.png")
    assert strip.size == (5 * (40 + 2) + 2, 24 + 4)


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "at least 1x1"),
    (["--size", "big"], "H, HxW or a scale"),
    (["--size", "0x"], "scale must be above 0"),
    (["--size", "8"], "--input IMAGE"),
])
def test_render_bad_sizes_and_missing_inputs(trained, cli, args, message) -> None:
    _, runs = trained
    code, _, err = cli("render", runs / "tiny" / "hid:8", *args)
    assert code == 2 and message in err


UPSCALER = """
experiment_name: upscaler
trainer: TrainAutoencoder
globals:
  SHAPE: (3, 8, 8)
train_set: |
  kali_patch_dataset(SHAPE, num_images=32)
batch_size: 16
learnrate: 0.003
optimizer: Adam
loss_function: l2
max_inputs: 32
model: |
  UpscalingAutoencoder(
      EncoderConvMap(in_channels=3, latent_channels=4, channels=8, num_blocks=1),
      LocalLatentDecoder(latent_channels=4, grid=None, pixel_geometry="areas",
                         num_output_channels=3, default_shape=SHAPE[1:], num_hidden=8,
                         num_layers=2, activation_out=None),
      factor=2,
  )
"""


def test_render_at_a_scale_encodes_an_upscalers_input_at_its_own_size(
        write, cli, tmp_path) -> None:
    """An upscaler trained on 8x8 images renders a 16x16 input at --size 2x as 32x32, from
    the latent map of the 16x16 image itself (what ``upscale`` computes), not from the
    input shrunk to the 8x8 training size."""
    import torch

    from inrlab import load_run

    path = write("upscaler.yml", UPSCALER)
    assert cli("run", path)[0] == 0
    run = tmp_path / "runs" / "upscaler"
    picture = tmp_path / "in.png"
    pixels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(picture)
    code, out, err = cli("render", run, "--input", picture, "--size", "2x",
                         "-o", tmp_path / "out")
    assert code == 0, err
    assert "resized" not in out
    rendered = np.asarray(Image.open(tmp_path / "out" / "in-32x32.png"))
    image = torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0) / 255
    with torch.no_grad():
        expected = load_run(run).model.upscale(image, (32, 32))[0].clamp(0, 1)
    expected = (expected.permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.abs(rendered.astype(int) - expected.astype(int)).max() <= 1


def test_render_rejects_a_file_that_is_not_an_image(trained, cli, tmp_path) -> None:
    _, runs = trained
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    code, _, err = cli("render", runs / "tiny" / "hid:8", "--input", fake, "--size", "16",
                       "-o", tmp_path / "out")
    assert code == 2 and "fake.png: not a readable image" in err
    assert not (tmp_path / "out").exists()
    result = json.loads((runs / "tiny" / "hid:8" / "result.json").read_text())
    assert result["status"] == "complete"


def test_report_never_puts_two_loss_functions_on_one_axis(write, cli, tmp_path) -> None:
    from inrlab.report.figures import curves_from_metrics, shared_metrics
    from inrlab.report.report import collect_runs, loss_function_of

    text = TINY_EXPERIMENT.replace("max_inputs: 256", "max_inputs: 128\nloss_function: ${loss}")
    path = write("losses.yml", "matrix:\n  loss: [l1, mse]\n  hid: [8]\n" + text)
    assert cli("run", path, "--no-tensorboard")[0] == 0
    runs = collect_runs([path], tmp_path / "runs")
    assert [loss_function_of(run) for run in runs] == ["l1", "mse"]
    curves = [curves_from_metrics(r.label, r.metrics, loss_function_of(r)) for r in runs]
    assert shared_metrics(curves) == ["psnr", "ssim"]

    one = tmp_path / "one"
    code, _, _ = cli("report", path, "-o", one)
    assert code == 0
    # Two loss panels (l1, mse) + PSNR + SSIM, each a row of (by inputs, by time).
    mixed_height = Image.open(one / "loss.png").size[1]
    single = tmp_path / "single"
    assert cli("report", runs[0].run_dir.path, "-o", single)[0] == 0
    single_height = Image.open(single / "loss.png").size[1]
    assert mixed_height > single_height * 1.25

    page = (one / "report.html").read_text()
    table = page[page.index("<h2>Best validation PSNR</h2>"):page.index("<h2>Curves</h2>")]
    values = [float(v) for v in re.findall(r"<tr><td class=\"text\">[^<]*</td><td>([\d.]+)",
                                            table)]
    assert len(values) == 2 and values == sorted(values, reverse=True)
    assert "throughput (images/s)" in table and "<th>loss</th>" in table


def test_report_shows_a_stuck_run(write, cli, tmp_path) -> None:
    from test_training import stuck_experiment

    path = stuck_experiment(write, -60.0)
    assert cli("run", path, "--no-tensorboard")[0] == 0
    code, _, _ = cli("report", path, "-o", tmp_path / "stuck")
    page = (tmp_path / "stuck" / "report.html").read_text()
    assert code == 0 and "warning: stuck at a constant output since 32 inputs" in page
    assert "stuck from 32" in (tmp_path / "stuck" / "results.md").read_text()


def test_render_device_and_precision_options(trained, cli, tmp_path) -> None:
    _, runs = trained
    run = runs / "tiny" / "hid:8"
    picture = tmp_path / "tile.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(picture)
    pixels = {}
    for precision in ("auto", "fp32", "bf16"):
        out = tmp_path / f"{precision}.png"
        code, stdout, err = cli("render", run, "--input", picture, "--size", "40",
                                "--device", "cpu", "--precision", precision, "-o", out)
        assert code == 0, err
        used = "bf16" if precision == "bf16" else "fp32"  # auto takes bf16 on a GPU only
        assert f"({used})" in stdout and "on cpu" in stdout
        pixels[precision] = np.asarray(Image.open(out), dtype=int)
    assert (pixels["auto"] == pixels["fp32"]).all()
    assert np.abs(pixels["bf16"] - pixels["fp32"]).max() <= 8  # bf16 is close, not equal
    code, _, err = cli("render", run, "--input", picture, "--size", "8", "--device", "tpu")
    assert code == 2 and "unknown device 'tpu'" in err


def test_bf16_probe_accepts_only_renders_that_keep_their_8_bits() -> None:
    import torch

    from inrlab.models import EncoderConvGrid, EncoderDecoder, LocalLatentDecoder
    from inrlab.report.render import bf16_keeps_8_bits, decode_at_precision

    torch.manual_seed(0)
    model = EncoderDecoder(
        EncoderConvGrid((3, 8, 8), latent_channels=4, grid=(4, 4), channels=(8,)),
        LocalLatentDecoder(latent_channels=4, grid=(4, 4), num_output_channels=3,
                           default_shape=(8, 8), num_hidden=16, num_layers=2)).eval()
    codes = model.encode(torch.rand(4, 3, 8, 8))
    images, used = decode_at_precision(model, codes, (64, 64), "auto")
    assert used == "fp32" and torch.equal(images, model.decode(codes, (64, 64)).clamp(0, 1))
    assert not bf16_keeps_8_bits(model, codes, (64, 64))  # colours spread over [0, 1]
    with torch.no_grad():  # a decoder whose colours all clamp to black keeps them in bf16
        model.decoder.mlp.layers[-1].bias.fill_(-50)
    assert bf16_keeps_8_bits(model, codes, (64, 64))


def test_render_with_refined_codes_reproduces_the_input_closer(trained, cli, tmp_path) -> None:
    _, runs = trained
    run = runs / "tiny" / "hid:8"
    generator = np.random.default_rng(0)
    picture = tmp_path / "noise.png"
    Image.fromarray(generator.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(picture)
    truth = np.asarray(Image.open(picture), dtype=float)
    errors = {}
    for steps, learnrate in (("0", "0.01"), ("30", "0.01"), ("30", "1e-12")):
        out = tmp_path / f"refined-{steps}-{learnrate}.png"
        code, _, err = cli("render", run, "--input", picture, "--size", "8",
                           "--refine-steps", steps, "--refine-learnrate", learnrate, "-o", out)
        assert code == 0, err
        errors[steps, learnrate] = ((np.asarray(Image.open(out), dtype=float) - truth) ** 2).mean()
    assert errors["30", "0.01"] < errors["0", "0.01"]
    assert errors["30", "1e-12"] == errors["0", "0.01"]  # the learning rate is the one asked for
    code, _, err = cli("render", run, "--input", picture, "--size", "8", "--refine-steps", "-1")
    assert code == 2 and "--refine-steps must be 0 or more" in err
    code, _, err = cli("render", run, "--input", picture, "--size", "8", "--refine-steps", "5",
                       "--refine-learnrate", "0")
    assert code == 2 and "--refine-learnrate must be above 0" in err


def test_render_checkpoint_last_uses_the_weights_the_run_ended_with(trained, cli, tmp_path) -> None:
    import shutil

    from inrlab.storage.checkpoint import load_checkpoint, save_checkpoint

    _, runs = trained
    run = tmp_path / "run"
    shutil.copytree(runs / "tiny" / "hid:8", run)
    state = load_checkpoint(run / "checkpoint-last.pt")
    bias = next(k for k in state["model"] if k.endswith("bias"))
    state["model"][bias] = state["model"][bias] + 0.5  # the last weights now differ
    save_checkpoint(run / "checkpoint-last.pt", {k: v for k, v in state.items() if k != "format"})
    picture = tmp_path / "noise.png"
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(noise).save(picture)
    rendered = {}
    for which in ("best", "last"):
        out = tmp_path / f"{which}.png"
        code, printed, err = cli("render", run, "--input", picture, "--size", "8",
                                 "--checkpoint", which, "-o", out)
        assert code == 0, err
        assert f"checkpoint-{which}.pt" in printed
        rendered[which] = np.asarray(Image.open(out))
    assert not np.array_equal(rendered["best"], rendered["last"])
    (run / "checkpoint-last.pt").unlink()
    code, _, err = cli("render", run, "--input", picture, "--size", "8", "--checkpoint", "last")
    assert code == 2 and "no readable checkpoint" in err


def test_a_damaged_run_is_skipped_with_a_warning_and_the_others_still_show(
        trained, cli, tmp_path) -> None:
    import shutil

    path, runs = trained
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    damaged = copy / "tiny" / "hid:8"
    result = json.loads((damaged / "result.json").read_text())
    (damaged / "result.json").write_text(json.dumps({**result, "training_time_s": "soon",
                                                     "parameters": [1, 2]}))
    with open(damaged / "metrics.jsonl", "ab") as f:  # a non-UTF-8 line, inputs null
        f.write(b'{"kind": "train", "inputs": 5, "loss": "\xff"}\n'
                b'{"kind": "validation", "inputs": null, "loss": 0.1}\n')
    code, out, err = cli("results", path, "--runs-dir", copy)
    assert code == 0 and "hid:12" in out and "hid:8" not in out
    assert f"warning: skipping {damaged / 'result.json'}: unexpected values" in err
    code, _, err = cli("report", path, "--runs-dir", copy, "-o", tmp_path / "report")
    assert code == 0 and err.count("skipping") == 1
    (damaged / "result.json").write_text('{"status": "compl')  # truncated
    code, out, err = cli("results", path, "--runs-dir", copy)
    assert code == 0 and "hid:12" in out and "not a readable JSON object" in err


def test_render_and_report_say_when_they_run_snippets_of_a_run_from_elsewhere(
        trained, cli, tmp_path) -> None:
    import shutil

    _, runs = trained
    foreign = tmp_path / "received" / "run"
    shutil.copytree(runs / "tiny" / "hid:8", foreign)
    picture = tmp_path / "p.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(picture)
    code, _, err = cli("render", foreign, "--input", picture, "--size", "8",
                       "-o", tmp_path / "o.png")
    assert code == 0 and "outside the runs directory" in err and "Python snippets" in err
    code, _, err = cli("render", runs / "tiny" / "hid:8", "--input", picture, "--size", "8",
                       "--runs-dir", runs, "-o", tmp_path / "o2.png")
    assert code == 0 and "outside the runs directory" not in err
    code, _, err = cli("report", foreign, "-o", tmp_path / "rep")
    assert code == 0 and "outside the runs directory" in err


def test_a_render_too_large_is_bad_input_before_anything_is_allocated(trained, cli,
                                                                      tmp_path) -> None:
    from inrlab import load_run
    from inrlab.errors import InrlabError

    _, runs = trained
    picture = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
    run = runs / "tiny" / "hid:8"
    for args in (["--size", "200000"], ["--size", "40x", "--max-pixels", "1000"]):
        code, _, err = cli("render", run, "--input", picture, "-o", tmp_path / "out", *args)
        assert code == 2 and "key '--size'" in err and "GiB" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InrlabError, match="200000x200000"):
        load_run(run).reconstruct(torch.rand(1, 3, 8, 8), size=(200000, 200000))
    code, _, err = cli("render", run, "--input", picture, "--size", "2x", "--max-pixels", "0")
    assert code == 2 and "--max-pixels must be at least 1" in err


def test_results_of_a_file_without_a_matrix_name_the_run(write, cli) -> None:
    path = write("single.yml", TINY_EXPERIMENT.replace("${hid}", "8").replace(
        "tiny/${matrix_slug}", "single-run"))
    assert cli("run", path, "--max-inputs", "32")[0] == 0
    code, out, _ = cli("results", path, "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["experiment_name"] == "single-run"
    code, out, _ = cli("results", path)
    assert "experiment_name" in out.splitlines()[0] and "single-run" in out
