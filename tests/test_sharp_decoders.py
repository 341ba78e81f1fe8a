"""The local-latent decoder, Fourier-feature encodings and the modulated SIREN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inrlab.models import (EncoderConvGrid, EncoderConvMap, EncoderDecoder, ImageManifoldDecoder,
                           LocalLatentDecoder, ModulatedSirenDecoder, UpscalingAutoencoder,
                           count_parameters)
from inrlab.models.layers import GridLinear, ResidualConvBlock
from inrlab.models.posenc import FourierFeatures, pixel_grid, positional_encoding
from inrlab.report.figures import reproduction_columns


def local_decoder(sampling: str, **kwargs) -> LocalLatentDecoder:
    torch.manual_seed(0)
    return LocalLatentDecoder(4, grid=(3, 5), num_hidden=16, num_layers=2, sampling=sampling,
                              default_shape=(9, 17), **kwargs)


@pytest.mark.parametrize("sampling", ["ensemble", "nearest", "bilinear"])
def test_local_decoder_shared_and_per_image_coordinates_agree(sampling: str) -> None:
    decoder = local_decoder(sampling)
    code = torch.randn(2, 4, 3, 5)
    coords = pixel_grid((9, 17))
    shared = decoder.query(code, coords)  # (B, N, C)
    per_image = decoder.query(code, coords.expand(2, -1, -1))
    assert shared.shape == (2, 9 * 17, 3)
    torch.testing.assert_close(shared, per_image)
    image = decoder(code)
    torch.testing.assert_close(image.flatten(2).transpose(1, 2), shared)


def test_local_ensemble_at_a_latent_centre_uses_that_latent_alone() -> None:
    decoder = local_decoder("ensemble")
    code = torch.randn(1, 4, 3, 5)
    # The grid's cell centres are linspace(-1, 1, g): (x, y) = (0.5, 0) is cell column 3, row 1.
    centre = torch.tensor([[0.5, 0.0]])
    changed = code.clone()
    changed[0, :, 0, 0] += 5  # a latent that is not a neighbour of this point
    torch.testing.assert_close(decoder.query(code, centre), decoder.query(changed, centre))
    moved = code.clone()
    moved[0, :, 1, 3] += 5  # the latent at this centre
    assert not torch.allclose(decoder.query(code, centre), decoder.query(moved, centre))


def test_local_ensemble_is_continuous_across_cell_borders() -> None:
    decoder = local_decoder("ensemble")
    code = torch.randn(1, 4, 3, 5)
    # The 4 latents used switch where x crosses a column centre (x = -0.5 for 5 columns).
    xs = torch.tensor([-0.5 - 1e-4, -0.5 + 1e-4])
    points = torch.stack([xs, torch.full_like(xs, 0.25)], dim=-1)
    left, right = decoder.query(code, points)[0]
    torch.testing.assert_close(left, right, atol=2e-3, rtol=0)


def test_local_decoder_renders_any_size_and_pixel_size_option() -> None:
    decoder = local_decoder("ensemble", pixel_size=True)
    code = torch.randn(2, 4, 3, 5)
    decoder.eval()
    with torch.no_grad():
        small, large = decoder(code, (9, 17)), decoder(code, (40, 30))
    assert small.shape == (2, 3, 9, 17) and large.shape == (2, 3, 40, 30)
    with pytest.raises(ValueError, match=r"codes of shape \(B, 4, 3, 5\)"):
        decoder(torch.randn(2, 4, 4, 4))


def test_grid_encoder_and_local_decoder_form_an_autoencoder_within_the_code_budget() -> None:
    model = EncoderDecoder(EncoderConvGrid((3, 32, 32), 6, grid=(4, 4)),
                           LocalLatentDecoder(6, grid=(4, 4), default_shape=(32, 32)))
    images = torch.rand(2, 3, 32, 32)
    code = model.encode(images)
    assert code.shape == (2, 6, 4, 4) and code[0].numel() <= 102
    assert model(images).shape == images.shape
    # stages that would halve the map below the grid are left out: one `channels` for all
    fewer = EncoderConvGrid((3, 16, 16), 6, grid=(4, 4), channels=(8, 8, 8))
    assert count_parameters(fewer) == count_parameters(
        EncoderConvGrid((3, 16, 16), 6, grid=(4, 4), channels=(8, 8)))
    assert fewer(torch.rand(1, 3, 16, 16)).shape == (1, 6, 4, 4)
    # code_floats: as many latent channels per cell as fit (the logs' 102 floats)
    assert [EncoderConvGrid((3, 32, 32), grid=(g, g), code_floats=102).code_shape[0]
            for g in (4, 5, 8)] == [6, 4, 1]
    with pytest.raises(ValueError, match="larger than the 16x16 image"):
        EncoderConvGrid((3, 16, 16), 6, grid=(20, 20))


def test_fourier_features_are_seeded_and_learned_ones_train() -> None:
    a, b = FourierFeatures(8, 3.0, seed=1), FourierFeatures(8, 3.0, seed=1)
    torch.testing.assert_close(a.matrix, b.matrix)
    assert not torch.equal(a.matrix, FourierFeatures(8, 3.0, seed=2).matrix)
    coords = pixel_grid((4, 4))
    assert a(coords).shape == (16, 2 + 16)
    assert count_parameters(a) == 0
    learned = positional_encoding("learned", (), num_features=8, sigma=3.0)
    assert count_parameters(learned) == 16
    learned(coords).sum().backward()
    assert learned.matrix.grad is not None
    with pytest.raises(ValueError, match="pos_embedding must be one of"):
        positional_encoding("fourier", ())


def test_manifold_decoder_takes_the_gaussian_encoding() -> None:
    decoder = ImageManifoldDecoder(8, 3, num_hidden=16, num_blocks=1, default_shape=(8, 8),
                                   pos_embedding="gaussian", pos_embedding_features=10)
    assert decoder.linear_in.in_features == 8 + 2 + 20
    assert decoder(torch.randn(2, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("modulation", ["film", "shift"])
def test_siren_modulation_starts_neutral_and_then_depends_on_the_code(modulation: str) -> None:
    torch.manual_seed(0)
    decoder = ModulatedSirenDecoder(5, num_hidden=16, num_layers=3, modulation=modulation,
                                    default_shape=(8, 8))
    codes = torch.randn(2, 5)
    untrained = decoder(codes)
    torch.testing.assert_close(untrained[0], untrained[1])  # zero-initialised modulations
    torch.nn.init.normal_(decoder.modulations.weight, std=0.1)
    trained = decoder(codes)
    assert not torch.allclose(trained[0], trained[1])
    per_layer = 2 if modulation == "film" else 1
    assert decoder.modulations.out_features == per_layer * 3 * 16


def test_resampled_grid_places_high_resolution_pixels_inside_the_low_resolution_ones() -> None:
    from inrlab.models.posenc import resampled_pixel_grid

    same = resampled_pixel_grid((5, 7), (5, 7))
    torch.testing.assert_close(same, pixel_grid((5, 7)))
    double = resampled_pixel_grid((4, 4), (8, 8)).view(8, 8, 2)[0, :, 0]  # x along a row
    step = 2 / 3  # one low-resolution pixel in coordinates
    # high pixels 0 and 1 straddle low pixel 0's centre (-1) by a quarter pixel each way
    torch.testing.assert_close(double[:2], torch.tensor([-1 - step / 4, -1 + step / 4]))


def test_area_resampling_averages_tiles(rltiles) -> None:
    from inrlab.data.images import resize
    from inrlab.data.tiles import rpg_tile_dataset

    image = torch.tensor([[[[0, 255], [255, 255]]]], dtype=torch.uint8)
    assert resize(image, (1, 1), "area").item() == 191  # round(3/4 * 255)
    assert resize(image, (1, 1), "nearest").item() in (0, 255)
    with pytest.raises(ValueError, match="resample must be one of"):
        resize(image, (1, 1), "bicubic")
    small = rpg_tile_dataset((3, 16, 16), validation=True, resample="area")
    big = rpg_tile_dataset((3, 32, 32), validation=True)
    averaged = torch.nn.functional.avg_pool2d(big.batch([0]), 2)
    assert (small.batch([0]) - averaged).abs().max() <= 1 / 255 + 1e-6


def test_latent_map_encoder_and_any_grid_decoder_take_any_image_size() -> None:
    torch.manual_seed(0)
    encoder = EncoderConvMap(3, latent_channels=5, channels=8, num_blocks=2)
    decoder = LocalLatentDecoder(5, grid=None, num_hidden=8, num_layers=2, default_shape=(8, 8))
    for size in [(8, 8), (12, 20)]:
        code = encoder(torch.rand(2, 3, *size))
        assert code.shape == (2, 5, *size)  # one latent per input pixel
        assert decoder(code, (2 * size[0], 2 * size[1])).shape == (2, 3, 2 * size[0], 2 * size[1])
    with pytest.raises(ValueError, match=r"codes of shape \(B, 5, any, any\)"):
        decoder(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="at least 2x2"):
        decoder(torch.randn(2, 5, 1, 8))


@pytest.mark.parametrize("geometry", ["areas", "corners"])
def test_area_geometry_puts_each_rendered_pixel_inside_its_low_resolution_pixel(
        geometry: str) -> None:
    torch.manual_seed(0)
    decoder = LocalLatentDecoder(4, grid=None, num_hidden=16, num_layers=2, sampling="nearest",
                                 pixel_geometry=geometry)
    with torch.no_grad():
        decoder.mlp.position_in.weight.zero_()  # the colour then depends on the latent alone
    code = torch.randn(1, 4, 6, 6)
    low = decoder(code, (6, 6))
    high = decoder(code, (18, 18))
    inside = torch.allclose(high, low.repeat_interleave(3, -1).repeat_interleave(3, -2))
    # "areas": every 3x3 block of the 3x render takes the latent of the pixel it came from;
    # "corners" stretches the grid corner to corner, so some pixels take a neighbour's.
    assert inside == (geometry == "areas")
    with pytest.raises(ValueError, match="pixel_geometry"):
        LocalLatentDecoder(4, pixel_geometry="centres")


@pytest.mark.parametrize("geometry", ["areas", "corners"])
@pytest.mark.parametrize("size", [(8, 8), (12, 20)])
def test_ensemble_blend_weights_sum_to_one_on_every_pixel(geometry: str,
                                                         size: tuple[int, int]) -> None:
    # An MLP whose output is a constant must render that constant everywhere, the border
    # pixels included: in "areas" geometry their centres lie half a pixel outside the
    # latent grid, where the blend falls back to the edge latents alone.
    decoder = LocalLatentDecoder(4, grid=None, num_hidden=8, num_layers=2, sampling="ensemble",
                                 pixel_geometry=geometry, activation_out=None)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.zero_()
        decoder.mlp.layers[-1].bias.fill_(0.7)
    rendered = decoder(torch.randn(2, 4, 4, 4), size)
    torch.testing.assert_close(rendered, torch.full_like(rendered, 0.7))


def test_upscaling_autoencoder_learns_from_the_half_size_image() -> None:
    torch.manual_seed(0)
    model = UpscalingAutoencoder(
        EncoderConvMap(3, latent_channels=4, channels=8, num_blocks=1),
        LocalLatentDecoder(4, grid=None, num_hidden=8, num_layers=2, pixel_geometry="areas"),
        factor=2)
    images = torch.rand(2, 3, 16, 16)
    assert model.encode(images).shape == (2, 4, 8, 8)  # the code of the 8x8 area average
    changed = images.clone()
    changed[:, :, 0, 0] += 0.2  # a change the 2x2 average keeps
    changed[:, :, 0, 1] -= 0.2
    torch.testing.assert_close(model.encode(changed), model.encode(images))
    assert model(images).shape == images.shape
    assert model.upscale(images, (32, 32)).shape == (2, 3, 32, 32)
    model.max_factor = 4.0
    sizes = {model.encode(images).shape[-1] for _ in range(40)}  # training: random factors
    assert sizes <= set(range(4, 9)) and len(sizes) >= 3
    model.eval()
    assert model.encode(images).shape[-2:] == (8, 8)  # validation: always factor
    with pytest.raises(ValueError, match="max_factor must be a number >= factor"):
        UpscalingAutoencoder(model.encoder, model.decoder, factor=2, max_factor=1.5)
    # the report's (and inrlab render's) renders upscale the image as it is
    with torch.no_grad():
        columns = dict(reproduction_columns(model, images, scales=(2,)))
    torch.testing.assert_close(columns["render 2x"], model.upscale(images, (32, 32)).clamp(0, 1))


def test_coded_upscaler_stores_the_half_size_code_and_renders_it_at_full_size() -> None:
    """A fixed-size encoder of the half-size image makes a code model trained for 2x: the
    stored (entropy-coded) code is the half-size image's, the loss scores the full-size
    render, and renders of a half-size image start from its own code."""
    torch.manual_seed(0)
    model = UpscalingAutoencoder(
        EncoderConvGrid((3, 8, 8), latent_channels=4, grid=(4, 4), channels=(8,)),
        LocalLatentDecoder(4, grid=(4, 4), num_hidden=8, num_layers=2, pixel_geometry="areas",
                           default_shape=(16, 16)),
        factor=2, code_bits=4, rate_weight=0.01, code_context="neighbours").eval()
    images = torch.rand(3, 3, 16, 16)
    half = F.interpolate(images, size=(8, 8), mode="area")
    with torch.no_grad():
        codes = model.encode(images)
        torch.testing.assert_close(codes, model.render_code(half))  # the half-size code
        torch.testing.assert_close(codes, model.render_code(images))  # training size: same
        assert torch.equal(model.decompress(model.compress(codes), codes.shape[1:]), codes)
        levels = (codes + 2.0) / 4.0 * 15  # 4 bits over [-2, 2]: 16 levels
        torch.testing.assert_close(levels, levels.round())
        assert model(images).shape == images.shape
        assert model.upscale(half, (16, 16)).shape == images.shape
        cost = model.code_cost(codes, 16 * 16)
    assert cost is not None and cost.metrics["code_bytes"] > 0
    with pytest.raises(ValueError, match="max_factor needs an encoder that takes any size"):
        UpscalingAutoencoder(model.encoder, model.decoder, factor=2, max_factor=3)


def sprite_code_model() -> tuple[UpscalingAutoencoder, torch.utils.data.Dataset]:
    """A tiny code model with a fixed 8x8 encoder (seeded) and sprites of random sizes from
    1x to 4x: the quick start's recipe in small."""
    from inrlab.data import sprite_dataset

    torch.manual_seed(0)
    model = UpscalingAutoencoder(
        EncoderConvGrid((3, 8, 8), latent_channels=2, grid=(4, 4), channels=(8,)),
        LocalLatentDecoder(2, grid=(4, 4), num_hidden=8, num_layers=2, default_shape=(8, 8)),
        factor=1)
    return model, sprite_dataset((3, 8, 8), num_images=64, max_scale=4)


