"""Experiment files: loading, matrix expansion, snippets, building and running entries."""

from inrlab.experiment.build import build_entry
from inrlab.experiment.runner import RunOptions, run_entry
from inrlab.experiment.spec import RunSpec, load_experiment

__all__ = ["build_entry", "RunOptions", "run_entry", "RunSpec", "load_experiment"]
