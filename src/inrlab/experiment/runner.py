"""Running one matrix entry end to end: build, check, train, record."""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from inrlab.errors import InrlabError
from inrlab.experiment.build import (build_entry, build_trainer, locate, run_config,
                                     run_device)
from inrlab.experiment.spec import RunSpec
from inrlab.experiment.trained import load_run_weights
from inrlab.storage.atomic import atomic_write_bytes
from inrlab.storage.rundir import RunDir
from inrlab.train.settings import check_budget
from inrlab.train.state import parameter_counts
from inrlab.train.trainer import Trainer


@dataclass
class RunOptions:
    runs_dir: Path
    device: str | None = None  # None: the file's `device` key, else default_device
    default_device: str = "auto"
    reset: bool = False
    skip: bool = False
    max_inputs: int | None = None
    tensorboard: bool = True
    quiet: bool = False
    pause_at: int | None = None  # stop at this many inputs, resumable (status "paused")
    train_stopped: bool = False  # train entries an early-stopping sweep stopped (--no-early-stop)


def print_parameters(model: torch.nn.Module) -> None:
    counts = parameter_counts(model)
    for part in ("encoder", "decoder"):
        if counts[part] is not None:
            print(f"{part} params: {counts[part]:,}")
    print(f"total params: {counts['total']:,}")


def load_weights(model: torch.nn.Module, source: Any) -> None:
    """The experiment key ``load``: start from another run's best (else last) weights."""
    try:
        path = load_run_weights(model, Path(str(source)).expanduser())
    except InrlabError as e:
        raise InrlabError(f"cannot start from the weights of {source}: {e.message}",
                          key="load") from None
    print(f"loaded weights from {path}")


def run_entry(spec: RunSpec, options: RunOptions) -> str:
    """Train one entry; returns its status. Bad input raises ``InrlabError`` before any file
    of an existing run is touched."""
    run_dir = RunDir.for_experiment(options.runs_dir, spec.experiment_name)
    if options.skip and run_dir.is_complete():
        print(f"skipping '{spec.experiment_name}': already complete")
        return "complete"
    previous = run_dir.read_result() or {}
    if previous.get("status") == "stopped" and not options.train_stopped and not options.reset:
        print(skipping_stopped(spec.experiment_name, previous))
        return "stopped"
    overrides = {"max_inputs": options.max_inputs} if options.max_inputs else None
    built = build_entry(spec, with_data=True, overrides=overrides)
    if not options.quiet:
        print(built.model)
    print_parameters(built.model)
    device = run_device(spec, options.device, options.default_device)
    trainer = build_trainer(spec, built, run_dir, device, options.tensorboard)
    trainer.pause_at = options.pause_at
    try:
        status = fit_run(trainer, run_config(spec, built.model), options,
                         load=spec.values.get("load"))
    except InrlabError as e:
        raise locate(e, spec) from None
    print(summary_line(run_dir, status))
    return status


def skipping_stopped(name: str, result: dict[str, Any]) -> str:
    """The line for an entry an early-stopping sweep stopped, which a run leaves alone."""
    rung = (result.get("stopped") or {}).get("rung")
    where = f" at {rung:,} inputs" if isinstance(rung, int) else ""
    return f"skipping '{name}': stopped early{where} (--no-early-stop trains it on)"


def summary_line(run_dir: RunDir, status: str | None = None) -> str:
    """One line that ends an entry (or a stretch of it: ``status`` "paused"): its status,
    validation PSNR and where the run is."""
    result = run_dir.read_result() or {}
    if status == "paused":
        result = {**result, "status": "paused at a rung of --early-stop"}
    psnr = result.get("validation_psnr")
    score = (f"validation PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float))
             else f"validation loss {result.get('validation_loss')}"
             if result.get("validation_loss") is not None else "no validation")
    inputs = result.get("num_inputs")
    seconds = result.get("training_time_s")
    trained = (f", {inputs:,} inputs in {seconds:.0f} s"
               if isinstance(inputs, int) and isinstance(seconds, (int, float)) else "")
    return f"==> {result.get('status', 'no result')}: {score}{trained}; run in {run_dir.path}"


def fit_run(trainer: Trainer, config: dict[str, Any], options: RunOptions,
            load: Any = None) -> str:
    """Check, then train a run that ``trainer`` writes (``--reset``, resume, ``load``);
    returns its status. ``config`` becomes the run's ``config.yaml``.

    Nothing of an earlier run in the directory changes before the data, the model and the
    loss have been checked; a plain re-run of a complete run whose budget is spent changes
    nothing at all.
    """
    run_dir = trainer.run_dir
    check_budget(trainer.settings)
    run_dir.check_place()
    trainer.check_data()
    try:
        return _fit_locked(trainer, run_dir, config, options, load)
    except OSError as e:  # a read-only or full disk, a runs directory that is a file, ...
        where = e.filename or run_dir.path
        raise InrlabError(f"cannot write the run (a file error): {e.strerror or e} ({where})",
                          path=run_dir.path) from None


def _fit_locked(trainer: Trainer, run_dir: RunDir, config: dict[str, Any],
                options: RunOptions, load: Any) -> str:
    with run_dir.lock():  # one process at a time trains a run
        for stale in run_dir.remove_temporaries():
            print(f"removed {stale.name}, left by a write that was killed")
        name = config.get("experiment_name") or run_dir.path.name
        previous = run_dir.read_result()
        if not options.reset and previous and previous.get("status") == "complete" \
                and trainer.budget_spent_by(previous):
            print(f"'{name}' is complete ({previous.get('num_inputs', 0):,} inputs): nothing to "
                  "train; --reset starts it over, a larger max_inputs continues it")
            return "complete"
        fresh = options.reset or (not run_dir.last.exists() and not run_dir.best.exists())
        if fresh and load:  # before --reset removes anything: a bad source keeps the old run
            load_weights(trainer.model, load)
        if options.reset:
            run_dir.remove()
            previous = None
        # An earlier run's files as they are: what a failure before the first step (a
        # checkpoint of another architecture, an optimizer state of another class)
        # restores, byte for byte.
        before = run_dir.snapshot() if run_dir.path.is_dir() else {}
        config_text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        atomic_write_bytes(run_dir.config, lambda f: f.write(config_text.encode()))
        try:
            return trainer.fit(resume=not options.reset)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            if before and run_dir.restore(before):
                print(f"{run_dir.path} is left as it was: the run failed before its first "
                      "checkpoint")
            elif not (previous and previous.get("status") == "complete"):
                result = trainer.result("failed")
                result["error"] = f"{type(e).__name__}: {e}"
                with contextlib.suppress(OSError):  # the disk may be what failed
                    run_dir.write_result(result)
            if isinstance(e, (InrlabError, OSError)):  # bad input; a disk that failed
                raise
            traceback.print_exc()
            return "failed"