def test_a_code_model_trains_at_every_render_scale_on_batches_of_random_sizes() -> None:
    """factor 1 with a fixed-size encoder: each batch of sprites comes at a random size from
    1x to 4x, encoded area-downsampled to the encoder's 8x8, its render scored at the
    batch's size; validation (items at 8x8) is the plain 1x reproduction."""
    model, data = sprite_code_model()
    sizes = set()
    for _ in range(12):
        batch = data.batch(torch.arange(4))
        sizes.add(batch.shape[-1])
        code = model.encode(batch)
        assert code.shape == (4, 2, 4, 4)  # the code of the 8x8 area average
        torch.testing.assert_close(code, model.encode(F.interpolate(batch, size=(8, 8),
                                                                    mode="area")))
        assert model(batch).shape == batch.shape  # scored at the batch's own size
    assert min(sizes) >= 8 and max(sizes) <= 32 and len(sizes) >= 4
    assert data[3][0].shape == (3, 8, 8)  # items one by one: the 1x validation images
    torch.manual_seed(5)
    first = data.batch([0]).shape
    torch.manual_seed(5)
    assert data.batch([0]).shape == first  # the size comes from torch's generator


def test_native_share_renders_that_share_of_batches_at_the_datasets_own_size() -> None:
    """``native_share``: that share of batches comes at 1x, the rest at random sizes up to
    ``max_scale``; 0 draws the sizes as before (the same sizes from the same generator)."""
    from inrlab.data import sprite_dataset

    def sizes(**args) -> list[int]:
        data = sprite_dataset((3, 8, 8), num_images=64, max_scale=4, **args)
        torch.manual_seed(1)
        return [data.batch([0, 1]).shape[-1] for _ in range(200)]

    half = sizes(native_share=0.5)
    assert 0.4 < half.count(8) / len(half) < 0.6
    assert max(half) == 32 and len(set(half)) > 10  # the rest spread over 1x..4x
    assert set(sizes(native_share=1.0)) == {8}
    assert sizes(native_share=0.0) == sizes()
    with pytest.raises(ValueError, match="native_share"):
        sprite_dataset((3, 8, 8), max_scale=4, native_share=1.5)


