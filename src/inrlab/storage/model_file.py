"""Model files: a trained model as one safetensors file (tensors plus a JSON header; no
pickle, no code), its ``{name, args}`` spec and provenance in the header's metadata.

Metadata keys (safetensors metadata values are strings; all but ``format`` hold JSON):
``format`` (``inrlab-model-1``), ``spec``, ``input_shape`` ((C, H, W), null for a size the
model takes as it comes), ``inrlab_version``, ``provenance`` (experiment name and file, the
file's SHA-256, inputs trained, validation PSNR, which checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from inrlab.errors import InrlabError
from inrlab.storage.atomic import atomic_write_bytes

FORMAT = "inrlab-model-1"
SUFFIX = ".safetensors"
JSON_KEYS = ("spec", "input_shape", "inrlab_version", "provenance")


def write_model_file(path: Path, state: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write ``state`` (a state dict) and ``info`` (``JSON_KEYS`` -> JSON values) to ``path``,
    atomically (a crash leaves the earlier file or none)."""
    from safetensors.torch import save

    missing = [key for key in JSON_KEYS if key not in info]
    if missing:
        raise ValueError(f"a model file needs {', '.join(missing)}")
    metadata = {"format": FORMAT, **{key: json.dumps(info[key]) for key in JSON_KEYS}}
    # safetensors stores each tensor's own bytes: no views into shared storage.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    atomic_write_bytes(path, lambda f: f.write(save(tensors, metadata=metadata)))


def read_model_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, info) of a model file; bad input for a file that is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InrlabError(f"{path} does not exist" if not path.exists()
                          else f"{path} is not a file", path=path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InrlabError(f"{path} is no readable safetensors file ({e})", path=path) from None
    if metadata.get("format") != FORMAT:
        raise InrlabError(f"{path} is a safetensors file but no inrlab model file (its "
                          f"metadata 'format' is {metadata.get('format')!r}, not {FORMAT!r}); "
                          "write one with 'inrlab export RUN'", path=path)
    info: dict[str, Any] = {}
    for key in JSON_KEYS:
        try:
            info[key] = json.loads(metadata[key])
        except (KeyError, json.JSONDecodeError) as e:
            raise InrlabError(f"{path}: the metadata key '{key}' is missing or no JSON ({e})",
                              path=path, key=key) from None
    return state, info
