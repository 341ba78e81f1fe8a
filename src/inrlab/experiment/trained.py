"""Trained models: read back from a run directory or a model file, and exported from one to
the other.

A run whose ``model`` is a ``{name, args}`` spec is rebuilt from the registry alone; a run
whose model came from a Python snippet runs that snippet again (the seed system's way, and
the only way for such a run). A model file (``inrlab export``) is always rebuilt from its
spec: no snippet, no pickle, no ``eval``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

import inrlab
from inrlab.errors import InrlabError
from inrlab.experiment.spec import RunSpec, load_run_spec
from inrlab.models.adapter import as_autoencoder
from inrlab.models.contract import Autoencoder
from inrlab.models.registry import MODELS, model_spec
from inrlab.storage.checkpoint import load_checkpoint
from inrlab.storage.model_file import SUFFIX, read_model_file, write_model_file
from inrlab.storage.rundir import RunDir


@dataclass
class Trained:
    """A trained model in eval mode, with where it came from: a run directory (``spec``)
    or a model file (``spec`` None)."""

    name: str
    model: Autoencoder
    source: Path  # the checkpoint or model file the weights came from
    spec: RunSpec | None = None

    @property
    def run_dir(self) -> RunDir | None:
        return None if self.spec is None else RunDir(self.spec.path.parent)


def is_model_file(path: Path) -> bool:
    return Path(path).suffix == SUFFIX


def read_run_checkpoint(run_path: str | Path, checkpoint: str = "best",
                        model: nn.Module | None = None) -> tuple[dict[str, Any], Path]:
    """(checkpoint state, file) of a run directory's best checkpoint (its last one when the
    best is missing, unreadable or, given ``model``, does not load into it), or with
    ``checkpoint="last"`` the last one only; ``model`` gets its weights."""
    errors = []
    for path in RunDir(Path(run_path)).weights(checkpoint):
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
            if model is not None:
                model.load_state_dict(state["model"])
        except (ValueError, RuntimeError) as e:
            errors.append(str(e))
            continue
        return state, path
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise InrlabError(f"no readable checkpoint in {run_path}{detail}", path=Path(run_path))


def load_run_weights(model: nn.Module, run_path: str | Path,
                     checkpoint: str = "best") -> Path:
    """Load a run directory's best weights into ``model`` (its last ones when the best are
    missing or unreadable), or with ``checkpoint="last"`` the last ones only; returns the
    checkpoint used."""
    return read_run_checkpoint(run_path, checkpoint, model)[1]


def build_from_spec(spec: Any, path: Path | None = None, key: str = "model") -> Autoencoder:
    """The model a ``{name, args}`` spec names, from the registry alone; bad input (naming
    ``path`` and ``key``) for a name outside it or an argument its class does not take."""
    try:
        return as_autoencoder(MODELS.build(spec))
    except InrlabError as e:
        raise e.located(path=path, key=key) from None
    except (TypeError, ValueError) as e:
        raise InrlabError(f"cannot build the model: {e}", path=path, key=key) from None


def run_model(spec: RunSpec) -> Autoencoder:
    """The untrained model of a run directory's ``config.yaml``: from its spec when it has
    one, else by running its snippets."""
    from inrlab.experiment.build import build_entry

    value = spec.values.get("model")
    if isinstance(value, Mapping):
        try:
            return build_from_spec(value, spec.path)
        except InrlabError as e:
            raise e.located(**spec.where("model")) from None
    return build_entry(spec, with_data=False).model


def load_trained_model(run_path: str | Path,
                       checkpoint: str = "best") -> tuple[RunSpec, Autoencoder, Path]:
    """(spec, model in eval mode, checkpoint used) of a run directory: the model rebuilt from
    its ``config.yaml`` with the best weights (the last ones when no best exists), or with
    ``checkpoint="last"`` the weights it ended with."""
    spec = load_run_spec(run_path)
    model = run_model(spec)
    used = load_run_weights(model, run_path, checkpoint)
    return spec, model.eval(), used


def read_model(path: str | Path) -> tuple[Autoencoder, dict[str, Any]]:
    """(model in eval mode, metadata) of a model file, rebuilt from its spec alone."""
    path = Path(path)
    state, info = read_model_file(path)
    model = build_from_spec(info["spec"], path, key="spec")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InrlabError(f"its weights do not fit the model its spec builds: {e}", path=path,
                          key="spec") from None
    return model.eval(), info


def load_model(path: str | Path, checkpoint: str = "best") -> Autoencoder:
    """A trained model in eval mode from a model file (``inrlab export``) or from a run
    directory whose model is a ``{name, args}`` spec, rebuilt from the registry alone."""
    path = Path(path)
    if path.is_dir():
        spec = load_run_spec(path)
        if not isinstance(spec.values.get("model"), Mapping):
            raise InrlabError(f"the model of {path} came from a Python snippet, which only "
                              "running that code can rebuild; inrlab.load_run(path).model does "
                              "so (trust the run first), and a run whose experiment file "
                              "writes 'model:' as a {name, args} spec loads without it",
                              path=path, key="model")
        return load_trained_model(path, checkpoint)[1]
    return read_model(path)[0]


def open_trained(path: Path, checkpoint: str = "best") -> Trained:
    """A run directory or a model file, for ``render`` and ``evaluate``."""
    if is_model_file(path) and not path.is_dir():
        model, info = read_model(path)
        name = (info.get("provenance") or {}).get("experiment_name") or path.stem
        return Trained(str(name), model, path)
    spec, model, used = load_trained_model(path, checkpoint)
    return Trained(spec.experiment_name, model, used, spec=spec)


def export_run(run_path: str | Path, output: Path | None = None,
               checkpoint: str = "best") -> Path:
    """Write the run's best weights (its last ones when no best exists) with its spec and
    provenance to one model file, by default ``RUN_DIR/model.safetensors``; returns it."""
    from inrlab.storage.paths import check_output_file

    run_path = Path(run_path)
    spec = load_run_spec(run_path)
    if not isinstance(spec.values.get("model"), Mapping):
        raise InrlabError(
            "its model came from a Python snippet, which a model file cannot hold (it keeps "
            "a {name, args} spec of registered models, so no code runs when it loads); write "
            "the experiment file's 'model:' as such a spec (docs/api.md lists the names and "
            "their arguments, e.g. {name: EncoderDecoder, args: {encoder: ..., decoder: "
            "...}}), train it with 'inrlab run', then export that run",
            path=run_path / "config.yaml",
            key="model")
    output = Path(output) if output is not None else run_path / f"model{SUFFIX}"
    if output.suffix != SUFFIX:
        raise InrlabError(f"-o {output}: a model file's name ends in {SUFFIX}", key="-o",
                          path=output)
    check_output_file(output, "-o")
    model = run_model(spec)
    state, used = read_run_checkpoint(run_path, checkpoint, model)
    resolved = model_spec(model)
    if resolved is None:
        raise InrlabError("the model's spec holds values no file can store (Python objects)",
                          path=run_path / "config.yaml", key="model")
    meta = load_run_meta(run_path)
    source = meta.get("source")
    progress = state.get("progress") or {}
    provenance = {
        "experiment_name": spec.experiment_name,
        "experiment_file": source,
        "experiment_sha256": meta.get("source_sha256"),
        "matrix_entry": meta.get("matrix_entry") or {},
        "num_inputs": progress.get("num_inputs"),
        "validation_psnr": (progress.get("validation") or {}).get("psnr"),
        "checkpoint": used.name,
    }
    try:
        shape: tuple | None = model.input_shape
    except ValueError:  # a wrapped module does not say which images it takes
        shape = None
    write_model_file(output, model.state_dict(), {
        "spec": resolved, "input_shape": list(shape) if shape is not None else None,
        "inrlab_version": inrlab.__version__, "provenance": provenance})
    return output


def load_run_meta(run_path: Path) -> dict[str, Any]:
    """The ``inrlab`` block of a run's ``config.yaml`` (source file, matrix entry, spec)."""
    from inrlab.experiment.files import load_document
    from inrlab.experiment.spec import RUN_META_KEY

    values = load_document(Path(run_path) / "config.yaml", {}).values
    meta = values.get(RUN_META_KEY)
    return dict(meta) if isinstance(meta, Mapping) else {}