@pytest.mark.parametrize("channels", [3, 1])
def test_pixel_batches_hold_the_colours_of_the_larger_render_flipped_with_their_images(
        channels: int) -> None:
    """``pixel_batches``: the items at the dataset's own size, and ``count`` distinct pixels
    of each at the batch's drawn size rendered alone, whose colours are the whole render's
    at those pixels, mirrored wherever the image was flipped."""
    from inrlab.data import sprite_dataset
    from inrlab.data.images import set_channels

    data = sprite_dataset((channels, 8, 8), num_images=64, max_scale=4, random_flip=True)
    index = torch.arange(6)
    torch.manual_seed(3)
    sizes, flips = set(), set()
    for _ in range(8):
        ((images, sample),) = data.pixel_batches([index], 20)
        height, width = sample.size
        sizes.add(height)
        assert images.shape == (6, channels, 8, 8)
        assert sample.index.shape == (6, 20) and sample.colours.shape == (6, 20, channels)
        assert all(len(set(row.tolist())) == 20 for row in sample.index)  # distinct pixels
        own = set_channels(data.render(index.numpy(), (8, 8)), channels)
        full = set_channels(data.render(index.numpy(), sample.size), channels)
        for b in range(6):
            flip = [dims for dims in ([], [-1], [-2], [-1, -2])
                    if torch.equal(own[b].flip(dims) if dims else own[b], images[b])][0]
            flips.add(tuple(flip))
            truth = (full[b].flip(flip) if flip else full[b]).flatten(1)  # (C, H*W)
            torch.testing.assert_close(sample.colours[b], truth[:, sample.index[b]].T)
    assert min(sizes) >= 8 and max(sizes) <= 32 and len(sizes) >= 3
    assert len(flips) == 4  # every flip happened, and the pixels followed them
    ((images, sample),) = data.pixel_batches([index], 1000)  # more than 8x8 has: all
    assert sample.index.shape[1] == sample.size[0] * sample.size[1]


