"""``inrlab run --ray`` / ``--jobs``: matrix entries as Ray tasks on a local runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_EXPERIMENT

pytest.importorskip("ray")

FOUR = "matrix:\n  hid: [8, 12, 16, 20]\n" + textwrap.dedent(TINY_EXPERIMENT)

# hid 12 fails in training every time (a batch item is None after the first two, which
# the pre-flight check reads); hid 16 kills its worker process once, then trains.
FLAKY = FOUR.replace("""train_set: |
  kali_patch_dataset(SHAPE, num_images=64)""", """train_set: |
  import os, pathlib
  marker = pathlib.Path("MARKER")
  class Flaky(torch.utils.data.Dataset):
      def __init__(self, source): self.source = source
      def __len__(self): return len(self.source)
      def __getitem__(self, i):
          if i >= 2 and ${hid} == 12:
              return None
          if i >= 2 and ${hid} == 16 and not marker.exists():
              marker.touch()
              os._exit(3)
          return self.source[i]
  Flaky(kali_patch_dataset(SHAPE, num_images=64))""")

FIELDS = {"experiment_name", "matrix_entry", "matrix_id", "matrix_slug", "status", "num_inputs",
          "validation_loss", "validation_mse", "validation_psnr", "parameters", "throughput"}


def runs_of(runs: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(runs)): json.loads(p.read_text())
            for p in sorted(runs.rglob("result.json"))}


def test_ray_sweep_matches_the_sequential_run(write, cli, tmp_path) -> None:
    path = write("four.yml", FOUR)
    code, out, _ = cli("run", path, "--jobs", "2", "--runs-dir", tmp_path / "ray",
                       "--no-tensorboard")
    assert code == 0, out
    assert out.count("complete, validation loss") == 4 and "| hid" in out
    assert cli("run", path, "--runs-dir", tmp_path / "seq", "--no-tensorboard")[0] == 0
    swept, sequential = runs_of(tmp_path / "ray"), runs_of(tmp_path / "seq")
    assert sorted(swept) == sorted(sequential) == [f"tiny/hid:{h}" for h in (12, 16, 20, 8)]
    for name, result in swept.items():
        assert result["status"] == "complete" and FIELDS <= set(result)
        assert set(result) == set(sequential[name])
        assert result["num_inputs"] == sequential[name]["num_inputs"]
        assert result["parameters"] == sequential[name]["parameters"]
        files = {p.name for p in (tmp_path / "ray" / name).iterdir()}
        assert files == {p.name for p in (tmp_path / "seq" / name).iterdir()}

    code, out, _ = cli("run", path, "--ray", "--runs-dir", tmp_path / "ray")
    assert code == 0 and out.count("already complete") == 4


def test_failed_and_killed_entries_are_retried_and_reported(write, cli, tmp_path) -> None:
    path = write("flaky.yml", FLAKY.replace("MARKER", str(tmp_path / "crashed-once")))
    code, out, _ = cli("run", path, "--jobs", "2", "--max-retries", "1",
                       "--runs-dir", tmp_path / "runs", "--no-tensorboard")
    assert code == 1
    assert "retrying 'tiny/hid:12' (1 of 1)" in out and "'tiny/hid:12' failed" in out
    assert "retrying 'tiny/hid:16' (1 of 1)" in out  # the killed worker
    results = runs_of(tmp_path / "runs")
    assert results["tiny/hid:12"]["status"] == "failed"
    assert "error" in results["tiny/hid:12"]
    for hid in (8, 16, 20):
        assert results[f"tiny/hid:{hid}"]["status"] == "complete"


def test_a_killed_sweep_resumes_only_the_unfinished_entries(write, tmp_path) -> None:
    slow = FOUR.replace("max_inputs: 256", "max_inputs: 800")
    path = write("slow.yml", slow)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "inrlab", "run", str(path), "--jobs", "1",
               "--runs-dir", str(runs), "--no-tensorboard"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    sweep = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = [n for n, r in runs_of(runs).items() if r["status"] == "complete"]
            if done:
                break
            time.sleep(0.5)
        assert done, "no entry finished before the deadline"
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the driver and its Ray runtime
        sweep.wait()
    # A worker runs in its own process group and outlives the kill until Ray notices its
    # node is gone (about 2 s): an entry may still finish then. Read the runs after that.
    time.sleep(5)
    before = runs_of(runs)
    finished = {n for n, r in before.items() if r["status"] == "complete"}
    assert 1 <= len(finished) < 4
    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already complete") == len(finished)
    after = runs_of(runs)
    assert all(r["status"] == "complete" for r in after.values()) and len(after) == 4
    for name in finished:  # the finished entries were not trained again
        assert after[name] == before[name]


def _sockets() -> set[tuple[str, str, str]]:
    """(local address, remote address, state) of every TCP socket on this machine, from
    /proc/net/tcp and tcp6 (addresses as the kernel writes them, in hex)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            sockets.add((fields[1], fields[2], fields[3]))
    return sockets


