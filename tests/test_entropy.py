"""Entropy-coded codes: the arithmetic coder, the learned level prior, and training a model
whose code size is part of the loss."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from inrlab.models.bottleneck import LevelPrior, decode_levels, encode_levels
from inrlab.models.refine import refine_codes


def skewed_prior(channels: int, levels: int, seed: int) -> LevelPrior:
    generator = torch.Generator().manual_seed(seed)
    prior = LevelPrior(levels)
    histogram = torch.rand(channels, 1, levels, generator=generator) ** 6  # far from uniform
    prior.histogram = histogram / histogram.sum(2, keepdim=True)
    return prior


@pytest.mark.parametrize("levels,count", [(2, 1), (3, 0), (8, 300), (16, 257), (256, 100)])
def test_the_coder_restores_every_symbol_in_about_the_ideal_size(levels: int,
                                                                  count: int) -> None:
    rng = random.Random(levels * 1000 + count)
    channels = 3
    prior = skewed_prior(channels, levels, seed=levels)
    tables = [table for (table,) in prior.frequency_tables(channels)]  # one context
    p = prior.probabilities(channels)[:, 0]
    symbols, per_symbol, ideal = [], [], 0.0
    for i in range(count):
        channel = i % channels
        symbol = rng.choices(range(levels), weights=p[channel].tolist())[0]
        symbols.append(symbol)
        per_symbol.append(tables[channel])
        ideal += -math.log2(p[channel, symbol].item())
    data = encode_levels(symbols, per_symbol)
    assert decode_levels(data, per_symbol) == symbols
    assert len(data) <= ideal / 8 + 2  # within 2 bytes of -sum log2 p


def test_the_coder_stores_improbable_symbols_too() -> None:
    prior = LevelPrior(16)
    prior.observe(torch.zeros(64, 2, 4, dtype=torch.long))  # only level 0 seen
    tables = [table for (table,) in prior.frequency_tables(2)]
    symbols = [15, 0, 7, 15, 15, 0, 1]
    per_symbol = [tables[i % 2] for i in range(len(symbols))]
    assert decode_levels(encode_levels(symbols, per_symbol), per_symbol) == symbols
    assert len(encode_levels([0] * 7, per_symbol)) <= 1  # the likely code is nearly free


def test_the_prior_follows_the_observed_levels_and_prices_them() -> None:
    prior = LevelPrior(4, momentum=0.5)
    uniform = prior.bits(torch.tensor([[[0.0, 3.0]]]))  # (B=1, C=1, 2 values)
    assert uniform.item() == pytest.approx(4.0)  # 2 bits each before any observation
    levels = torch.tensor([[[0, 0, 0, 1]], [[0, 0, 0, 2]]])  # (B, C=1, 4)
    prior.observe(levels)
    assert prior.probabilities(1)[0, 0].argmax().item() == 0
    cheap, dear = prior.bits(torch.tensor([[[0.0]], [[3.0]]]))
    assert cheap < 1 < dear  # level 0 is 75% of what was seen, level 3 never
    # between levels the price is interpolated and has a gradient towards the cheaper one
    position = torch.tensor([[[0.5]]], requires_grad=True)
    prior.bits(position).sum().backward()
    assert position.grad.item() > 0
    with pytest.raises(ValueError, match="prior has 1 channels, the code 2"):
        prior.bits(torch.zeros(1, 2, 1))
    with pytest.raises(ValueError, match="prior has 1 channels, the code 2"):
        prior.observe(torch.zeros(1, 2, 4, dtype=torch.long))  # not replaced silently
    fresh = LevelPrior(4)
    fresh.load_state_dict(prior.state_dict())  # the histogram's shape comes with it
    assert torch.equal(fresh.histogram, prior.histogram)


def entropy_model(rate_weight: float = 0.01):
    from inrlab.models import EncoderConvGrid, EncoderDecoder, LocalLatentDecoder

    return EncoderDecoder(
        EncoderConvGrid((3, 8, 8), latent_channels=3, grid=(4, 4), channels=(8,)),
        LocalLatentDecoder(latent_channels=3, grid=(4, 4), num_output_channels=3,
                           default_shape=(8, 8), num_hidden=8, num_layers=2),
        code_bits=4, rate_weight=rate_weight)


def test_compressed_codes_decompress_exactly_at_their_estimated_size() -> None:
    torch.manual_seed(0)
    model = entropy_model()
    images = torch.rand(6, 3, 8, 8)
    model.train()
    for _ in range(3):
        model.encode(images)  # training batches teach the prior
    model.eval()
    codes = model.encode(images)  # (6, 3, 4, 4), the stored levels
    blobs = model.compress(codes)
    assert len(blobs) == 6
    assert torch.equal(model.decompress(blobs, codes.shape[1:]), codes)
    estimate = model.bottleneck.bits(codes) / 8  # bytes, from the prior
    sizes = torch.tensor([len(blob) for blob in blobs], dtype=torch.float)
    assert (sizes - estimate).abs().max() <= 2
    assert sizes.mean() < 3 * 16 * 4 / 8  # below the 24 bytes of 4 fixed bits per value
    with pytest.raises(ValueError, match="rate_weight needs code_bits"):
        from inrlab.models import EncoderDecoder
        EncoderDecoder(model.encoder, model.decoder, rate_weight=0.1)


def test_the_rate_weight_trades_error_for_bytes(tmp_path) -> None:
    import inrlab
    from inrlab.data.kali import kali_patch_dataset
    from inrlab.report.results import result_row
    from inrlab.storage.metrics import read_metrics
    from inrlab.storage.rundir import RunDir

    train = kali_patch_dataset((3, 8, 8), num_images=64)
    valid = kali_patch_dataset((3, 8, 8), num_images=16, validation=True)
    sizes = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        run = inrlab.fit(entropy_model(weight), train, valid, experiment_name=f"rate/{weight}",
                         runs_dir=tmp_path, batch_size=16, learnrate=0.003, optimizer="Adam",
                         max_inputs=1024, tensorboard=False)
        records = read_metrics(run.path / "metrics.jsonl")
        validation = [r for r in records if r["kind"] == "validation"][-1]
        train_record = [r for r in records if r["kind"] == "train"][-1]
        assert {"code_bytes", "loss_reconstruction"} <= set(validation) & set(train_record)
        pixels = 8 * 8
        assert validation["loss"] == pytest.approx(
            validation["loss_reconstruction"] + weight * validation["code_bytes"] * 8 / pixels,
            rel=1e-4)
        sizes[weight] = validation["code_bytes"]
        entry = SimpleNamespace(params={}, slug="", id="1")
        row = result_row(entry, RunDir(run.path))
        assert row["validation code bytes"] == pytest.approx(validation["code_bytes"])
    assert sizes[1.0] < 0.7 * sizes[0.0]  # pressed on, the codes get much shorter


def smooth_levels(batch: int, channels: int, levels: int, shape: tuple[int, ...],
                  seed: int) -> torch.Tensor:
    """Integer codes (batch, channels, *shape) whose neighbours are mostly equal: random
    levels held over blocks of 3 values along every dimension (as a latent grid of flat
    image regions is), one value in ten replaced by noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, levels, (batch, channels, *[(n + 2) // 3 for n in shape]),
                           generator=generator)
    for dim, n in enumerate(shape, start=2):
        coarse = coarse.repeat_interleave(3, dim=dim).narrow(dim, 0, n)
    noise = torch.rand(coarse.shape, generator=generator) < 0.1
    return torch.where(noise, torch.randint(0, levels, coarse.shape, generator=generator),
                       coarse)


@pytest.mark.parametrize("shape", [(4, 5), (7,), ()])
def test_neighbour_contexts_code_alike_neighbours_shorter_and_decode_exactly(
        shape: tuple[int, ...]) -> None:
    """The coder's tables follow each value's stored neighbours, in a batch when coding
    and one value at a time when decoding; both must agree for every code layout."""
    levels, channels = 16, 3
    seen = smooth_levels(256, channels, levels, shape, seed=1)
    codes = smooth_levels(8, channels, levels, shape, seed=2)
    sizes = {}
    for context in ("none", "neighbours"):
        prior = LevelPrior(levels, momentum=0.5, context=context)
        for batch in seen.split(64):
            prior.observe(batch)
        blobs = []
        for code, tables in zip(codes, prior.symbol_tables(codes)):
            data = encode_levels(code.flatten().tolist(), tables)
            decoded = decode_levels(data, prior.next_table(code.shape), code.numel())
            assert decoded == code.flatten().tolist()
            blobs.append(data)
        sizes[context] = sum(map(len, blobs))
        estimate = prior.bits(codes.float()).sum().item() / 8  # the training-time price
        assert abs(sizes[context] - estimate) <= 2 * len(codes)
    if shape:
        assert sizes["neighbours"] < 0.9 * sizes["none"]
    else:  # a value with no neighbours has no context: the same code
        assert sizes["neighbours"] == sizes["none"]


def test_priors_saved_before_contexts_load_with_the_same_prices() -> None:
    histogram = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])  # (C, levels)
    prior = LevelPrior(4)
    prior.load_state_dict({"histogram": histogram})
    expected = (histogram + prior.floor) / (histogram + prior.floor).sum(1, keepdim=True)
    assert torch.allclose(prior.probabilities(2)[:, 0], expected)
    with pytest.raises(ValueError, match="context must be one of none, neighbours"):
        LevelPrior(4, context="left")
    with pytest.raises(RuntimeError, match="of 1 contexts and 4 levels cannot load into "
                                           "one of 25 and 4"):
        LevelPrior(4, context="neighbours").load_state_dict(prior.state_dict())