def test_pixel_batches_rendered_together_are_the_batches_rendered_alone() -> None:
    """Each batch draws from its own generator, so asking for several at once (one render
    pass) gives each the same size, pixels, flips and colours as asking for it alone; also
    when some batches' sizes hold fewer pixels than asked (all of them, fewer points)."""
    from inrlab.data import sprite_dataset

    data = sprite_dataset((3, 8, 8), num_images=64, max_scale=4, random_flip=True,
                          native_share=0.5)  # half the batches at 8x8: 64 pixels
    chunks = list(torch.arange(48).split(4))

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(k) for k in range(len(chunks))]

    for count in (20, 100):  # 100: more than an 8x8 batch has, fewer than a 32x32 one
        together = data.pixel_batches(chunks, count, generators())
        alone = [data.pixel_batches([c], count, [g])[0] for c, g in zip(chunks, generators())]
        assert len({sample.size for _, sample in together}) > 2
        if count == 100:  # some batches hold all their 64 pixels, others 100 of theirs
            assert {sample.index.shape[1] for _, sample in together} == {64, 100}
        for (images, sample), (images_alone, sample_alone) in zip(together, alone):
            assert sample.size == sample_alone.size
            assert torch.equal(images, images_alone)
            assert torch.equal(sample.index, sample_alone.index)
            torch.testing.assert_close(sample.colours, sample_alone.colours)


