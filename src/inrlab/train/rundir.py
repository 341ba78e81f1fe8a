"""The run directory ``<runs-dir>/<experiment_name>/`` and its ``result.json``.

Layout: ``config.yaml`` (resolved experiment + matrix entry), ``checkpoint-last.pt``,
``checkpoint-best.pt``, ``metrics.jsonl``, ``tensorboard/``, ``images/``, ``result.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from inrlab.errors import InrlabError
from inrlab.train.checkpoint import atomic_write_json

STATUSES = ("running", "complete", "diverged", "failed")
CHECKPOINTS = ("best", "last")  # which weights of a run to load (RunDir.weights)


def default_runs_dir() -> Path:
    """``$INRLAB_RUNS_DIR``, default ``runs``."""
    return Path(os.environ.get("INRLAB_RUNS_DIR", "runs"))


def check_experiment_name(name: Any) -> str:
    """A relative path without ``..``: run directories never escape the runs directory."""
    if not isinstance(name, str) or not name.strip():
        raise InrlabError("experiment_name must be a non-empty string")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "~")) or ".." in parts or not parts:
        raise InrlabError(f"experiment_name '{name}' must be a relative path inside the runs "
                          "directory (no leading '/', '~' or '..')")
    return name


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def for_experiment(cls, runs_dir: Path, experiment_name: str) -> "RunDir":
        return cls(Path(runs_dir) / check_experiment_name(experiment_name))

    config = property(lambda self: self.path / "config.yaml")
    last = property(lambda self: self.path / "checkpoint-last.pt")
    best = property(lambda self: self.path / "checkpoint-best.pt")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    result_file = property(lambda self: self.path / "result.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    images = property(lambda self: self.path / "images")

    def weights(self, checkpoint: str = "best") -> tuple[Path, ...]:
        """The checkpoint files to load ``checkpoint``'s weights from, in order: the best
        then the last ones for "best", the last ones only for "last"."""
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
        return (self.last,) if checkpoint == "last" else (self.best, self.last)

    def read_result(self) -> dict[str, Any] | None:
        """``result.json`` as a dict, or None when missing or unreadable."""
        try:
            data = json.loads(self.result_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.result_file, result)

    def is_complete(self) -> bool:
        result = self.read_result()
        return bool(result and result.get("status") == "complete")

    def remove(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
