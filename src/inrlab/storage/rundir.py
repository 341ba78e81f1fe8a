"""The run directory ``<runs-dir>/<experiment_name>/`` and its ``result.json``.

Layout: ``config.yaml`` (resolved experiment + matrix entry), ``checkpoint-last.pt``,
``checkpoint-best.pt``, ``metrics.jsonl``, ``tensorboard/``, ``images/``, ``result.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from filelock import FileLock, Timeout

from inrlab.errors import InrlabError
from inrlab.storage.atomic import atomic_write_bytes, atomic_write_json

STATUSES = ("running", "complete", "diverged", "failed")
LOCK, LOCK_HOLDER = ".lock", ".lock-holder.json"  # RunDir.lock's files, kept by remove()
CHECKPOINTS = ("best", "last")  # which weights of a run to load (RunDir.weights)


def default_runs_dir() -> Path:
    """``$INRLAB_RUNS_DIR``, default ``runs``."""
    return Path(os.environ.get("INRLAB_RUNS_DIR", "runs"))


MAX_NAME_BYTES = 255  # the longest folder name ext4, XFS, APFS and NTFS take


def check_experiment_name(name: Any) -> str:
    """A relative path without ``..``: run directories never escape the runs directory."""
    if not isinstance(name, str) or not name.strip():
        raise InrlabError("experiment_name must be a non-empty string")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "~")) or ".." in parts or not parts:
        raise InrlabError(f"experiment_name '{name}' must be a relative path inside the runs "
                          "directory (no leading '/', '~' or '..')")
    if any(ord(c) < 32 for c in name):
        raise InrlabError(f"experiment_name {name!r} holds a control character (NUL, newline, "
                          "...), which file systems refuse in a folder name")
    long = next((part for part in parts if len(part.encode()) > MAX_NAME_BYTES), None)
    if long is not None:
        raise InrlabError(f"experiment_name has a part of {len(long.encode())} bytes "
                          f"('{long[:40]}...'); file systems take at most {MAX_NAME_BYTES} "
                          "bytes per folder name (a long matrix value makes a long slug: "
                          "name the run with ${matrix_id} instead)")
    return name


# Files that only a run directory holds: a directory with one of them is a run.
RUN_MARKERS = ("config.yaml", "result.json", "metrics.jsonl", "checkpoint-last.pt",
               "checkpoint-best.pt")


def is_run(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in RUN_MARKERS)


@dataclass(frozen=True)
class RunDir:
    path: Path
    root: Path | None = None  # the runs directory, when known (for_experiment)

    @classmethod
    def for_experiment(cls, runs_dir: Path, experiment_name: str) -> "RunDir":
        return cls(Path(runs_dir) / check_experiment_name(experiment_name), Path(runs_dir))

    def check_place(self) -> None:
        """Bad input when this run would lie inside another run, or would hold one (its
        ``--reset`` would delete that run), or when its path is a file."""
        where = {"key": "experiment_name"}
        if self.path.exists() and not self.path.is_dir():
            raise InrlabError(f"{self.path} is a file, not a run directory; choose another "
                              "experiment_name", **where)
        if self.root is not None:
            for parent in self.path.parents:
                if parent == self.root or self.root not in parent.parents:
                    break
                if is_run(parent):
                    raise InrlabError(f"{self.path} would lie inside the run {parent}; choose "
                                      "an experiment_name that is no run's subfolder", **where)
        if self.path.is_dir():  # one walk of the folder for every marker
            inner = next((p.parent for p in self.path.rglob("*")
                          if p.name in RUN_MARKERS and p.parent != self.path
                          and p.is_file()), None)
            if inner is not None:
                raise InrlabError(f"{self.path} holds the run {inner}: a run there would "
                                      "mix with it (and --reset would delete it); choose "
                                      "another experiment_name", **where)

    config = property(lambda self: self.path / "config.yaml")
    last = property(lambda self: self.path / "checkpoint-last.pt")
    best = property(lambda self: self.path / "checkpoint-best.pt")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    result_file = property(lambda self: self.path / "result.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    images = property(lambda self: self.path / "images")
    evaluation = property(lambda self: self.path / "evaluation.json")  # inrlab evaluate's rows

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
        """Delete the run's files, all but its lock (held by whoever removes them)."""
        if not self.path.exists():
            return
        for child in self.path.iterdir():
            if child.name in (LOCK, LOCK_HOLDER):
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    def snapshot(self) -> dict[Path, bytes | tuple[int, int]]:
        """The run's files as they are: the bytes of each, but (size, mtime) of checkpoints,
        which nothing rewrites until training has taken a step. For ``restore``."""
        files: dict[Path, bytes | tuple[int, int]] = {}
        for path in sorted(self.path.rglob("*")) if self.path.is_dir() else []:
            if path.is_file() and path.name not in (LOCK, LOCK_HOLDER):
                stat = path.stat()
                files[path] = ((stat.st_size, stat.st_mtime_ns) if path.suffix == ".pt"
                               else path.read_bytes())
        return files

    def restore(self, snapshot: dict[Path, bytes | tuple[int, int]]) -> bool:
        """Put the run back as ``snapshot`` found it, unless a checkpoint changed since (then
        training took steps worth keeping: False). Files that appeared are deleted."""
        now = self.snapshot()
        if any(now.get(path) != before for path, before in snapshot.items()
               if isinstance(before, tuple)):
            return False
        for path in now.keys() - snapshot.keys():
            path.unlink(missing_ok=True)
        for path, before in snapshot.items():
            if isinstance(before, bytes) and now.get(path) != before:
                atomic_write_bytes(path, lambda f, data=before: f.write(data))
        return True

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files of writes that were killed midway (``atomic_write_*``
        names them ``.<file>.<random>.tmp``); call it holding the lock. Returns them."""
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file()] if self.path.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock while training it: a second process (``inrlab run``, a Ray task,
        ``inrlab.fit``) that tries is bad input naming the holder. The lock is the operating
        system's (``filelock``), so a killed holder leaves none; its holder file tells the
        next one whose lock it takes over."""
        self.path.mkdir(parents=True, exist_ok=True)
        holder_file = self.path / LOCK_HOLDER
        lock = FileLock(self.path / LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise InrlabError(f"the run {self.path} is being trained by {_read_holder(holder_file)}"
                              "; wait for it to end, or stop it (Ctrl-C) and run again",
                              path=self.path) from None
        try:
            if holder_file.exists():
                print(f"warning: taking over the lock of {_read_holder(holder_file)}, which "
                      "ended without releasing it (killed?)")
            me = {"pid": os.getpid(), "host": socket.gethostname()}
            atomic_write_json(holder_file, me)
            yield
        finally:
            holder_file.unlink(missing_ok=True)
            lock.release()
            if [child.name for child in self.path.iterdir()] == [LOCK]:  # nothing was written
                (self.path / LOCK).unlink(missing_ok=True)
                self.path.rmdir()


def _read_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"process {holder['pid']} on {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"