def test_training_on_pixel_batches_scores_the_larger_render_without_drawing_it(
        tmp_path: Path) -> None:
    """With ``train_pixels`` and a fixed-size encoder, the loop asks the sprites for pixel
    batches: the model encodes the 1x images and is scored on the rendered pixels at the
    batch's size, at the same loss as on the whole render's same pixels."""
    from inrlab.data.batched import PixelSample
    from inrlab.storage.rundir import RunDir
    from inrlab.train import TrainAutoencoder
    from inrlab.train.autoencoder import AutoencoderOptions
    from inrlab.train.settings import make_settings

    model, data = sprite_code_model()
    settings = make_settings({"batch_size": 4, "max_inputs": 16, "learnrate": 0.01,
                              "loss_function": "l2",
                              "optimizer": "Adam"},
                             lambda key: {})
    trainer = TrainAutoencoder(model=model, train_sets=[(0, data)], validation_sets=[],
                               settings=settings, run_dir=RunDir(tmp_path / "run"),
                               device="cpu", tensorboard=False,
                               options=AutoencoderOptions(train_pixels=16))
    assert trainer.sampled_pixels() == 16
    images, sample = next(trainer.batches.train(0, 0, trainer.sampled_pixels()))
    assert images.shape == (4, 3, 8, 8) and isinstance(sample, PixelSample)
    ((images, sample),) = data.pixel_batches([torch.arange(4)], 16)  # items 0-3
    batch = (images, sample)
    model.eval()  # BatchNorm's running statistics: the same in both computations
    via_sample = trainer.train_step(batch)["loss"]
    full = data.render(np.arange(4), sample.size)  # the whole render, drawn here only
    decoded = model.decode(model.encode(images), sample.size).flatten(2)  # (B, C, H*W)
    at = sample.index.unsqueeze(1).expand(-1, 3, -1)
    torch.testing.assert_close(via_sample, F.mse_loss(decoded.gather(2, at),
                                                      full.flatten(2).gather(2, at)))
    assert trainer.fit() == "complete"
    trainer.settings.training_noise = 0.1  # noise goes into input and target alike
    assert trainer.sampled_pixels() is None
    trainer.settings.training_noise = 0.0
    trainer.options = AutoencoderOptions(train_pixels=16, train_jitter=0.5)
    assert trainer.sampled_pixels() is None  # a jittered query needs the images' own pixels


