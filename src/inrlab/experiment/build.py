"""Evaluating a ``RunSpec``: globals, model, datasets, trainer class and its settings."""

from __future__ import annotations

import importlib
import inspect
import random
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from inrlab.errors import InrlabError
from inrlab.experiment.namespace import snippet_namespace
from inrlab.experiment.snippets import evaluate
from inrlab.experiment.spec import RunSpec
from inrlab.models.registry import MODELS
from inrlab.train import TRAINERS, Trainer
from inrlab.train.settings import MAX_SEED, TrainSettings, make_settings, settings_keys

STRUCTURAL_KEYS = ("experiment_name", "trainer", "globals", "model", "train_set",
                   "validation_set", "load", "matrix", "$extends", "description", "device")
NUMBERED_SET = re.compile(r"^(train_set|validation_set)(\d+)$")


@dataclass
class BuiltEntry:
    model: nn.Module
    trainer_class: type[Trainer]
    settings: TrainSettings | None = None
    trainer_options: dict[str, Any] = field(default_factory=dict)
    train_sets: list[tuple[int, Dataset]] = field(default_factory=list)
    validation_sets: list[tuple[int, Dataset]] = field(default_factory=list)


def run_snippet(spec: RunSpec, key: str, namespace: dict[str, Any]) -> Any:
    """Evaluate the value of ``key`` (a dotted key reaches into a mapping, e.g. globals.X)."""
    value: Any = spec.values
    for part in key.split("."):
        value = value[part]
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


def build_model(spec: RunSpec, namespace: dict[str, Any]) -> nn.Module:
    value = spec.values.get("model")
    if value in (None, ""):
        raise spec.error("model", "the required key 'model' is missing")
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
    return model


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


def trainer_option_names(cls: type[Trainer]) -> list[str]:
    """Keyword-only options that a Trainer subclass adds (e.g. feature_loss_weight); the
    Trainer's own arguments (model, datasets, run directory...) are the runner's to give."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is Trainer or not issubclass(klass, Trainer) or "__init__" not in vars(klass):
            continue
        for parameter in inspect.signature(klass.__init__).parameters.values():
            if parameter.kind is parameter.KEYWORD_ONLY and parameter.name not in names:
                names.append(parameter.name)
    return names


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
    options = trainer_option_names(cls)
    values: dict[str, Any] = {}
    for key, value in spec.values.items():
        if key in STRUCTURAL_KEYS or NUMBERED_SET.match(key):
            continue
        if key not in known_settings and key not in options:
            raise spec.error(key, f"unknown key '{key}'; known keys: "
                             f"{', '.join(sorted({*STRUCTURAL_KEYS, *known_settings, *options}))}")
        if isinstance(value, str) and "\n" in value.strip():
            value = run_snippet(spec, key, namespace)
        if key in options:
            built.trainer_options[key] = value
        else:
            values[key] = value
    values.update(overrides or {})
    built.settings = make_settings(values, spec.where)
    return built
