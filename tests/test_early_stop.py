"""``inrlab run --early-stop``: asynchronous successive halving across a matrix, in one
process and on Ray; stopped entries keep their runs, a re-run leaves them stopped, and
``--no-early-stop`` trains them on."""

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
from inrlab.storage.rundir import RunDir
from inrlab.sweep.early_stop import Ladder, Rungs

# Six entries: learning rates from hopeless to good, two trials each.
SIX = "matrix:\n  lr: [0.00001, 0.0003, 0.003]\n  trial: [1, 2]\n" + textwrap.dedent(
    TINY_EXPERIMENT).replace("learnrate: 0.003", "learnrate: ${lr}\nseed: ${trial}").replace(
    "max_inputs: 256", "max_inputs: 1200\nnum_epochs_between_validations: null").replace(
    "num_hidden=${hid}", "num_hidden=12")
BUDGET, RUNGS = 1200, [120, 360, 1080]


def results(runs: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(runs)): json.loads(p.read_text())
            for p in sorted(runs.rglob("result.json"))}


def test_rungs_and_the_cut_off() -> None:
    rungs = Rungs.make(BUDGET)
    assert rungs.points == RUNGS and rungs.next_after(120) == 360
    assert rungs.next_after(1080) is None
    assert Rungs.make(1000, grace=50, factor=2).points == [50, 100, 200, 400, 800]
    ladder = Ladder(rungs)
    ladder.losses[120] = {"a": 1.0, "b": 2.0, "c": 3.0}
    assert ladder.cutoff(120) == pytest.approx(1 + 2 / 3)  # the best third passes
    from inrlab.errors import InrlabError
    for bad in (dict(grace=0), dict(grace=BUDGET), dict(factor=1)):
        with pytest.raises(InrlabError):
            Rungs.make(BUDGET, **bad)


def test_early_stopping_stops_the_worst_at_each_rung_and_a_rerun_keeps_them(
        write, cli, tmp_path) -> None:
    path = write("six.yml", SIX)
    runs = tmp_path / "runs"
    code, out, err = cli("run", path, "--early-stop", "--early-stop-grace", "120")
    assert code == 0, err
    first = results(runs)
    assert len(first) == 6
    stopped = {n: r for n, r in first.items() if r["status"] == "stopped"}
    complete = {n: r for n, r in first.items() if r["status"] == "complete"}
    assert stopped and complete and len(stopped) + len(complete) == 6
    for name, result in stopped.items():
        details = result["stopped"]
        assert details["rung"] in RUNGS and details["loss"] > details["cutoff"]
        assert details["rung"] <= result["num_inputs"] < BUDGET  # stopped at its rung
        assert (runs / name / "checkpoint-last.pt").exists()
        assert f"'{name}' stopped at {details['rung']:,} inputs" in out
    assert all(r["num_inputs"] == BUDGET for r in complete.values())
    spent = sum(r["num_inputs"] for r in first.values())
    assert spent < 0.8 * 6 * BUDGET
    # the hopeless learning rate is among the stopped, the best entry among the complete
    assert any(r["matrix_entry"]["lr"] == 0.00001 for r in stopped.values())
    best = min(first.values(), key=lambda r: r["validation_loss"])
    assert best["status"] == "complete"
    code, out, _ = cli("results", path)
    assert code == 0 and "stopped" in out
    # the same command again: stopped stay stopped, complete are done, nothing retrains
    code, out, err = cli("run", path, "--early-stop", "--early-stop-grace", "120")
    assert code == 0, err
    assert out.count("stopped early") == len(stopped)
    again = results(runs)
    for name in first:
        assert again[name]["num_inputs"] == first[name]["num_inputs"]
        assert again[name]["status"] == first[name]["status"]
    # --no-early-stop trains them on to their budget
    code, out, err = cli("run", path, "--no-early-stop")
    assert code == 0, err
    assert all(r["status"] == "complete" and r["num_inputs"] == BUDGET
               for r in results(runs).values())


def test_early_stop_flags_are_checked(write, cli) -> None:
    path = write("six.yml", SIX)
    code, _, err = cli("run", path, "--early-stop-grace", "10")
    assert code == 2 and "need --early-stop" in err
    code, _, err = cli("run", path, "--early-stop", "--early-stop-grace", "5000")
    assert code == 2 and "below the budget" in err
    code, _, err = cli("run", path, "--early-stop", "--no-early-stop")
    assert code == 2 and "exclude each other" in err


def test_a_killed_early_stopping_driver_finishes_the_rest_without_retraining(
        write, tmp_path) -> None:
    path = write("six.yml", SIX)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "inrlab", "run", str(path), "--early-stop",
               "--early-stop-grace", "120", "--runs-dir", str(runs), "--no-tensorboard"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    driver = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if any(r["status"] == "stopped" for r in results(runs).values()):
                break
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = results(runs)
    stopped = {n for n, r in before.items() if r["status"] == "stopped"}
    assert stopped, before
    checkpoints = {n: (runs / n / "checkpoint-last.pt").read_bytes() for n in stopped}
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    after = results(runs)
    assert len(after) == 6 and all(r["status"] in ("complete", "stopped")
                                   for r in after.values())
    for name in stopped:  # not trained again
        assert after[name] == before[name]
        assert (runs / name / "checkpoint-last.pt").read_bytes() == checkpoints[name]
    for name, result in after.items():
        records = [json.loads(line) for line in
                   (runs / name / "metrics.jsonl").read_text().splitlines()]
        inputs = [r["inputs"] for r in records if r["kind"] == "validation"]
        assert inputs == sorted(set(inputs)), name  # no rung trained twice


def test_early_stopping_on_ray(write, cli, tmp_path) -> None:
    pytest.importorskip("ray")
    path = write("six.yml", SIX)
    code, out, err = cli("run", path, "--early-stop", "--early-stop-grace", "120",
                         "--jobs", "2")
    assert code == 0, out + err
    runs = results(tmp_path / "runs")
    assert len(runs) == 6 and {r["status"] for r in runs.values()} == {"complete", "stopped"}
    for result in runs.values():
        if result["status"] == "stopped":
            assert result["stopped"]["loss"] > result["stopped"]["cutoff"]
        else:
            assert result["num_inputs"] == BUDGET
    assert "stopped at" in out
    assert RunDir  # the run directories are the sweep's whole state
