"""Metrics out of the trainer: ``metrics.jsonl`` (one JSON object per line) and TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a metrics file; a half-written or damaged line is skipped, and
    so are records whose ``inputs`` is not a number (every reader plots against it)."""
    records = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return records
    for line in lines:
        try:  # a damaged line (not UTF-8, not JSON) is skipped like a half-written one
            record = json.loads(line.decode())
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("inputs"), (int, float)) \
                and not isinstance(record.get("inputs"), bool):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and mirrors scalars and images to TensorBoard.

    On resume, records past the checkpoint's input count are dropped first, so curves
    never show the stretch that was trained after the last checkpoint and then lost.
    """

    def __init__(self, run_path: Path, resume_inputs: int | None, tensorboard: bool = True):
        self.path = run_path / "metrics.jsonl"
        run_path.mkdir(parents=True, exist_ok=True)
        if resume_inputs is None:
            self.path.unlink(missing_ok=True)
        else:
            kept = [r for r in read_metrics(self.path) if r.get("inputs", 0) <= resume_inputs]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = self.path.open("a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_path / "tensorboard"),
                                        purge_step=resume_inputs or None)

    def write(self, kind: str, inputs: int, values: dict[str, Any]) -> None:
        record = {"kind": kind, "inputs": inputs, **values}
        self.file.write(json.dumps(record, default=_plain) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and key not in ("time_s", "wall_time", "epoch"):
                    if math.isfinite(value):
                        self.writer.add_scalar(f"{kind}_{key}", value, inputs)

    def hparams(self, values: dict[str, Any], metrics: Sequence[str]) -> None:
        """TensorBoard HParams for this run: ``values`` (a matrix entry's values; text for
        what is no number, text or bool) and the scalar tags ``metrics`` it is compared by,
        so the HParams tab lays a matrix's runs side by side."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        plain = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                 for key, value in values.items()}
        for summary in hparams(plain, {tag: 0.0 for tag in metrics}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def image(self, tag: str, image: torch.Tensor, inputs: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, inputs)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, torch.Tensor) else str(value)
