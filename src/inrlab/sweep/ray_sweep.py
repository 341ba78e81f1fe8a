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
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from inrlab.errors import InrlabError
from inrlab.experiment.runner import RunOptions, run_entry
from inrlab.experiment.spec import RunSpec, load_experiment
from inrlab.storage.rundir import RunDir

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
              sweep: SweepOptions) -> dict[str, str]:
    """Train ``specs`` (entries of the experiment file ``path``) on Ray; returns statuses by
    experiment name. Prints one line per finished entry and an overall progress bar."""
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

    def submit(spec: RunSpec) -> Any:
        return remote.remote(str(Path(path).resolve()), spec.entry.id, task_options, workdir,
                             threads)

    pending = {submit(spec): (spec, 0) for spec in todo}
    started = time.monotonic()
    bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True, leave=False, disable=None)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec, retries = pending.pop(done[0])
            name = spec.experiment_name
            try:
                outcome = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a task error or a killed worker
                message = _short_error(e)
                if retries < sweep.max_retries:
                    bar.write(f"retrying '{name}' ({retries + 1} of {sweep.max_retries}): "
                              f"{message}")
                    pending[submit(spec)] = (spec, retries + 1)
                    continue
                outcome = {"status": "failed", "error": message}
            statuses[name] = outcome["status"]
            bar.update(1)
            finished = len(todo) - len(pending)
            detail = f": {outcome['error']}" if outcome.get("error") else _summary(options, name)
            bar.write(f"[{finished}/{len(todo)}] '{name}' {outcome['status']}{detail} "
                      f"({time.monotonic() - started:.0f} s into the sweep)")
    finally:
        bar.close()
        if started_ray:  # the local Ray this sweep started (its idle workers hold CPU)
            ray.shutdown()
    return statuses


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
