"""Crash-safe file writes: to a temporary file beside the target, fsynced, then renamed over
it, so a reader (or a run killed mid-write) sees the old file or the new one, never half."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


FULL_DISK = 64 * 2**20  # free bytes below which a failed write is put down to a full disk


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a full disk as a RuntimeError of its zip writer: say what it is.
        if isinstance(e, RuntimeError) and shutil.disk_usage(path.parent).free < FULL_DISK:
            raise OSError(errno.ENOSPC, "No space left on device (writing "
                          f"{path.name}: {e})", str(path)) from e
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=str).encode()
    atomic_write_bytes(path, lambda f: f.write(text + b"\n"))
