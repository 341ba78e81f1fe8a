"""Run the matrix entries of an experiment file as Ray tasks (``inrlab run --ray/--jobs``).

Each entry is one task that calls ``run_entry`` -- the code path of a plain ``inrlab run`` --
on the worker, writing its run directory under ``runs_dir`` (a shared path on a cluster).
Ray places the tasks by their resources; the driver only submits, collects, retries
failures (a raised error or a killed worker) up to ``max_retries`` times and reports.
Entries that are complete already are not submitted; unfinished ones resume from their
last checkpoint, so running the command again after a crash finishes only what is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

from inrlab.errors import InrlabError
from inrlab.experiment.runner import RunOptions, run_entry
from inrlab.experiment.spec import RunSpec, load_experiment
from inrlab.storage.rundir import RunDir
from inrlab.sweep.early_stop import Rungs, open_ladder, stopped_line, trained_inputs

LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
INSTALL_HINT = ("--ray and --jobs need Ray, an optional extra: pip install -e '.[ray]' "
                "(or pip install ray)")


@dataclass(frozen=True)
class SweepOptions:
    address: str | None = None  # None: start a local Ray runtime; "auto" or "ray://host:port"
    jobs: int | None = None  # local runtime sized for this many entries at once
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 2


class EntryFailed(Exception):
    """An entry finished with status ``failed``; raised on the worker so the driver retries."""


def import_ray(local: bool = False) -> Any:
    """Ray, imported; for a ``local`` runtime off the network: Ray reads
    ``LOOPBACK_VARIABLE`` when it is first imported, and with it at 0 every process takes
    127.0.0.1 as its node address and listens there only (else the network interface's
    address, on every interface). An address the user exported wins."""
    if local:
        os.environ.setdefault(LOOPBACK_VARIABLE, "0")
        # no usage report to Ray's servers from a local sweep (its cloud-metadata probe
        # runs even so: _cloud_probe_on_loopback)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise InrlabError(INSTALL_HINT) from None
    return ray


def train_entry(path: str, entry_id: str, options: RunOptions, workdir: str,
                threads: int) -> dict[str, Any]:
    """The body of one Ray task: train one entry exactly as ``inrlab run`` would."""
    import torch

    if os.environ.pop(PROXY_MARKER, None):  # inrlab's loopback proxy of the runtime's start
        for name in PROXY_VARIABLES:
            os.environ.pop(name, None)
    if os.path.isdir(workdir):
        os.chdir(workdir)  # relative data paths resolve as on the submitting machine
    torch.set_num_threads(max(1, threads))
    spec = next(s for s in load_experiment(path) if s.entry.id == entry_id)
    try:
        status = run_entry(spec, options)
    except InrlabError as e:  # bad input: retrying cannot help
        return {"status": "failed", "error": str(e), "retry": False}
    if status == "failed":
        result = RunDir.for_experiment(options.runs_dir, spec.experiment_name).read_result()
        raise EntryFailed((result or {}).get("error", "training failed"))
    return {"status": status, "error": None, "retry": False}


def run_sweep(path: Path, specs: Sequence[RunSpec], options: RunOptions,
              sweep: SweepOptions, rungs: Rungs | None = None) -> dict[str, str]:
    """Train ``specs`` (entries of the experiment file ``path``) on Ray; returns statuses by
    experiment name. Prints one line per finished entry and an overall progress bar.
    ``rungs``: early stopping, each task training its entry to the next rung, where the
    driver stops it or submits the next stretch (``early_stop``)."""
    ray = import_ray(local=sweep.address is None)
    from tqdm import tqdm

    statuses: dict[str, str] = {}
    todo = []
    for spec in specs:
        if RunDir.for_experiment(options.runs_dir, spec.experiment_name).is_complete():
            print(f"skipping '{spec.experiment_name}': already complete")
            statuses[spec.experiment_name] = "complete"
        else:
            todo.append(spec)
    ladder = None
    if rungs is not None:
        print(rungs.describe())
        ladder, todo, left = open_ladder(todo, options, rungs)
        statuses.update(left)
    if not todo:
        return statuses

    started_ray = _init_ray(ray, sweep)
    # A task's device: --device, else the file's device key, else what Ray gives it.
    default_device = "cuda" if sweep.gpus_per_run > 0 else "cpu"
    device = None if options.device == "auto" else options.device
    task_options = replace(options, device=device, default_device=default_device,
                           runs_dir=Path(options.runs_dir).resolve(), skip=False, reset=False,
                           quiet=True)
    remote = ray.remote(train_entry).options(
        num_cpus=sweep.cpus_per_run, num_gpus=sweep.gpus_per_run, max_retries=0,
        retry_exceptions=False)
    workdir = os.getcwd()
    threads = max(1, int(sweep.cpus_per_run))

    def run_dir(spec: RunSpec) -> RunDir:
        return RunDir.for_experiment(task_options.runs_dir, spec.experiment_name)

    def submit(spec: RunSpec) -> Any:
        stretch = task_options
        if rungs is not None:  # to the next rung
            stretch = replace(task_options, pause_at=rungs.next_after(trained_inputs(
                run_dir(spec))))
        return remote.remote(str(Path(path).resolve()), spec.entry.id, stretch, workdir,
                             threads)

    pending = {submit(spec): (spec, 0) for spec in todo}
    started = time.monotonic()
    bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True, leave=False, disable=None)

    def retry(ref: Any, message: str, quiet: bool = False) -> bool:
        """Submit the entry of ``ref`` again (True), unless its retries are spent."""
        spec, retries = pending.pop(ref)
        if retries >= sweep.max_retries:
            pending[ref] = (spec, retries)  # finished as failed by the caller
            return False
        if not quiet:
            bar.write(f"retrying '{spec.experiment_name}' ({retries + 1} of "
                      f"{sweep.max_retries}): {message}")
        pending[submit(spec)] = (spec, retries + 1)
        return True

    with _ray_messages_condensed(), contextlib.ExitStack() as cleanup:
        # until Ray is shut down: its messages about a lost node may come after the last entry
        cleanup.callback(bar.close)
        if started_ray:  # the Ray this sweep started or connected to
            cleanup.callback(ray.shutdown)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec, retries = pending[done[0]]
            name = spec.experiment_name
            try:
                outcome = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a task error or a killed worker
                node = _lost_node(e)
                if node is not None:
                    lost = _entries_on_lost_node(ray, pending, node, done[0])
                    names = [pending[ref][0].experiment_name for ref in lost]
                    resubmitted = [n for n, ref in zip(names, lost)
                                   if retry(ref, "", quiet=True)]
                    bar.write(f"node lost ({node[:12]}): {len(resubmitted)} "
                              f"{'entry' if len(resubmitted) == 1 else 'entries'} "
                              f"resubmitted" + (f" ({', '.join(resubmitted)})"
                                                if resubmitted else ""))
                    if done[0] not in pending:
                        continue
                elif retry(done[0], _short_error(e)):
                    continue
                outcome = {"status": "failed", "error": _short_error(e)}
            pending.pop(done[0])
            if outcome["status"] == "paused" and ladder is not None:
                stopped = ladder.decide(name, run_dir(spec))
                if stopped is None:  # on to the next rung
                    pending[submit(spec)] = (spec, retries)
                    continue
                outcome = {"status": "stopped", "error": None}
                bar.write(stopped_line(name, stopped))
            statuses[name] = outcome["status"]
            bar.update(1)
            finished = len(todo) - len(pending)
            detail = (f": {outcome['error']}" if outcome.get("error")
                      else _summary(options, name))
            bar.write(f"[{finished}/{len(todo)}] '{name}' {outcome['status']}{detail} "
                      f"({time.monotonic() - started:.0f} s into the sweep)")
    return statuses


def _lost_node(error: BaseException) -> str | None:
    """The id of the node whose loss failed a task, or None for another failure."""
    from ray.exceptions import NodeDiedError

    if not isinstance(error, NodeDiedError):
        return None
    found = re.search(r"node ID: ([0-9a-f]+)", str(error))
    return found[1] if found else "unknown"


def _entries_on_lost_node(ray: Any, pending: dict[Any, Any], node: str, first: Any,
                          wait_s: float = 5.0) -> list[Any]:
    """``first`` and the other pending tasks that the loss of ``node`` failed, collected
    over ``wait_s`` seconds (Ray reports them one by one), so that one line says it all."""
    lost = [first]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        others = [ref for ref in pending if ref not in lost]
        ready, _ = ray.wait(others, num_returns=len(others), timeout=0.5) if others else ([], [])
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001
                if _lost_node(e) == node:
                    lost.append(ref)
        if not others:
            break
    return lost


RAY_ERROR_THREAD = "ray_listen_error_messages"  # the driver thread that prints Ray's errors
NODE_DEATH = ("Raylet is terminated", "has been marked dead")


class _CondensedRayMessages:
    """``sys.stdout`` while a sweep runs: what Ray's error thread prints (a dead raylet's
    40-line state dump, a node marked dead) comes out as its first line, and not at all for
    a lost node, which the sweep reports itself in one line; the full messages stay in
    Ray's session logs. Every other thread's output passes unchanged."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        # Ray's messages come from its error thread, or from the main thread when Ray
        # flushes the ones it held back as repeats (at shutdown)
        from_ray = threading.current_thread().name == RAY_ERROR_THREAD
        if not from_ray and "(raylet)" not in text:
            return self.stream.write(text)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
        if not from_ray and not plain.startswith("(raylet)"):
            return self.stream.write(text)
        first = plain.split("\n")[0]
        if first and not any(mark in first for mark in NODE_DEATH):
            self.stream.write(f"ray: {first[:200]}\n")
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _ray_messages_condensed() -> Iterator[None]:
    stream = sys.stdout
    sys.stdout = _CondensedRayMessages(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = stream


def _init_ray(ray: Any, sweep: SweepOptions) -> bool:
    """Connect to Ray as ``sweep`` says; True when this call started it."""
    if ray.is_initialized():
        return False
    # Workers' own output stays in Ray's session logs; the driver prints one line per entry.
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if sweep.address is None:
        if sweep.jobs:
            kwargs["num_cpus"] = max(1, int(sweep.jobs * sweep.cpus_per_run + 0.999))
        with _cloud_probe_on_loopback():
            ray.init(**kwargs)
    else:
        ray.init(address=sweep.address, **kwargs)
    return True


PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY")
PROXY_MARKER = "INRLAB_RAY_LOOPBACK_PROXY"  # says the proxy variables are inrlab's own


@contextlib.contextmanager
def _cloud_probe_on_loopback() -> Iterator[None]:
    """While a local Ray runtime starts, plain HTTP goes through a proxy address on
    loopback where nothing listens: Ray's dashboard process asks the cloud metadata address
    (169.254.169.254) which cloud this is, even with usage statistics off, through the
    network interface; so its request is refused on 127.0.0.1 instead. The Ray processes
    keep the variables; ``train_entry`` drops them, so an entry's own downloads go out as
    in a plain run. A proxy the user set is left as it is."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        yield
        return
    os.environ.update({name: "http://127.0.0.1:9" for name in PROXY_VARIABLES})
    os.environ[PROXY_MARKER] = "1"
    try:
        yield
    finally:
        for name in (*PROXY_VARIABLES, PROXY_MARKER):
            os.environ.pop(name, None)


def _short_error(error: BaseException) -> str:
    cause = getattr(error, "cause", None)  # RayTaskError wraps the worker's exception
    if isinstance(cause, BaseException):
        error = cause
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"


def _summary(options: RunOptions, name: str) -> str:
    result = RunDir.for_experiment(options.runs_dir, name).read_result() or {}
    loss = result.get("validation_loss")
    return f", validation loss {loss:.6g}" if isinstance(loss, (int, float)) else ""
