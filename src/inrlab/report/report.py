"""``inrlab report``: loss curves, reproduction sheets, the results table and one static
HTML page, for the runs of an experiment file or a list of run directories."""

from __future__ import annotations

import base64
import html
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from inrlab.data import first_images
from inrlab.errors import InrlabError
from inrlab.experiment.build import build_entry
from inrlab.experiment.matrix import MatrixEntry
from inrlab.experiment.trained import load_run_weights
from inrlab.experiment.spec import RunSpec, load_experiment, load_run_spec
from inrlab.models.refine import refine_codes
from inrlab.report.baselines import compare_with_baselines, image_psnr
from inrlab.report.figures import (curves_from_metrics, plot_losses, reproduction_columns,
                                   reproduction_sheet)
from inrlab.report.results import format_table, result_row, warnings_text
from inrlab.storage.metrics import read_metrics
from inrlab.storage.rundir import RunDir
from inrlab.train.settings import TrainSettings

NUM_REPRODUCTIONS = 8  # the first validation images, the same for every run of a file


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class ReportRun:
    run_dir: RunDir
    entry: MatrixEntry
    experiment_name: str
    spec: RunSpec | None  # None when the run has no readable config.yaml
    result: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    label: str = ""
    reproductions: Path | None = None
    baselines: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def collect_runs(targets: Sequence[Path], runs_dir: Path) -> list[ReportRun]:
    """Runs of experiment files (every matrix entry that has a run directory) and run
    directories given directly. Entries without a run yet are skipped with a warning."""
    runs: list[ReportRun] = []
    for target in targets:
        target = Path(target)
        if target.is_dir():
            runs.append(_run_from_directory(target))
        elif target.is_file():
            for spec in load_experiment(target):
                run_dir = RunDir.for_experiment(runs_dir, spec.experiment_name)
                if not run_dir.path.is_dir():
                    warn(f"'{spec.experiment_name}' has no run in {runs_dir} yet; "
                                  "left out of the report")
                    continue
                runs.append(ReportRun(run_dir, spec.entry, spec.experiment_name, spec,
                                      _usable_result(run_dir, spec.entry),
                                      read_metrics(run_dir.metrics)))
        else:
            raise InrlabError(f"{target} is neither an experiment file nor a run directory",
                              path=target)
    if not runs:
        raise InrlabError("nothing to report: none of the given entries has a run directory "
                          f"(looked in {runs_dir}; use --runs-dir)")
    for run, label in zip(runs, short_labels(runs)):
        run.label = label
    return runs


def _run_from_directory(path: Path) -> ReportRun:
    run_dir = RunDir(path)
    result = run_dir.read_result()
    if result is None and not run_dir.metrics.exists() and not run_dir.config.exists():
        raise InrlabError(f"{path} is not an inrlab run directory (no result.json, "
                          "metrics.jsonl or config.yaml)", path=path)
    spec = None
    notes = []
    try:
        spec = load_run_spec(path)
        entry, name = spec.entry, spec.experiment_name
    except InrlabError as e:
        notes.append(f"config.yaml unusable ({e}); no reproductions")
        known = result or {}
        entry = MatrixEntry(dict(known.get("matrix_entry") or {}),
                            str(known.get("matrix_slug") or ""),
                            str(known.get("matrix_id") or "1"))
        name = str(known.get("experiment_name") or path.name)
    return ReportRun(run_dir, entry, name, spec, _usable_result(run_dir, entry),
                     read_metrics(run_dir.metrics), notes=notes)


def _usable_result(run_dir: RunDir, entry: MatrixEntry) -> dict[str, Any] | None:
    """``result.json``, or None (with one warning, from ``result_row``) when it is damaged:
    the rest of the report goes on without it."""
    result = run_dir.read_result()
    if result is not None and result_row(entry, run_dir) is None:
        return None
    return result


def short_labels(runs: Sequence[ReportRun]) -> list[str]:
    """Legend labels: only the matrix values that differ between the runs (else names)."""
    keys = list(dict.fromkeys(k for run in runs for k in run.entry.params))
    differing = [k for k in keys
                 if len({repr(run.entry.params.get(k)) for run in runs}) > 1]
    labels = [", ".join(f"{k}={run.entry.params.get(k)}" for k in differing)
              for run in runs]
    if len(set(labels)) < len(labels) or not all(labels):
        labels = [run.experiment_name for run in runs]
    return labels


