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
