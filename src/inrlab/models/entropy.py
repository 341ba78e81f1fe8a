"""Entropy-coded codes: a code's size in bytes follows its content.

A quantised code (``CodeQuantizer``) stores every value in a fixed number of bits. When the
levels are far from equally likely, an arithmetic coder stores them in fewer: about
``-log2 p(level)`` bits each. ``LevelPrior`` keeps that ``p`` -- a running histogram of the
levels each code channel takes in training -- and turns it into a differentiable size, so a
model can be trained to trade reconstruction error against bytes (the rate term of learned
image compression). ``encode_levels``/``decode_levels`` are the coder itself: a classic
integer arithmetic coder (32-bit interval, carries as pending bits), lossless and exact.
"""

from __future__ import annotations

import torch
from torch import nn

FREQUENCY_BITS = 16  # the coder's probability tables sum to at most 2**16
_BITS = 32
_FULL = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)


class LevelPrior(nn.Module):
    """Probability of each of ``levels`` quantisation levels, per code channel.

    The channel is dimension 1 of a code: a latent grid ``(B, C, H, W)`` has one histogram
    per latent channel, shared over the grid; a flat code ``(B, D)`` one per value. The
    histograms are running averages (``momentum`` per training batch) of the levels the
    encoder produces, updated by ``observe`` like BatchNorm's statistics, and saved with
    the model. Every level keeps a small probability, so any code can be stored.
    """

    def __init__(self, levels: int, momentum: float = 0.01, floor: float = 1e-4) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a level prior needs at least 2 levels, got {levels}")
        self.levels = int(levels)
        self.momentum = float(momentum)
        self.floor = float(floor)
        # (C, levels); empty until the first observed code tells the number of channels
        self.register_buffer("histogram", torch.zeros(0, self.levels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "histogram")
        if saved is not None and saved.shape != self.histogram.shape:
            self.histogram = torch.zeros_like(saved, device=self.histogram.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def observe(self, levels: torch.Tensor) -> None:
        """Update the histograms with the integer ``levels`` of a batch of codes."""
        channels = levels.shape[1]
        flat = levels.transpose(0, 1).reshape(channels, -1).long()  # (C, B * positions)
        counts = torch.zeros(channels, self.levels, device=levels.device)
        counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
        counts /= counts.sum(1, keepdim=True)
        if self.histogram.shape != counts.shape:
            self.histogram = counts
        else:
            self.histogram.lerp_(counts, self.momentum)

    def probabilities(self, channels: int) -> torch.Tensor:
        """(channels, levels), each row summing to 1, no level below ``floor``; equal
        probabilities before any code was observed."""
        if self.histogram.shape[0] == 0:
            return torch.full((channels, self.levels), 1 / self.levels,
                              device=self.histogram.device)
        if self.histogram.shape[0] != channels:
            raise ValueError(f"the level prior has {self.histogram.shape[0]} channels, the "
                             f"code {channels}")
        p = self.histogram.float() + self.floor
        return p / p.sum(1, keepdim=True)

    def bits(self, positions: torch.Tensor) -> torch.Tensor:
        """Bits per code, (B,), of codes given as level positions (B, C, ...) in
        [0, levels - 1]. Whole positions cost ``-log2 p`` of their level; positions between
        two levels (training's noisy codes) cost the linear interpolation of their
        neighbours', which gives the encoder a gradient towards cheaper levels."""
        batch, channels = positions.shape[:2]
        cost = -torch.log2(self.probabilities(channels)).to(positions.dtype)  # (C, L)
        flat = positions.reshape(batch, channels, -1)  # (B, C, S)
        low = flat.detach().floor().clamp(0, self.levels - 2)
        fraction = flat - low
        table = cost.unsqueeze(0).expand(batch, -1, -1)  # (B, C, L)
        below = table.gather(2, low.long())
        above = table.gather(2, low.long() + 1)
        return (below + fraction * (above - below)).flatten(1).sum(1)

    def frequency_tables(self, channels: int) -> list[list[int]]:
        """Per channel, the cumulative integer frequencies the arithmetic coder uses:
        ``levels + 1`` ascending integers from 0, every level at least 1 wide."""
        spare = (1 << FREQUENCY_BITS) - self.levels
        tables = []
        for row in self.probabilities(channels).cpu().tolist():
            total = sum(row)
            cumulative = [0]
            for p in row:
                cumulative.append(cumulative[-1] + 1 + int(p / total * spare))
            tables.append(cumulative)
        return tables

    def extra_repr(self) -> str:
        return f"levels={self.levels}, momentum={self.momentum}, floor={self.floor}"


def encode_levels(symbols: list[int], tables: list[list[int]]) -> bytes:
    """Arithmetic-code ``symbols``, symbol ``i`` with the cumulative frequencies
    ``tables[i]`` (as from ``LevelPrior.frequency_tables``). The count of symbols is not
    stored: the decoder is told it."""
    low, high, pending = 0, _FULL, 0
    out: list[int] = []

    def emit(bit: int) -> None:
        nonlocal pending
        out.append(bit)
        out.extend([1 - bit] * pending)
        pending = 0

    for symbol, cumulative in zip(symbols, tables):
        span, total = high - low + 1, cumulative[-1]
        high = low + span * cumulative[symbol + 1] // total - 1
        low = low + span * cumulative[symbol] // total
        while True:
            if high < _HALF:
                emit(0)
            elif low >= _HALF:
                emit(1)
                low, high = low - _HALF, high - _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                pending += 1
                low, high = low - _QUARTER, high - _QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
    # Two more bits pin a value inside [low, high]; the decoder reads missing bits as 0.
    pending += 1
    emit(0 if low < _QUARTER else 1)
    data = bytearray()
    for start in range(0, len(out), 8):
        byte = out[start:start + 8]
        data.append(int("".join(map(str, byte)).ljust(8, "0"), 2))
    return bytes(data).rstrip(b"\0")  # trailing zero bytes are implied


def decode_levels(data: bytes, tables: list[list[int]]) -> list[int]:
    """The symbols ``encode_levels`` stored in ``data``, one per table."""
    bits = [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]
    position = 0

    def next_bit() -> int:
        nonlocal position
        position += 1
        return bits[position - 1] if position <= len(bits) else 0

    value = 0
    for _ in range(_BITS):
        value = 2 * value + next_bit()
    low, high = 0, _FULL
    symbols = []
    for cumulative in tables:
        span, total = high - low + 1, cumulative[-1]
        target = ((value - low + 1) * total - 1) // span
        symbol = _bisect(cumulative, target)
        symbols.append(symbol)
        high = low + span * cumulative[symbol + 1] // total - 1
        low = low + span * cumulative[symbol] // total
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low, high, value = low - _HALF, high - _HALF, value - _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                low, high, value = low - _QUARTER, high - _QUARTER, value - _QUARTER
            else:
                break
            low, high, value = 2 * low, 2 * high + 1, 2 * value + next_bit()
    return symbols


def _bisect(cumulative: list[int], target: int) -> int:
    """The symbol s with cumulative[s] <= target < cumulative[s + 1]."""
    lo, hi = 0, len(cumulative) - 2
    while lo < hi:
        middle = (lo + hi + 1) // 2
        if cumulative[middle] <= target:
            lo = middle
        else:
            hi = middle - 1
    return lo
