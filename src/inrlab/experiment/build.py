"""Evaluating a ``RunSpec``: globals, model, datasets, trainer class, its settings and
options, the trainer itself and the run's ``config.yaml`` -- for experiment files and for
``inrlab.fit`` alike (whose spec holds Python objects where a file holds snippets)."""

from __future__ import annotations

import hashlib
import importlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from inrlab.errors import InrlabError
from inrlab.experiment.namespace import snippet_namespace
from inrlab.experiment.snippets import evaluate
from inrlab.experiment.spec import RunSpec
from inrlab.models.adapter import as_autoencoder
from inrlab.models.contract import Autoencoder
from inrlab.models.registry import MODELS, model_spec
from inrlab.storage.rundir import RunDir
from inrlab.train import TRAINERS, Trainer
from inrlab.train.device import resolve_device
from inrlab.train.settings import MAX_SEED, TrainSettings, make_settings, settings_keys

STRUCTURAL_KEYS = ("experiment_name", "trainer", "globals", "model", "train_set",
                   "validation_set", "load", "matrix", "$extends", "description", "device")
NUMBERED_SET = re.compile(r"^(train_set|validation_set)(\d+)$")


@dataclass
class BuiltEntry:
    model: Autoencoder
    trainer_class: type[Trainer]
    settings: TrainSettings | None = None
    options: Any = None  # the trainer's own keys (``Trainer.options_class``)
    train_sets: list[tuple[int, Dataset]] = field(default_factory=list)
    validation_sets: list[tuple[int, Dataset]] = field(default_factory=list)


def run_snippet(spec: RunSpec, key: str, namespace: dict[str, Any]) -> Any:
    """Evaluate the value of ``key`` (a dotted key reaches into a mapping, e.g. globals.X)."""
    value: Any = spec.values
    for part in key.split("."):
        value = value[part]
    if not isinstance(value, str):  # a value given in Python (inrlab.fit): taken as it is
        return value
    origin = spec.document.origins.get(key)
    return evaluate(value, dict(namespace), path=origin.path if origin else spec.path,
                    first_line=origin.code_line if origin else 1, key=key)


def build_namespace(spec: RunSpec) -> dict[str, Any]:
    """The snippet namespace plus this entry's ``globals``, evaluated in order."""
    namespace = snippet_namespace()
    values = spec.values.get("globals") or {}
    if not isinstance(values, dict):
        raise spec.error("globals", "globals must be a mapping of NAME: value or code")
    for name in values:
        if not str(name).isidentifier():
            raise spec.error(f"globals.{name}" if f"globals.{name}" in spec.document.origins
                             else "globals", f"global name '{name}' is not a Python name")
        namespace[str(name)] = run_snippet(spec, f"globals.{name}", namespace)
    return namespace


def build_model(spec: RunSpec, namespace: dict[str, Any]) -> Autoencoder:
    """The entry's model: from its ``{name, args}`` spec, its snippet or (``inrlab.fit``) the
    object given; a module that is no ``Autoencoder`` is wrapped (``as_autoencoder``)."""
    value = spec.values.get("model")
    if value in (None, ""):
        raise spec.error("model", "the required key 'model' is missing")
    if isinstance(value, nn.Module):  # given in Python
        return as_autoencoder(value)
    if isinstance(value, dict):
        try:
            model = MODELS.build(value)
        except InrlabError as e:
            raise e.located(**spec.where("model")) from None
        except (TypeError, ValueError) as e:
            raise spec.error("model", f"cannot build the model: {e}") from None
    else:
        model = run_snippet(spec, "model", namespace)
    if not isinstance(model, nn.Module):
        raise spec.error("model", f"the model snippet must give a torch nn.Module, got "
                         f"{type(model).__name__}")
    return as_autoencoder(model)


