"""``inrlab`` command line: run, show, results, report, render, export and evaluate."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from inrlab.errors import InrlabError
from inrlab.storage.paths import check_output_directory, check_runs_dir
from inrlab.storage.rundir import CHECKPOINTS, default_runs_dir

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_refinement(parser: argparse.ArgumentParser, steps_help: str) -> None:
    """``--refine-steps`` (what the command does with them: ``steps_help``) and
    ``--refine-learnrate``, the same flags in every command that refines codes."""
    parser.add_argument("--refine-steps", type=int, default=0, metavar="N", help=steps_help)
    parser.add_argument("--refine-learnrate", type=float, default=0.01, metavar="LR",
                        help="Adam learning rate of --refine-steps (default 0.01, for hundreds "
                             "of steps; for ~10, 0.05 scored 1 dB more on sprites)")


def _add_runs_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where run directories live (default: $INRLAB_RUNS_DIR or runs/)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inrlab", description="Implicit neural representation autoencoder experiments.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train every matrix entry of an experiment file")
    run.add_argument("file", type=Path)
    run.add_argument("--skip", action="store_true", help="skip entries that are complete")
    run.add_argument("--reset", action="store_true",
                     help="delete an entry's run directory and start over")
    run.add_argument("--device", default=None,
                     help="auto, cpu, cuda, cuda:N (default: the file's device key, else auto)")
    run.add_argument("--max-inputs", type=int, default=None,
                     help="override max_inputs (the budget in images) of every entry")
    run.add_argument("--only", nargs="+", default=None, metavar="ID_OR_SLUG_GLOB",
                     help="run only entries whose matrix_id, matrix_slug or experiment_name "
                          "matches one of these glob patterns")
    run.add_argument("--no-tensorboard", action="store_true",
                     help="do not write TensorBoard event files")
    run.add_argument("--early-stop", action="store_true",
                     help="successive halving across the matrix (ASHA): at rungs of grace, "
                          "grace x factor, ... inputs, entries outside the best 1/factor of "
                          "those that reached the rung stop there (status stopped)")
    run.add_argument("--early-stop-grace", type=int, default=None, metavar="INPUTS",
                     help="the first rung (default: a tenth of max_inputs)")
    run.add_argument("--early-stop-factor", type=float, default=None, metavar="FACTOR",
                     help="rung spacing and the fraction kept, 1/FACTOR (default 3)")
    run.add_argument("--no-early-stop", action="store_true",
                     help="train entries an --early-stop sweep stopped on to their budget")
    run.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="run the entries as Ray tasks: no ADDRESS starts a local Ray "
                          "runtime, 'auto' or 'ray://host:10001' joins a cluster")
    run.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="train N entries at once on this machine (a local Ray runtime)")
    run.add_argument("--cpus-per-run", type=float, default=1.0,
                     help="with --ray/--jobs: CPUs reserved per entry (default 1)")
    run.add_argument("--gpus-per-run", type=float, default=0.0,
                     help="with --ray/--jobs: GPUs per entry, fractions allowed (default 0)")
    run.add_argument("--max-retries", type=int, default=2,
                     help="with --ray/--jobs: retries of a failed or killed entry (default 2)")
    _add_runs_dir(run)

    show = commands.add_parser("show", help="list matrix entries and parameter counts")
    show.add_argument("file", type=Path)
    show.add_argument("--json", action="store_true", help="print a JSON list")
    show.add_argument("--no-build", action="store_true",
                      help="list entries without evaluating any snippet")
    show.add_argument("--only", nargs="+", default=None, metavar="ID_OR_SLUG_GLOB")

    results = commands.add_parser("results", help="table of the runs of an experiment file")
    results.add_argument("file", type=Path)
    results.add_argument("--sort", nargs="+", default=[], metavar="COL",
                         help="sort by these columns (first = primary); COL- (or --sort=-COL) "
                              "sorts descending")
    results.add_argument("--average-column", default=None, metavar="COL",
                         help="average runs that differ only in this matrix key")
    results.add_argument("--average-column-std", nargs="+", default=[], metavar="COL",
                         help="with --average-column: add (min), (max), (std) of these columns")
    results.add_argument("--include", nargs="+", default=[], metavar="COL",
                         help="add the last logged value of these metrics "
                              "(e.g. validation_mse, train_loss_reconstruction)")
    results.add_argument("--exclude", nargs="+", default=[], metavar="COL",
                         help="drop these columns")
    results.add_argument("--json", action="store_true", help="print the rows as JSON")
    _add_runs_dir(results)

    report = commands.add_parser(
        "report", help="loss curves, reproductions, results table and an HTML page")
    report.add_argument("targets", nargs="+", type=Path, metavar="FILE_OR_RUN_DIR",
                        help="experiment files (all their entries) and/or run directories")
    report.add_argument("-o", "--output", type=Path, default=None,
                        help="output directory (default: reports/<name of the first target>)")
    _add_refinement(report, "also reproductions from each image's code refined for N Adam "
                            "steps on its own reconstruction, and their PSNR (default 0)")
    _add_runs_dir(report)

    render = commands.add_parser(
        "render", help="encode images with a run's best checkpoint (or a model file) and "
                       "render them at any size")
    render.add_argument("run_dir", type=Path, metavar="RUN_OR_MODEL_FILE",
                        help="a run directory, an experiment name in the runs directory, or "
                             "a model file (.safetensors, from inrlab export)")
    render.add_argument("--input", nargs="+", type=Path, default=[], metavar="IMAGE")
    render.add_argument("--size", required=True,
                        help="H, HxW or a scale of each input's size: 64, 512x512, 2x")
    render.add_argument("--interpolate", nargs=2, type=Path, default=None, metavar=("A", "B"),
                        help="render the straight path between the codes of images A and B")
    render.add_argument("--steps", type=int, default=8,
                        help="images along the --interpolate path, ends included (default 8)")
    _add_refinement(render, "refine each image's code for N Adam steps on its own "
                            "reconstruction before rendering (default 0: the encoder's code)")
    render.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                        help="the run's best weights (default; else its last) or its last")
    render.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    render.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto (default): bf16 on a GPU when a probe of pixels comes out "
                             "the same to 8 bits as fp32, else fp32")
    render.add_argument("-o", "--output", type=Path, default=None,
                        help="a .png file (one output) or a directory (default: "
                             "RUN_DIR/renders, or renders/ beside a model file)")
    render.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="render up to N output pixels in one call (default 2**28; the "
                             "output must also fit in a quarter of the available memory)")
    _add_runs_dir(render)

    export = commands.add_parser(
        "export", help="write a run's model as one safetensors file anyone can load without "
                       "running code")
    export.add_argument("run_dir", type=Path, metavar="RUN",
                        help="a run directory or an experiment name in the runs directory")
    export.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="the .safetensors file to write (default: RUN_DIR/model.safetensors)")
    export.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                        help="the run's best weights (default; else its last) or its last")
    _add_runs_dir(export)

    evaluate = commands.add_parser(
        "evaluate", help="score runs against codecs at equal bytes and upscalers at scales")
    evaluate.add_argument("targets", nargs="+", type=Path, metavar="TARGET",
                          help="run directories, experiment names in the runs directory, "
                               "or experiment files (each entry that has a run)")
    evaluate.add_argument("--images", type=Path, default=None, metavar="DIR",
                          help="score on the images of DIR (default: each run's validation "
                               "set); with --scales they are the high-resolution truth")
    evaluate.add_argument("--bytes", action="store_true",
                          help="the code as stored against PCA, JPEG, WebP and AVIF at the "
                               "same bytes per image (the default when --scales is not given)")
    evaluate.add_argument("--scales", nargs="+", type=float, default=[], metavar="S",
                          help="render each image's S-times box-downscaled copy back at its "
                               "size, against bicubic and Lanczos of that input and of the "
                               "model's own decode")
    evaluate.add_argument("--budget", type=float, default=None, metavar="BYTES",
                          help="with --bytes: the bytes per image PCA and the codecs get "
                               "(default: as many as the model's code takes)")
    _add_refinement(evaluate, "also rows of each image's code refined for N Adam steps "
                              "(default 0)")
    evaluate.add_argument("--refine-rate-weight", type=float, default=None, metavar="W",
                          help="rate weight of the refinement of an entropy-coded code "
                               "(default: the model's rate_weight)")
    evaluate.add_argument("--max-images", type=int, default=None, metavar="N",
                          help="score the first N validation images (default 1000)")
    evaluate.add_argument("--avif-speed", type=int, default=None, metavar="0-10",
                          help="libavif's encoder speed (default 0, its smallest files; "
                               "6, Pillow's default, is ~10x faster and ~1 dB lower at "
                               "~100 bytes per 32x32 tile)")
    evaluate.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    evaluate.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                          help="also write evaluation.json, evaluation.md, "
                               "rate_distortion.png and scales.png into DIR")
    evaluate.add_argument("--no-save", action="store_true",
                          help="do not save each run's rows as RUN_DIR/evaluation.json (what "
                               "'inrlab report' shows)")
    evaluate.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                          help="the run's best weights (default; else its last) or its last")
    evaluate.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    _add_runs_dir(evaluate)
    return parser


def _print_entry_header(spec: Any) -> None:
    print(f"--- matrix experiment '{spec.experiment_name}' ---")
    width = max((len(k) for k in spec.entry.params), default=0)
    for key, value in spec.entry.params.items():
        print(f"{key:>{width}}: {value}")


def command_run(args: argparse.Namespace) -> int:
    from inrlab.experiment import RunOptions, run_entry
    from inrlab.experiment.spec import entries_to_run

    if args.max_inputs is not None and args.max_inputs < 1:
        raise InrlabError(f"--max-inputs must be at least 1, got {args.max_inputs}",
                          key="--max-inputs")
    specs = entries_to_run(args.file, args.only)
    rungs = _early_stop_rungs(args, specs)
    check_runs_dir(args.runs_dir or default_runs_dir(), write=True)
    options = RunOptions(runs_dir=args.runs_dir or default_runs_dir(), device=args.device,
                         reset=args.reset, skip=args.skip, max_inputs=args.max_inputs,
                         tensorboard=not args.no_tensorboard, train_stopped=args.no_early_stop)
    if args.ray is not None or args.jobs is not None:
        return _run_sweep(args, specs, options, rungs)
    if len(specs) > 1:
        print(f"running {len(specs)} matrix experiments")
    bad_input = False
    reported: dict[str, str] = {}  # an error's text -> the first entry that gave it

    def attempt(spec: Any, options: RunOptions) -> str:
        nonlocal bad_input
        if len(specs) > 1:
            _print_entry_header(spec)
        try:
            return run_entry(spec, options)
        except InrlabError as e:
            if args.debug:
                traceback.print_exc()
            first = reported.setdefault(str(e), spec.experiment_name)
            print(f"error: {e}" if first == spec.experiment_name else
                  f"error: '{spec.experiment_name}': the same error as '{first}'",
                  file=sys.stderr)
            bad_input = True
            return "failed"

    if rungs is not None:
        from inrlab.sweep.early_stop import advance_sequentially

        statuses = advance_sequentially(specs, options, rungs, attempt)
    else:
        statuses = {spec.experiment_name: attempt(spec, options) for spec in specs}
    if len(specs) > 1:
        print(_finished_line(statuses))
    if any(status != "failed" for status in statuses.values()):
        where = "" if args.runs_dir is None else f" --runs-dir {args.runs_dir}"
        print(f"next: 'inrlab results {args.file}{where}' tables the runs, 'inrlab report "
              f"{args.file}{where}' draws their curves and reproductions")
    if bad_input:
        return EXIT_BAD_INPUT
    return EXIT_OK if all(s in DONE for s in statuses.values()) else EXIT_FAILED


DONE = ("complete", "stopped")  # statuses of a successful run (stopped: by --early-stop)


def _early_stop_rungs(args: argparse.Namespace, specs: list[Any]) -> Any:
    """The rungs of ``--early-stop`` (None without it); its flags checked."""
    if args.early_stop and args.no_early_stop:
        raise InrlabError("--early-stop and --no-early-stop exclude each other",
                          key="--no-early-stop")
    if not args.early_stop:
        if args.early_stop_grace is not None or args.early_stop_factor is not None:
            raise InrlabError("--early-stop-grace and --early-stop-factor need --early-stop",
                              key="--early-stop")
        return None
    if args.reset:
        raise InrlabError("--reset is not available with --early-stop: the sweep's ladder is "
                          "its runs; delete run directories to start them over", key="--reset")
    from inrlab.sweep.early_stop import Rungs, budget_of

    return Rungs.make(budget_of(specs, args.max_inputs), args.early_stop_grace,
                      args.early_stop_factor)


def _finished_line(statuses: dict[str, str]) -> str:
    counts = Counter(statuses.values())
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"finished {len(statuses)} matrix experiments: {summary}"


def _run_sweep(args: argparse.Namespace, specs: list[Any], options: Any, rungs: Any) -> int:
    from inrlab.report.results import format_table, result_rows
    from inrlab.sweep.ray_sweep import SweepOptions, run_sweep

    address = None if args.ray in (None, "local") else args.ray
    if args.jobs is not None and (args.jobs < 1 or address is not None):
        raise InrlabError("--jobs N (N >= 1) sizes a local Ray runtime; with a cluster "
                          "address the cluster's resources decide", key="--jobs")
    if args.cpus_per_run <= 0 or args.gpus_per_run < 0 or args.max_retries < 0:
        raise InrlabError("--cpus-per-run must be > 0, --gpus-per-run and --max-retries >= 0")
    if args.reset:
        raise InrlabError("--reset is not available with --ray/--jobs: a sweep resumes "
                          "unfinished entries; delete run directories to start them over",
                          key="--reset")
    sweep = SweepOptions(address=address, jobs=args.jobs, cpus_per_run=args.cpus_per_run,
                         gpus_per_run=args.gpus_per_run, max_retries=args.max_retries)
    print(f"sweeping {len(specs)} matrix entr{'y' if len(specs) == 1 else 'ies'} of "
          f"{args.file} on Ray ({address or 'local runtime'}), runs in {options.runs_dir}")
    statuses = run_sweep(args.file, specs, options, sweep, rungs)
    print(_finished_line(statuses))
    print(format_table(result_rows(specs, options.runs_dir)))
    return EXIT_OK if all(s in DONE for s in statuses.values()) else EXIT_FAILED


def command_show(args: argparse.Namespace) -> int:
    from inrlab.experiment import build_entry, load_experiment
    from inrlab.train.state import parameter_counts
    from inrlab.experiment.spec import select_entries, shared_name_error

    specs = select_entries(load_experiment(args.file), args.only, args.file)
    shared = shared_name_error(specs)
    if shared is not None:
        print(f"warning: {shared}", file=sys.stderr)
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"matrix_id": spec.entry.id, "matrix_slug": spec.entry.slug,
                               "experiment_name": spec.experiment_name}
        if not args.no_build:
            row["parameters"] = parameter_counts(build_entry(spec, with_data=False).model)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{len(rows)} matrix entr{'y' if len(rows) == 1 else 'ies'} in {args.file}")
    for row in rows:
        counts = row.get("parameters")
        text = ""
        if counts:
            parts = [f"{k} {v:,}" for k, v in counts.items() if v is not None]
            text = "  params: " + ", ".join(parts)
        print(f"{row['matrix_id']:>4}  {row['experiment_name']}{text}")
    return EXIT_OK


def command_results(args: argparse.Namespace) -> int:
    from inrlab.experiment import load_experiment
    from inrlab.report.results import average_rows, format_table, result_rows, sort_rows

    specs = load_experiment(args.file)
    check_runs_dir(args.runs_dir or default_runs_dir())
    rows = result_rows(specs, args.runs_dir or default_runs_dir(), include=args.include)
    if args.average_column:
        rows = average_rows(rows, args.average_column, args.average_column_std)
    if args.sort:
        rows = sort_rows(rows, args.sort)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        runs_dir = args.runs_dir or default_runs_dir()
        entries = "its entry" if len(specs) == 1 else f"any of its {len(specs)} entries"
        print(f"(no results yet: {args.file} has no result.json for {entries} in "
              f"{runs_dir.resolve()}; run it with 'inrlab run {args.file}', or read another "
              "runs directory with --runs-dir DIR)")
    else:
        print(format_table(rows, exclude=args.exclude))
    return EXIT_OK


def command_report(args: argparse.Namespace) -> int:
    from inrlab.models.refine import check_refinement
    from inrlab.report.report import collect_runs, write_report

    runs_dir = args.runs_dir or default_runs_dir()
    first = args.targets[0]
    output = args.output or Path("reports") / (first.stem if first.is_file() else first.name)
    check_runs_dir(runs_dir)
    check_output_directory(output, "-o")
    check_refinement(args.refine_steps, args.refine_learnrate)
    for target in args.targets:
        if target.is_dir():
            _note_foreign_run(target, runs_dir)
    runs = collect_runs(args.targets, runs_dir)
    written = write_report(runs, output, title=" + ".join(str(t) for t in args.targets),
                           refinement=(args.refine_steps, args.refine_learnrate))
    print(f"report of {len(runs)} run{'s' if len(runs) != 1 else ''}: {written['html']}")
    return EXIT_OK


def _note_foreign_run(run_dir: Path, runs_dir: Path) -> None:
    """Say so before rebuilding a run from outside the runs directory: its config.yaml's
    Python snippets run like an experiment file's (a run directory is trusted code)."""
    if runs_dir.resolve() not in run_dir.resolve().parents:
        print(f"note: {run_dir} is outside the runs directory {runs_dir}; rebuilding its model "
              "runs the Python snippets of its config.yaml (only open runs you trust)",
              file=sys.stderr)