def test_feature_unfolding_lets_a_pixel_see_the_neighbouring_cells() -> None:
    from inrlab.models import LocalLatentDecoder

    torch.manual_seed(0)
    plain = LocalLatentDecoder(2, grid=(4, 4), num_hidden=8, sampling="nearest")
    unfolded = LocalLatentDecoder(2, grid=(4, 4), num_hidden=8, sampling="nearest", unfold=True)
    assert unfolded.mlp.latent_in.in_features == 9 * plain.mlp.latent_in.in_features
    code = torch.randn(1, 2, 4, 4)
    moved = code.clone()
    moved[0, :, 0, 0] += 1.0  # change only the top-left cell
    for decoder, reaches in ((plain, False), (unfolded, True)):
        decoder.eval()
        before, after = decoder(code, (16, 16)), decoder(moved, (16, 16))
        changed = (before - after).abs().amax(dim=(0, 1)) > 1e-6  # (16, 16)
        assert bool(changed[0, 0])
        # a pixel nearest to cell (1, 1) changes only when it sees the neighbours
        assert bool(changed[6, 6]) == reaches


def test_conv_stage_decodes_a_finer_feature_grid_from_the_same_code() -> None:
    torch.manual_seed(0)
    decoder = LocalLatentDecoder(3, grid=(4, 4), num_hidden=8, num_layers=2, conv_channels=6,
                                 conv_blocks=0, upsample=4, default_shape=(32, 32)).eval()
    code = torch.randn(2, 3, 4, 4)
    assert decoder.prepare(code).shape == (2, 8, 16, 16)  # the MLP decodes a 16x16 grid
    with torch.no_grad():
        image = decoder(code)
        # a render in chunks (no gradients) equals one query over every pixel
        whole = decoder.query(code, pixel_grid((32, 32)))
        assert decoder(code, (64, 48)).shape == (2, 3, 64, 48)
    torch.testing.assert_close(image.flatten(2).transpose(1, 2), whole)
    # the conv stage's receptive field: a corner latent reaches past its own quarter of the
    # image (3x3 convolutions at 4x4, 8x8 and 16x16) but not the opposite corner
    moved = code.clone()
    moved[0, :, 0, 0] += 1.0
    with torch.no_grad():
        changed = (decoder(moved) - image)[0].abs().amax(0) > 1e-6  # (32, 32)
    assert bool(changed[16, 16]) and not bool(changed[31, 31])
    # the code stays what it was: a 4x4 grid of 3 floats
    with pytest.raises(ValueError, match=r"codes of shape \(B, 3, 4, 4\)"):
        decoder(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="power of 2"):
        LocalLatentDecoder(3, grid=(4, 4), conv_channels=6, upsample=3)
    with pytest.raises(ValueError, match="needs a conv stage"):
        LocalLatentDecoder(3, grid=(4, 4), upsample=2)
    with pytest.raises(ValueError, match="blocks must be >= 0"):
        LocalLatentDecoder(3, grid=(4, 4), stage={"name": "ConvStage",
                                                  "args": {"channels": 4, "blocks": -1}})


def test_conv_stage_takes_one_width_per_resolution() -> None:
    decoder = LocalLatentDecoder(3, grid=(4, 4), num_hidden=8, num_layers=2,
                                 conv_channels=(12, 8, 5), conv_blocks=1, upsample=4)
    convs = [m for m in decoder.stage.modules() if isinstance(m, torch.nn.Conv2d)]
    # 3 -> 12 at 4x4, a residual block at 12, then 12 -> 8 at 8x8 and 8 -> 5 at 16x16
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 12), (12, 12), (12, 12), (12, 8), (8, 5)]
    assert decoder.prepare(torch.randn(2, 3, 4, 4)).shape == (2, 8, 16, 16)
    assert decoder.mlp.latent_in.in_features == 5  # the MLP reads the finest width
    with pytest.raises(ValueError, match=r"one width per resolution, 1 \+ log2\(upsample\) = 3"):
        LocalLatentDecoder(3, grid=(4, 4), conv_channels=(12, 8), upsample=4)
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        LocalLatentDecoder(3, grid=(4, 4), conv_channels=(12, 0), upsample=2)


