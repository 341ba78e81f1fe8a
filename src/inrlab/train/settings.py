"""Training settings: the experiment-file keys every trainer understands, with defaults."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from inrlab.errors import InrlabError


@dataclass
class TrainSettings:
    """Experiment keys read by the trainer. Defaults are listed in docs/experiment-files.md."""

    batch_size: int
    learnrate: float
    optimizer: str
    # keyword arguments of the optimizer besides lr, e.g. {betas: [0.9, 0.99]}
    optimizer_args: dict[str, Any] | None = None
    validation_batch_size: int | None = None  # None: batch_size
    scheduler: str | None = None  # torch.optim.lr_scheduler class, sized max_inputs/batch_size
    loss_function: str = "l1"
    # Train on warmup_loss_function for the first warmup_inputs images, then on loss_function
    # (validation always uses loss_function): MSE's gradient keeps a sigmoid output away from
    # the all-black start that L1 drives it to on mostly black tiles (bench/constant_start.py).
    warmup_inputs: int | None = None
    warmup_loss_function: str = "l2"
    max_inputs: int | None = None
    max_epoch: int | None = None
    min_loss: float | None = None  # stop when the validation loss reaches it
    freeze_validation_set: bool = False
    num_epochs_between_validations: int | None = 1
    num_inputs_between_validations: int | None = None
    num_inputs_between_checkpoints: int | None = None
    checkpoint_every_seconds: float | None = 60.0
    num_train_loss_steps: int = 1000  # inputs per averaged train-loss log line
    num_workers: int = 0
    training_noise: float = 0.0
    gradient_clipping: float | None = None
    seed: int = 0
    # "fp32", "bf16" (autocast, fp32 master weights) or "auto": bf16 where the device has
    # bf16 units (a CUDA GPU that supports it, a CPU with AMX or AVX512-BF16), else fp32
    precision: str = "auto"
    # torch.compile the model (and implicit decoders' query): true, a torch.compile mode, or
    # "auto" (device.resolve_compile: long runs on a CUDA device only)
    compile: bool | str = "auto"
    # A run is "stuck" when its outputs were near constant (each output's pixel std at most
    # stuck_output_std) at each of the last stuck_validations validations; 0 turns it off.
    stuck_validations: int = 3
    stuck_output_std: float = 0.01

    def __post_init__(self) -> None:
        if self.validation_batch_size is None:
            self.validation_batch_size = self.batch_size


NON_NEGATIVE = {"stuck_validations", "stuck_output_std", "training_noise", "seed", "num_workers",
                "train_jitter"}
POSITIVE = {"batch_size", "validation_batch_size", "max_inputs", "max_epoch",
            "num_epochs_between_validations", "num_inputs_between_validations",
            "num_inputs_between_checkpoints", "num_train_loss_steps", "learnrate", "train_pixels",
            "warmup_inputs", "gradient_clipping", "checkpoint_every_seconds"}
BUDGETS = ("max_inputs", "max_epoch", "min_loss")  # at least one ends training
MAX_SEED = 2**63 - 1  # torch.manual_seed takes at most a 64-bit value
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CHOICES = {"precision": ("fp32", "bf16", "auto"),
           "compile": (True, False, "auto", *COMPILE_MODES)}


def check_value(name: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` (int, float, str, bool, Optional), or ValueError."""
    union = isinstance(annotation, types.UnionType)
    hints = typing.get_args(annotation) if union else (annotation,)
    if value is None:
        if type(None) in hints:
            return None
        raise ValueError(f"{name} must not be empty")
    for hint in hints:
        if hint is bool and isinstance(value, bool):
            return value
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if hint is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if hint is str and isinstance(value, str):
            return value
        if typing.get_origin(hint) is dict and isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise ValueError(f"{name} must be a mapping of argument names to values, "
                                 f"got {value!r}")
            return dict(value)
    wanted = " or ".join("a mapping" if typing.get_origin(h) is dict
                         else getattr(h, "__name__", str(h)) for h in hints if h is not type(None))
    advice = ""
    if value == "None":  # `${x}` of a matrix value null: the seed's str(None), which YAML keeps
        advice = ("; a matrix value null is written into the file as the text None, a string "
                  "to YAML: write it in the matrix as \"null\" (quoted) to get an empty value")
    raise ValueError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__}){advice}")


def make_settings(values: dict[str, Any], where: Any, cls: type = TrainSettings) -> Any:
    """Build ``cls`` (``TrainSettings``, or a trainer's options dataclass) from experiment
    values, each checked against its type hint; ``where(key)`` gives error location kwargs."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.default is dataclasses.MISSING and values.get(field.name) in (None, ""):
            raise InrlabError(f"the required key '{field.name}' is missing", **where(field.name))
    for name, value in values.items():
        try:
            value = check_value(name, value, hints[name])
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if name == "seed" and value > MAX_SEED:
                raise ValueError(f"seed must be at most 2**63 - 1, got {value!r}")
            if name in POSITIVE and value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
            if name in NON_NEGATIVE and value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value!r}")
            if name in CHOICES and value not in CHOICES[name]:
                raise ValueError(f"{name} must be one of {CHOICES[name]}, got {value!r}")
        except ValueError as e:
            raise InrlabError(str(e), **where(name)) from None
        kwargs[name] = value
    return cls(**kwargs)


def check_budget(settings: TrainSettings) -> None:
    """Bad input when nothing ends the training (no max_inputs, max_epoch or min_loss)."""
    if all(getattr(settings, name) is None for name in BUDGETS):
        raise InrlabError("no budget: training would never end; set max_inputs (images), "
                          "max_epoch or min_loss", key="max_inputs")


def settings_keys(cls: type = TrainSettings) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
