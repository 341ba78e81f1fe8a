"""Local files for datasets: a cache directory and downloads that never leave partial files."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from inrlab.errors import DataError


def cache_dir() -> Path:
    """``$INRLAB_CACHE_DIR``, default ``~/.cache/inrlab``."""
    return Path(os.environ.get("INRLAB_CACHE_DIR", "~/.cache/inrlab")).expanduser()


def fetch(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Return ``target``, downloading ``url`` to it first when it does not exist yet.

    ``url`` may be http(s), ``file://`` or a local path (then it is used in place).
    """
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" not in url:
        local = Path(url).expanduser()
        if not local.is_file():
            raise DataError("file not found", path=local)
        return local
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                shutil.copyfileobj(response, tmp)
        os.replace(tmp.name, target)
    except OSError as e:
        raise DataError(f"cannot download {url} ({e}) and there is no cached copy at {target}; "
                        "download it by hand or point the config at a local file") from None
    return target
