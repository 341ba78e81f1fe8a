"""What a run leaves on disk, for every package to read and write: the run directory and
its lock, atomic writes, checkpoints, ``metrics.jsonl`` and PNG image grids."""

from inrlab.storage.rundir import RunDir, check_experiment_name, default_runs_dir

__all__ = ["RunDir", "check_experiment_name", "default_runs_dir"]
