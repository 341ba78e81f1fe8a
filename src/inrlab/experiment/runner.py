"""Running one matrix entry end to end: build, check, train, record."""

from __future__ import annotations

import contextlib
import itertools
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from inrlab.errors import InrlabError
from inrlab.experiment.build import (build_entry, build_trainer, locate, run_config,
                                     run_device)
from inrlab.experiment.spec import RUN_META_KEY, RunSpec
from inrlab.experiment.trained import load_run_weights
from inrlab.storage.atomic import atomic_write_bytes
from inrlab.storage.rundir import RunDir
from inrlab.train.device import flush_denormals
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
    flush_denormals()  # before anything is built: the OpenMP workers start later, with it
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


# Keys a run may change between its stretches: its budget and how it is run, not what it
# learns. (``load`` applies to a fresh run only; the ``inrlab`` block is bookkeeping, of
# which the model's resolved spec is compared.)
RESUMABLE_KEYS = frozenset({
    "max_inputs", "max_epoch", "min_loss", "num_workers", "validation_batch_size", "device",
    "precision", "compile", "num_epochs_between_validations", "num_inputs_between_validations",
    "num_inputs_between_checkpoints", "checkpoint_every_seconds", "num_train_loss_steps",
    "stuck_validations", "stuck_output_std", "load", RUN_META_KEY})


def configuration_changes(stored_path: Path, config: dict[str, Any]) -> list[str]:
    """What ``config`` changes in the ``config.yaml`` a run was trained with, as
    ``key: old -> new`` lines; empty when there is none, or no readable earlier config."""
    return [line for _, line in _changed_keys(stored_path, config)]


def _changed_keys(stored_path: Path, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(top-level key, ``key...: old -> new`` line) of each change.

    The model is compared by its resolved spec where both have one, so an experiment file
    rewritten into another form that builds the same model (``$extends``, composed parts,
    defaults written out) is no change; a run from before specs were recorded is not
    compared on its model (resuming checks its checkpoint against the model)."""
    try:
        stored = yaml.safe_load(stored_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(stored, dict):
        return []
    old_meta, new_meta = (value.get(RUN_META_KEY) for value in (stored, config))
    old_meta = old_meta if isinstance(old_meta, dict) else {}
    old_spec = old_meta.get("model_spec")
    new_spec = new_meta.get("model_spec") if isinstance(new_meta, dict) else None
    by_spec = old_spec is not None and new_spec is not None
    # a run that predates model specs, resumed from a file now in the composed form: its
    # `model` was written another way, so only the checkpoint's state dict can tell
    unknown = new_spec is not None and "model_spec" not in old_meta
    compared = [(str(key), stored.get(key), config.get(key))
                for key in sorted(set(stored) | set(config), key=str)
                if key not in RESUMABLE_KEYS and not (key == "model" and (by_spec or unknown))]
    if by_spec:
        compared.append(("model", old_spec, new_spec))
    changes: list[tuple[str, str]] = []
    for key, old, new in compared:
        lines: list[str] = []
        _differences(key, old, new, lines)
        changes += [(key, line) for line in lines]
    return changes


def _differences(where: str, old: Any, new: Any, out: list[str]) -> None:
    """Append ``where.key: old -> new`` for each leaf that differs (mappings recursed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _differences(f"{where}.{key}", old.get(key), new.get(key), out)
    elif isinstance(old, str) and isinstance(new, str) and "\n" in old + new:
        lines = list(itertools.zip_longest(old.splitlines(), new.splitlines(), fillvalue=""))
        for number, (was, now) in enumerate(lines, 1):  # a snippet: its first changed line
            if was.strip() != now.strip():
                out.append(f"{where} (its line {number}): {_short(was.strip())} -> "
                           f"{_short(now.strip())}")
                break
    elif old != new:
        out.append(f"{where}: {_short(old)} -> {_short(new)}")


def _short(value: Any, limit: int = 120) -> str:
    text = " ".join(yaml.safe_dump(value, default_flow_style=True, width=10_000).split())
    text = text.removesuffix(" ...")
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
        changes = [] if options.reset else _changed_keys(run_dir.config, config)
        if changes:
            raise InrlabError(
                f"'{name}' in {run_dir.path} was trained with another configuration than this "
                f"entry's: {'; '.join(line for _, line in changes)}. Training on would mix "
                "the two in one run, and its results would describe neither: --reset starts it "
                "over with this entry's values (deleting that run), or another "
                "experiment_name keeps both", key=changes[0][0])
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
