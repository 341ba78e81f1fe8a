"""A SIREN decoder modulated by the code (FiLM, as in pi-GAN; or shift-only, as in functa)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.models.layers import activation as make_activation
from inrlab.models.layers import check_positive_int
from inrlab.models.registry import register_model

MODULATIONS = ("film", "shift")


@register_model("decoder", tiny=dict(num_input_channels=6, num_output_channels=3, num_hidden=8,
                                     num_layers=2, default_shape=(8, 8)))
class ModulatedSirenDecoder(ImplicitDecoder):
    """Sine layers ``h <- sin(w0 * (gamma * (W h + b) + beta))`` on the pixel position, with
    ``gamma, beta`` per layer and image computed from the code by one Linear (``"film"``), or
    ``gamma = 1`` and only ``beta`` (``"shift"``, functa's shift modulation).

    Weights use SIREN's initialisation (first layer U(-1/n, 1/n), later layers
    U(-sqrt(6/n)/w0, sqrt(6/n)/w0)); the modulation Linear starts at zero, so an untrained
    decoder is the plain SIREN for every code.
    """

    def __init__(
        self,
        num_input_channels: int,
        num_output_channels: int = 3,
        num_hidden: int = 128,
        num_layers: int = 4,
        w0: float = 30.0,
        w0_initial: float | None = None,
        modulation: str = "film",
        default_shape: Sequence[int] | None = None,
        activation_out: Any = "sigmoid",
    ) -> None:
        super().__init__()
        self.code_size = check_positive_int("num_input_channels", num_input_channels)
        self.set_io((self.code_size,), num_output_channels, default_shape)
        check_positive_int("num_hidden", num_hidden)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {', '.join(MODULATIONS)}, "
                             f"got {modulation!r}")
        if not w0 > 0:
            raise ValueError(f"w0 must be positive, got {w0!r}")
        self.modulation = modulation
        self.w0 = float(w0)
        self.w0_initial = float(w0_initial) if w0_initial is not None else self.w0
        self.layers = nn.ModuleList(
            nn.Linear(2 if i == 0 else num_hidden, num_hidden) for i in range(num_layers)
        )
        per_layer = 2 if modulation == "film" else 1
        self.modulations = nn.Linear(self.code_size, per_layer * num_layers * num_hidden)
        self.linear_out = nn.Linear(num_hidden, self.out_channels)
        self.act_out = make_activation(activation_out)
        self.max_width = num_hidden
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for i, layer in enumerate(self.layers):
            fan_in = layer.in_features
            bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / self.w0
            layer.weight.uniform_(-bound, bound)
            layer.bias.uniform_(-bound, bound)
        bound = math.sqrt(6 / self.linear_out.in_features) / self.w0
        self.linear_out.weight.uniform_(-bound, bound)
        nn.init.zeros_(self.modulations.weight)
        nn.init.zeros_(self.modulations.bias)

    def query(self, code: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        # code (B, c); coords (N, 2) or (B, N, 2) -> (B, N, C)
        batch = code.shape[0]
        mods = self.modulations(code).view(batch, -1, self.num_layers,
                                           self.layers[0].out_features)  # (B, 1|2, L, h)
        h = coords.to(self.linear_out.weight.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(h)  # (B or 1, N, h)
            if self.modulation == "film":
                x = x * (1 + mods[:, 1, i].unsqueeze(1)) + mods[:, 0, i].unsqueeze(1)
            else:
                x = x + mods[:, 0, i].unsqueeze(1)  # (B, N, h)
            h = torch.sin((self.w0_initial if i == 0 else self.w0) * x)
        return self.act_out(self.linear_out(h))