def write_reproductions(run: ReportRun, path: Path, count: int = NUM_REPRODUCTIONS,
                        refinement: tuple[int, float] = (0, 0.01)) -> bool:
    """The run's reproduction sheet from its best (else last) checkpoint, and its PSNR next
    to the mean-colour and PCA baselines on the same validation images (``run.baselines``);
    with ``refinement`` (Adam steps, learning rate; ``refine_codes``) also the reproductions
    from each image's refined code and their PSNR. False (with a note) when the run cannot
    be rebuilt or has no readable checkpoint."""
    if run.spec is None:
        return False
    try:
        built = build_entry(run.spec, with_data=True)
        load_run_weights(built.model, run.run_dir.path)
        model = built.model.eval()
        shown = (built.validation_sets or built.train_sets)[0][1]
        pca = None
        if model.has_code:
            run.baselines, pca, images = compare_with_baselines(model, built.train_sets[0][1],
                                                                shown)
        else:
            images = first_images(shown, count)
        refined = None
        steps, learnrate = refinement
        if steps and model.refinable:  # (a refinable model has a code)
            codes = torch.cat([refine_codes(model, part, steps, learnrate)
                               for part in images.split(64)])  # (N, *code_shape)
            with torch.no_grad():
                output = model.decode(codes, tuple(images.shape[-2:]))
            run.baselines.update({"refined psnr": image_psnr(output, images),
                                  "refine steps": steps, "refine learnrate": learnrate})
            refined = (f"refined, {steps} steps", output[:count])
        elif steps:
            run.notes.append(f"{model.class_name} has no separate encoder and bottleneck: "
                             "no refined reproductions")
        reproduction_sheet(reproduction_columns(model, images[:count], pca=pca,
                                                refined=refined), path)
    except (InrlabError, ValueError, RuntimeError, OSError) as e:
        run.notes.append(f"no reproductions: {e}")
        warn(f"{run.experiment_name}: no reproductions: {e}")
        return False
    run.reproductions = path
    return True


