"""The generic training loop.

Counting follows the seed system: "steps" are *inputs* (images), so budgets
(``max_inputs``), log intervals and TensorBoard x-axes are in images; ``num_batches`` counts
optimizer steps. Subclasses override ``train_step`` (and optionally ``validation_step``,
``write_images``); everything else -- data, optimizer, schedule, validation cadence,
checkpoints, resume, logs, ``result.json`` -- lives here once.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import signal
import time
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

from inrlab.errors import InrlabError
from inrlab.models.decoders.base import ImplicitDecoder
from inrlab.models.layers import count_parameters
from inrlab.storage.checkpoint import load_checkpoint, save_checkpoint
from inrlab.train.image_metrics import psnr
from inrlab.storage.metrics import MetricsLog
from inrlab.train.losses import loss_function, second_parameter
from inrlab.storage.rundir import RunDir
from inrlab.train.settings import TrainSettings


class Diverged(Exception):
    """A loss became NaN or infinite."""


class EpochSampler(Sampler[int]):
    """A permutation of ``range(size)`` fixed by (seed, epoch), starting at ``start``, so a
    resumed run continues the interrupted epoch with exactly the remaining items."""

    def __init__(self, size: int, seed: int, epoch: int, start: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        self.permutation = torch.randperm(size, generator=generator)[start:]  # (n,)
        self.order = self.permutation.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


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


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InrlabError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InrlabError(f"device '{device}' is not supported: inrlab trains on cpu or cuda "
                          "(auto, cpu, cuda, cuda:N)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InrlabError(f"device '{device}' asked for, but CUDA is not available here")
    return resolved


def bf16_units(device: torch.device) -> str | None:
    """Why ``device`` runs bf16 matrix products fast (a short reason), or None."""
    if device.type == "cuda":
        return "a CUDA GPU with bf16 support" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    checks = (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16"))
    found = [name for probe, name in checks if getattr(torch.cpu, probe, lambda: False)()]
    return f"this CPU has {' and '.join(found)} units" if found else None


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(the precision to train in, why): ``auto`` becomes bf16 where ``bf16_units``."""
    if precision != "auto":
        return precision, "set in the experiment"
    reason = bf16_units(device)
    if reason:
        return "bf16", reason
    return "fp32", f"no bf16 units on this {device.type}"


