"""What ``inrlab evaluate`` scores: trained runs, named by their directory, their experiment
name in the runs directory, or an experiment file (each entry that has a run), or model
files (``inrlab export``); and the images they are scored on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from inrlab.data import first_images, plain_images, set_channels
from inrlab.data.images import read_image_file
from inrlab.errors import InrlabError
from inrlab.experiment.build import build_entry
from inrlab.experiment.trained import is_model_file, open_trained
from inrlab.experiment.spec import RunSpec, load_experiment
from inrlab.report.baselines import TRAIN_IMAGES
from inrlab.storage.rundir import RunDir, is_run

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass
class Target:
    """A trained run or model file: its model (eval mode, best weights, else last), and
    lazily the run's own validation and training images (a model file has none: ``spec``
    and ``run_dir`` are None)."""

    name: str
    run_dir: RunDir | None
    spec: RunSpec | None
    model: torch.nn.Module
    checkpoint: Path
    _datasets: tuple | None = None

    def _sets(self) -> tuple:
        if self.spec is None:
            raise InrlabError(f"{self.checkpoint} is a model file, which holds no images to "
                              "score it on: give them with --images DIR", key="--images",
                              path=self.checkpoint)
        if self._datasets is None:
            built = build_entry(self.spec, with_data=True)
            self._datasets = (built.train_sets, built.validation_sets)
        return self._datasets

    def validation_images(self, limit: int) -> torch.Tensor:
        """The first ``limit`` images of the run's validation set (its training set when it
        has none), (n, C, H, W)."""
        train_sets, validation_sets = self._sets()
        return first_images((validation_sets or train_sets)[0][1], limit)

    def train_images(self, limit: int = TRAIN_IMAGES) -> torch.Tensor | None:
        """The first ``limit`` training images, without augmentation where the dataset can
        give them so (``plain_images``); None for a model file."""
        if self.spec is None:
            return None
        return plain_images(self._sets()[0][0][1], limit)


def find_runs(target: Path, runs_dir: Path, checkpoint: str,
              note: Callable[[str], None]) -> list[tuple[RunDir | Path, str]]:
    """(run directory, name) of every run ``target`` names; (path, "") for a model file.
    An experiment file's entries whose runs hold no ``checkpoint`` yet (the first one is
    still training) are left out, each with a ``note``; a run named alone is not checked
    here (loading it says what it lacks)."""
    if target.is_file() and is_model_file(target):
        return [(target, "")]
    if target.is_dir():
        if not is_run(target):
            raise InrlabError(f"{target} is a directory but no inrlab run (no config.yaml, "
                              "result.json or checkpoint)", path=target)
        return [(RunDir(target), "")]  # named by its experiment_name once loaded
    if target.is_file():
        runs, waiting = [], []
        for spec in load_experiment(target):
            run_dir = RunDir.for_experiment(runs_dir, spec.experiment_name)
            if not run_dir.path.is_dir():
                continue
            if any(path.exists() for path in run_dir.weights(checkpoint)):
                runs.append((run_dir, spec.experiment_name))
            else:
                waiting.append(spec.experiment_name)
        for name in waiting:
            note(f"{name}: no {checkpoint} checkpoint yet (still training?): left out")
        if waiting and not runs:
            raise InrlabError(f"no run of {target} in {runs_dir} has a {checkpoint} "
                              "checkpoint yet", path=target)
        if not runs:
            raise InrlabError(f"no entry of {target} has a run in {runs_dir} yet (run it with "
                              f"'inrlab run {target}', or name another runs directory with "
                              "--runs-dir)", path=target)
        return runs
    named = runs_dir / target
    if named.is_dir():
        return find_runs(named, runs_dir, checkpoint, note)
    raise InrlabError(f"{target} is neither a run directory, an experiment file nor an "
                      f"experiment name in the runs directory {runs_dir}", path=target)


def load_target(run_dir: RunDir | Path, name: str = "", checkpoint: str = "best") -> Target:
    """The run rebuilt from its ``config.yaml`` with its weights, or a model file from its
    spec; ``name`` defaults to the run's ``experiment_name`` (the model file's name)."""
    trained = open_trained(run_dir.path if isinstance(run_dir, RunDir) else run_dir,
                           checkpoint)
    if trained.spec is None:
        return Target(name or str(run_dir), None, None, trained.model, trained.source)
    return Target(name or trained.name, trained.run_dir, trained.spec, trained.model,
                  trained.source)


def image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise InrlabError(f"--images {directory} {what}", key="--images", path=directory)
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InrlabError(f"--images {directory} holds no image files "
                          f"({', '.join(IMAGE_SUFFIXES)})", key="--images", path=directory)
    return files


def read_images(files: list[Path], channels: int,
                progress: Callable[[str], None] = print) -> list[torch.Tensor]:
    """The files as (C, H, W) floats in [0, 1] in ``channels`` channels, any sizes."""
    progress(f"reading {len(files)} image{'s' if len(files) != 1 else ''}")
    return [set_channels(read_image_file(path).float() / 255, channels) for path in files]
