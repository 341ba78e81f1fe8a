"""The level prior: how likely each quantisation level of a code channel is.

A quantised code (``CodeQuantizer``) stores every value in a fixed number of bits. When the
levels are far from equally likely, an arithmetic coder (``arithmetic.py``) stores them in
fewer: about ``-log2 p(level)`` bits each. ``LevelPrior`` keeps that ``p`` -- a running
histogram of the levels each code channel takes in training -- and turns it into a
differentiable size, so a model can be trained to trade reconstruction error against bytes
(the rate term of learned image compression), and into the coder's frequency tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FREQUENCY_BITS = 16  # the coder's probability tables sum to at most 2**16
CONTEXTS = ("none", "neighbours")


def cumulative_frequencies(p: torch.Tensor) -> list:
    """Probabilities (..., S) of S symbols -> the arithmetic coder's cumulative integer
    tables (..., S + 1): ascending from 0, every symbol at least 1 wide, totals at most
    ``2**FREQUENCY_BITS``."""
    spare = (1 << FREQUENCY_BITS) - p.shape[-1]
    p = p.double()
    widths = 1 + (p / p.sum(-1, keepdim=True) * spare).floor().long()
    return F.pad(widths.cumsum(-1), (1, 0)).tolist()


class LevelPrior(nn.Module):
    """Probability of each of ``levels`` quantisation levels, per code channel.

    The channel is dimension 1 of a code: a latent grid ``(B, C, H, W)`` has its own
    statistics per latent channel, shared over the grid; a flat code ``(B, D)`` per value.
    They are running averages (``momentum`` per training batch) of the levels the encoder
    produces, updated by ``observe`` like BatchNorm's statistics, and saved with the model.
    Every level keeps a small probability (``floor``), so any code can be stored.

    ``context="neighbours"``: a value's probability also depends on the levels already
    stored beside it -- its left and upper neighbour in the same channel (a grid's last two
    dimensions; the previous value of a 1-D code), each grouped into at most 16 buckets.
    Neighbouring latents of an image are alike, so this codes them in fewer bits (about
    16% fewer on the RLTiles codes); contexts seen rarely fall back on the channel's levels.
    """

    def __init__(self, levels: int, momentum: float = 0.01, floor: float = 1e-4,
                 context: str = "none") -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a level prior needs at least 2 levels, got {levels}")
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
        self.levels = int(levels)
        self.momentum = float(momentum)
        self.floor = float(floor)
        self.context = context
        self.buckets = min(self.levels, 16)  # neighbour levels grouped into buckets
        self.contexts = 1 if context == "none" else (self.buckets + 1) ** 2  # 0: no neighbour
        # (C, contexts, levels): per channel the share of each (context, level) seen;
        # empty until the first observed code tells the number of channels
        self.register_buffer("histogram", torch.zeros(0, self.contexts, self.levels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "histogram")
        if saved is not None and saved.dim() == 2:  # saved before contexts: (C, levels)
            saved = state_dict[prefix + "histogram"] = saved.unsqueeze(1)
        if saved is not None and saved.shape[1:] != self.histogram.shape[1:]:
            args[-1].append(f"{prefix}histogram: a level prior of {saved.shape[1]} contexts "
                            f"and {saved.shape[2]} levels cannot load into one of "
                            f"{self.contexts} and {self.levels} (another code_context or "
                            "code_bits)")
            return
        if saved is not None and saved.shape != self.histogram.shape:
            self.histogram = torch.zeros_like(saved, device=self.histogram.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _bucket(self, level: Any) -> Any:
        """A neighbour's level (int or integer tensor) as its bucket, 1..buckets; 0 is kept
        for "no neighbour"."""
        return level * self.buckets // self.levels + 1

    def _context(self, left: Any, up: Any) -> Any:
        """The context id of a value from its neighbours' buckets (ints or tensors)."""
        return left * (self.buckets + 1) + up

    def context_ids(self, levels: torch.Tensor) -> torch.Tensor:
        """(B, C, S): the context of every value of integer codes ``levels`` (B, C, ...),
        from its already-stored neighbours (``next_table`` is the same, one value at a time)."""
        batch, channels = levels.shape[:2]
        if self.contexts == 1:
            return levels.new_zeros(batch, channels, levels[0, 0].numel())
        width = levels.shape[-1] if levels.dim() > 2 else 1
        bucket = self._bucket(levels.reshape(batch, channels, -1, width))
        left = F.pad(bucket[..., :-1], (1, 0))  # 0 where there is no neighbour
        up = F.pad(bucket[..., :-1, :], (0, 0, 1, 0))
        return self._context(left, up).flatten(2)

    @torch.no_grad()
    def observe(self, levels: torch.Tensor) -> None:
        """Update the statistics with the integer ``levels`` of a batch of codes."""
        channels = levels.shape[1]
        symbols = (self.context_ids(levels) * self.levels
                   + levels.reshape(*levels.shape[:2], -1))  # (B, C, S)
        flat = symbols.transpose(0, 1).reshape(channels, -1).long()  # (C, B * S)
        counts = torch.zeros(channels, self.contexts * self.levels, device=levels.device)
        counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
        counts = (counts / counts.sum(1, keepdim=True)).view(channels, self.contexts,
                                                              self.levels)
        if self.histogram.shape[0] == 0:  # the first batch sets the number of channels
            self.histogram = counts
        elif self.histogram.shape != counts.shape:
            raise ValueError(f"the level prior has {self.histogram.shape[0]} channels, the "
                             f"code {channels}")
        else:
            self.histogram.lerp_(counts, self.momentum)

    def probabilities(self, channels: int) -> torch.Tensor:
        """(channels, contexts, levels), each row summing to 1; equal probabilities before
        any code was observed. A channel's own levels (``context="none"``) get at least
        about ``floor`` each; a context's levels are drawn towards them with the weight of
        ``floor`` (a share of the observations), so rare contexts follow the channel."""
        if self.histogram.shape[0] == 0:
            return torch.full((channels, self.contexts, self.levels), 1 / self.levels,
                              device=self.histogram.device)
        if self.histogram.shape[0] != channels:
            raise ValueError(f"the level prior has {self.histogram.shape[0]} channels, the "
                             f"code {channels}")
        joint = self.histogram.float()  # (C, K, L)
        marginal = joint.sum(1, keepdim=True) + self.floor
        marginal = marginal / marginal.sum(2, keepdim=True)  # (C, 1, L)
        if self.contexts == 1:
            return marginal
        # each context's levels, drawn towards the channel's as far as the context is rare
        return (joint + self.floor * marginal) / (joint.sum(2, keepdim=True) + self.floor)

    def bits(self, positions: torch.Tensor) -> torch.Tensor:
        """Bits per code, (B,), of codes given as level positions (B, C, ...) in
        [0, levels - 1]. Whole positions cost ``-log2 p`` of their level; positions between
        two levels (training's noisy codes) cost the linear interpolation of their
        neighbours', which gives the encoder a gradient towards cheaper levels (the
        contexts come from the rounded neighbours)."""
        batch, channels = positions.shape[:2]
        cost = -torch.log2(self.probabilities(channels)).to(positions.dtype)  # (C, K, L)
        flat = positions.reshape(batch, channels, -1)  # (B, C, S)
        low = flat.detach().floor().clamp(0, self.levels - 2)
        fraction = flat - low
        rounded = positions.detach().round().clamp(0, self.levels - 1).long()
        index = self.context_ids(rounded) * self.levels + low.long()  # (B, C, S)
        table = cost.flatten(1).unsqueeze(0).expand(batch, -1, -1)  # (B, C, K * L)
        below = table.gather(2, index)
        above = table.gather(2, index + 1)
        return (below + fraction * (above - below)).flatten(1).sum(1)

    def frequency_tables(self, channels: int) -> list[list[list[int]]]:
        """Per channel and context, the cumulative integer frequencies the arithmetic coder
        uses: ``levels + 1`` ascending integers from 0, every level at least 1 wide."""
        return cumulative_frequencies(self.probabilities(channels).cpu())  # (C, K, L + 1)

    def symbol_tables(self, levels: torch.Tensor) -> list[list[list[int]]]:
        """For each code of integer ``levels`` (B, C, ...), the coder's table of each of
        its values in flattened order."""
        tables = self.frequency_tables(levels.shape[1])
        contexts = self.context_ids(levels).tolist()  # (B, C, S)
        return [[tables[channel][k] for channel, row in enumerate(code) for k in row]
                for code in contexts]

    def next_table(self, code_shape: Sequence[int]) -> Callable[[list[int]], list[int]]:
        """For decoding one code of ``code_shape`` (C, ...): a function from the values
        decoded so far to the coder's table of the next one."""
        tables = self.frequency_tables(code_shape[0])
        per_channel = prod(code_shape[1:])
        width = code_shape[-1] if len(code_shape) > 1 else 1

        def table(decoded: list[int]) -> list[int]:
            index = len(decoded)
            channel, position = divmod(index, per_channel)
            if self.contexts == 1:
                return tables[channel][0]
            left = self._bucket(decoded[index - 1]) if position % width else 0
            up = self._bucket(decoded[index - width]) if position >= width else 0
            return tables[channel][self._context(left, up)]

        return table

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, momentum={self.momentum}, floor={self.floor}, "
                f"context={self.context!r}")
