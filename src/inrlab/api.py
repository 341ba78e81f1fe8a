"""inrlab from Python (a notebook, a script): run experiment files, train a model on datasets
without any YAML, and load a run directory back (model, result, metrics).

Everything here goes through the same code as the CLI: ``run`` is ``inrlab run``, ``fit``
builds the same trainer and run directory from plain values, ``load_run`` is what ``inrlab
render`` and ``inrlab report`` use. Bad input raises ``InrlabError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from inrlab.errors import InrlabError
from inrlab.storage.rundir import RunDir, default_runs_dir


@dataclass
class Run:
    """A run directory read back: its ``config.yaml`` values, ``result.json`` and metrics.

    ``model`` is the trained model in eval mode with the best weights (the last ones when no
    best checkpoint exists), rebuilt from ``config.yaml`` on first use.
    """

    path: Path
    config: dict[str, Any]
    result: dict[str, Any] | None
    _model: nn.Module | None = field(default=None, repr=False)

    @property
    def status(self) -> str | None:
        """``running``, ``complete``, ``diverged``, ``failed``; None before the first write."""
        return (self.result or {}).get("status")

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            from inrlab.experiment.trained import load_trained_model

            if not self.config.get("model"):
                raise InrlabError(
                    f"{self.path} was trained from Python with a model object, which its "
                    "config.yaml cannot rebuild; pass the same architecture: "
                    "inrlab.load_run(path, model=...)", path=self.path)
            self._model = load_trained_model(self.path)[1]
        return self._model

    def metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (``kind``: ``"train"`` or ``"validation"``)."""
        from inrlab.storage.metrics import read_metrics

        records = read_metrics(self.path / "metrics.jsonl")
        return [r for r in records if kind is None or r.get("kind") == kind]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, size: Sequence[int] | None = None,
                    refine_steps: int = 0, refine_learnrate: float = 0.01) -> torch.Tensor:
        """Encode ``images`` (B, C, H, W) in [0, 1] and decode them, at ``size`` (H, W) when
        given (an implicit decoder renders any size), else at the images' own size.
        ``refine_steps``: refine each image's code first (``inrlab.models.refine``,
        Adam at ``refine_learnrate``)."""
        from inrlab.models.refine import render_codes
        from inrlab.report.render import check_render_size

        model = self.model
        device = next(model.parameters()).device
        images = images.to(device)
        if size is None and not refine_steps:
            return model(images)  # (B, C, H, W)
        size = tuple(images.shape[-2:]) if size is None else tuple(size)
        check_render_size(images.shape[0], images.shape[1], size, key="size")
        return model.decode(render_codes(model, images, refine_steps, refine_learnrate),
                            size)  # (B, C, *size)


def load_run(path: str | Path, model: nn.Module | None = None) -> Run:
    """Read a run directory. ``model``: the architecture the run trained, for runs started
    by ``fit`` with a model object (its weights are loaded into it)."""
    from inrlab.experiment.trained import load_run_weights
    from inrlab.experiment.spec import load_run_spec

    run_dir = RunDir(Path(path))
    config = load_run_spec(run_dir.path).values  # config.yaml less its inrlab block
    run = Run(path=run_dir.path, config=config, result=run_dir.read_result())
    if model is not None:
        from inrlab.models.adapter import as_autoencoder

        model = as_autoencoder(model)
        load_run_weights(model, run_dir.path)
        run._model = model.eval()
    return run


def run(experiment: str | Path, *, runs_dir: str | Path | None = None,
        device: str | None = None, max_inputs: int | None = None,
        only: Sequence[str] | None = None, reset: bool = False, skip: bool = False,
        tensorboard: bool = True) -> list[Run]:
    """``inrlab run``: train every matrix entry of an experiment file (``only``: globs of
    ids, slugs or names) and return their runs in matrix order. ``device``: None takes the
    file's ``device`` key, else "auto" (CUDA when available)."""
    from inrlab.experiment.runner import RunOptions, run_entry
    from inrlab.experiment.spec import entries_to_run

    specs = entries_to_run(experiment, only)
    options = RunOptions(runs_dir=Path(runs_dir) if runs_dir else default_runs_dir(),
                         device=device, reset=reset, skip=skip, max_inputs=max_inputs,
                         tensorboard=tensorboard, quiet=True)
    for spec in specs:
        run_entry(spec, options)
    return [load_run(options.runs_dir / spec.experiment_name) for spec in specs]


def fit(model: nn.Module | dict[str, Any], train_set: Dataset,
        validation_set: Dataset | None = None, *, experiment_name: str,
        trainer: str = "TrainAutoencoder", runs_dir: str | Path | None = None,
        device: str = "auto", reset: bool = False, tensorboard: bool = True,
        **settings: Any) -> Run:
    """Train ``model`` on datasets built in Python, with the experiment-file keys as keyword
    arguments (``batch_size``, ``learnrate``, ``optimizer`` required; ``max_inputs``,
    ``scheduler``, ``loss_function``, ... and trainer options such as ``train_pixels`` or
    ``feature_loss_weight``). Writes the same run directory as ``inrlab run``: the values
    become a run spec that goes the way an experiment file's entry goes.

    ``model`` may be a ``{"name": ..., "args": {...}}`` spec of registered models; then the
    run's ``config.yaml`` can rebuild it and ``load_run(path).model`` needs no model.
    """
    from inrlab.experiment.runner import RunOptions, run_entry
    from inrlab.experiment.spec import python_spec

    if not isinstance(model, (nn.Module, dict)):
        raise InrlabError(f"model must be a torch nn.Module or a {{name, args}} spec, got "
                          f"{type(model).__name__}", key="model")
    spec = python_spec({"experiment_name": experiment_name, "trainer": trainer,
                        "model": model, "train_set": train_set,
                        "validation_set": validation_set, **settings})
    options = RunOptions(runs_dir=Path(runs_dir) if runs_dir else default_runs_dir(),
                         device=device, reset=reset, tensorboard=tensorboard, quiet=True)
    run_entry(spec, options)
    path = RunDir.for_experiment(options.runs_dir, spec.experiment_name).path
    return load_run(path, None if isinstance(model, dict) else model)
