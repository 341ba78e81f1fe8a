"""The generic training loop.

Counting follows the seed system: "steps" are *inputs* (images), so budgets
(``max_inputs``), log intervals and TensorBoard x-axes are in images; ``num_batches`` counts
optimizer steps. Subclasses override ``train_step`` (and optionally ``validation_step``,
``write_images``) and declare their own experiment keys in ``options``; the loop, the
validation cadence, checkpoints and ``result.json`` live here once. The parts live beside
it: ``batches.py`` (data), ``state.py`` (progress, checkpoints, resume, result),
``monitors.py`` (divergence, stuck outputs), ``optim.py``, ``device.py``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
import signal
import time
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from inrlab.errors import InrlabError
from inrlab.models.adapter import as_autoencoder
from inrlab.storage.checkpoint import save_checkpoint
from inrlab.storage.metrics import MetricsLog
from inrlab.storage.rundir import RunDir
from inrlab.train.batches import Batches, first_items
from inrlab.train.device import (autocast, channels_last, compile_model, resolve_compile,
                                 resolve_device, resolve_precision)
from inrlab.train.image_metrics import psnr
from inrlab.train.losses import loss_function
from inrlab.train.monitors import Diverged, check_finite, check_stuck
from inrlab.train.optim import make_optimizer, make_scheduler
from inrlab.train.settings import TrainSettings
from inrlab.train.state import Progress, finished, result_record, resume, training_state


def needs_closure(optimizer: torch.optim.Optimizer | type) -> bool:
    """Whether an optimizer (or its class) takes no step without a closure (LBFGS)."""
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


LINE_EVERY_S = 30.0  # output that is not a terminal: a line at least this often


@dataclasses.dataclass
class NoOptions:
    """A trainer without experiment keys of its own."""


# The scalars TensorBoard's HParams tab compares a matrix's runs by (MetricsLog tags).
HPARAM_METRICS = ("validation_loss", "validation_psnr", "validation_ssim", "train_loss")


class Trainer:
    """Supervised loop over ``(input, target)`` batches; autoencoder trainers subclass it.

    ``options``: the dataclass of the experiment keys this trainer adds to
    ``TrainSettings`` (its fields' defaults are the keys' defaults); an instance comes in
    as ``options=``.
    """

    options_class: ClassVar[type] = NoOptions

    def __init__(
        self,
        *,
        model: nn.Module,  # any module; one that is no Autoencoder gets wrapped
        train_sets: Sequence[tuple[int, Dataset]],
        validation_sets: Sequence[tuple[int, Dataset]] = (),
        settings: TrainSettings,
        run_dir: RunDir,
        device: str | torch.device | None = "auto",
        info: dict[str, Any] | None = None,
        tensorboard: bool = True,
        options: Any = None,
    ) -> None:
        self.settings = settings
        self.options = options if options is not None else self.options_class()
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = as_autoencoder(model).to(self.device)  # one contract for every model
        # LBFGS flattens gradients with view(), which NHWC weights' gradients do not allow
        named = getattr(torch.optim, str(settings.optimizer), None)
        flattening = isinstance(named, type) and needs_closure(named)
        self.memory_format = None if flattening else channels_last(self.model, self.device)
        self.precision, self.precision_reason = resolve_precision(settings.precision,
                                                                  self.device)
        planned_steps = settings.max_inputs // settings.batch_size if settings.max_inputs else None
        self.compile_mode, self.compile_reason = resolve_compile(settings.compile, self.device,
                                                                 planned_steps)
        if self.compile_mode:
            compile_model(self.model, self.compile_mode)
        self.batches = Batches(train_sets, validation_sets, settings, self.device)
        self.run_dir = run_dir
        self.info = dict(info or {})
        # Inputs at which fit() pauses (a checkpoint, a validation there, status 'paused'):
        # a sweep's early stopping advances entries rung by rung. None: train to the budget.
        self.pause_at: int | None = None
        self.tensorboard = tensorboard
        self.main_loss = self.loss_function = loss_function(settings.loss_function)
        self.warmup_loss = loss_function(settings.warmup_loss_function, "warmup_loss_function")
        self.progress = Progress()
        self.optimizer = make_optimizer(settings, self.model, self.device)
        self.scheduler = make_scheduler(settings, self.optimizer)
        self._sums: dict[str, torch.Tensor] = {}
        self._sum_inputs = 0
        self._last_loss: torch.Tensor | None = None
        self._last_checkpoint_time = time.monotonic()
        self.log: MetricsLog | None = None
        # Output to a file or pipe (no progress bar): a training line at least, and a
        # validation line at most, every LINE_EVERY_S seconds (an improved one always).
        self._plain_output = False
        self._last_line = self._last_validation_line = time.monotonic()

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

    def write_images(self) -> None:
        """Called after each validation; the autoencoder trainer draws reproductions."""

    def sampled_pixels(self) -> int | None:
        """How many pixels per image a training step scores (None: whole images); a dataset
        that renders single pixels then renders only those (``Batches.train``)."""
        return None

    # ---------------------------------------------------------------------------- the loop
    def fit(self, resume: bool = True) -> str:
        """Train until the budget is spent; returns the final status."""
        s = self.settings
        resumed = self._resume() if resume else False
        if not resumed:  # a resumed run goes on with the generator state its checkpoint saved,
            torch.manual_seed(s.seed)  # so it draws what the uninterrupted run would have
        self.log = MetricsLog(self.run_dir.path, self.progress.num_inputs if resumed else None,
                              self.tensorboard)
        self._write_result("running")
        print(f"---- training '{self.info.get('experiment_name', self.run_dir.path)}' on "
              f"{self.device}{f' from {self.progress.num_inputs:,} inputs' if resumed else ''}")
        print(self.compute_summary())
        bar = self._progress_bar()
        self._plain_output = bool(bar.disable)
        self._last_line = self._last_validation_line = time.monotonic()
        try:
            with _sigterm_as_interrupt():
                while not finished(s, self.progress) and not self._paused():
                    self._train_epoch(bar)
                self._log_train(None)
                self._validate_once()
                self.save(best=False)
            status = "complete" if finished(s, self.progress) else "paused"
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
        self._write_result("running" if status == "paused" else status)
        if status != "paused":
            entry = self.info.get("matrix_entry") or {}
            self.log.hparams(entry or {"experiment_name": self.info.get("experiment_name", "")},
                             HPARAM_METRICS)
        self.log.close()
        return status

    def _train_epoch(self, bar: Any) -> None:
        """The rest of the current epoch (or up to the budget): step, count, log, validate,
        checkpoint. Time spent validating and checkpointing is not training time."""
        s, p = self.settings, self.progress
        if self.batches.restarts_epoch(p.epoch):
            p.batch_in_epoch = 0  # a stream cannot skip ahead: the epoch restarts
        clock = time.monotonic()
        for batch in self.batches.train(p.epoch, p.batch_in_epoch, self.sampled_pixels()):
            if s.training_noise > 0:
                noisy = batch[0] + torch.randn_like(batch[0]) * s.training_noise
                batch = (noisy, *batch[1:])
            losses = self.step(batch)

            size = batch[0].shape[0]
            p.num_inputs += size
            p.num_batches += 1
            p.batch_in_epoch += 1
            self._accumulate(losses, size)
            p.training_time += time.monotonic() - clock
            bar.update(size)
            if self._sum_inputs >= s.num_train_loss_steps:
                self._log_train(bar)
            if self._plain_output and time.monotonic() - self._last_line >= LINE_EVERY_S:
                self._print_training_line()
            if self._due(s.num_inputs_between_validations, p.last_validation_inputs):
                self.validate()
            if self._checkpoint_due():
                self.save(best=False)
            if finished(s, p) or self._paused():
                return
            clock = time.monotonic()
        self._end_epoch()

    def step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """One optimizer step on ``batch``; its losses (before the step). An optimizer whose
        ``step`` needs a closure (LBFGS) gets one that evaluates the losses again."""
        s = self.settings
        self.model.train()
        self.loss_function = self._training_loss()
        first: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            with autocast(self.precision, self.device):
                losses = self.train_step(batch)
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if s.gradient_clipping:
                nn.utils.clip_grad_value_(self.model.parameters(), s.gradient_clipping)
            if not first:
                first.update(losses)
            return losses["loss"]

        if needs_closure(self.optimizer):
            self.optimizer.step(closure)
        else:
            closure()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return first

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

    def _paused(self) -> bool:
        return self.pause_at is not None and self.progress.num_inputs >= self.pause_at

    def _validate_once(self) -> None:
        """Validate unless the current input count was validated already."""
        if self.progress.last_validation_inputs != self.progress.num_inputs:
            self.validate()

    def _due(self, every: int | None, last: int | None) -> bool:
        return bool(every) and self.progress.num_inputs - (last or 0) >= every  # type: ignore

    def _checkpoint_due(self) -> bool:
        s = self.settings
        if self._due(s.num_inputs_between_checkpoints, self.progress.last_checkpoint_inputs):
            return True
        every = s.checkpoint_every_seconds
        return bool(every) and time.monotonic() - self._last_checkpoint_time >= every

    # --------------------------------------------------------------------- before training
    def check_data(self) -> None:
        """Check the model's values are finite and run two training items through the model
        and the loss once, before anything is written, so empty datasets, shape mismatches
        and losses that cannot take the model's output fail fast with a clear error."""
        not_finite = [name for name, value in self.model.state_dict().items()
                      if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if not_finite:
            raise InrlabError(
                f"the model holds NaN or infinite values before training, in "
                f"{', '.join(not_finite[:3])}{' ...' if len(not_finite) > 3 else ''}; e.g. a "
                "forward pass in training mode on torch.empty (uninitialised memory) while "
                "building it updates BatchNorm's running statistics: probe shapes in eval "
                "mode on torch.zeros", key="model")
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
            for start, dataset in self.batches.train_sets:
                key = f"train_set{start or ''}"
                batch = self.batches.to_device(default_collate(first_items(dataset, 2, key)))
                self.model.eval()
                with torch.no_grad(), autocast(self.precision, self.device):
                    self.train_step(batch)
        except InrlabError:
            raise
        except Exception as e:  # noqa: BLE001 - a model that cannot take the data
            raise InrlabError(f"the first training batch fails in the model: "
                              f"{type(e).__name__}: {e}", key="model") from e
        finally:
            self.loss_function = loss
            self.model.train()
        for start, dataset in self.batches.validation_sets:
            first_items(dataset, 1, f"validation_set{start or ''}")
        self._check_optimizer_step(batch)

    def _check_optimizer_step(self, batch: tuple[torch.Tensor, ...]) -> None:
        """One real optimizer step on a copy of the model (the random generators restored
        after it), so an optimizer that cannot step this model -- SparseAdam wants sparse
        gradients -- is bad input before anything is written."""
        if self.compile_mode:  # a copy would share the compiled methods of the original
            return
        model, optimizer, scheduler = self.model, self.optimizer, self.scheduler
        name = self.settings.optimizer
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            try:
                self.model = copy.deepcopy(model)
                self.optimizer = make_optimizer(self.settings, self.model, self.device)
                self.scheduler = None
                self.step(batch)
            except InrlabError:
                raise
            except Exception as e:  # noqa: BLE001 - the optimizer named in the file
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                if "sparse" in reason.lower():
                    reason += ("; it needs sparse gradients, and inrlab's models produce "
                               "dense ones: use Adam, AdamW, SGD or another dense optimizer")
                raise InrlabError(f"optimizer '{name}' cannot take a step on this model: "
                                  f"{type(e).__name__}: {reason}", key="optimizer") from None
            finally:
                self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def budget_spent_by(self, result: dict[str, Any]) -> bool:
        """Whether a run whose ``result.json`` reads ``result`` has nothing left to train
        under these settings (a larger ``max_inputs`` or ``max_epoch`` leaves some)."""
        best = result.get("best_validation_loss")
        progress = Progress(num_inputs=int(result.get("num_inputs") or 0),
                            epoch=int(result.get("epoch") or 0),
                            best_validation_loss=float(best) if best is not None else None)
        return finished(self.settings, progress)

    # ------------------------------------------------------------------ validation & logs
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses over the validation set, model in eval mode (weighted per image), always
        with ``loss_function`` (also during a loss warm-up)."""
        self.model.eval()
        training_loss, self.loss_function = self.loss_function, self.main_loss
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in self.batches.validation(self.progress.epoch):
            with autocast(self.precision, self.device):
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
        improved = math.isfinite(loss) and (p.best_validation_loss is None
                                            or loss < p.best_validation_loss)
        now = time.monotonic()
        if not self._plain_output or improved or now - self._last_validation_line >= LINE_EVERY_S:
            print(f"validation @ {p.num_inputs:,}: " + ", ".join(f"{k} {v:.6g}"
                                                               for k, v in means.items()))
            self._last_validation_line = self._last_line = now
        self.log.write("validation", p.num_inputs, {**means, "time_s": p.training_time,
                                                    "epoch": p.epoch})
        if math.isfinite(loss) and (p.best_validation_loss is None
                                    or loss < p.best_validation_loss):
            p.best_validation_loss = loss
            self.save(best=True)
        check_stuck(self.settings, p, means, self.log)
        self.write_images()
        self._write_result("running")
        return means

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
        check_finite(means["loss"], p.num_inputs)
        p.train = means
        values = {**means, "learnrate": self.optimizer.param_groups[0]["lr"],
                  "inputs_per_s": p.num_inputs / p.training_time if p.training_time else 0.0,
                  "time_s": p.training_time, "epoch": p.epoch}
        self.log.write("train", p.num_inputs, values)
        if bar is not None:
            bar.set_postfix(loss=f"{means['loss']:.5f}", epoch=p.epoch, refresh=False)

    def _print_training_line(self) -> None:
        """One line of where training is, for output that is not a terminal."""
        p = self.progress
        rate = p.num_inputs / p.training_time if p.training_time else 0.0
        loss = (p.train or {}).get("loss")
        total = f" of {self.settings.max_inputs:,}" if self.settings.max_inputs else ""
        print(f"training @ {p.num_inputs:,}{total} inputs: {rate:,.0f} images/s"
              + (f", loss {loss:.6g}" if loss is not None else ""), flush=True)
        self._last_line = time.monotonic()

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        total = self.settings.max_inputs
        initial = min(self.progress.num_inputs, total) if total else self.progress.num_inputs
        # disable=None: no bar when the output is not a terminal (logs stay readable).
        return tqdm(total=total, initial=initial, unit="img", unit_scale=True,
                    dynamic_ncols=True, leave=False, disable=None)

    # ------------------------------------------------------------- checkpoints & results
    def state(self) -> dict[str, Any]:
        return training_state(self.model, self.optimizer, self.scheduler, self.progress,
                              self.info)

    def save(self, best: bool) -> None:
        if self._last_loss is not None:  # a diverged step is never saved over a good one
            check_finite(float(self._last_loss), self.progress.num_inputs, "loss")
        self.progress.last_checkpoint_inputs = self.progress.num_inputs
        save_checkpoint(self.run_dir.best if best else self.run_dir.last, self.state())
        self._last_checkpoint_time = time.monotonic()

    def compute_summary(self) -> str:
        """How this run computes and why: precision, compile, memory format."""
        compiled = f"compiled ({self.compile_mode})" if self.compile_mode else "eager"
        line = (f"precision {self.precision} ({self.precision_reason}); {compiled} "
                f"({self.compile_reason})")
        return line + (f"; {self.memory_format}" if self.memory_format else "")

    def _resume(self) -> bool:
        progress = resume(self.run_dir, self.model, self.optimizer, self.scheduler)
        if progress is not None:
            self.progress = progress
        return progress is not None

    def result(self, status: str) -> dict[str, Any]:
        return result_record(status, self.progress, self.settings, self.model, self.info,
                             self.device, self.precision, self.compile_mode)

    def _write_result(self, status: str) -> None:
        self.run_dir.write_result(self.result(status))


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
