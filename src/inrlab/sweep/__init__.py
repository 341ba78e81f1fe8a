"""Sweeps over many machines or processes: matrix entries as Ray tasks."""