def _check_dataset(spec: RunSpec, key: str, dataset: Any) -> Dataset:
    if isinstance(dataset, IterableDataset):
        return dataset
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise spec.error(key, f"{key} must give a Dataset (indexable with a length) or an "
                         f"IterableDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise spec.error(key, f"{key} is empty")
    return dataset


def build_datasets(spec: RunSpec, namespace: dict[str, Any]
                   ) -> tuple[list[tuple[int, Dataset]], list[tuple[int, Dataset]]]:
    """(start epoch, dataset) pairs: ``train_set`` from epoch 0, ``train_set5`` from 5, ..."""
    train: list[tuple[int, Dataset]] = []
    validation: list[tuple[int, Dataset]] = []
    if spec.values.get("train_set") in (None, ""):
        raise spec.error("train_set", "the required key 'train_set' is missing")
    for key in spec.values:
        match = NUMBERED_SET.match(key)
        if key in ("train_set", "validation_set") or match:
            base = match.group(1) if match else key
            start = int(match.group(2)) if match else 0
            if spec.values[key] is None:
                continue
            dataset = _check_dataset(spec, key, run_snippet(spec, key, namespace))
            (train if base == "train_set" else validation).append((start, dataset))
    return train, validation


def trainer_class(spec: RunSpec, namespace: dict[str, Any]) -> type[Trainer]:
    name = spec.values.get("trainer") or "Trainer"
    if not isinstance(name, str):
        raise spec.error("trainer", "trainer must be a class name or a dotted import path")
    if name in TRAINERS:
        cls: Any = TRAINERS[name]
    elif "." in name:
        module_name, _, attribute = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as e:
            raise spec.error("trainer", f"cannot import trainer '{name}': {e}") from None
    else:
        cls = namespace.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise spec.error("trainer", f"unknown trainer '{name}'; use one of "
                         f"{', '.join(TRAINERS)} or a dotted path to a subclass of "
                         "inrlab.train.Trainer")
    return cls


def seed_everything(seed: Any) -> None:
    """Seed torch, numpy and random (a seed that is no integer in [0, 2**63) is reported by
    the settings check later; the generators then get 0)."""
    valid = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED
    value = seed if valid else 0
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def build_entry(spec: RunSpec, *, with_data: bool = True,
                overrides: dict[str, Any] | None = None) -> BuiltEntry:
    """Evaluate everything a run needs. ``with_data=False`` builds the model only (show).

    The random generators (torch, numpy, random) are seeded with the entry's ``seed``
    first, so the model's initial weights are the same in every process.
    """
    seed_everything(spec.values.get("seed", 0))
    namespace = build_namespace(spec)
    cls = trainer_class(spec, namespace)
    model = build_model(spec, namespace)
    built = BuiltEntry(model=model, trainer_class=cls)
    if not with_data:
        return built
    built.train_sets, built.validation_sets = build_datasets(spec, namespace)
    known_settings = set(settings_keys())
    options = settings_keys(cls.options_class)
    values: dict[str, Any] = {}
    option_values: dict[str, Any] = {}
    for key, value in spec.values.items():
        if key in STRUCTURAL_KEYS or NUMBERED_SET.match(key):
            continue
        if key not in known_settings and key not in options:
            raise spec.error(key, f"unknown key '{key}'; known keys: "
                             f"{', '.join(sorted({*STRUCTURAL_KEYS, *known_settings, *options}))}")
        if isinstance(value, str) and "\n" in value.strip():
            value = run_snippet(spec, key, namespace)
        (option_values if key in options else values)[key] = value
    values.update(overrides or {})
    built.settings = make_settings(values, spec.where)
    built.options = make_settings(option_values, spec.where, cls.options_class)
    return built


def run_device(spec: RunSpec, device: str | None, default: str = "auto") -> torch.device:
    """``device`` (``--device``) when given, else the file's ``device`` key (the seed
    trainer's keyword), else ``default``."""
    if device is not None:
        return resolve_device(device)
    if spec.values.get("device") is None:
        return resolve_device(default)
    try:
        return resolve_device(str(spec.values["device"]))
    except InrlabError as e:
        raise e.located(**spec.where("device")) from None


def build_trainer(spec: RunSpec, built: BuiltEntry, run_dir: RunDir, device: torch.device,
                  tensorboard: bool = True) -> Trainer:
    """The entry's trainer, writing into ``run_dir``."""
    info = {"experiment_name": spec.experiment_name, "matrix_entry": spec.entry.params,
            "matrix_id": spec.entry.id, "matrix_slug": spec.entry.slug,
            "source": str(spec.path) if spec.path is not None else "python"}
    try:
        return built.trainer_class(
            model=built.model, train_sets=built.train_sets,
            validation_sets=built.validation_sets, settings=built.settings,
            run_dir=run_dir, device=device, info=info, tensorboard=tensorboard,
            options=built.options)
    except InrlabError as e:
        raise locate(e, spec) from None
    except (TypeError, ValueError) as e:
        raise InrlabError(f"cannot set up the trainer: {e}", path=spec.path,
                          key="trainer") from None


def locate(error: InrlabError, spec: RunSpec) -> InrlabError:
    """Point an error raised deep inside (which knows at most its key) at the file."""
    if error.path is None and error.key and error.key in spec.document.origins:
        return error.located(**spec.where(error.key))
    return error.located(path=spec.path)


def run_config(spec: RunSpec, model: nn.Module) -> dict[str, Any]:
    """The run's ``config.yaml``: the entry's values and where they came from, with the
    model's resolved ``{name, args}`` spec (``model_spec``: what its parent filled in
    written out; null for a snippet's model). Of values given in Python, objects (a model,
    datasets) are left out: ``model`` is kept only as a ``{name, args}`` spec, which is
    what lets ``inrlab.load_run`` rebuild it."""
    resolved = model_spec(model)
    if spec.path is None:
        values = {key: _yaml_plain(value) for key, value in spec.values.items()
                  if _is_plain(value)}
        values.setdefault("model", None)  # a model object: config.yaml cannot rebuild it
        return {**values, "inrlab": {"source": "python", "model_class": type(model).__name__,
                                     "model_spec": resolved}}
    return {**spec.values,
            "inrlab": {"source": str(spec.path), "source_sha256": _sha256(spec.path),
                       "matrix_id": spec.entry.id, "matrix_slug": spec.entry.slug,
                       "matrix_entry": spec.entry.params, "model_spec": resolved}}


def _sha256(path: Path) -> str | None:
    """The experiment file's SHA-256 as the run starts (the file alone, not its parents)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_is_plain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _yaml_plain(value: Any) -> Any:
    """``value`` with tuples as lists, so the YAML safe dumper writes it."""
    if isinstance(value, dict):
        return {k: _yaml_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_plain(v) for v in value]
    return value
