"""Output paths checked before any work, so a run or a render never fails at its end."""

from __future__ import annotations

import os
from pathlib import Path

from inrlab.errors import InrlabError


def check_output_directory(path: Path, flag: str) -> None:
    """Bad input unless ``path`` is a directory that can be written, or can be made: a file
    at ``path`` or above it, or a read-only folder above it, is named with ``flag``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InrlabError(f"{flag} {path} is a file; it needs a directory", key=flag, path=path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise InrlabError(f"{flag} {path} lies under {existing}, which is a file", key=flag,
                          path=path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InrlabError(f"{flag} {path}: {existing} is not writable", key=flag, path=path)


def check_output_file(path: Path, flag: str) -> None:
    """Bad input unless a file can be written at ``path``: not a directory, its folder
    writable or makeable (``check_output_directory``)."""
    path = Path(path)
    if path.is_dir():
        raise InrlabError(f"{flag} {path} is a directory; it needs a file name", key=flag,
                          path=path)
    check_output_directory(path.parent, flag)


def check_runs_dir(path: Path, write: bool = False) -> None:
    """Bad input when the runs directory is a file (or, to ``write`` runs, cannot be made
    or written)."""
    if write:
        check_output_directory(path, "--runs-dir")
    elif Path(path).exists() and not Path(path).is_dir():
        raise InrlabError(f"--runs-dir {path} is a file, not a directory of runs",
                          key="--runs-dir", path=path)