def command_render(args: argparse.Namespace) -> int:
    from inrlab.experiment.trained import is_model_file
    from inrlab.report.render import checked_output, parse_size, render_run

    size = parse_size(args.size)
    checked_output(args.output, len(args.input) + bool(args.interpolate))  # before any work
    if not args.input and not args.interpolate:
        raise InrlabError("give images to render with --input IMAGE... and/or "
                          "--interpolate A B")
    run_dir = args.run_dir
    runs_dir = args.runs_dir or default_runs_dir()
    if not (run_dir.is_file() and is_model_file(run_dir)):  # a model file runs no code
        run_dir = _run_directory(run_dir, runs_dir)
        _note_foreign_run(run_dir, runs_dir)
    render_run(run_dir, args.input, size, args.output, args.interpolate, args.steps,
               device=args.device, precision=args.precision, refine_steps=args.refine_steps,
               refine_learnrate=args.refine_learnrate, checkpoint=args.checkpoint,
               max_pixels=args.max_pixels)
    return EXIT_OK


def command_export(args: argparse.Namespace) -> int:
    from inrlab.experiment.trained import export_run

    run_dir = _run_directory(args.run_dir, args.runs_dir or default_runs_dir())
    path = export_run(run_dir, args.output, args.checkpoint)
    print(f"wrote {path} ({path.stat().st_size:,} bytes); load it with "
          f"inrlab.load_model('{path}') or render with 'inrlab render {path} ...'")
    return EXIT_OK


