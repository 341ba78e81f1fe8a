"""Every registered model follows the contract; the logs' parameter counts come out exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inrlab.models.contract import Autoencoder
from inrlab.models import (MODELS, DalleManifoldAutoencoder, EncoderConv2d, ImageManifoldDecoder,
                           ImplicitDecoder, ResNetEncoder, TransformerAutoencoder,
                           count_parameters)


def build_tiny(name: str) -> nn.Module:
    registration = MODELS.get(name)
    return MODELS.build({"name": name, "args": registration.tiny})


def image_shape(model: nn.Module, args: dict) -> tuple[int, ...]:
    if "shape" in args:
        return tuple(args["shape"])
    if "in_channels" in args:  # a fully convolutional encoder takes any size
        return (args["in_channels"], 8, 8)
    encoder = args.get("encoder", {}).get("args", {})
    if "shape" in encoder:
        return tuple(encoder["shape"])
    decoder = args["decoder"]["args"]
    return (encoder["in_channels"], *decoder["default_shape"])


@pytest.mark.parametrize("name", MODELS.names())
def test_registered_model_contract(name: str) -> None:
    torch.manual_seed(0)
    registration = MODELS.get(name)
    model = build_tiny(name)
    count = count_parameters(model)
    assert count == count_parameters(build_tiny(name))  # stable for the same arguments
    if registration.kind == "decoder":
        code = torch.randn(3, *model.code_shape)
        out = model(code)
        assert out.shape == (3, model.out_channels, *registration.tiny["default_shape"])
        coords = torch.rand(3, 5, 2) * 2 - 1
        assert model.query(code, coords).shape == (3, 5, model.out_channels)
        model.eval()
        with torch.no_grad():
            for size in [(4, 4), (16, 16), (7, 13)]:
                assert model(code, size).shape == (3, model.out_channels, *size)
        model.train()
        loss = model(code).square().mean()
    else:
        shape = image_shape(model, registration.tiny)
        images = torch.rand(2, *shape)
        out = model(images)
        if registration.kind == "encoder":
            assert out.dim() in (2, 4) and out.shape[0] == 2  # a code vector or latent grid
        else:
            assert out.shape == images.shape
        loss = out.square().mean()
        if isinstance(model, Autoencoder):  # the rate term, as the trainer adds it
            cost = model.code_cost(model.encode(images), shape[-2] * shape[-1])
            loss = loss + (cost.loss if cost is not None else 0)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"{name}.{pname} got no gradient"
    clone = build_tiny(name)
    clone.load_state_dict(model.state_dict())
    for (key, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("blocks, layers, hidden, expected", [
    (4, 2, 64, 42_497), (8, 2, 128, 283_649), (8, 4, 128, 547_841), (16, 1, 128, 285_697),
    (16, 2, 128, 549_889), (8, 2, 300, 1_490_401), (8, 2, 256, 1_091_585),
])
def test_decoder_parameter_counts_match_the_log(blocks, layers, hidden, expected) -> None:
    decoder = ImageManifoldDecoder(128, 1, hidden, blocks, layers, pos_embedding_freqs=(7,))
    assert count_parameters(decoder) == expected


def test_concat_residual_widths_and_count() -> None:
    decoder = ImageManifoldDecoder(128, 1, 64, 8, 2, concat_residual=[True, False] * 4,
                                   pos_embedding_freqs=(7,))
    assert count_parameters(decoder) == 3_502_785
    widths = [block.branch[1].in_features for block in decoder.blocks]
    assert widths == [64, 128, 128, 256, 256, 512, 512, 1024]


def test_dalle_manifold_autoencoder_matches_the_first_log() -> None:
    model = DalleManifoldAutoencoder(
        shape=(1, 32, 32), vocab_size=128, n_hid=64, n_blk_per_group=1, act_fn=nn.GELU,
        space_to_depth=True, decoder_n_blk=4, decoder_n_layer=2, decoder_n_hid=64)
    assert count_parameters(model.encoder) == 1_725_264
    assert count_parameters(model.decoder) == 42_497
    images = torch.rand(2, 1, 32, 32)
    assert model(images).shape == images.shape


def test_simple_cnn_encoder_and_resnet_encoder_sizes() -> None:
    encoder = EncoderConv2d((3, 32, 32), 102, channels=(16, 24, 32))
    assert encoder.linear.in_features == 21_632
    assert count_parameters(encoder) == 2_217_438
    decoder = ImageManifoldDecoder(102, 3, 256, 2, 2)
    assert count_parameters(decoder) == 293_891
    resnet = ResNetEncoder((3, 32, 32), 102)
    assert count_parameters(resnet) == 11_741_838
    assert count_parameters(resnet, trainable_only=True) == 11_228_838


def test_decoder_split_first_layer_equals_concatenated_input() -> None:
    torch.manual_seed(0)
    decoder = ImageManifoldDecoder(5, 3, 16, 2, 1, default_shape=(6, 7)).eval()
    code = torch.randn(2, 5)
    with torch.no_grad():
        fast = decoder(code)
        from inrlab.models.posenc import pixel_grid
        embedding = decoder.encoding(pixel_grid((6, 7)))  # (N, P)
        rows = torch.cat([code[:, None, :].expand(-1, 42, -1),
                          embedding.expand(2, -1, -1)], dim=-1)  # (B, N, c+P)
        x = decoder.act_in(decoder.linear_in(rows)).reshape(84, -1)
        slow = decoder.act_out(decoder.linear_out(decoder.blocks(x))).view(2, 42, 3)
    assert torch.allclose(fast, slow.transpose(1, 2).reshape(2, 3, 6, 7), atol=1e-6)


def test_large_render_goes_in_chunks_and_matches_unchunked() -> None:
    torch.manual_seed(0)
    decoder = ImageManifoldDecoder(8, 3, 32, 1, 1).eval()
    code = torch.randn(1, 8)
    with torch.no_grad():
        big = decoder(code, (1024, 1024))
        small = decoder(code, (64, 64))
    assert big.shape == (1, 3, 1024, 1024) and small.shape == (1, 3, 64, 64)
    # corners are the same points of the [-1, 1] square at every resolution
    assert torch.allclose(big[..., 0, 0], small[..., 0, 0], atol=1e-5)
    assert torch.allclose(big[..., -1, -1], small[..., -1, -1], atol=1e-5)
    assert isinstance(decoder, ImplicitDecoder)


def test_rendering_folds_batch_norm_into_the_linear_and_gives_the_same_images() -> None:
    torch.manual_seed(0)
    decoder = ImageManifoldDecoder(8, 3, 16, num_blocks=2, num_layers_per_block=2,
                                   concat_residual=[False, True], default_shape=(12, 12))
    decoder(torch.randn(4, 8)).sum().backward()  # training mode: running statistics move
    decoder.eval()
    code = torch.randn(2, 8)
    layered = decoder(code)  # with gradients: BatchNorm runs as its own layer
    with torch.no_grad():
        folded = decoder(code)
    torch.testing.assert_close(folded, layered.detach(), atol=1e-5, rtol=1e-5)


def test_every_transformer_entry_of_the_log_trains_a_step() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 1, 28, 28)
    for patch in (4, 8):
        for stride in (2, 4, 8):
            if stride > patch:
                continue
            for layers in (2, 16):
                for heads, hidden in ((4, 64), (8, 256)):
                    model = TransformerAutoencoder((1, 28, 28), 78, patch, stride, layers,
                                                   hidden, heads)
                    loss = (model(images) - images).abs().mean()
                    loss.backward()
                    assert torch.isfinite(loss)


def test_transformer_attends_within_each_image_only() -> None:
    torch.manual_seed(0)
    model = TransformerAutoencoder((1, 12, 12), 6, 4, 4, 1, 8, 2).eval()
    a, b = torch.rand(1, 1, 12, 12), torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        alone = model.encode(a)
        batched = model.encode(torch.cat([a, b]))[:1]
    assert torch.allclose(alone, batched, atol=1e-5)


@pytest.mark.parametrize("build, message", [
    (lambda: ImageManifoldDecoder(8, num_blocks=8, concat_residual=[True] * 3),
     "concat_residual must be a bool or a list of 8 bools"),
    (lambda: ImageManifoldDecoder(0), "num_input_channels must be a positive integer"),
    (lambda: EncoderConv2d((3, 4, 4), 10, channels=(8, 8), kernel_size=3),
     "shrinks the 4x4 image to nothing"),
    (lambda: TransformerAutoencoder((1, 28, 28), 10, num_hidden=30, num_heads=4),
     "must be divisible by num_heads"),
])
def test_impossible_arguments_name_the_argument(build, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        build()


def test_batch_norm_per_image_groups_match_the_seed_semantics() -> None:
    torch.manual_seed(0)
    whole = ImageManifoldDecoder(8, 3, num_hidden=16, num_blocks=2, default_shape=(4, 4),
                                 batch_norm_images=None)
    grouped = ImageManifoldDecoder(8, 3, num_hidden=16, num_blocks=2, default_shape=(4, 4))
    grouped.load_state_dict(whole.state_dict())
    codes = torch.randn(3, 8)
    one_by_one = torch.cat([whole(codes[i:i + 1]) for i in range(3)])  # the seed's loop
    torch.testing.assert_close(grouped(codes), one_by_one)
    assert not torch.allclose(whole(codes), one_by_one)  # whole-batch statistics differ
    assert count_parameters(grouped) == count_parameters(whole)
    with pytest.raises(ValueError, match="batch_norm_images"):
        ImageManifoldDecoder(8, 3, batch_norm_images=0)


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("chunk_bytes", [1, 2**30])  # one group at a time, the whole batch
def test_groups_in_chunks_match_each_group_run_alone(group, chunk_bytes, monkeypatch) -> None:
    """Per-group statistics computed side by side (one fused BatchNorm over the groups of a
    chunk) give each group's outputs, gradients and the running statistics of the groups
    run one after another -- also for per-image pixel subsets (train_pixels)."""
    import copy

    from inrlab.models.decoders import manifold

    monkeypatch.setattr(manifold, "CPU_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    decoder = ImageManifoldDecoder(6, 3, num_hidden=16, num_blocks=2, default_shape=(4, 4),
                                   concat_residual=[True, False], batch_norm_images=group)
    alone = copy.deepcopy(decoder)
    alone.batch_norm_images = None
    codes = torch.randn(5, 6, requires_grad=True)
    coords = torch.rand(5, 7, 2) * 2 - 1  # (B, N, 2): each image its own pixels
    output = decoder.train().query(codes, coords)  # (5, 7, 3)
    expected = torch.cat([alone.train().query(codes[i:i + group], coords[i:i + group])
                          for i in range(0, 5, group)])
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    gradient, = torch.autograd.grad(output.square().sum(), codes)
    expected_gradient, = torch.autograd.grad(expected.square().sum(), codes)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-6)
    for ours, theirs in zip(decoder.modules(), alone.modules()):
        if isinstance(ours, torch.nn.BatchNorm1d):
            torch.testing.assert_close(ours.running_mean, theirs.running_mean)
            torch.testing.assert_close(ours.running_var, theirs.running_var)
            assert ours.num_batches_tracked == theirs.num_batches_tracked


def test_quantised_codes_are_stored_in_code_bits_and_train_with_noise() -> None:
    from inrlab.models import EncoderConv2d, EncoderDecoder, ImageManifoldDecoder

    model = EncoderDecoder(EncoderConv2d((3, 8, 8), 6, channels=(4,)),
                           ImageManifoldDecoder(6, 3, num_hidden=8, num_blocks=1,
                                                default_shape=(8, 8)),
                           code_bits=4, code_limit=1.5)
    images = torch.rand(5, 3, 8, 8)
    raw = model.encoder(images)
    model.eval()
    stored = model.encode(images)
    levels = (stored + 1.5) / model.bottleneck.quantizer.step  # integers 0..15
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.min() >= 0 and levels.max() <= 15
    assert (stored - raw.clamp(-1.5, 1.5)).abs().max() <= model.bottleneck.quantizer.step / 2 + 1e-6
    assert model.bottleneck.quantizer.code_bytes(102) == 51
    assert torch.equal(model(images), model.decode(stored, (8, 8)))  # renders see the code
    model.train()
    noisy = model.encode(images)
    assert not torch.equal(noisy, stored)
    assert (noisy - raw.clamp(-1.5, 1.5)).abs().max() <= model.bottleneck.quantizer.step / 2 + 1e-6
    model(images).sum().backward()
    assert model.encoder.linear.weight.grad.abs().sum() > 0  # gradients reach the encoder
    with pytest.raises(ValueError, match="code_bits must be at most 16"):
        EncoderDecoder(model.encoder, model.decoder, code_bits=32)


def test_the_manifold_decoder_takes_batchnorm_statistics_per_image_as_the_seed_did() -> None:
    """By default each image's BatchNorm statistics are its own pixels' (the seed's loop ran
    the decoder image by image): the same outputs and running statistics as that loop."""
    import copy

    from inrlab.models.posenc import pixel_grid

    torch.manual_seed(0)
    decoder = ImageManifoldDecoder(6, 3, num_hidden=16, num_blocks=2, default_shape=(8, 8))
    seed = copy.deepcopy(decoder)
    codes = torch.randn(5, 6)
    output = decoder.train()(codes)  # (5, 3, 8, 8)
    embedding = seed.encoding(pixel_grid((8, 8)))  # (64, P)
    images = []
    for code in codes:  # the seed's loop: [code, embedding] per pixel, one image at a time
        x = seed.act_in(seed.linear_in(torch.cat([code.expand(64, -1), embedding], dim=1)))
        x = seed.act_out(seed.linear_out(seed.blocks.train()(x)))  # (64, 3)
        images.append(x.t().reshape(3, 8, 8))
    torch.testing.assert_close(output, torch.stack(images), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(decoder.modules(), seed.modules()):
        if isinstance(ours, torch.nn.BatchNorm1d):
            torch.testing.assert_close(ours.running_var, theirs.running_var)
    whole = copy.deepcopy(seed)
    whole.batch_norm_images = None  # statistics over the whole batch: another function
    assert not torch.allclose(whole.train()(codes), output, atol=1e-4)


@pytest.mark.parametrize("geometry", ["corners", "areas"])
def test_jittered_pixel_queries_stay_inside_their_pixels(geometry, monkeypatch) -> None:
    """train_jitter's queries: each pixel's position moved by at most ``jitter`` pixel
    spacings along each axis, in either direction, in the decoder's own pixel geometry."""
    from inrlab.models import LocalLatentDecoder

    decoder = LocalLatentDecoder(latent_channels=3, grid=None, num_output_channels=3,
                                 num_hidden=8, num_layers=2, pixel_geometry=geometry)
    queried = []
    monkeypatch.setattr(decoder, "query", lambda code, coords, **options: (
        queried.append(coords) or coords.new_zeros(*coords.shape[:-1], 3)))
    code = torch.randn(4, 3, 4, 4)
    index = torch.stack([torch.randperm(48)[:20] for _ in range(4)])  # (B, n) of a 6x8 render
    decoder.query_pixels(code, (6, 8), index)
    decoder.query_pixels(code, (6, 8), index, jitter=0.5)
    centres, moved = queried
    grid = decoder._pixel_grid(code, 6, 8).view(6, 8, 2)
    torch.testing.assert_close(centres, grid.view(-1, 2)[index])  # jitter 0: the centres
    spacing = torch.stack([grid[0, 1, 0] - grid[0, 0, 0], grid[1, 0, 1] - grid[0, 0, 1]])
    offset = (moved - centres) / spacing  # in pixel spacings, (B, n, 2)
    assert offset.abs().max() <= 0.5 + 1e-5
    assert offset.min() < -0.25 and offset.max() > 0.25  # spread over the pixel's area
