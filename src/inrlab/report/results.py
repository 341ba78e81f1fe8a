"""The results table of an experiment file's runs (``inrlab results``)."""

from __future__ import annotations

import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from tabulate import tabulate

from inrlab.errors import InrlabError
from inrlab.storage.metrics import read_metrics
from inrlab.storage.rundir import RunDir


def result_rows(specs: Sequence[Any], runs_dir: Path,
                include: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per entry that has a ``result.json``: matrix values first, then figures."""
    rows = []
    for spec in specs:
        row = result_row(spec.entry, RunDir.for_experiment(runs_dir, spec.experiment_name),
                         include)
        if row is not None:
            rows.append(row)
    return rows


def _damaged(run_dir: RunDir, why: str) -> None:
    print(f"warning: skipping {run_dir.result_file}: {why}", file=sys.stderr)


def result_row(entry: Any, run_dir: RunDir, include: Sequence[str] = ()) -> dict[str, Any] | None:
    """The table row of one run directory (None without ``result.json``); ``entry`` is its
    ``MatrixEntry`` (params, slug, id)."""
    result = run_dir.read_result()
    if result is None:
        if run_dir.result_file.exists():
            _damaged(run_dir, "not a readable JSON object (truncated or damaged?)")
        return None
    try:
        return _row(entry, run_dir, result, include)
    except (TypeError, ValueError, AttributeError) as e:  # fields of the wrong types
        _damaged(run_dir, f"unexpected values ({type(e).__name__}: {e})")
        return None


def _row(entry: Any, run_dir: RunDir, result: dict[str, Any],
         include: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict(entry.params)
    if not entry.params:  # no matrix values to tell the runs apart: name the run
        row["experiment_name"] = result.get("experiment_name") or run_dir.path.name
    row["matrix_slug"] = entry.slug
    row["matrix_id"] = entry.id
    row["status"] = result.get("status")
    row["inputs"] = result.get("num_inputs")
    row["validation loss"] = result.get("validation_loss")
    row["best validation loss"] = result.get("best_validation_loss")
    if result.get("validation_mse") is not None:
        row["validation mse"] = result.get("validation_mse")
        row["validation psnr"] = result.get("validation_psnr")
    if result.get("validation_ssim") is not None:
        row["validation ssim"] = result.get("validation_ssim")
    code_bytes = (result.get("validation") or {}).get("code_bytes")
    if code_bytes is not None:  # an entropy-coded code's mean size
        row["validation code bytes"] = code_bytes
    row["model params"] = (result.get("parameters") or {}).get("trainable")
    seconds = result.get("training_time_s")
    row["train time (minutes)"] = round(seconds / 60, 2) if seconds else None
    row["throughput"] = result.get("throughput")
    if result.get("warnings"):
        row["warnings"] = warnings_text(result["warnings"])
    if include:
        last = _last_values(run_dir.metrics)
        for name in include:
            row[name] = last.get(name)
    return row


def warnings_text(warnings: Sequence[Any]) -> str:
    """``result.json`` warnings in a few words: ``stuck 0-540,000`` (inputs), ``stuck from
    12,000`` while it lasts."""
    parts = []
    for warning in warnings:
        if not isinstance(warning, dict):
            parts.append(str(warning))
            continue
        kind, start, until = warning.get("kind", "warning"), warning.get("inputs"), \
            warning.get("until")
        if isinstance(start, int) and isinstance(until, int):
            parts.append(f"{kind} {start:,}-{until:,}")
        elif isinstance(start, int):
            parts.append(f"{kind} from {start:,}")
        else:
            parts.append(str(kind))
    return "; ".join(parts)


def _last_values(path: Path) -> dict[str, Any]:
    """Last logged value of each metric, keyed ``<kind>_<name>`` (e.g. validation_mse)."""
    values: dict[str, Any] = {}
    for record in read_metrics(path):
        for key, value in record.items():
            if key not in ("kind", "inputs"):
                values[f"{record.get('kind')}_{key}"] = value
    return values


def average_rows(rows: list[dict[str, Any]], column: str,
                 spread: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Average rows that differ only in ``column`` (e.g. a trial or seed key). Numeric
    columns are averaged, others keep the group's first value; ``spread`` columns also get
    ``(min)``, ``(max)`` and ``(std)`` columns."""
    if rows and column not in rows[0]:
        raise InrlabError(f"cannot average over '{column}': it is not a matrix key")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = re.sub(rf"(^|_){re.escape(column)}:[^_]*", "", row["matrix_slug"])
        groups.setdefault(key, []).append(row)
    averaged = []
    for members in groups.values():
        out: dict[str, Any] = {"num trials": len(members)}
        for name in members[0]:
            if name in (column, "matrix_slug"):
                continue
            values = [m.get(name) for m in members]
            numbers = [v for v in values if _is_number(v)]
            if numbers and len(numbers) == len(values):
                out[name] = statistics.fmean(numbers)
                if name in spread:
                    out[f"{name} (min)"] = min(numbers)
                    out[f"{name} (max)"] = max(numbers)
                    out[f"{name} (std)"] = statistics.pstdev(numbers)
            else:
                out[name] = values[0]
        averaged.append(out)
    return averaged


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sort_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Sort by columns, the first being the primary key; ``-COL`` or ``COL-`` sorts
    descending. A name that is not a column matches the first column containing it."""
    names = list(rows[0]) if rows else []
    for spec in reversed(columns):
        descending = spec.startswith("-") or spec.endswith("-")
        wanted = spec.strip("-")
        column = wanted if wanted in names else next((n for n in names if wanted in n), None)
        if column is None:
            raise InrlabError(f"cannot sort by '{wanted}': columns are {', '.join(names)}")
        present = [r for r in rows if r.get(column) is not None]
        missing = [r for r in rows if r.get(column) is None]
        rows = sorted(present, key=lambda r: _sort_key(r[column]), reverse=descending) + missing
    return rows


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _is_number(value) else (1, str(value))


def format_table(rows: list[dict[str, Any]], exclude: Sequence[str] = ()) -> str:
    if not rows:
        return "(no results yet)"
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in exclude]
    table = [[_cell(row.get(c), c) for c in columns] for row in rows]
    return tabulate(table, headers=columns, tablefmt="github", disable_numparse=True,
                    colalign=["right" if _numeric_column(rows, c) else "left" for c in columns])


def _numeric_column(rows: list[dict[str, Any]], column: str) -> bool:
    return all(_is_number(r.get(column)) or r.get(column) is None for r in rows)


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if column == "model params" and _is_number(value):
        return f"{int(value):,}"
    if column == "throughput" and _is_number(value):
        return f"{value:,.0f}/s"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