def test_a_model_with_neighbour_contexts_compresses_and_decompresses() -> None:
    from inrlab.models import EncoderDecoder

    torch.manual_seed(0)
    base = entropy_model()
    model = EncoderDecoder(base.encoder, base.decoder, code_bits=4, rate_weight=0.01,
                           code_context="neighbours")
    images = torch.rand(6, 3, 8, 8)
    model.train()
    for _ in range(3):
        model.encode(images)
    model.eval()
    codes = model.encode(images)
    blobs = model.compress(codes)
    assert torch.equal(model.decompress(blobs, codes.shape[1:]), codes)
    restored = EncoderDecoder(base.encoder, base.decoder, code_bits=4, rate_weight=0.01,
                              code_context="neighbours")
    restored.load_state_dict(model.state_dict())
    assert restored.compress(codes) == blobs
    with pytest.raises(ValueError, match="code_context needs rate_weight"):
        EncoderDecoder(base.encoder, base.decoder, code_bits=4, code_context="neighbours")


def test_refined_codes_are_stored_codes_that_reconstruct_better() -> None:
    torch.manual_seed(0)
    model = entropy_model(rate_weight=0.001)
    images = torch.rand(4, 3, 8, 8)
    model.train()
    model.encode(images)  # the prior sees one batch
    model.eval()
    before = torch.nn.functional.mse_loss(model(images), images)
    seen = []
    refined = refine_codes(model, images, 40, learnrate=0.05,
                                 report=lambda step, renders: seen.append(step))
    after = torch.nn.functional.mse_loss(model.decode(refined, (8, 8)), images)
    assert after < before and seen == list(range(41))
    seen.clear()
    again = refine_codes(model, images, 40, learnrate=0.05, report_at={0, 10, 40, 100},
                         report=lambda step, renders: seen.append(step))
    assert seen == [0, 10, 40] and torch.equal(again, refined)  # reports change nothing
    quantizer = model.bottleneck.quantizer
    assert torch.equal(quantizer.dequantize(quantizer.quantize(refined)), refined)
    assert all(p.grad is None for p in model.parameters())  # the weights are left alone
    assert torch.equal(model.decompress(model.compress(refined), refined.shape[1:]), refined)
