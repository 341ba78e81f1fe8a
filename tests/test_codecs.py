"""The learned codecs (factorized prior, scale hyperprior): their bytes decode to what they
encoded, cost about what their entropy model prices, and their rate weight steers to a byte
target; trained by ``inrlab run`` like any model."""

from __future__ import annotations

import json

import pytest
import torch

from inrlab.models import FactorizedPrior, ScaleHyperprior
from inrlab.models.bottleneck.learned import lower_bound


@pytest.mark.parametrize("cls", [FactorizedPrior, ScaleHyperprior])
@pytest.mark.parametrize("size", [32, 24])
def test_a_codec_decodes_from_its_bytes_what_it_encoded(cls, size: int) -> None:
    torch.manual_seed(0)
    model = cls(hidden=8, latent=12, rate_weight=0.01)
    tiles = torch.rand(3, 3, size, size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):  # a few steps, so the densities are not at their start
        codes = model.encode(tiles)
        loss = (model.decode(codes, (size, size)) - tiles).square().mean()
        loss = loss + model.code_cost(codes, size * size).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        codes = model.encode(tiles)  # (3, 12, size/8, size/8), integers
        assert torch.equal(codes, codes.round()) and codes.shape[-1] == size // 8
        blobs = model.compress(codes)
        assert torch.equal(model.decompress(blobs, codes.shape[1:]), codes)
        estimated = model.bits(codes, noisy=False) / 8
        assert model.decode(codes, (size, size)).shape == tiles.shape
    # the coder pays about the model's price: a little over it for the table's rounding, less
    # for rare values (a table gives every symbol at least 2**-16; the model prices them lower)
    sizes = torch.tensor([len(blob) for blob in blobs], dtype=torch.float)
    assert ((sizes <= 1.05 * estimated + 4) & (sizes >= 0.7 * estimated)).all(), (sizes,
                                                                                 estimated)
    assert model.entropy_coded and model.input_shape == (3, None, None)


def test_a_byte_target_steers_the_rate_weight_and_is_kept_in_the_state() -> None:
    torch.manual_seed(0)
    model = FactorizedPrior(hidden=8, latent=12, target_bytes=1)  # far under the price
    start = model.rate_weight
    tiles = torch.rand(4, 3, 32, 32)
    model.code_cost(model.encode(tiles), 32 * 32)
    assert model.rate_weight > start  # too many bytes: the rate weighs more
    raised = model.rate_weight
    model.eval()
    model.code_cost(model.encode(tiles), 32 * 32)
    assert model.rate_weight == raised  # validation leaves it alone
    clone = FactorizedPrior(hidden=8, latent=12, target_bytes=1)
    clone.load_state_dict(model.state_dict())
    assert clone.rate_weight == pytest.approx(raised)  # a resumed run goes on from it
    generous = FactorizedPrior(hidden=8, latent=12, target_bytes=10_000).train()
    generous.code_cost(generous.encode(tiles), 32 * 32)
    assert generous.rate_weight < start


@pytest.mark.parametrize("arguments", [{}, {"rate_weight": 0.1, "target_bytes": 9},
                                       {"target_bytes": 0}])
def test_a_codec_needs_one_positive_rate_setting(arguments) -> None:
    with pytest.raises(ValueError):
        FactorizedPrior(**arguments)


def test_a_bounded_scale_still_learns_to_grow() -> None:
    """Below its bound a scale (or likelihood) is priced at the bound, and its gradient
    still flows where descent raises it, not where descent would push it lower."""
    x = torch.tensor([0.05, 0.5], requires_grad=True)
    bounded = lower_bound(x, 0.11)
    assert torch.equal(bounded.detach(), torch.tensor([0.11, 0.5]))
    (-bounded).sum().backward()  # descent raises both
    assert torch.equal(x.grad, torch.tensor([-1.0, -1.0]))
    x.grad = None
    lower_bound(x, 0.11).sum().backward()  # descent lowers both
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0]))


def test_a_codec_trains_through_inrlab_run_and_evaluates_at_its_bytes(write, cli) -> None:
    path = write("codec.yml", """
        experiment_name: anchors/tiny
        trainer: TrainAutoencoder
        train_set: kali_patch_dataset((3, 16, 16), num_images=64)
        validation_set: kali_patch_dataset((3, 16, 16), num_images=8, validation=True)
        batch_size: 16
        learnrate: 0.003
        optimizer: Adam
        loss_function: l2
        precision: fp32
        max_inputs: 192
        model:
          name: ScaleHyperprior
          args: {hidden: 8, latent: 8, target_bytes: 12}
    """)
    code, out, err = cli("run", path, "--no-tensorboard")
    assert code == 0, err
    runs = path.parent / "runs" / "anchors" / "tiny"
    records = [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    assert train and "code_bytes" in train[-1] and "rate_weight" in train[-1]
    model = write("model.yml", """
        $extends: codec.yml
        experiment_name: tiny-model
        model:
          name: EncoderDecoder
          args:
            encoder: {name: EncoderConvGrid, args: {shape: [3, 16, 16], latent_channels: 2,
                                                    grid: [4, 4], channels: [4, 4]}}
            decoder: {name: LocalLatentDecoder, args: {num_hidden: 8, num_layers: 2}}
    """)
    assert cli("run", model, "--no-tensorboard")[0] == 0
    code, out, err = cli("evaluate", "anchors/tiny", "tiny-model", "--bytes", "--json",
                         "--no-save")
    assert code == 0, err
    rows = json.loads(out)
    own = rows[0]
    assert own["target"] == "anchors/tiny" and own["method"] == "code"
    assert own["detail"] == "entropy-coded integer code"
    assert own["bytes"] > 0 and own["macs_per_pixel"] > 0
    # the learned codec is a row of the model's table too, at the bytes it was trained for
    (anchor,) = [r for r in rows if r["target"] == "tiny-model"
                 and r["method"] == "scale hyperprior"]
    assert anchor["bytes"] == own["bytes"] and anchor["psnr"] == pytest.approx(own["psnr"])
    assert not [r for r in rows if r["target"] == "anchors/tiny"
                and r["method"] == "scale hyperprior"]
    code, out, err = cli("evaluate", "anchors/tiny", "--scales", "2", "--no-save")
    assert code == 2 and "decodes at its input's size only" in err  # no render at 2x
