"""Watching a run while it trains: a loss that stops being finite, an output that sits at
a constant (the sigmoid's all-black start, a collapse to each image's mean colour)."""

from __future__ import annotations

import math
from typing import Any

from inrlab.storage.metrics import MetricsLog
from inrlab.train.settings import TrainSettings


class Diverged(Exception):
    """A loss became NaN or infinite."""


def check_finite(loss: float, inputs: int, what: str = "train loss") -> None:
    if not math.isfinite(loss):
        raise Diverged(f"{what} is {loss} at {inputs:,} inputs")


def check_stuck(settings: TrainSettings, progress: Any, means: dict[str, float],
                log: MetricsLog) -> None:
    """Warn once when the run sits at a constant output: each output's pixel std at most
    ``stuck_output_std`` at each of the last ``stuck_validations`` validations, whatever the
    loss does meanwhile -- a run that learns only the mean colour still lowers its loss.
    Recorded in metrics.jsonl and result.json's ``warnings`` (through ``progress``); when the
    run leaves the constant output, the warning gets ``until``."""
    s, p = settings, progress
    spread = means.get("output_std")
    if not s.stuck_validations or spread is None:
        return  # off, or not an image trainer (only those report the outputs' spread)
    window = [*p.recent_output_std, (p.num_inputs, spread)][-s.stuck_validations:]
    p.recent_output_std = window
    stuck = len(window) == s.stuck_validations and all(
        std <= s.stuck_output_std for _, std in window)
    if stuck and not p.stuck:
        since = window[0][0]
        message = (f"stuck at a constant output since {since:,} inputs: output pixel std "
                   f"at most {max(std for _, std in window):.2g} at each of the last "
                   f"{s.stuck_validations} validations (validation loss now "
                   f"{means['loss']:.6g}); see 'Stuck runs' in docs/experiment-files.md")
        print(f"warning: {message}")
        p.warnings.append({"kind": "stuck", "inputs": since, "detected": p.num_inputs,
                           "message": message})
        log.write("warning", p.num_inputs, {"warning": "stuck", "message": message})
    elif p.stuck and not stuck and p.warnings:
        p.warnings[-1]["until"] = p.num_inputs
        message = f"left the constant output at {p.num_inputs:,} inputs"
        print(message)
        log.write("warning", p.num_inputs, {"warning": "stuck_ended", "message": message})
    p.stuck = stuck
