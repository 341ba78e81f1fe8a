"""The optimizer and learning-rate schedule of a run, from its settings."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from inrlab.errors import InrlabError
from inrlab.train.losses import second_parameter
from inrlab.train.settings import TrainSettings

# Names torch.optim.lr_scheduler gives a scheduler's length in steps, its second argument.
STEP_COUNT_PARAMETERS = ("T_max", "total_iters", "step_size", "T_0")


def make_optimizer(settings: TrainSettings, model: nn.Module,
                   device: torch.device) -> torch.optim.Optimizer:
    """``torch.optim.<optimizer>(params, lr=learnrate, **optimizer_args)`` (the seed built
    it with ``lr`` alone), with the fused implementation where the class has one (Adam,
    AdamW, SGD, Adagrad) and ``optimizer_args`` does not choose: one kernel for all
    parameters instead of several per tensor, the same update. On a 2-core CPU AdamW's step
    for the quick start's 35 tensors took 0.4 ms fused against 1.4-1.8 ms
    (bench/cpu_choices.py)."""
    cls = getattr(torch.optim, settings.optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        names = sorted(n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                       and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                       and n != "Optimizer")
        raise InrlabError(f"unknown optimizer '{settings.optimizer}'; torch.optim has "
                          f"{', '.join(names)}", key="optimizer")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InrlabError("the model has no trainable parameters", key="model")
    given = dict(settings.optimizer_args or {})
    accepted = [n for n in inspect.signature(cls.__init__).parameters
                if n not in ("self", "params", "lr")]
    unknown = sorted(n for n in given if n not in accepted)
    if unknown:
        note = " (the learning rate is the key learnrate)" if unknown[0] == "lr" else ""
        raise InrlabError(f"{settings.optimizer} takes no argument {unknown[0]!r}{note}; its "
                          f"arguments: {', '.join(accepted)}", key="optimizer_args")
    fused = (device.type in ("cpu", "cuda") and "fused" in accepted
             and not {"fused", "foreach"} & set(given))
    try:
        return cls(params, lr=settings.learnrate, **given, **({"fused": True} if fused else {}))
    except (TypeError, ValueError) as e:
        raise InrlabError(f"{settings.optimizer} refuses optimizer_args {given}: {e}",
                          key="optimizer_args") from None


def make_scheduler(settings: TrainSettings, optimizer: torch.optim.Optimizer) -> Any:
    """``torch.optim.lr_scheduler.<scheduler>(optimizer, max_inputs // batch_size)``, or None."""
    if not settings.scheduler:
        return None
    cls = getattr(torch.optim.lr_scheduler, settings.scheduler, None)
    if not isinstance(cls, type) or settings.scheduler.startswith("_"):
        raise InrlabError(f"unknown scheduler '{settings.scheduler}'; use a class of "
                          "torch.optim.lr_scheduler such as CosineAnnealingLR", key="scheduler")
    if not settings.max_inputs:
        raise InrlabError("a scheduler is sized by max_inputs / batch_size: set max_inputs",
                          key="scheduler")
    second = second_parameter(cls)
    if second not in STEP_COUNT_PARAMETERS:
        raise InrlabError(f"scheduler '{settings.scheduler}' takes {second!r} after the "
                          "optimizer, not a step count; inrlab builds a scheduler as "
                          "(optimizer, max_inputs // batch_size): use one whose second "
                          "argument is its length, such as CosineAnnealingLR, PolynomialLR, "
                          "StepLR or CosineAnnealingWarmRestarts", key="scheduler")
    steps = max(1, settings.max_inputs // settings.batch_size)
    try:
        return cls(optimizer, steps)
    except TypeError as e:
        raise InrlabError(f"scheduler '{settings.scheduler}' cannot be built from its step "
                          f"count alone ({e})", key="scheduler") from None


def check_same_optimizer(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """ValueError when a checkpoint's optimizer state is another class's (its settings
    differ, e.g. Adam's betas against SGD's momentum): loading it would fail at the first
    step, after the run's files were written."""
    groups = saved.get("param_groups") or [{}]
    keys, wanted = set(groups[0]), set(optimizer.param_groups[0])
    if keys != wanted:
        raise ValueError(f"its optimizer state has the settings {sorted(keys - {'params'})}, "
                         f"this {type(optimizer).__name__} has {sorted(wanted - {'params'})}: "
                         "the run was trained with another optimizer")
