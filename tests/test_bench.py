"""The benchmarks in bench/ import against the current package: they are run by hand, so
an API they use that moved would otherwise surface only when someone measures."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPTS = sorted((ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_a_benchmark_script_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(path.parent))  # the scripts import each other
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # main() runs only under __main__
    assert callable(getattr(module, "main", None)) or path.stem == "end_to_end"


def _bench_module(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module(name)


@pytest.mark.parametrize("codec", ["factorized prior", "scale hyperprior"])
def test_learned_codec_decodes_from_its_bytes_what_it_encoded(codec: str, monkeypatch) -> None:
    """The learned-codec anchor of the bytes table scores what comes back from its real
    bitstreams: the bytes decode to the encoder's rounded latents, and cost about what the
    codec's entropy model prices them at."""
    import torch

    learned_codec = _bench_module("learned_codec", monkeypatch)
    torch.manual_seed(0)
    tiles = torch.rand(12, 3, 32, 32)
    model = learned_codec.train_codec(learned_codec.CODECS[codec](hidden=8, latent=12), tiles,
                                      inputs=64, target_bytes=40, batch=8)
    with torch.no_grad():
        unrounded = model.g_a(tiles[:3])
        latents = unrounded.round().clamp(-learned_codec.SYMBOL_RANGE, learned_codec.SYMBOL_RANGE)
        blobs = model.compress(tiles[:3])
        assert torch.equal(model.decompress(blobs, (4, 4)), latents)
        # the entropy model's price of those latents (the price the rate controller steers on)
        estimated = model.bits(unrounded, noisy=False) / 8
    # the coder pays about the model's price: a little over it for the table's rounding, less
    # for rare values (a table gives every symbol at least 2**-16; the model prices them lower)
    sizes = torch.tensor([len(blob) for blob in blobs], dtype=torch.float)
    assert ((sizes <= 1.05 * estimated + 4) & (sizes >= 0.7 * estimated)).all(), (sizes,
                                                                                 estimated)
    decoded, sizes, encode_s, decode_s = learned_codec.round_trip(model, tiles[:3])
    assert decoded.shape == (3, 3, 32, 32) and encode_s > 0 and decode_s > 0


def test_a_bounded_scale_still_learns_to_grow(monkeypatch) -> None:
    """Below its bound a scale (or likelihood) is priced at the bound, and its gradient
    still flows where descent raises it, not where descent would push it lower."""
    import torch

    learned_codec = _bench_module("learned_codec", monkeypatch)
    x = torch.tensor([0.05, 0.5], requires_grad=True)
    bounded = learned_codec.lower_bound(x, 0.11)
    assert torch.equal(bounded.detach(), torch.tensor([0.11, 0.5]))
    (-bounded).sum().backward()  # descent raises both
    assert torch.equal(x.grad, torch.tensor([-1.0, -1.0]))
    x.grad = None
    learned_codec.lower_bound(x, 0.11).sum().backward()  # descent lowers both
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0]))


def test_codec_payloads_leave_out_the_container(monkeypatch) -> None:
    """AVIF, WebP and JPEG rows count the coded image data, not the file's fixed headers."""
    import io

    import numpy as np
    from PIL import Image, features

    quality = _bench_module("quality", monkeypatch)
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    formats = ["JPEG", "WEBP"] + (["AVIF"] if features.check("avif") else [])
    for fmt in formats:
        small, large = (io.BytesIO(), io.BytesIO())
        Image.fromarray(pixels).save(small, fmt, quality=5)
        Image.fromarray(pixels).save(large, fmt, quality=90)
        payloads = [quality.payload_bytes(b.getvalue(), fmt) for b in (small, large)]
        files = [len(b.getvalue()) for b in (small, large)]
        assert 0 < payloads[0] < payloads[1], fmt  # the payload grows with the quality
        assert files[1] - files[0] >= payloads[1] - payloads[0] - 4, fmt  # the same growth
        assert files[0] - payloads[0] == files[1] - payloads[1] or fmt == "JPEG", fmt


