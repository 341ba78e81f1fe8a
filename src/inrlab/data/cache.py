"""Local files for datasets: a cache directory and downloads that never leave partial files."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Sequence

from inrlab.errors import DataError


def cache_dir() -> Path:
    """``$INRLAB_CACHE_DIR``, default ``~/.cache/inrlab``."""
    return Path(os.environ.get("INRLAB_CACHE_DIR", "~/.cache/inrlab")).expanduser()


def fetch(url: str, target: Path, timeout: float = 60.0, looked: Sequence[Path] = (),
          ways: Sequence[str] = ()) -> Path:
    """Return ``target``, downloading ``url`` to it first when it does not exist yet.

    ``url`` may be http(s), ``file://`` or a local path (then it is used in place). When the
    download fails, the error names the file, every place looked (``looked``, then
    ``target``) and each way to provide it (``ways``, then the cache folder and its
    variable); folders made for the download are removed again.
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
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                shutil.copyfileobj(response, tmp)
        os.replace(tmp.name, target)
    except OSError as e:
        for folder in made:  # innermost first: only the empty folders this call made
            with contextlib.suppress(OSError):
                folder.rmdir()
        places = ", ".join(str(p) for p in (*looked, target))
        options = [*ways, f"put the file at {target} (the cache folder: $INRLAB_CACHE_DIR, "
                          f"default ~/.cache/inrlab)"]
        raise DataError(f"{target.name} is needed and could not be downloaded from {url} "
                        f"({getattr(e, 'reason', None) or e}); looked in {places}. To provide "
                        f"it: {'; or '.join(options)}") from None
    return target
