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
from inrlab.storage.rundir import RunDir, check_experiment_name, default_runs_dir


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
            from inrlab.experiment.runner import load_trained_model

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
        ``refine_steps``: refine each image's code first (``EncoderDecoder.refine_codes``,
        Adam at ``refine_learnrate``)."""
        from inrlab.report.figures import render_code

        model = self.model
        device = next(model.parameters()).device
        images = images.to(device)
        if size is None and not refine_steps:
            return model(images)  # (B, C, H, W)
        size = tuple(images.shape[-2:]) if size is None else tuple(size)
        return model.decode(render_code(model, images, refine_steps, refine_learnrate),
                            size)  # (B, C, *size)


def load_run(path: str | Path, model: nn.Module | None = None) -> Run:
    """Read a run directory. ``model``: the architecture the run trained, for runs started
    by ``fit`` with a model object (its weights are loaded into it)."""
    from inrlab.experiment.runner import load_run_weights
    from inrlab.experiment.spec import load_run_spec

    run_dir = RunDir(Path(path))
    config = load_run_spec(run_dir.path).values  # config.yaml less its inrlab block
    run = Run(path=run_dir.path, config=config, result=run_dir.read_result())
    if model is not None:
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
    ``scheduler``, ``loss_function``, ... and trainer options such as
    ``feature_loss_weight``). Writes the same run directory as ``inrlab run``.

    ``model`` may be a ``{"name": ..., "args": {...}}`` spec of registered models; then the
    run's ``config.yaml`` can rebuild it and ``load_run(path).model`` needs no model.
    """
    from inrlab.experiment.build import trainer_option_names
    from inrlab.experiment.runner import RunOptions, fit_run, print_parameters
    from inrlab.models.registry import MODELS
    from inrlab.train import TRAINERS
    from inrlab.train.settings import make_settings, settings_keys

    if trainer not in TRAINERS:
        raise InrlabError(f"unknown trainer '{trainer}'; use one of {', '.join(TRAINERS)}",
                          key="trainer")
    cls = TRAINERS[trainer]
    module = MODELS.build(model) if isinstance(model, dict) else model
    if not isinstance(module, nn.Module):
        raise InrlabError(f"model must be a torch nn.Module or a {{name, args}} spec, got "
                          f"{type(model).__name__}", key="model")
    options_names = trainer_option_names(cls)
    trainer_options = {k: v for k, v in settings.items() if k in options_names}
    values = {k: v for k, v in settings.items() if k not in options_names}
    known = set(settings_keys())
    unknown = sorted(set(values) - known)
    if unknown:
        raise InrlabError(f"unknown settings {unknown}; known: {', '.join(sorted(known))}, "
                          f"{', '.join(options_names)}", key=unknown[0])
    run_settings = make_settings(values, lambda key: {"key": key})
    name = check_experiment_name(experiment_name)
    run_dir = RunDir.for_experiment(Path(runs_dir) if runs_dir else default_runs_dir(), name)
    print_parameters(module)
    instance = cls(model=module, train_sets=[(0, train_set)],
                   validation_sets=[(0, validation_set)] if validation_set is not None else [],
                   settings=run_settings, run_dir=run_dir, device=device,
                   info={"experiment_name": name, "matrix_entry": {}, "matrix_id": "1",
                         "matrix_slug": "", "source": "python"},
                   tensorboard=tensorboard, **trainer_options)
    config = _yaml_plain({"experiment_name": name, "trainer": trainer,
                          "model": model if isinstance(model, dict) else None,
                          **values, **trainer_options,
                          "inrlab": {"source": "python", "model_class": type(module).__name__}})
    options = RunOptions(runs_dir=run_dir.path.parent, device=device, reset=reset,
                         tensorboard=tensorboard)
    fit_run(instance, config, options)
    return load_run(run_dir.path, None if isinstance(model, dict) else module)


def _yaml_plain(value: Any) -> Any:
    """``value`` with tuples as lists, so the YAML safe dumper writes it."""
    if isinstance(value, dict):
        return {k: _yaml_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_plain(v) for v in value]
    return value
