"""Shared fixtures: temporary experiment files, the CLI run in-process, local data paths."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from inrlab.cli import main

# Every Ray process the suite starts uses 127.0.0.1 (Ray reads this when first imported, so it
# is set before any test module imports Ray; inrlab sets it itself for the runtimes it starts).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no cloud metadata requests

ROOT = Path(__file__).resolve().parents[1]
RLTILES = ROOT.parent / "shared" / "datasets" / "rltiles" / "rltiles-2d.png"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a (dedented) file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``inrlab ...`` in-process with runs under tmp_path; returns (code, out, err)."""
    monkeypatch.setenv("INRLAB_RUNS_DIR", str(tmp_path / "runs"))

    def _cli(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _cli


@pytest.fixture
def rltiles() -> Path:
    if not RLTILES.is_file():
        pytest.skip(f"RLTiles sheet not found at {RLTILES}")
    return RLTILES


# A tiny trainable experiment: 8x8 kali patches, small conv encoder + manifold decoder.
TINY_EXPERIMENT = """
experiment_name: tiny/${matrix_slug}
trainer: TrainAutoencoderSpecial
globals:
  SHAPE: (3, 8, 8)
train_set: |
  kali_patch_dataset(SHAPE, num_images=64)
validation_set: |
  kali_patch_dataset(SHAPE, num_images=16, validation=True)
batch_size: 16
learnrate: 0.003
optimizer: Adam
scheduler: CosineAnnealingLR
max_inputs: 256
num_train_loss_steps: 32
model: |
  EncoderDecoder(
      EncoderConv2d(SHAPE, 6, channels=(4,)),
      ImageManifoldDecoder(6, 3, num_hidden=${hid}, num_blocks=1, default_shape=SHAPE[1:]),
  )
"""


@pytest.fixture
def tiny_experiment(write: Callable[..., Path]) -> Path:
    return write("tiny.yml", "matrix:\n  hid: [8, 12]\n" + textwrap.dedent(TINY_EXPERIMENT))
