"""The field's anchors through Pillow: JPEG, WebP and AVIF at a byte budget, and bicubic,
Lanczos and box resampling of 8-bit images.

Each codec codes one image after another (a file per image, as it would be stored), and
what is decoded from the file is what is scored. A file's size is counted without its
container (``payload_bytes``), so that the codecs' fixed headers, the same for every
image, do not decide a comparison at ~100 bytes per 32x32 tile.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from inrlab.evaluate.rows import Images, count_images, score, timed
from inrlab.storage.grids import to_8_bits

FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
HEADERS = {"jpeg": "headers and tables before the scan and the end marker",
           "webp": "RIFF and chunk headers, 20 bytes",
           "avif": "ISOBMFF ftyp/meta boxes and the mdat header, about 275 bytes"}
# libavif 0 (slowest, smallest) .. 10. On the 163 RLTiles validation tiles at quality 0:
# speed 0 22.06 dB at 109.5 bytes, 12.6 s a pass; 2: 21.87 dB, 6.0 s; 6 (Pillow's default):
# 20.96 dB, 1.3 s. The anchor is the codec at its best: speed 0.
DEFAULT_AVIF_SPEED = 0
SEARCH_AVIF_SPEED = 6  # the quality search of a slower speed starts here
RESAMPLING = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "box": Image.BOX}


def payload_bytes(data: bytes, fmt: str) -> int:
    """The bytes of a Pillow ``fmt`` file that code the image, its container left out.
    JPEG: the entropy-coded scan (headers and tables, the same for every image of one
    quality, and the end marker excluded); WebP: the file less its RIFF and chunk headers
    (20 bytes); AVIF: the ``mdat`` box's content, the AV1 data."""
    if fmt == "JPEG":
        scan = data.rfind(b"\xff\xda")
        header = int.from_bytes(data[scan + 2:scan + 4], "big")
        return len(data) - (scan + 2 + header) - 2
    if fmt == "WEBP":
        return len(data) - 20
    position = 0
    while position + 8 <= len(data):  # ISOBMFF top-level boxes: 32-bit size, 4-byte type
        size = int.from_bytes(data[position:position + 4], "big")
        if data[position + 4:position + 8] == b"mdat":
            return size - 8
        if size < 8:
            break
        position += size
    raise ValueError("an AVIF file without an mdat box")


def _pictures(batch: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) floats in [0, 1] -> 8-bit Pillow images (L or RGB)."""
    pixels = to_8_bits(batch).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]


def _tensor(pictures: list[Image.Image], channels: int) -> torch.Tensor:
    arrays = [np.asarray(p.convert("L" if channels == 1 else "RGB")) for p in pictures]
    stacked = torch.from_numpy(np.stack(arrays)).float() / 255
    return stacked.unsqueeze(1) if channels == 1 else stacked.permute(0, 3, 1, 2)


@dataclass
class CodedImages:
    """A codec's round trip of an image set at one quality."""

    quality: int
    decoded: Images
    payload: float  # mean payload bytes per image
    file_bytes: float  # mean file bytes per image
    encode_s: float  # per image
    decode_s: float


def round_trip(images: Images, codec: str, quality: int,
               avif_speed: int = DEFAULT_AVIF_SPEED) -> CodedImages:
    """Each image through Pillow's ``codec`` ("jpeg", "webp" or "avif") at ``quality``."""
    fmt = FORMATS[codec]
    options = {"JPEG": {"subsampling": 2, "optimize": True}, "WEBP": {"method": 6},
               "AVIF": {"speed": avif_speed}}[fmt]
    decoded, files, payloads, encode_s, decode_s = [], [], [], 0.0, 0.0
    for batch in images:
        back = []
        for picture in _pictures(batch):
            buffer = io.BytesIO()
            _, seconds = timed(lambda: picture.save(buffer, fmt, quality=quality, **options))
            encode_s += seconds
            data = buffer.getvalue()

            def decode() -> Image.Image:
                with Image.open(io.BytesIO(data)) as opened:
                    opened.load()
                    return opened.copy()

            picture_back, seconds = timed(decode)
            decode_s += seconds
            back.append(picture_back)
            files.append(len(data))
            payloads.append(payload_bytes(data, fmt))
        decoded.append(_tensor(back, batch.shape[1]))
    count = count_images(images)
    return CodedImages(quality, decoded, float(np.mean(payloads)), float(np.mean(files)),
                       encode_s / count, decode_s / count)


@dataclass
class Budgeted:
    """The lowest quality whose mean payload reaches the budget, and every quality tried
    on the way (payload, PSNR), the points of the codec's rate-distortion curve."""

    coded: CodedImages
    reached: bool  # False: even quality 100 stays under the budget
    curve: list[tuple[float, float]] = field(default_factory=list)


def at_budget(images: Images, codec: str, budget: float,
              avif_speed: int = DEFAULT_AVIF_SPEED) -> Budgeted:
    """The codec at the lowest quality (0-100) whose mean payload is at least ``budget``
    bytes per image: it gets the same or more bytes than the method it is compared with.
    Payload grows with quality, so the quality is bisected (about 7 round trips). A slow
    AVIF speed is bisected at the fast ``SEARCH_AVIF_SPEED`` first, then stepped from that
    quality at its own speed (whose payloads are within a few percent): 2-3 slow round
    trips instead of 7."""
    tried: dict[tuple[int, int], CodedImages] = {}

    def trip(quality: int, speed: int = avif_speed) -> CodedImages:
        if (quality, speed) not in tried:
            tried[(quality, speed)] = round_trip(images, codec, quality, speed)
        return tried[(quality, speed)]

    def enough(quality: int, speed: int = avif_speed) -> bool:
        return trip(quality, speed).payload >= budget

    search = SEARCH_AVIF_SPEED if codec == "avif" and avif_speed < SEARCH_AVIF_SPEED \
        else avif_speed
    low, high = 0, 100
    while low < high:
        middle = (low + high) // 2
        if enough(middle, search):
            high = middle
        else:
            low = middle + 1
    if search != avif_speed:  # step to the lowest quality that is enough at the real speed
        while low < 100 and not enough(low):
            low += 1
        while low > 0 and enough(low - 1):
            low -= 1
    coded = trip(low)
    curve = sorted((c.payload, score(c.decoded, images).psnr)
                   for (_, speed), c in tried.items() if speed == avif_speed)
    return Budgeted(coded, coded.payload >= budget, curve)


def resample(images: Images, sizes: list[tuple[int, int]], method: str) -> Images:
    """Each batch's images, as 8-bit pictures, resized to that batch's (H, W) in ``sizes``
    with Pillow's ``method`` ("bicubic", "lanczos" or "box"); 8-bit results as floats."""
    out = []
    for batch, (height, width) in zip(images, sizes, strict=True):
        pictures = [p.resize((width, height), RESAMPLING[method]) for p in _pictures(batch)]
        out.append(_tensor(pictures, batch.shape[1]))
    return out
