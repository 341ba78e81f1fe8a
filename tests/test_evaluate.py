"""``inrlab evaluate``: a run's code against the codecs at equal bytes, its renders against
bicubic and Lanczos, every row's fields, its outputs, and bad input."""

from __future__ import annotations

import io
import json
import math
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_EXPERIMENT
from inrlab.evaluate.pillow import payload_bytes, round_trip
from inrlab.models import EncoderDecoder
from inrlab.evaluate.model import stored_codes

FIELDS = {"target", "method", "detail", "psnr", "psnr_per_image", "ssim", "bytes", "bpp",
          "encode_ms", "decode_ms", "macs_per_pixel", "parameters", "scale", "images"}

# Any-size 8x8 model: the encoder pools to a 2x2 grid of 4 latents, so 16x16 inputs work too.
ANY_SIZE = """
experiment_name: anysize
trainer: TrainAutoencoder
globals:
  SHAPE: (3, 8, 8)
train_set: kali_patch_dataset(SHAPE, num_images=64)
validation_set: kali_patch_dataset(SHAPE, num_images=12, validation=True)
batch_size: 16
learnrate: 0.003
optimizer: Adam
loss_function: l2
max_inputs: 128
model:
  name: UpscalingAutoencoder
  args:
    encoder: {name: EncoderConvMap, args: {in_channels: 3, latent_channels: 4, channels: 4,
                                           num_blocks: 1}}
    decoder: {name: LocalLatentDecoder, args: {latent_channels: 4, grid: null,
              num_output_channels: 3, num_hidden: 8, num_layers: 2, default_shape: [8, 8],
              pixel_geometry: areas}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fixed-size run (tiny/hid:8) and a tiny any-size upscaler (anysize)."""
    from inrlab.cli import main

    root = tmp_path_factory.mktemp("evaluate")
    tiny = root / "tiny.yml"
    tiny.write_text("matrix:\n  hid: [8]\n" + textwrap.dedent(TINY_EXPERIMENT))
    anysize = root / "anysize.yml"
    anysize.write_text(textwrap.dedent(ANY_SIZE))
    for path in (tiny, anysize):
        assert main(["run", str(path), "--runs-dir", str(root / "runs"),
                     "--no-tensorboard"]) == 0
    return root / "runs"


def _rows(out: str) -> list[dict]:
    return json.loads(out)


