"""Crash-safe checkpoints: written to a temporary file, fsynced, then renamed into place,
and read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inrlab.storage.atomic import atomic_write_bytes

FORMAT = "inrlab-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint; raises ``ValueError`` when the file is unreadable or not ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many kinds
        raise ValueError(f"unreadable checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an inrlab checkpoint")
    return state