def write_report(runs: Sequence[ReportRun], out_dir: Path, title: str,
                 refinement: tuple[int, float] = (0, 0.01)) -> dict[str, Path]:
    """Write loss.png, runs/<name>/reproductions.png, results.md and report.html;
    ``refinement`` as ``write_reproductions``'."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if not run.metrics:
            run.notes.append("no metrics.jsonl records; no curves")
            warn(f"{run.run_dir.path} has no metrics; its curves are left out")
    loss = out_dir / "loss.png"
    print(f"report: curves of {len(runs)} run{'s' if len(runs) != 1 else ''}", file=sys.stderr,
          flush=True)
    plot_losses([curves_from_metrics(run.label, run.metrics, loss_function_of(run))
                 for run in runs], loss)
    for index, run in enumerate(runs, 1):
        print(f"report: reproductions and baselines of {run.experiment_name} ({index} of "
              f"{len(runs)})", file=sys.stderr, flush=True)
        write_reproductions(run, out_dir / "runs" / run.experiment_name / "reproductions.png",
                            refinement=refinement)
    rows = [{"run": run.label, **row} for run in runs if run.result is not None
            and (row := result_row(run.entry, run.run_dir)) is not None]
    results = out_dir / "results.md"
    results.write_text(f"# {title}\n\n{format_table(rows)}\n")
    page = out_dir / "report.html"
    page.write_text(render_html(runs, rows, loss, title))
    return {"loss": loss, "results": results, "html": page}


def loss_function_of(run: ReportRun) -> str:
    """The loss function a run trained with (the settings' default when its file has none),
    or '?' when its config.yaml is unusable."""
    if run.spec is None:
        return "?"
    return str(run.spec.values.get("loss_function") or TrainSettings.loss_function)


def best_psnr_rows(runs: Sequence[ReportRun]) -> list[dict[str, Any]]:
    """One row per run with validation PSNR records, best first: the best PSNR, where it was
    reached, the SSIM there, the run's matrix values, size, throughput and warnings."""
    rows = []
    for run in runs:
        records = [r for r in run.metrics if r.get("kind") == "validation"
                   and isinstance(r.get("psnr"), (int, float))]
        if not records:
            continue
        best = max(records, key=lambda r: r["psnr"])
        result = run.result or {}
        rows.append({
            "run": run.label, "best validation psnr (dB)": round(float(best["psnr"]), 3),
            "at inputs": best.get("inputs"),
            "ssim there": round(float(best["ssim"]), 4)
            if isinstance(best.get("ssim"), (int, float)) else None,
            "PCA psnr, same code size (dB)": _rounded(run.baselines.get("pca psnr")),
            "mean colour psnr (dB)": _rounded(run.baselines.get("mean colour psnr")),
            "loss": loss_function_of(run),
            **{str(k): v if isinstance(v, (int, float, str)) or v is None else str(v)
               for k, v in run.entry.params.items()},
            "model params": (result.get("parameters") or {}).get("trainable"),
            "throughput (images/s)": result.get("throughput"),
            "warnings": warnings_text(result.get("warnings") or []) or None,
        })
    return sorted(rows, key=lambda row: -row["best validation psnr (dB)"])


def _rounded(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def baseline_text(baselines: dict[str, Any]) -> str:
    """One sentence: the model's PSNR against its baselines on the same images."""
    if not baselines:
        return ""
    text = (f"On the first {baselines['images']} validation images: model "
            f"{baselines['model psnr']:.2f} dB, each image's mean colour "
            f"{baselines['mean colour psnr']:.2f} dB")
    if baselines.get("pca psnr") is not None:
        text += (f", PCA with {baselines['pca components']} components (the code has "
                 f"{baselines['code floats']} floats; fit on the training images) "
                 f"{baselines['pca psnr']:.2f} dB")
    if baselines.get("refined psnr") is not None:
        text += (f"; each code refined for {baselines['refine steps']} Adam steps at "
                 f"{baselines['refine learnrate']:g} on its image: "
                 f"{baselines['refined psnr']:.2f} dB")
    return text + "."


# ------------------------------------------------------------------------------- HTML
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
img { max-width: 100%; image-rendering: pixelated; }
.table { max-width: 100%; overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td.text { text-align: left; overflow-wrap: anywhere; min-width: 6em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #a05000; }
section { border-top: 1px solid #ddd; margin-top: 2em; }
"""


def _embedded(path: Path) -> str:
    """A PNG as a data URI: the page stays one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(no results yet)</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            text = "" if value is None else (f"{value:.6g}" if isinstance(value, float)
                                             else str(value))
            kind = "" if isinstance(value, (int, float)) else ' class="text"'
            cells.append(f"<td{kind}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # Wide tables scroll inside their box instead of overflowing the page.
    return f'<div class="table"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _run_section(run: ReportRun) -> str:
    result = run.result or {}
    parameters = result.get("parameters") or {}
    facts = {
        "status": result.get("status"),
        "inputs": result.get("num_inputs"),
        "training time (s)": result.get("training_time_s"),
        "throughput (images/s)": result.get("throughput"),
        "device": result.get("device"),
        **{f"parameters: {k}": v for k, v in parameters.items() if v is not None},
    }
    parts = [f"<section><h2>{html.escape(run.label)}</h2>",
             f"<p><code>{html.escape(str(run.run_dir.path))}</code></p>",
             _table([{k: v for k, v in facts.items() if v is not None}])]
    warnings = [(w.get("message", "") + (f"; left it at {w['until']:,} inputs"
                                         if isinstance(w.get("until"), int) else ""))
                if isinstance(w, dict) else str(w) for w in result.get("warnings") or []]
    parts += [f'<p class="note">warning: {html.escape(text)}</p>' for text in warnings]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in run.notes]
    if run.baselines:
        parts.append(f"<p>{html.escape(baseline_text(run.baselines))}</p>")
    if run.reproductions is not None:
        parts.append(f'<img alt="reproductions of {html.escape(run.label)}" '
                     f'src="{_embedded(run.reproductions)}">')
    parts += _evaluation_section(run.run_dir)
    if run.run_dir.config.is_file():
        parts.append("<details><summary>config.yaml</summary><pre>"
                     f"{html.escape(run.run_dir.config.read_text())}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def _evaluation_section(run_dir: RunDir) -> list[str]:
    """The run's saved ``inrlab evaluate`` rows (``RUN_DIR/evaluation.json``) as a table."""
    from inrlab.evaluate.output import COLUMNS, cell, read_saved

    rows = read_saved(run_dir)
    if not rows:
        return []
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    shown = [{c: cell(row.get(c), c) for c in columns} for row in rows]
    return ["<h3>Evaluation</h3>",
            f"<p>saved by <code>inrlab evaluate</code> on {rows[0].get('images')} images "
            "(PSNR pooled over their pixels; bytes and ms per image)</p>", _table(shown)]


def render_html(runs: Sequence[ReportRun], rows: Sequence[dict[str, Any]], loss: Path,
                title: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(runs)} run{'s' if len(runs) != 1 else ''}, written {stamp}</p>",
        "<h2>Best validation PSNR</h2>", _table(best_psnr_rows(runs)),
        "<h2>Curves</h2>",
        f'<img alt="loss and validation metrics by inputs and by time" src="{_embedded(loss)}">',
        "<h2>Results</h2>", _table(rows),
        *[_run_section(run) for run in runs],
        "</body></html>",
    ])