class Trainer:
    """Supervised loop over ``(input, target)`` batches; autoencoder trainers subclass it."""

    def __init__(
        self,
        *,
        model: nn.Module,
        train_sets: Sequence[tuple[int, Dataset]],
        validation_sets: Sequence[tuple[int, Dataset]] = (),
        settings: TrainSettings,
        run_dir: RunDir,
        device: str | torch.device | None = "auto",
        info: dict[str, Any] | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.settings = settings
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device)
        self.precision, self.precision_reason = resolve_precision(settings.precision,
                                                                  self.device)
        if settings.compile:
            compile_model(self.model, "default" if settings.compile is True else settings.compile)
        self.train_sets = sorted(train_sets, key=lambda item: item[0])
        self.validation_sets = sorted(validation_sets, key=lambda item: item[0])
        self.run_dir = run_dir
        self.info = dict(info or {})
        self.tensorboard = tensorboard
        self.main_loss = self.loss_function = loss_function(settings.loss_function)
        self.warmup_loss = loss_function(settings.warmup_loss_function, "warmup_loss_function")
        self.progress = Progress()
        self.optimizer = _make_optimizer(settings, self.model, self.device)
        self.scheduler = _make_scheduler(settings, self.optimizer)
        self._frozen_validation: list[Any] | None = None
        self._device_sets: dict[int, Dataset] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._sum_inputs = 0
        self._last_loss: torch.Tensor | None = None
        self._last_checkpoint_time = time.monotonic()
        self.log: MetricsLog | None = None

    # ---------------------------------------------------------------- steps (override these)
    def train_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Losses of one batch; must contain ``"loss"`` (the one that is optimised)."""
        if len(batch) < 2:
            raise InrlabError("the Trainer needs (input, target) items; use trainer: "
                              "TrainAutoencoder for datasets of images alone", key="trainer")
        output = self.model(batch[0])
        return {"loss": self.loss_function(output, batch[1])}

    def validation_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return self.train_step(batch)

    def check_data(self) -> None:
        """Run two training items through the model and the loss once, before anything is
        written, so empty datasets, shape mismatches and losses that cannot take the model's
        output fail fast with a clear error."""
        loss = self.loss_function

        def checked_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            try:
                return loss(output, target)
            except Exception as e:  # noqa: BLE001 - the loss named in the file is bad input
                raise InrlabError(
                    f"loss_function '{self.settings.loss_function}' fails on the model's "
                    f"output {tuple(output.shape)} and target {tuple(target.shape)}: "
                    f"{type(e).__name__}: {e}", key="loss_function") from e

        self.loss_function = checked_loss
        try:
            for start, dataset in self.train_sets:
                key = f"train_set{start or ''}"
                batch = self._to_device(default_collate(_first_items(dataset, 2, key)))
                self.model.eval()
                with torch.no_grad(), self._autocast():
                    self.train_step(batch)
        except InrlabError:
            raise
        except Exception as e:  # noqa: BLE001 - a model that cannot take the data
            raise InrlabError(f"the first training batch fails in the model: "
                              f"{type(e).__name__}: {e}", key="model") from e
        finally:
            self.loss_function = loss
            self.model.train()
        for start, dataset in self.validation_sets:
            _first_items(dataset, 1, f"validation_set{start or ''}")

    def budget_spent_by(self, result: dict[str, Any]) -> bool:
        """Whether a run whose ``result.json`` reads ``result`` has nothing left to train
        under these settings (a larger ``max_inputs`` or ``max_epoch`` leaves some)."""
        best = result.get("best_validation_loss")
        progress = Progress(num_inputs=int(result.get("num_inputs") or 0),
                            epoch=int(result.get("epoch") or 0),
                            best_validation_loss=float(best) if best is not None else None)
        return self._finished(progress)

    def write_images(self) -> None:
        """Called after each validation; the autoencoder trainer draws reproductions."""

    # ---------------------------------------------------------------------------- the loop
    def fit(self, resume: bool = True) -> str:
        """Train until the budget is spent; returns the final status."""
        s = self.settings
        resumed = self._resume() if resume else False
        torch.manual_seed(s.seed + self.progress.num_batches)
        self.log = MetricsLog(self.run_dir.path, self.progress.num_inputs if resumed else None,
                              self.tensorboard)
        status = "running"
        self._write_result(status)
        print(f"---- training '{self.info.get('experiment_name', self.run_dir.path)}' on "
              f"{self.device}{f' from {self.progress.num_inputs:,} inputs' if resumed else ''}")
        if s.precision == "auto":
            print(f"precision auto: {self.precision} ({self.precision_reason})")
        clock = time.monotonic()
        bar = self._progress_bar()
        try:
            with _sigterm_as_interrupt():
                while not self._finished():
                    for batch in self._train_batches():
                        batch = self._to_device(batch)
                        if s.training_noise > 0:
                            noisy = batch[0] + torch.randn_like(batch[0]) * s.training_noise
                            batch = (noisy, *batch[1:])
                        self.model.train()
                        self.loss_function = self._training_loss()
                        with self._autocast():
                            losses = self.train_step(batch)
                        self.optimizer.zero_grad(set_to_none=True)
                        losses["loss"].backward()
                        if s.gradient_clipping:
                            nn.utils.clip_grad_value_(self.model.parameters(), s.gradient_clipping)
                        self.optimizer.step()
                        if self.scheduler is not None:
                            self.scheduler.step()

                        size = batch[0].shape[0]
                        p = self.progress
                        p.num_inputs += size
                        p.num_batches += 1
                        p.batch_in_epoch += 1
                        self._accumulate(losses, size)
                        now = time.monotonic()
                        p.training_time += now - clock
                        clock = now
                        bar.update(size)
                        if self._sum_inputs >= s.num_train_loss_steps:
                            self._log_train(bar)
                        if self._due(s.num_inputs_between_validations, p.last_validation_inputs):
                            self.validate()
                        if self._checkpoint_due():
                            self.save(best=False)
                        clock = time.monotonic()  # validation/checkpoints are not training time
                        if self._finished():
                            break
                    else:
                        self._end_epoch()
                    clock = time.monotonic()
                self._log_train(None)
                self._validate_once()
                self.save(best=False)
                status = "complete"
        except Diverged as e:
            print(f"diverged: {e}; the last good checkpoint is kept")
            status = "diverged"
        except KeyboardInterrupt:
            if self._last_loss is None or bool(torch.isfinite(self._last_loss)):
                self.save(best=False)
            print(f"interrupted at {self.progress.num_inputs:,} inputs; checkpoint saved, "
                  "run again to resume")
            self._write_result("running")
            self.log.close()
            raise
        finally:
            bar.close()
        self._write_result(status)
        self.log.close()
        return status

    def _training_loss(self) -> Any:
        """``warmup_loss_function`` for the first ``warmup_inputs`` images, then the loss."""
        s, p = self.settings, self.progress
        if s.warmup_inputs and p.num_inputs < s.warmup_inputs:
            return self.warmup_loss
        if s.warmup_inputs and self.loss_function is self.warmup_loss:
            print(f"loss warm-up ({s.warmup_loss_function}) done at {p.num_inputs:,} inputs; "
                  f"training on {s.loss_function} from here")
        return self.main_loss

    def _end_epoch(self) -> None:
        p, s = self.progress, self.settings
        if p.batch_in_epoch == 0:
            raise InrlabError("the train_set yielded no data in a whole epoch", key="train_set")
        p.epoch += 1
        p.batch_in_epoch = 0
        if s.num_epochs_between_validations and p.epoch % s.num_epochs_between_validations == 0:
            self._validate_once()
        self.save(best=False)

    def _validate_once(self) -> None:
        """Validate unless the current input count was validated already."""
        if self.progress.last_validation_inputs != self.progress.num_inputs:
            self.validate()

    def _finished(self, progress: Progress | None = None) -> bool:
        p, s = progress or self.progress, self.settings
        if s.max_inputs is not None and p.num_inputs >= s.max_inputs:
            return True
        if s.max_epoch is not None and p.epoch >= s.max_epoch:
            return True
        best = p.best_validation_loss
        return s.min_loss is not None and best is not None and best <= s.min_loss

    def _due(self, every: int | None, last: int | None) -> bool:
        return bool(every) and self.progress.num_inputs - (last or 0) >= every  # type: ignore

    def _checkpoint_due(self) -> bool:
        s = self.settings
        if self._due(s.num_inputs_between_checkpoints, self.progress.last_checkpoint_inputs):
            return True
        every = s.checkpoint_every_seconds
        return bool(every) and time.monotonic() - self._last_checkpoint_time >= every

    # ------------------------------------------------------------------------------- data
    def _dataset_for_epoch(self, sets: Sequence[tuple[int, Dataset]]) -> Dataset | None:
        chosen = None
        for start, dataset in sets:
            if start <= self.progress.epoch:
                chosen = dataset
        return chosen

    def _train_batches(self) -> Iterator[Any]:
        dataset = self._dataset_for_epoch(self.train_sets)
        s, p = self.settings, self.progress
        pin = self.device.type == "cuda"
        if isinstance(dataset, IterableDataset):
            p.batch_in_epoch = 0  # a stream cannot skip ahead: the epoch restarts
            loader = DataLoader(dataset, batch_size=s.batch_size, num_workers=s.num_workers,
                                pin_memory=pin)
            yield from loader
            return
        sampler = EpochSampler(len(dataset), s.seed, p.epoch, p.batch_in_epoch * s.batch_size)
        if self._batches_directly(dataset):
            order = sampler.permutation.pin_memory() if pin else sampler.permutation
            source = self._on_device(dataset)
            for index in order.split(s.batch_size) if len(order) else ():
                yield (source.batch(index),)  # type: ignore[attr-defined]
            return
        yield from DataLoader(dataset, batch_size=s.batch_size, sampler=sampler,
                              num_workers=s.num_workers, pin_memory=pin)

    def _batches_directly(self, dataset: Dataset) -> bool:
        """Datasets with ``batch(indices)`` and ``on_device(device)`` (the tile, MNIST and
        kali datasets) give whole batches on the training device without a DataLoader:
        no per-item Python, no collate, no host-to-device copy of images."""
        return self.settings.num_workers == 0 and callable(getattr(dataset, "batch", None)) \
            and callable(getattr(dataset, "on_device", None)) \
            and getattr(dataset, "makes_batches", True)

    def _on_device(self, dataset: Dataset) -> Any:
        key = id(dataset)
        if key not in self._device_sets:
            self._device_sets[key] = dataset.on_device(self.device)  # type: ignore[attr-defined]
        return self._device_sets[key]

    def _validation_batches(self) -> Iterator[Any]:
        dataset = self._dataset_for_epoch(self.validation_sets)
        if dataset is None:
            return iter(())
        size = self.settings.validation_batch_size
        batches: Any
        if self._batches_directly(dataset):
            source = self._on_device(dataset)
            batches = ((source.batch(index),)
                       for index in torch.arange(len(dataset)).split(size))  # type: ignore
        else:
            batches = DataLoader(dataset, batch_size=size,
                                 pin_memory=self.device.type == "cuda")
        if not self.settings.freeze_validation_set:
            return iter(batches)
        if self._frozen_validation is None:
            self._frozen_validation = list(batches)
        return iter(self._frozen_validation)

    def _to_device(self, batch: Any) -> tuple[torch.Tensor, ...]:
        if not isinstance(batch, (tuple, list)):
            batch = (batch,)
        return tuple(b.to(self.device, non_blocking=True) if isinstance(b, torch.Tensor) else b
                     for b in batch)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ validation & logs
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses over the validation set, model in eval mode (weighted per image), always
        with ``loss_function`` (also during a loss warm-up)."""
        self.model.eval()
        training_loss, self.loss_function = self.loss_function, self.main_loss
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in self._validation_batches():
            batch = self._to_device(batch)
            with self._autocast():
                losses = self.validation_step(batch)
            size = batch[0].shape[0]
            for key, value in losses.items():
                sums[key] = sums.get(key, 0) + value.detach().float() * size
            count += size
        self.model.train()
        self.loss_function = training_loss
        p = self.progress
        p.last_validation_inputs = p.num_inputs
        if not count:
            return {}
        means = {key: float(value) / count for key, value in sums.items()}
        if "mse" in means:
            means["psnr"] = psnr(means["mse"])
        p.validation = means
        loss = means["loss"]
        print(f"validation @ {p.num_inputs:,}: " + ", ".join(f"{k} {v:.6g}"
                                                           for k, v in means.items()))
        self.log.write("validation", p.num_inputs, {**means, "time_s": p.training_time,
                                                    "epoch": p.epoch})
        if math.isfinite(loss) and (p.best_validation_loss is None
                                    or loss < p.best_validation_loss):
            p.best_validation_loss = loss
            self.save(best=True)
        self._check_stuck(means)
        self.write_images()
        self._write_result("running")
        return means

    def _check_stuck(self, means: dict[str, float]) -> None:
        """Warn once when the run sits at a constant output: each output's pixel std at most
        ``stuck_output_std`` at each of the last ``stuck_validations`` validations (the
        sigmoid's all-black start, a collapse to each image's mean colour), whatever the
        loss does meanwhile -- a run that learns only the mean colour still lowers its loss.
        Recorded in metrics.jsonl and result.json's ``warnings``; when the run leaves the
        constant output, the warning gets ``until``."""
        s, p = self.settings, self.progress
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
                       f"{means['loss']:.6g}); see 'Stuck runs' in the README")
            print(f"warning: {message}")
            p.warnings.append({"kind": "stuck", "inputs": since, "detected": p.num_inputs,
                               "message": message})
            self.log.write("warning", p.num_inputs, {"warning": "stuck", "message": message})
        elif p.stuck and not stuck and p.warnings:
            p.warnings[-1]["until"] = p.num_inputs
            message = f"left the constant output at {p.num_inputs:,} inputs"
            print(message)
            self.log.write("warning", p.num_inputs, {"warning": "stuck_ended",
                                                     "message": message})
        p.stuck = stuck

    def _accumulate(self, losses: dict[str, torch.Tensor], size: int) -> None:
        for key, value in losses.items():
            self._sums[key] = self._sums.get(key, 0) + value.detach().float() * size
        self._sum_inputs += size
        self._last_loss = losses["loss"].detach()

    def _log_train(self, bar: Any) -> None:
        if not self._sum_inputs:
            return
        p = self.progress
        means = {key: float(value) / self._sum_inputs for key, value in self._sums.items()}
        self._sums, self._sum_inputs = {}, 0
        if not math.isfinite(means["loss"]):
            raise Diverged(f"train loss is {means['loss']} at {p.num_inputs:,} inputs")
        p.train = means
        values = {**means, "learnrate": self.optimizer.param_groups[0]["lr"],
                  "inputs_per_s": p.num_inputs / p.training_time if p.training_time else 0.0,
                  "time_s": p.training_time, "epoch": p.epoch}
        self.log.write("train", p.num_inputs, values)
        if bar is not None:
            bar.set_postfix(loss=f"{means['loss']:.5f}", epoch=p.epoch, refresh=False)

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        total = self.settings.max_inputs
        initial = min(self.progress.num_inputs, total) if total else self.progress.num_inputs
        # disable=None: no bar when the output is not a terminal (logs stay readable).
        return tqdm(total=total, initial=initial, unit="img", unit_scale=True,
                    dynamic_ncols=True, leave=False, disable=None)

    # ------------------------------------------------------------- checkpoints & results
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "progress": vars(self.progress).copy(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "numpy": np.random.get_state()[1].tolist(),
                    "python": repr(random.getstate())},
            "info": self.info,
        }

    def save(self, best: bool) -> None:
        if self._last_loss is not None and not bool(torch.isfinite(self._last_loss)):
            raise Diverged(f"loss is {float(self._last_loss)} at "
                           f"{self.progress.num_inputs:,} inputs")
        self.progress.last_checkpoint_inputs = self.progress.num_inputs
        save_checkpoint(self.run_dir.best if best else self.run_dir.last, self.state())
        self._last_checkpoint_time = time.monotonic()

    def _resume(self) -> bool:
        """Load the last checkpoint (falling back to the best one); False when none exists."""
        candidates = [path for path in (self.run_dir.last, self.run_dir.best) if path.exists()]
        errors = []
        for path in candidates:
            try:
                state = load_checkpoint(path)
                self.model.load_state_dict(state["model"])
                _check_same_optimizer(state["optimizer"], self.optimizer)
                self.optimizer.load_state_dict(state["optimizer"])
                if self.scheduler is not None and state.get("scheduler"):
                    self.scheduler.load_state_dict(state["scheduler"])
            except (ValueError, KeyError, RuntimeError) as e:
                errors.append(str(e))
                print(f"warning: cannot resume from {path.name}: {e}")
                continue
            known = {f.name for f in fields(Progress)}  # older checkpoints may hold others
            self.progress = Progress(**{k: v for k, v in state["progress"].items()
                                        if k in known})
            torch.set_rng_state(state["rng"]["torch"])
            if errors:
                print(f"warning: resumed from {path.name} instead")
            return True
        if errors:
            raise InrlabError("no readable checkpoint to resume from (" + "; ".join(errors)
                              + "); run with --reset to start over", path=self.run_dir.path)
        return False

    def result(self, status: str) -> dict[str, Any]:
        p = self.progress
        model = self.model
        parameters = {"total": count_parameters(model),
                      "trainable": count_parameters(model, trainable_only=True),
                      "encoder": _part_parameters(model, "encoder"),
                      "decoder": _part_parameters(model, "decoder")}
        return {
            "experiment_name": self.info.get("experiment_name"),
            "matrix_entry": self.info.get("matrix_entry", {}),
            "matrix_id": self.info.get("matrix_id"),
            "matrix_slug": self.info.get("matrix_slug"),
            "status": status,
            "num_inputs": p.num_inputs,
            "max_inputs": self.settings.max_inputs,
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
            "parameters": parameters,
            "training_time_s": round(p.training_time, 3),
            "throughput": round(p.num_inputs / p.training_time, 3) if p.training_time else None,
            "device": str(self.device),
            "precision": self.precision,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _write_result(self, status: str) -> None:
        self.run_dir.write_result(self.result(status))


def compile_model(model: nn.Module, mode: str = "default") -> None:
    """torch.compile ``model`` in place (its state_dict keys stay the same), and the
    ``query`` of each implicit decoder inside, which pixel-subset training calls directly.
    ``mode``: torch.compile's ("reduce-overhead" replays CUDA graphs: no per-kernel launch
    cost for the small kernels of a batch-64 step)."""
    model.compile(mode=mode)
    for module in model.modules():
        if isinstance(module, ImplicitDecoder):
            module.query = torch.compile(module.query, mode=mode)  # type: ignore[method-assign]


def _part_parameters(model: nn.Module, name: str) -> int | None:
    part = getattr(model, name, None)
    return count_parameters(part) if isinstance(part, nn.Module) else None


def _check_same_optimizer(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """ValueError when a checkpoint's optimizer state is another class's (its settings
    differ, e.g. Adam's betas against SGD's momentum): loading it would fail at the first
    step, after the run's files were written."""
    groups = saved.get("param_groups") or [{}]
    keys, wanted = set(groups[0]), set(optimizer.param_groups[0])
    if keys != wanted:
        raise ValueError(f"its optimizer state has the settings {sorted(keys - {'params'})}, "
                         f"this {type(optimizer).__name__} has {sorted(wanted - {'params'})}: "
                         "the run was trained with another optimizer")


def _make_optimizer(settings: TrainSettings, model: nn.Module,
                    device: torch.device) -> torch.optim.Optimizer:
    """``torch.optim.<optimizer>(params, lr=learnrate)`` as the seed built it; on CUDA with
    the fused implementation where the class has one (Adam, AdamW, SGD: one kernel launch
    for all parameters instead of several per tensor, the same update)."""
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
    if device.type == "cuda" and "fused" in inspect.signature(cls.__init__).parameters:
        return cls(params, lr=settings.learnrate, fused=True)
    return cls(params, lr=settings.learnrate)


# Names torch.optim.lr_scheduler gives a scheduler's length in steps, its second argument.
STEP_COUNT_PARAMETERS = ("T_max", "total_iters", "step_size", "T_0")


def _make_scheduler(settings: TrainSettings, optimizer: torch.optim.Optimizer) -> Any:
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


def _first_items(dataset: Dataset, count: int, key: str) -> list[Any]:
    try:
        if isinstance(dataset, IterableDataset):
            items = []
            for item in dataset:
                items.append(item)
                if len(items) == count:
                    break
        else:
            size = len(dataset)  # type: ignore[arg-type]
            items = [dataset[i] for i in range(min(count, size))]
    except InrlabError:
        raise
    except Exception as e:  # noqa: BLE001 - a dataset that fails to read is bad input
        raise InrlabError(f"reading the first items failed: {type(e).__name__}: {e}",
                          key=key) from e
    if not items:
        raise InrlabError("the dataset is empty", key=key)
    return items


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. a cluster scheduler stopping the job) saves like Ctrl-C."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