def test_pca_rows_never_spend_more_bytes_than_the_budget() -> None:
    from inrlab.evaluate.evaluation import pca_settings

    assert pca_settings(64, 64) == [(64, 8), (128, 4)]
    assert pca_settings(1536, 95.4) == [(95, 8), (190, 4)]  # a hyperprior's latent: no 1-bit row
    for floats, budget in ((64, 64), (256, 100), (1536, 95.4), (6, 3)):
        settings = pca_settings(floats, budget)
        assert all(components * bits <= 8 * budget for components, bits in settings)
        assert ((floats, min(16, int(8 * budget // floats))) in settings) == (8 * budget >= floats)


def test_bytes_rows_put_the_code_beside_pca_and_codecs_at_its_bytes(runs, cli, tmp_path):
    code, out, err = cli("evaluate", "tiny/hid:8", "--runs-dir", runs, "--bytes", "--json",
                         "--no-save")
    assert code == 0, err
    rows = _rows(out)
    assert all(set(row) == FIELDS for row in rows)
    methods = [row["method"] for row in rows]
    assert methods[:2] == ["code", "code"]  # a float code: at 8 bits, and in fp16
    assert {"pca", "jpeg", "webp", "avif"} <= set(methods)
    first = rows[0]
    assert first["bytes"] == 6 and first["bpp"] == pytest.approx(6 * 8 / 64)
    assert first["parameters"] > 0 and first["macs_per_pixel"] > 0
    assert first["encode_ms"] >= 0 and first["decode_ms"] >= 0 and first["images"] == 16
    for row in rows:
        if row["method"] in ("jpeg", "webp", "avif") and "stays under" not in row["detail"]:
            assert row["bytes"] >= first["bytes"]  # the codec gets as many bytes or more
        if row["method"] == "pca":
            assert row["bytes"] <= first["bytes"]
        assert (row["macs_per_pixel"] is None) == (row["method"] not in ("code",))

    # the fp16 code row is the model's own reconstruction, scored independently
    from inrlab.evaluate.targets import load_target
    from inrlab.storage.rundir import RunDir

    target = load_target(RunDir(runs / "tiny" / "hid:8"))
    images = target.validation_images(100)
    with torch.no_grad():
        output = target.model(images).clamp(0, 1)
    mse = torch.mean((output - images) ** 2).item()
    assert rows[1]["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=0.05)


def test_an_entropy_coded_code_is_priced_at_its_compressed_bytes() -> None:
    model = EncoderDecoder(
        {"name": "EncoderConv2d", "args": {"shape": (3, 8, 8), "code_size": 6,
                                           "channels": (4,)}},
        {"name": "ImageManifoldDecoder", "args": {"num_hidden": 8, "num_blocks": 1}},
        code_bits=4, rate_weight=0.01).eval()
    codes = model.encode(torch.rand(5, 3, 8, 8))
    (stored,) = stored_codes(model, codes, None)
    blobs = model.compress(codes)
    assert stored.bytes == pytest.approx(sum(map(len, blobs)) / 5)
    assert torch.equal(stored.codes, codes) and "entropy-coded" in stored.detail


def _write_pngs(folder: Path, count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    arrays = []
    for i in range(count):
        # smooth gradients plus noise: a picture with structure at several scales
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([x, y, (x + y) / 2], -1) * 200
        array = np.clip(base + generator.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"image-{i}.png")
        arrays.append(array)
    return arrays


def _pillow_psnr(arrays: list[np.ndarray], scale: int, method: int) -> float:
    """An independent computation: box downscale, Pillow upscale, PSNR over all pixels."""
    errors = []
    for array in arrays:
        picture = Image.fromarray(array)
        low = picture.resize((picture.width // scale, picture.height // scale), Image.BOX)
        up = np.asarray(low.resize(picture.size, method)).astype(np.float64)
        errors.append(((up - array) / 255) ** 2)
    return 10 * math.log10(1 / np.mean(errors))


def test_scales_rows_match_an_independent_pillow_upscale(runs, cli, tmp_path) -> None:
    arrays = _write_pngs(tmp_path / "truth", 4, 16)
    out_dir = tmp_path / "out"
    code, out, err = cli("evaluate", runs / "anysize", "--images", tmp_path / "truth",
                         "--scales", "2", "4", "--json", "-o", out_dir)
    assert code == 0, err
    rows = _rows(out)
    for scale in (2, 4):
        by_method = {row["method"]: row for row in rows if row["scale"] == scale}
        assert set(by_method) == {"render", "bicubic", "lanczos", "bicubic of reconstruction",
                                  "lanczos of reconstruction"}
        assert by_method["bicubic"]["psnr"] == pytest.approx(
            _pillow_psnr(arrays, scale, Image.BICUBIC), abs=0.05)
        assert by_method["lanczos"]["psnr"] == pytest.approx(
            _pillow_psnr(arrays, scale, Image.LANCZOS), abs=0.05)
        assert by_method["render"]["bytes"] is None and by_method["render"]["images"] == 4
    for name in ("evaluation.json", "evaluation.md", "scales.png"):
        assert (out_dir / name).is_file()
    assert json.loads((out_dir / "evaluation.json").read_text()) == rows
    assert "| render |" in (out_dir / "evaluation.md").read_text()
    # saved in the run, and shown by inrlab report
    assert json.loads((runs / "anysize" / "evaluation.json").read_text()) == rows
    code, _, _ = cli("report", runs / "anysize", "-o", tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert code == 0 and "<h3>Evaluation</h3>" in page and "lanczos of reconstruction" in page


def test_images_of_several_sizes_are_scored_together(runs, cli, tmp_path) -> None:
    _write_pngs(tmp_path / "mixed", 2, 16)
    _write_pngs(tmp_path / "more", 1, 24, seed=1)
    (tmp_path / "more" / "image-0.png").rename(tmp_path / "mixed" / "wide.png")
    code, out, err = cli("evaluate", runs / "anysize", "--images", tmp_path / "mixed",
                         "--scales", "2", "--json", "--no-save")
    assert code == 0, err
    assert all(row["images"] == 3 for row in _rows(out))


def test_the_markdown_table_and_the_rate_distortion_plot(runs, cli, tmp_path) -> None:
    code, out, err = cli("evaluate", runs / "tiny" / "hid:8", "-o", tmp_path / "rd",
                         "--no-save")
    assert code == 0, err
    assert out.startswith("## tiny/hid:8 (16 images)") and "| avif |" in out
    with Image.open(tmp_path / "rd" / "rate_distortion.png") as plot:
        assert plot.size[0] >= 600
    assert not (runs / "tiny" / "hid:8" / "evaluation.json").exists()  # --no-save


def test_refined_codes_are_rows_of_their_own(runs, cli) -> None:
    code, out, err = cli("evaluate", "tiny/hid:8", "--runs-dir", runs, "--refine-steps", "3",
                         "--json", "--no-save")
    assert code == 0, err
    rows = _rows(out)
    refined = [row for row in rows if row["method"] == "refined code"]
    plain = [row for row in rows if row["method"] == "code"]
    assert len(refined) == len(plain) == 2
    assert "after 3 Adam steps at 0.01" in refined[0]["detail"]
    assert refined[0]["encode_ms"] > plain[0]["encode_ms"]  # the refinement is encoding


@pytest.mark.parametrize("case", ["scale", "empty", "small", "no-checkpoint", "output",
                                  "fixed-size", "not-a-run", "bad-image"])
def test_bad_input_is_one_paragraph_and_exit_2(case, runs, cli, tmp_path) -> None:
    tiny = runs / "tiny" / "hid:8"
    args = {
        "scale": [tiny, "--scales", "1"],
        "empty": [tiny, "--images", tmp_path],
        "small": [runs / "anysize", "--images", tmp_path / "small", "--scales", "4"],
        "no-checkpoint": [tmp_path / "bare"],
        "output": [tiny, "-o", tmp_path / "file.txt" / "out"],
        "fixed-size": [tiny, "--scales", "2"],
        "not-a-run": [tmp_path / "nothing-here"],
        "bad-image": [tiny, "--images", tmp_path / "bad"],
    }[case]
    _write_pngs(tmp_path / "small", 1, 3)
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((tiny / "config.yaml").read_text())
    before = (tiny / "result.json").read_text()
    code, out, err = cli("evaluate", *args, "--no-save")
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    assert {"scale": "--scales", "empty": "holds no image files", "small": "too small",
            "no-checkpoint": "no readable checkpoint", "output": "is a file",
            "fixed-size": "give --images of 16x16", "not-a-run": "neither",
            "bad-image": "broken.png: not a readable image"}[case] in err
    assert (tiny / "result.json").read_text() == before


def test_a_files_entries_without_a_checkpoint_yet_are_left_out(runs, cli, tmp_path) -> None:
    """Evaluating a matrix file while its next entry trains scores the finished entries."""
    file = tmp_path / "tiny.yml"
    file.write_text("matrix:\n  hid: [8, 12]\n" + textwrap.dedent(TINY_EXPERIMENT))
    copied = tmp_path / "runs"
    shutil.copytree(runs / "tiny" / "hid:8", copied / "tiny" / "hid:8")
    training = copied / "tiny" / "hid:12"  # started: its config, no checkpoint yet
    training.mkdir()
    (training / "config.yaml").write_text((runs / "tiny" / "hid:8" / "config.yaml").read_text())
    code, out, err = cli("evaluate", file, "--runs-dir", copied, "--json", "--no-save")
    assert code == 0, err
    assert {row["target"] for row in _rows(out)} == {"tiny/hid:8"}
    assert "tiny/hid:12: no best checkpoint yet (still training?): left out" in err

    shutil.rmtree(copied / "tiny" / "hid:8")  # nothing left to score: an error
    code, out, err = cli("evaluate", file, "--runs-dir", copied, "--no-save")
    assert code == 2 and "has a best checkpoint yet" in err


def test_codec_payloads_leave_out_the_container() -> None:
    images = [torch.rand(3, 3, 16, 16)]
    for codec, fmt in (("jpeg", "JPEG"), ("webp", "WEBP"), ("avif", "AVIF")):
        coded = round_trip(images, codec, 50)
        assert 0 < coded.payload < coded.file_bytes
        assert coded.decoded[0].shape == images[0].shape
        buffer = io.BytesIO()
        Image.fromarray((images[0][0].permute(1, 2, 0) * 255).byte().numpy()).save(
            buffer, fmt, quality=50)
        assert 0 < payload_bytes(buffer.getvalue(), fmt) < len(buffer.getvalue())
