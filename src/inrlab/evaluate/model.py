"""A trained model's rows: its stored code at the bytes it takes, and its renders at
other scales, with timings, the decoder's MACs per pixel and the parameter count."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from inrlab.errors import InrlabError
from inrlab.evaluate.rows import Images, Row, make_row, per_image_ms, timed
from inrlab.models.contract import Autoencoder
from inrlab.models.refine import refine_codes


@dataclass
class Refinement:
    """Test-time refinement of each image's code (``refine_codes``): Adam ``steps`` at
    ``learnrate``; an entropy-coded code with ``rate_weight`` (None: the model's)."""

    steps: int = 0
    learnrate: float = 0.01
    rate_weight: float | None = None

    def describe(self) -> str:
        weight = "" if self.rate_weight is None else f", rate weight {self.rate_weight:g}"
        return f"{self.steps} Adam steps at {self.learnrate:g}{weight}"


@torch.no_grad()
def decoder_macs_per_pixel(model: Autoencoder, codes: torch.Tensor,
                           size: tuple[int, int]) -> float:
    """Multiply-accumulates the decoder spends per pixel rendering one code at ``size``,
    as PyTorch's FLOP counter counts them (matrix products and convolutions; the
    elementwise work and sampling are not counted)."""
    with FlopCounterMode(display=False) as counter:
        model.decode(codes[:1], size)
    return counter.get_total_flops() / 2 / (size[0] * size[1])


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def quantise_uniform(values: torch.Tensor, reference: torch.Tensor, bits: int) -> torch.Tensor:
    """``values`` (n, d) rounded to ``bits`` bits per value, uniform over each column's
    range in ``reference`` (n', d), values outside it clamped."""
    low, high = reference.min(0).values, reference.max(0).values
    step = (high - low).clamp_min(1e-12) / (2**bits - 1)
    return ((values.clamp(low, high) - low) / step).round() * step + low


@dataclass
class StoredCode:
    """One way of storing a batch of codes: what the decoder gets back, and the bytes."""

    detail: str
    codes: torch.Tensor
    bytes: float
    encode_s: float  # on top of making the codes: compression
    decode_s: float  # on top of decoding: decompression


def stored_codes(model: Autoencoder, codes: torch.Tensor,
                 reference: torch.Tensor | None) -> list[StoredCode]:
    """The code as it is stored, first the form the anchors are matched to: an entropy-coded
    code through its own coder (its bytes, decoded back and checked equal); a quantised
    code packed at its bits; a float code at 8 bits per value (uniform over each value's
    range in ``reference``, the training images' codes) and in fp16."""
    count = codes.shape[0]
    if model.entropy_coded:
        blobs, compress_s = timed(lambda: model.compress(codes))
        back, decompress_s = timed(lambda: model.decompress(blobs, codes.shape[1:]))
        if not torch.equal(back.to(codes.device), codes):
            raise AssertionError("the decompressed codes differ from the stored ones")
        size = sum(len(blob) for blob in blobs) / count
        bits = f"{model.code_bits}-bit " if model.code_bits else "integer "
        return [StoredCode(f"entropy-coded {bits}code", back.to(codes.device), size,
                           compress_s, decompress_s)]
    values = math.prod(codes.shape[1:])
    if model.code_bits is not None:
        return [StoredCode(f"stored {model.code_bits}-bit code", codes,
                           math.ceil(values * model.code_bits / 8), 0.0, 0.0)]
    flat = codes.flatten(1).float()
    eight = quantise_uniform(flat, flat if reference is None else reference.flatten(1).float(), 8)
    return [StoredCode("float code at 8 bits per value", eight.view_as(codes).to(codes.dtype),
                       values, 0.0, 0.0),
            StoredCode("float code in fp16", codes.half().to(codes.dtype), 2 * values, 0.0, 0.0)]


def check_model(model: Autoencoder, name: str) -> Autoencoder:
    if not model.has_code:
        raise InrlabError(f"{name}: {model.class_name} is no inrlab Autoencoder (no encode "
                          "and decode), so its code cannot be evaluated")
    return model


def encodes(model: Autoencoder, images: torch.Tensor, name: str, key: str = "--images",
            render: bool = False) -> torch.Tensor:
    """``model.encode(images)`` (``render``: ``model.render_code``), a size the encoder
    cannot take turned into bad input naming ``key``."""
    try:
        return model.render_code(images) if render else model.encode(images)
    except (RuntimeError, ValueError) as e:
        raise InrlabError(f"{name} cannot encode images of {images.shape[-1]}x"
                          f"{images.shape[-2]} pixels (it takes {_shape_text(model)}): "
                          f"{str(e).splitlines()[0]}", key=key) from None


def _shape_text(model: Autoencoder) -> str:
    channels, height, width = model.input_shape
    return "any size" if height is None else f"{width}x{height}"


def refine(model: Autoencoder, images: torch.Tensor, refinement: Refinement,
           name: str) -> torch.Tensor:
    if not model.refinable:
        raise InrlabError(f"{name}: {model.class_name} has no separate encoder and "
                          "bottleneck, so its codes cannot be refined", key="--refine-steps")
    return refine_codes(model, images, refinement.steps, refinement.learnrate,
                        refinement.rate_weight)


@torch.no_grad()
def code_rows(model: Autoencoder, name: str, images: Images, train_images: torch.Tensor | None,
              refinement: Refinement) -> tuple[list[Row], float]:
    """Rows ``code`` (and with refinement ``refined code``) of every stored form of the
    model's code of ``images``, scored as decoded from what is stored; and the bytes per
    image the anchors are matched to (the first form's)."""
    reference = None
    if train_images is not None and _takes(model, train_images):
        reference = torch.cat([model.encode(part) for part in train_images.split(256)])
    warm_up(model, images[0])
    made = []  # (method, codes per batch, encode seconds)
    codes, seconds = [], 0.0
    for batch in images:
        batch_codes, spent = timed(lambda: encodes(model, batch, name))
        codes.append(batch_codes)
        seconds += spent
    made.append(("code", codes, seconds))
    if refinement.steps and not model.refinable:
        print(f"note: {name}: {model.class_name} has no separate encoder and bottleneck, "
              "so its codes are not refined", file=sys.stderr)
    elif refinement.steps:
        refined, seconds = [], 0.0
        for batch in images:
            with torch.enable_grad():
                batch_codes, spent = timed(lambda: refine(model, batch, refinement, name))
            refined.append(batch_codes)
            seconds += spent
        made.append(("refined code", refined, seconds + made[0][2]))
    rows, budget = [], None
    macs = decoder_macs_per_pixel(model, codes[0], tuple(images[0].shape[-2:]))
    for method, batches, encode_s in made:
        forms = [stored_codes(model, batch_codes, reference) for batch_codes in batches]
        for index, form in enumerate(forms[0]):
            stored = [per_batch[index] for per_batch in forms]
            decoded, decode_s = [], 0.0
            for store, batch in zip(stored, images):
                output, spent = timed(lambda: model.decode(store.codes, batch.shape[-2:]))
                decoded.append(output)
                decode_s += spent + store.decode_s
            count = sum(batch.shape[0] for batch in images)
            size = sum(s.bytes * b.shape[0] for s, b in zip(stored, images)) / count
            detail = form.detail + (f" after {refinement.describe()}"
                                    if method != "code" else "")
            rows.append(make_row(
                name, method, detail, decoded, images, bytes=size,
                encode_ms=per_image_ms(encode_s + sum(s.encode_s for s in stored), count),
                decode_ms=per_image_ms(decode_s, count), macs_per_pixel=macs,
                parameters=parameters(model)))
            if budget is None:
                budget = size
    return rows, budget


@torch.no_grad()
def warm_up(model: Autoencoder, images: torch.Tensor) -> None:
    """One image through encoder and decoder before anything is timed (first calls pay for
    lazy initialisation and allocation); a model that cannot take them says so later."""
    try:
        model.decode(model.render_code(images[:1]), images.shape[-2:])
    except (RuntimeError, ValueError):
        pass


def _takes(model: Autoencoder, images: torch.Tensor) -> bool:
    channels, height, width = model.input_shape
    return height is None or tuple(images.shape[-2:]) == (height, width)


@torch.no_grad()
def scale_rows(model: Autoencoder, name: str, inputs: Images, truths: Images, scale: float,
               refinement: Refinement) -> tuple[list[Row], Images, Images]:
    """Rows ``render`` (and ``refined render``) of the model's codes of ``inputs`` rendered
    at the truths' sizes; those renders; and the model's own decode of ``inputs`` at their
    size (for the upscales of it)."""
    warm_up(model, inputs[0])
    renders, own, encode_s, decode_s = [], [], 0.0, 0.0
    for low, truth in zip(inputs, truths):
        codes, spent = timed(lambda: encodes(model, low, name, "--scales", render=True))
        encode_s += spent
        rendered, spent = timed(lambda: model.decode(codes, truth.shape[-2:]))
        decode_s += spent
        renders.append(rendered)
        own.append(model.decode(codes, low.shape[-2:]))
    count = sum(batch.shape[0] for batch in inputs)
    size = tuple(truths[0].shape[-2:])
    first = encodes(model, inputs[0][:1], name, "--scales", render=True)
    common = dict(macs_per_pixel=decoder_macs_per_pixel(model, first, size),
                  parameters=parameters(model), scale=scale)
    rows = [make_row(name, "render", f"code of the {scale:g}x smaller input rendered at the "
                     "truth's size", renders, truths, encode_ms=per_image_ms(encode_s, count),
                     decode_ms=per_image_ms(decode_s, count), **common)]
    if refinement.steps and model.refinable:
        refined, spent_all = [], 0.0
        for low, truth in zip(inputs, truths):
            with torch.enable_grad():
                codes, spent = timed(lambda: refine(model, low, refinement, name))
            spent_all += spent
            refined.append(model.decode(codes, truth.shape[-2:]))
        rows.append(make_row(name, "refined render", f"code refined for "
                             f"{refinement.describe()} on the input, rendered at the truth's "
                             "size", refined, truths,
                             encode_ms=per_image_ms(spent_all, count), **common))
    return rows, renders, own