def test_bytes_table_lists_refined_float_codes_with_their_refinement_as_encoding(
        monkeypatch) -> None:
    """A float-code model's rows: its code in fp32, fp16 and 8 bits, and with refinement
    the refined code at the same sizes, encoded in the refinement's time and closer to the
    tiles than the encoder's code; the refinement's curve ends where its row is."""
    import torch

    from inrlab.models import EncoderConvGrid, EncoderDecoder, LocalLatentDecoder

    quality = _bench_module("quality", monkeypatch)
    torch.manual_seed(0)
    model = EncoderDecoder(
        EncoderConvGrid((3, 8, 8), latent_channels=3, grid=(4, 4), channels=(8,)),
        LocalLatentDecoder(latent_channels=3, grid=(4, 4), num_output_channels=3,
                           default_shape=(8, 8), num_hidden=8, num_layers=2)).eval()
    valid, train = torch.rand(5, 3, 8, 8), torch.rand(20, 3, 8, 8)
    rows, curve = quality.model_rows(model, "tiny", valid, train, refine_steps=30,
                                     refine_learnrate=0.05, refine_rate_weight=None)
    assert [row.name for row in rows] == [
        "tiny, fp32 code", "tiny, fp16 code", "tiny, 8-bit code",
        *(f"tiny after 30 refinement steps, {size} code" for size in ("fp32", "fp16", "8-bit"))]
    assert [row.size for row in rows] == ["192", "96", "48"] * 2
    assert rows[3].psnr > rows[0].psnr
    assert rows[3].encode_ms > rows[0].encode_ms  # 30 decoder passes against one encode
    assert [step for step, _, _ in curve] == [0, 10, 30]
    assert curve[0][1] == pytest.approx(rows[0].psnr) and curve[-1][1] == pytest.approx(
        rows[3].psnr)


@pytest.mark.parametrize("geometry", ["areas", "corners"])
def test_two_x_renders_each_pixel_inside_its_low_resolution_pixel(geometry: str,
                                                                 monkeypatch) -> None:
    """The 2x test's first render (the one scored beside bicubic and drawn in its sheet)
    puts every 2x pixel inside the 1x pixel it came from, whatever the decoder's own pixel
    geometry: with a decoder whose colour depends on the nearest latent alone, each 2x2
    block repeats the 1x decode. "areas": a 4x4 code of 8x8 images (two pixels per latent
    cell, where the corner frame's coordinates put the queries elsewhere); "corners": a
    latent per pixel, where a 2x pixel's nearest latent is its 1x pixel's."""
    import torch

    from inrlab.models import EncoderConvGrid, EncoderConvMap, EncoderDecoder, LocalLatentDecoder

    quality = _bench_module("quality", monkeypatch)
    torch.manual_seed(0)
    grid = (4, 4) if geometry == "areas" else None
    encoder = (EncoderConvGrid((3, 8, 8), latent_channels=4, grid=grid, channels=(8,))
               if grid else EncoderConvMap(3, latent_channels=4, channels=8, num_blocks=1))
    model = EncoderDecoder(encoder, LocalLatentDecoder(
        4, grid=grid, num_hidden=16, num_layers=2, sampling="nearest", pixel_geometry=geometry,
        default_shape=(8, 8))).eval()
    with torch.no_grad():
        model.decoder.position_in.weight.zero_()  # the colour then depends on the latent alone
        codes = model.encode(torch.rand(2, 3, 8, 8))
        renders = quality.code_renders(model, codes, (8, 8), (16, 16))
        low = model.decode(codes, (8, 8))
    assert [name for name, _ in renders][-1].endswith("(its own)")
    torch.testing.assert_close(renders[0][1],
                               low.repeat_interleave(2, -1).repeat_interleave(2, -2))
