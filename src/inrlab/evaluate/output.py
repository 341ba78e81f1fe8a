"""An evaluation as a markdown table, JSON, and pictures: the rate-distortion plot (PSNR
against bits per pixel, a line per method) and the scales sheet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from inrlab.evaluate.evaluation import Evaluation
from inrlab.evaluate.rows import Row
from inrlab.report.figures import reproduction_sheet
from inrlab.storage.atomic import atomic_write_bytes, atomic_write_json
from inrlab.storage.rundir import RunDir

EVALUATION_FILE = "evaluation.json"  # in -o DIR (and RunDir.evaluation in each run)
COLUMNS = ("method", "scale", "psnr", "ssim", "bytes", "bpp", "encode_ms", "decode_ms",
           "macs_per_pixel", "parameters", "detail")


def rows_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [row.as_dict() for row in rows]


def cell(value: Any, column: str) -> str:
    """A row's value as the tables print it (PSNR to 0.01 dB, SSIM to 0.001, ...)."""
    if value is None:
        return ""
    if isinstance(value, float):
        digits = {"psnr": 2, "ssim": 3, "bytes": 1, "bpp": 3, "encode_ms": 2,
                  "decode_ms": 2, "scale": 3, "macs_per_pixel": 0}.get(column, 3)
        text = f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if column == "scale" else text
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "/")


def markdown(evaluation: Evaluation) -> str:
    """One table per target, the columns that have a value in it."""
    parts = []
    targets = list(dict.fromkeys(row.target for row in evaluation.rows))
    for target in targets:
        rows = evaluation.rows_of(target)
        columns = [c for c in COLUMNS if any(getattr(r, c) is not None for r in rows)]
        numeric = {c for c in columns if c not in ("method", "detail")}
        images = rows[0].images
        parts.append(f"## {target} ({images} image{'s' if images != 1 else ''})\n")
        parts.append("| " + " | ".join(columns) + " |")
        parts.append("|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|")
        for row in rows:
            parts.append("| " + " | ".join(cell(getattr(row, c), c) for c in columns) + " |")
        parts.append("")
    parts.append("PSNR pooled over the images' pixels (psnr_per_image in the JSON: the mean "
                 "of each image's); bytes and ms per image; bpp per pixel of the image "
                 "scored.")
    return "\n".join(parts) + "\n"


def plot_rate_distortion(evaluation: Evaluation, path: Path) -> bool:
    """PSNR against bits per pixel, a panel per target and a line per method; False when
    no row has bytes (no --bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not evaluation.curves:
        return False
    targets = list(dict.fromkeys(target for target, _ in evaluation.curves))
    figure, panels = plt.subplots(1, len(targets), figsize=(6.5 * len(targets), 4.5),
                                  squeeze=False)
    for axes, target in zip(panels[0], targets):
        for (owner, method), points in evaluation.curves.items():
            if owner != target:
                continue
            points = sorted((x, y) for x, y in points if x is not None)
            several = len(points) > 1
            axes.plot([x for x, _ in points], [y for _, y in points], "-o" if several else "*",
                      label=method, markersize=5 if several else 12)
        axes.set_xlabel("bits per pixel")
        axes.set_ylabel("PSNR (dB)")
        axes.set_title(target, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle("rate-distortion (codecs: each quality tried)", fontsize=11)
    figure.tight_layout()

    def write(stream: Any) -> None:
        figure.savefig(stream, format="png", dpi=110)

    atomic_write_bytes(path, write)
    plt.close(figure)
    return True


def write_outputs(evaluation: Evaluation, directory: Path) -> list[Path]:
    """``evaluation.json`` (the rows), ``evaluation.md``, ``rate_distortion.png`` (with
    --bytes) and ``scales.png`` (with --scales) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / EVALUATION_FILE, directory / "evaluation.md"]
    atomic_write_json(written[0], rows_json(evaluation.rows))
    text = markdown(evaluation).encode()
    atomic_write_bytes(written[1], lambda stream: stream.write(text))
    if plot_rate_distortion(evaluation, directory / "rate_distortion.png"):
        written.append(directory / "rate_distortion.png")
    if evaluation.pictures:
        reproduction_sheet(list(evaluation.pictures.items()), directory / "scales.png")
        written.append(directory / "scales.png")
    return written


def save_in_runs(evaluation: Evaluation, run_dirs: dict[str, RunDir | None]) -> list[Path]:
    """Each run's own rows into ``RUN_DIR/evaluation.json`` (replacing an earlier
    evaluation's), where ``inrlab report`` shows them; a model file (no run directory)
    keeps none."""
    written = []
    for target, run_dir in run_dirs.items():
        rows = evaluation.rows_of(target)
        if rows and run_dir is not None:
            atomic_write_json(run_dir.evaluation, rows_json(rows))
            written.append(run_dir.evaluation)
    return written


def read_saved(run_dir: RunDir) -> list[dict[str, Any]] | None:
    """A run's saved evaluation rows, or None (none saved, or unreadable)."""
    try:
        rows = json.loads(run_dir.evaluation.read_text())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, list) and all(isinstance(r, dict) for r in rows) else None