def test_grid_encoder_residual_blocks_run_at_the_last_stage() -> None:
    encoder = EncoderConvGrid((3, 32, 32), 6, grid=(4, 4), channels=(8, 8, 16), num_blocks=2)
    blocks = [m for m in encoder.layers if isinstance(m, ResidualConvBlock)]
    assert len(blocks) == 2 and blocks[0].body[0].in_channels == 16
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 6, 4, 4)
    plain = EncoderConvGrid((3, 32, 32), 6, grid=(4, 4), channels=(8, 8, 16))
    assert not any(isinstance(m, ResidualConvBlock) for m in plain.layers)
    with pytest.raises(ValueError, match="num_blocks must be >= 0"):
        EncoderConvGrid((3, 32, 32), 6, num_blocks=-1)


def test_grid_encoder_code_kernel_reads_the_neighbouring_cells() -> None:
    """``code_kernel=3``: each cell's latents also come from its neighbours' features, so a
    change in one corner of the image reaches more cells of the code than with 1."""
    def reached(code_kernel: int) -> int:
        torch.manual_seed(0)
        encoder = EncoderConvGrid((3, 32, 32), 2, grid=(8, 8), channels=(4, 8),
                                  code_kernel=code_kernel).eval()
        image = torch.rand(1, 3, 32, 32)
        moved = image.clone()
        moved[..., :4, :4] += 1.0  # the top-left cell's pixels only
        changed = (encoder(moved) - encoder(image)).abs().amax(1)[0] > 1e-6  # (8, 8)
        return int(changed.sum())

    assert reached(3) > reached(1) >= 1
    with pytest.raises(ValueError, match="code_kernel must be odd"):
        EncoderConvGrid((3, 32, 32), 2, grid=(8, 8), code_kernel=2)
    with pytest.raises(ValueError, match="global_code"):
        EncoderConvGrid((3, 32, 32), 2, grid=(8, 8), global_code=True, code_kernel=3)


def one_adam_step(module: torch.nn.Module, *inputs: torch.Tensor) -> None:
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    module(*inputs).square().mean().backward()
    optimizer.step()


def test_grid_linear_starts_as_a_convolution_and_may_learn_across_cells() -> None:
    torch.manual_seed(0)
    layer = GridLinear(3, 5, (4, 4), conv_init=3)
    blocks = layer.linear.weight.detach().view(5, 4, 4, 3, 4, 4)  # (out, y, x, in, y', x')
    torch.testing.assert_close(blocks[:, 1, 1, :, 0, 2], blocks[:, 2, 2, :, 1, 3])  # shared
    assert blocks[:, 1, 1, :, 0, 2].abs().sum() > 0
    assert blocks[:, 0, 0, :, 3, 3].abs().sum() == 0  # beyond the 3x3 kernel
    one_adam_step(layer, torch.randn(8, 3, 4, 4))
    assert layer.linear.weight.detach().view(5, 4, 4, 3, 4, 4)[:, 0, 0, :, 3, 3].abs().sum() > 0
    assert GridLinear(3, 5, (4, 4)).linear.weight.view(5, 4, 4, 3, 4, 4)[:, 0, 0, :, 3, 3].abs(
    ).sum() > 0  # default init: dense from the start
    with pytest.raises(ValueError, match="expects a 4x4 grid, got 2x2"):
        layer(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="conv_init must be an odd kernel size"):
        GridLinear(3, 5, (4, 4), conv_init=2)