def _run_directory(target: Path, runs_dir: Path) -> Path:
    """``target`` as a run directory: itself, or an experiment name in ``runs_dir``."""
    if not target.is_dir() and (runs_dir / target).is_dir():
        return runs_dir / target
    if not target.is_dir():
        raise InrlabError(f"{target} is not a run directory, nor is "
                          f"{(runs_dir / target).resolve()} (the runs directory is "
                          f"{runs_dir.resolve()}; --runs-dir DIR reads another)", path=target)
    return target


def command_evaluate(args: argparse.Namespace) -> int:
    from inrlab.evaluate import (EvaluateOptions, Refinement, evaluate, markdown,
                                 resolve_targets, rows_json, save_in_runs, write_outputs)
    from inrlab.evaluate.evaluation import DEFAULT_MAX_IMAGES
    from inrlab.evaluate.pillow import DEFAULT_AVIF_SPEED
    options = EvaluateOptions(
        images=args.images, bytes=args.bytes, scales=args.scales, budget=args.budget,
        refinement=Refinement(args.refine_steps, args.refine_learnrate,
                              args.refine_rate_weight),
        max_images=DEFAULT_MAX_IMAGES if args.max_images is None else args.max_images,
        avif_speed=DEFAULT_AVIF_SPEED if args.avif_speed is None else args.avif_speed,
        device=args.device, checkpoint=args.checkpoint)
    options.check()
    if args.output is not None:
        check_output_directory(args.output, "-o")
    check_runs_dir(args.runs_dir or default_runs_dir())
    targets = resolve_targets(args.targets, args.runs_dir or default_runs_dir(),
                              args.checkpoint)
    evaluation = evaluate(targets, options)
    print(json.dumps(rows_json(evaluation.rows), indent=2) if args.json
          else markdown(evaluation))
    written = [] if args.no_save else save_in_runs(
        evaluation, {t.name: t.run_dir for t in targets})
    if args.output is not None:
        written += write_outputs(evaluation, args.output)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


COMMANDS = {"run": command_run, "show": command_show, "results": command_results,
            "report": command_report, "render": command_render, "export": command_export,
            "evaluate": command_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InrlabError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> int:
    """The ``inrlab`` command: ``main``; once interrupted, further Ctrl-C are ignored while the
    process exits (a second one used to print a traceback from an exit handler)."""
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being reported
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code
