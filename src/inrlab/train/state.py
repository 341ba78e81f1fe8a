"""What a run carries between processes: its counters (``Progress``), the checkpoint's
state (weights, optimizer, schedule, random generators), resuming from it, and the
``result.json`` record."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from inrlab.errors import InrlabError
from inrlab.models.contract import Autoencoder
from inrlab.models.layers import count_parameters
from inrlab.models.registry import model_spec
from inrlab.storage.checkpoint import load_checkpoint
from inrlab.storage.rundir import RunDir
from inrlab.train.optim import check_same_optimizer
from inrlab.train.settings import TrainSettings


@dataclass
class Progress:
    """Counters saved in every checkpoint."""

    num_inputs: int = 0
    num_batches: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    training_time: float = 0.0
    best_validation_loss: float | None = None
    last_validation_inputs: int | None = None
    last_checkpoint_inputs: int = 0
    validation: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    recent_output_std: list[tuple[int, float]] = field(default_factory=list)  # (inputs, std)
    stuck: bool = False
    warnings: list[dict[str, Any]] = field(default_factory=list)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   progress: Progress, info: dict[str, Any]) -> dict[str, Any]:
    """Everything a checkpoint holds to continue the run exactly."""
    return {
        "model": model.state_dict(),
        "model_spec": model_spec(model),  # what rebuilds it without its experiment file
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "progress": vars(progress).copy(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state()[1].tolist(),
                "python": repr(random.getstate())},
        "info": info,
    }


def resume(run_dir: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: Any) -> Progress | None:
    """Load the last checkpoint (falling back to the best one) into the model, optimizer and
    schedule; its progress, or None when the run has no checkpoint. Bad input when there are
    checkpoints but none loads (another architecture, another optimizer)."""
    candidates = [path for path in (run_dir.last, run_dir.best) if path.exists()]
    errors = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
            model.load_state_dict(state["model"])
            check_same_optimizer(state["optimizer"], optimizer)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            errors.append(str(e))
            print(f"warning: cannot resume from {path.name}: {e}")
            continue
        known = {f.name for f in fields(Progress)}  # older checkpoints may hold others
        torch.set_rng_state(state["rng"]["torch"])
        if errors:
            print(f"warning: resumed from {path.name} instead")
        return Progress(**{k: v for k, v in state["progress"].items() if k in known})
    if errors:
        raise InrlabError("no readable checkpoint to resume from (" + "; ".join(errors)
                          + "); run with --reset to start over", path=run_dir.path)
    return None


def finished(settings: TrainSettings, progress: Progress) -> bool:
    """Whether the budget is spent: ``max_inputs``, ``max_epoch`` or ``min_loss`` reached."""
    s, p = settings, progress
    if s.max_inputs is not None and p.num_inputs >= s.max_inputs:
        return True
    if s.max_epoch is not None and p.epoch >= s.max_epoch:
        return True
    best = p.best_validation_loss
    return s.min_loss is not None and best is not None and best <= s.min_loss


def result_record(status: str, progress: Progress, settings: TrainSettings, model: nn.Module,
                  info: dict[str, Any], device: torch.device, precision: str,
                  compile_mode: str | None = None) -> dict[str, Any]:
    """The run's ``result.json``; ``compile_mode``: the torch.compile mode, None for eager."""
    p = progress
    return {
        "experiment_name": info.get("experiment_name"),
        "matrix_entry": info.get("matrix_entry", {}),
        "matrix_id": info.get("matrix_id"),
        "matrix_slug": info.get("matrix_slug"),
        "status": status,
        "num_inputs": p.num_inputs,
        "max_inputs": settings.max_inputs,
        "num_batches": p.num_batches,
        "epoch": p.epoch,
        "train_loss": p.train.get("loss"),
        "validation_loss": p.validation.get("loss"),
        "best_validation_loss": p.best_validation_loss,
        "validation_mse": p.validation.get("mse"),
        "validation_psnr": p.validation.get("psnr"),
        "validation_ssim": p.validation.get("ssim"),
        "validation": p.validation,
        "warnings": p.warnings,
        "parameters": parameter_counts(model, trainable=True),
        "training_time_s": round(p.training_time, 3),
        "throughput": round(p.num_inputs / p.training_time, 3) if p.training_time else None,
        "device": str(device),
        "precision": precision,
        "compile": compile_mode,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parameter_counts(model: Autoencoder, trainable: bool = False) -> dict[str, int | None]:
    """{total, (trainable,) encoder, decoder}: None for a part the model does not have."""
    counts: dict[str, int | None] = {"total": count_parameters(model)}
    if trainable:
        counts["trainable"] = count_parameters(model, trainable_only=True)
    for part, module in model.parameter_parts().items():
        counts[part] = count_parameters(module) if module is not None else None
    return counts