def test_global_code_lets_every_cell_learn_from_the_whole_tile() -> None:
    torch.manual_seed(0)
    image = torch.rand(4, 3, 16, 16)
    for global_code in (False, True):
        encoder = EncoderConvGrid((3, 16, 16), 2, grid=(4, 4), channels=(4, 4),
                                  batch_norm=False, global_code=global_code)
        one_adam_step(encoder, image)
        probe = image[:1].clone().requires_grad_(True)
        gradient, = torch.autograd.grad(encoder(probe)[0, 0, 0, 0], [probe])  # top-left value
        assert bool(gradient[..., 12:, 12:].abs().sum() > 0) == global_code  # bottom-right

    # Nearest sampling without a conv stage: the bottom-right pixel reads the bottom-right
    # latent alone, unless the code goes through the global Linear layer first.
    code = torch.randn(4, 2, 4, 4)
    changed = code[:1].clone()
    changed[0, :, 0, 0] += 1.0
    for global_code in (False, True):
        decoder = LocalLatentDecoder(2, grid=(4, 4), num_hidden=8, num_layers=2,
                                     sampling="nearest", default_shape=(8, 8),
                                     global_code=global_code)
        one_adam_step(decoder, code)
        corner = decoder(code[:1])[0, :, -1, -1], decoder(changed)[0, :, -1, -1]
        assert torch.equal(*corner) != global_code
    with_stage = LocalLatentDecoder(2, grid=(4, 4), num_hidden=8, num_layers=2,
                                    conv_channels=(6, 5), upsample=2, default_shape=(8, 8),
                                    global_code=True)
    assert isinstance(with_stage.stage[0], GridLinear)  # in place of the first 3x3 conv
    assert with_stage(code).shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="needs a fixed grid"):
        LocalLatentDecoder(2, grid=None, global_code=True)


def test_conv_stage_upsamples_bilinearly_when_asked() -> None:
    """``upsample_mode="bilinear"``: the code's cells spread smoothly over the finer grid
    (no 2x2 blocks of equal features, as nearest upsampling gives); renders at any size."""
    def upsampled(mode: str) -> torch.Tensor:
        decoder = LocalLatentDecoder(3, grid=(4, 4), num_hidden=8, num_layers=2,
                                     conv_channels=4, conv_blocks=0, upsample=2,
                                     upsample_mode=mode, default_shape=(16, 16))
        upsample = next(m for m in decoder.stage if isinstance(m, torch.nn.Upsample))
        assert decoder(torch.randn(2, 3, 4, 4), (24, 20)).shape == (2, 3, 24, 20)
        return upsample(torch.randn(1, 4, 4, 4))  # (1, 4, 8, 8)

    blocks = upsampled("nearest")
    assert torch.equal(blocks[..., 0::2, :], blocks[..., 1::2, :])
    smooth = upsampled("bilinear")
    assert not torch.allclose(smooth[..., 0::2, :], smooth[..., 1::2, :])
    with pytest.raises(ValueError, match="upsample_mode must be one of nearest, bilinear"):
        LocalLatentDecoder(3, grid=(4, 4), conv_channels=4, upsample=2, upsample_mode="cubic")


def test_local_decoder_is_composed_of_parts_and_reads_its_earlier_arguments() -> None:
    """At most 8 constructor arguments (the parent's four and four parts); the earlier flat
    arguments build the same decoder, parameter for parameter, and its state-dict keys are
    the earlier ones, so old checkpoints load."""
    import inspect

    assert len(inspect.signature(LocalLatentDecoder).parameters) <= 8
    composed = dict(
        mlp={"num_hidden": 8, "num_layers": 2, "activation_out": None},
        sampling={"name": "LocalEnsemble", "args": {"unfold": True,
                                                    "pixel_geometry": "areas"}},
        stage={"name": "ConvStage", "args": {"channels": [6, 5], "upsample": 2,
                                             "upsample_mode": "bilinear"}})
    flat = dict(num_hidden=8, num_layers=2, activation_out=None, unfold=True,
                pixel_geometry="areas", conv_channels=(6, 5), upsample=2,
                upsample_mode="bilinear")
    models = []
    for args in (composed, flat):
        torch.manual_seed(0)
        models.append(LocalLatentDecoder(3, grid=(4, 4), default_shape=(8, 8), **args))
    new, old = models
    assert new.state_dict().keys() == old.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(),
                                                  old.state_dict().values()))
    keys = set(new.state_dict())
    assert {"conv.0.weight", "latent_in.weight", "position_in.weight", "mlp.1.weight"} <= keys
    code = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(new(code, (12, 12)), old(code, (12, 12)))
    from inrlab.models import MODELS
    spec = MODELS.build({"name": "LocalLatentDecoder", "args": {
        "latent_channels": 3, "grid": [4, 4], **flat, "conv_channels": [6, 5]}})
    from inrlab.models.registry import model_spec
    assert set(model_spec(spec)["args"]) <= {"latent_channels", "grid", "mlp", "sampling",
                                              "stage", "num_output_channels",
                                              "default_shape", "pos_embedding"}
    with pytest.raises(ValueError, match="sampling must name a sampling part"):
        LocalLatentDecoder(3, sampling={"name": "ConvStage", "args": {"channels": 4}})
