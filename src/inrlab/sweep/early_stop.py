"""Early stopping across a matrix (``inrlab run --early-stop``): asynchronous successive
halving (ASHA, Li et al. 2020) on the validation loss.

Rungs lie at ``grace``, ``grace * factor``, ``grace * factor**2``, ... inputs, below the
budget. Each entry trains to its next rung and pauses there (a checkpoint and a validation
at that point); an entry whose loss at a rung is worse than the best ``1/factor`` of the
losses every entry has reached that rung with stops there (``result.json``: status
``stopped``), the others train on. Everything this needs is in the run directories -- the
losses at the rungs are validation records of ``metrics.jsonl``, a stop is its
``result.json`` -- so a re-run after a crash rebuilds the ladder and decides where it was
left, and no entry trains past a rung twice.

Ray Tune's ``ASHAScheduler`` decides the same way but drives its own trial processes and
checkpoints; inrlab's entries are its run directories and resume from them, so the rule is
kept here, in a few lines over those files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

import numpy as np

from inrlab.errors import InrlabError
from inrlab.experiment.runner import RunOptions, skipping_stopped
from inrlab.experiment.spec import RunSpec
from inrlab.storage.metrics import read_metrics
from inrlab.storage.rundir import RunDir

DEFAULT_FACTOR = 3.0
GRACE_FRACTION = 10  # default grace: a tenth of the budget


@dataclass(frozen=True)
class Rungs:
    """The input counts at which entries are compared: ``grace * factor**k`` below
    ``budget``."""

    grace: int
    factor: float
    budget: int

    @classmethod
    def make(cls, budget: int | None, grace: int | None = None,
             factor: float | None = None) -> "Rungs":
        if budget is None:
            raise InrlabError("--early-stop needs max_inputs (or --max-inputs): its rungs are "
                              "fractions of that budget", key="--early-stop")
        factor = DEFAULT_FACTOR if factor is None else factor
        if not factor > 1:
            raise InrlabError(f"--early-stop-factor must be above 1, got {factor}",
                              key="--early-stop-factor")
        grace = max(1, budget // GRACE_FRACTION) if grace is None else grace
        if not 1 <= grace < budget:
            raise InrlabError(f"--early-stop-grace must be at least 1 and below the budget "
                              f"({budget:,} inputs), got {grace:,}", key="--early-stop-grace")
        return cls(grace, float(factor), budget)

    @property
    def points(self) -> list[int]:
        points, k = [], 0
        while (point := int(round(self.grace * self.factor ** k))) < self.budget:
            points.append(point)
            k += 1
        return points

    def next_after(self, inputs: int) -> int | None:
        """The first rung above ``inputs``; None when only the budget is left."""
        return next((p for p in self.points if p > inputs), None)

    def describe(self) -> str:
        return (f"early stopping: rungs at {', '.join(f'{p:,}' for p in self.points)} inputs "
                f"(factor {self.factor:g}); entries outside the best 1/{self.factor:g} at a "
                "rung stop there")


def rung_losses(run_dir: RunDir, rungs: Rungs) -> dict[int, tuple[int, float]]:
    """{rung: (inputs, validation loss)} of the rungs a run has reached: its first
    validation at or past each rung."""
    validations = [r for r in read_metrics(run_dir.path / "metrics.jsonl")
                   if r.get("kind") == "validation" and isinstance(r.get("loss"), (int, float))]
    found = {}
    for point in rungs.points:
        at = next((r for r in validations if r["inputs"] >= point), None)
        if at is not None and math.isfinite(at["loss"]):
            found[point] = (int(at["inputs"]), float(at["loss"]))
    return found


class Ladder:
    """The losses every entry reached each rung with, and the rule that stops entries."""

    def __init__(self, rungs: Rungs) -> None:
        self.rungs = rungs
        self.losses: dict[int, dict[str, float]] = {point: {} for point in rungs.points}

    @classmethod
    def from_runs(cls, rungs: Rungs, runs: Iterable[tuple[str, RunDir]]) -> "Ladder":
        ladder = cls(rungs)
        for name, run_dir in runs:
            for point, (_, loss) in rung_losses(run_dir, rungs).items():
                ladder.losses[point][name] = loss
        return ladder

    def cutoff(self, point: int) -> float:
        """The loss an entry at ``point`` must not exceed: the ``1/factor`` quantile of the
        losses recorded there."""
        return float(np.percentile(list(self.losses[point].values()),
                                   100.0 / self.rungs.factor))

    def record(self, name: str, run_dir: RunDir) -> tuple[int, float] | None:
        """Record the rung ``run_dir`` stands at (its last validation is that rung's);
        (rung, loss), or None when it is not standing at one (it trained past it)."""
        result = run_dir.read_result() or {}
        standing = [(point, loss) for point, (inputs, loss)
                    in rung_losses(run_dir, self.rungs).items()
                    if inputs == result.get("num_inputs")]
        if not standing:
            return None
        point, loss = standing[-1]
        self.losses[point][name] = loss
        return point, loss

    def decide(self, name: str, run_dir: RunDir) -> dict | None:
        """Record the rung ``run_dir`` has paused at; the ``stopped`` details when it stops
        there (also written to its ``result.json``, status ``stopped``), else None."""
        standing = self.record(name, run_dir)
        if standing is None:
            return None
        point, loss = standing
        cutoff = self.cutoff(point)
        if loss <= cutoff:
            return None
        stopped = {"rung": point, "loss": loss, "cutoff": cutoff,
                   "entries_at_rung": len(self.losses[point]), "factor": self.rungs.factor}
        run_dir.write_result({**(run_dir.read_result() or {}), "status": "stopped",
                              "stopped": stopped})
        return stopped


def stopped_line(name: str, stopped: dict) -> str:
    return (f"'{name}' stopped at {stopped['rung']:,} inputs: validation loss "
            f"{stopped['loss']:.6g} above the rung's cut-off {stopped['cutoff']:.6g} (the best "
            f"1/{stopped['factor']:g} of {stopped['entries_at_rung']} entries)")


def budget_of(specs: Sequence[RunSpec], max_inputs: int | None) -> int | None:
    """The budget the rungs divide: ``--max-inputs``, else the entries' largest
    ``max_inputs``."""
    if max_inputs is not None:
        return max_inputs
    budgets = [s.values.get("max_inputs") for s in specs]
    budgets = [b for b in budgets if isinstance(b, int) and not isinstance(b, bool)]
    return max(budgets) if budgets else None


def trained_inputs(run_dir: RunDir) -> int:
    value = (run_dir.read_result() or {}).get("num_inputs")
    return value if isinstance(value, int) else 0


def open_ladder(specs: Sequence[RunSpec], options: RunOptions, rungs: Rungs
                ) -> tuple[Ladder, list[RunSpec], dict[str, str]]:
    """(ladder, entries to train, statuses of the others): the ladder rebuilt from the runs,
    stopped entries left stopped, and an entry an earlier driver left standing at a rung
    decided before anything trains."""
    runs = [(s.experiment_name, RunDir.for_experiment(options.runs_dir, s.experiment_name))
            for s in specs]
    ladder = Ladder.from_runs(rungs, runs)
    todo, statuses = [], {}
    for spec, (name, run_dir) in zip(specs, runs):
        result = run_dir.read_result() or {}
        if result.get("status") == "stopped":
            print(skipping_stopped(name, result))
            statuses[name] = "stopped"
            continue
        stopped = ladder.decide(name, run_dir) if result.get("status") == "running" else None
        if stopped is not None:
            print(stopped_line(name, stopped))
            statuses[name] = "stopped"
            continue
        todo.append(spec)
    return ladder, todo, statuses


def advance_sequentially(specs: Sequence[RunSpec], options: RunOptions, rungs: Rungs,
                         train: Callable[[RunSpec, RunOptions], str]) -> dict[str, str]:
    """Early stopping in one process, rung by rung: every entry to the first rung, then the
    ones left to the next, ..., then to the budget; ``train(spec, options)`` trains one
    stretch (``run_entry``, its errors handled) and returns its status. Here every entry
    reaches a rung before any is judged there, so each is compared with all (on Ray, with
    those that got there first). Statuses by name."""
    print(rungs.describe())
    ladder, alive, statuses = open_ladder(specs, options, rungs)
    while alive:
        paused = []
        for spec in alive:
            name = spec.experiment_name
            run_dir = RunDir.for_experiment(options.runs_dir, name)
            done = trained_inputs(run_dir)
            stretch = replace(options, pause_at=rungs.next_after(done),
                              quiet=options.quiet or done > 0)
            status = train(spec, stretch)
            if status == "paused":
                ladder.record(name, run_dir)
                paused.append((spec, run_dir))
            else:
                statuses[name] = status
        alive = []
        for spec, run_dir in paused:
            stopped = ladder.decide(spec.experiment_name, run_dir)
            if stopped is not None:
                print(stopped_line(spec.experiment_name, stopped))
                statuses[spec.experiment_name] = "stopped"
            else:
                alive.append(spec)
    return statuses