def _loopback(address: str) -> bool:
    host = address.split(":")[0]
    if len(host) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return host.endswith("7F")
    return host in ("00000000000000000000000001000000",  # ::1
                    "0000000000000000FFFF00000100007F")  # ::ffff:127.0.0.1


def test_a_local_ray_runtime_listens_and_talks_on_loopback_only(write, tmp_path) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp")
    path = write("loop.yml", FOUR.replace("max_inputs: 256", "max_inputs: 1200"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    env["PYTHONPATH"] = str(ROOT / "src")  # inrlab must set the variable itself
    before = _sockets()
    sweep = subprocess.Popen([sys.executable, "-m", "inrlab", "run", str(path), "--jobs", "2",
                              "--runs-dir", str(tmp_path / "runs"), "--no-tensorboard"],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: set[tuple[str, str, str]] = set()
    try:
        deadline = time.monotonic() + 300
        while sweep.poll() is None and time.monotonic() < deadline:
            seen |= _sockets() - before
            time.sleep(0.2)
        out, _ = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 0, out
    listening = [s for s in seen if s[2] == "0A"]
    assert listening, "no Ray listener seen while the sweep ran"
    assert all(_loopback(local) for local, _, state in listening), listening
    talking = [s for s in seen if s[2] != "0A" and set(s[1].split(":")[0]) != {"0"}]
    outside = [s for s in talking if not (_loopback(s[0]) and _loopback(s[1]))]
    assert talking and not outside, outside


CLUSTER = FOUR.replace("max_inputs: 256", """max_inputs: 1600
num_inputs_between_checkpoints: 160
num_epochs_between_validations: null
num_inputs_between_validations: 320""")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_cluster_that_loses_a_node_finishes_every_entry(write, tmp_path) -> None:
    """A Ray cluster of several nodes on this machine (every process on 127.0.0.1: the
    suite sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray starts). A worker node is
    removed while its entries train and another joins: every entry completes its whole
    budget, the interrupted ones resumed from their last checkpoint (their metrics up to it
    kept as they were), no metrics record is duplicated or out of order, the old holders of
    the run locks are gone, and the sweep's output says it in one line."""
    from ray.cluster_utils import Cluster

    from inrlab.storage.checkpoint import load_checkpoint

    path = write("cluster.yml", CLUSTER)
    runs = tmp_path / "runs"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0,  # the head schedules; the workers train
        "_system_config": {"health_check_period_ms": 500,
                           "health_check_failure_threshold": 4}})
    try:
        worker = cluster.add_node(num_cpus=2)
        assert cluster.address.startswith("127.0.0.1:")  # every node on loopback
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        sweep = subprocess.Popen(
            [sys.executable, "-m", "inrlab", "run", str(path), "--ray", cluster.address,
             "--runs-dir", str(runs), "--no-tensorboard"], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sweep.poll() is None:
            if any(runs.rglob("checkpoint-last.pt")):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # a few more checkpoints, still far from the budget
        snapshots, holders = {}, []
        for checkpoint in runs.rglob("checkpoint-last.pt"):
            run = checkpoint.parent
            inputs = load_checkpoint(checkpoint)["progress"]["num_inputs"]
            snapshots[run] = (inputs, _records(run / "metrics.jsonl"))
            if (run / ".lock-holder.json").exists():
                holders.append(json.loads((run / ".lock-holder.json").read_text())["pid"])
        cluster.remove_node(worker, allow_graceful=False)
        cluster.add_node(num_cpus=2)
        out, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        cluster.shutdown()
    assert sweep.returncode == 0, out
    interrupted = {run: snap for run, snap in snapshots.items() if 0 < snap[0] < 1600}
    assert interrupted, f"no entry was mid-training when the node went: {snapshots}"
    assert out.count("node lost") == 1 and "resubmitted" in out, out
    assert "state-dump" not in out and "Raylet is terminated" not in out, out
    results = runs_of(runs)
    assert len(results) == 4
    assert all(r["status"] == "complete" and r["num_inputs"] == 1600 for r in results.values())
    for run in results:
        records = _records(runs / run / "metrics.jsonl")
        for kind in ("train", "validation"):
            inputs = [r["inputs"] for r in records if r.get("kind") == kind]
            assert inputs == sorted(set(inputs)), f"{run} {kind}: {inputs}"
        assert not (runs / run / ".lock-holder.json").exists()
    for run, (inputs, before) in interrupted.items():  # resumed, not restarted
        kept = [r for r in before if r.get("inputs", 0) <= inputs]
        assert _records(run / "metrics.jsonl")[:len(kept)] == kept, run
    for pid in holders:  # the lost node's trainers are gone: one holder per lock
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
