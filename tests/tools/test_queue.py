"""Parallel experiments as a user queues them (docs/experiments.md, Parallel experiments): `dvc exp run --queue`
four times, `python -m tlstudy queue -j 2`, then `dvc queue status` and `dvc exp show` — in a
temporary repo on the demo data, with the real DVC and its real workers."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import at_rev, one_stage_workspace, tiny_workspace

from tlstudy.tools import profile

pytestmark = pytest.mark.slow
GOOD = (0.01, 0.003, 0.001)
BAD = -1  # rejected by the train stage's params check: the experiment fails in the queue


def env() -> dict:
    # As a user with the virtual environment activated: stages call `python -m tlstudy.stage`.
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def dvc(ws, *args) -> str:
    # stdout to a file: `dvc queue start` and `stop` leave daemons that would hold a pipe open.
    out = ws.parent / "dvc.out"
    with out.open("w") as f:
        r = subprocess.run(
            [profile.tool("dvc"), *args], cwd=ws, stdout=f, stderr=subprocess.STDOUT, env=env(), timeout=300
        )
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.read_text()}"
    return out.read_text()


def statuses(ws) -> list[str]:
    rows = dvc(ws, "queue", "status").splitlines()
    return [line.split()[-1] for line in rows[1 : rows.index("")]]


def exited(info: Path) -> bool:
    try:
        return json.loads(info.read_text())["returncode"] is not None
    except (OSError, ValueError):  # not written yet, or being written
        return False


def used_and_stopped(ws, timeout_s: float = 120) -> None:
    """A workspace whose queue was used and stopped: two workers ran (with nothing queued they
    exit after DVC's 10 s idle check), then `dvc queue stop`. With no worker running, its shutdown
    waits in each worker slot's broker queue, as does the one a stopping worker's idle check sends
    itself; `dvc queue start -j 2` then ran one experiment per worker and left the rest queued
    with no worker (issue #23)."""
    dvc(ws, "queue", "start", "-j", "2")
    # DVC's record of each worker process; the returncode is set when it has exited.
    infos = [ws / f".dvc/tmp/exps/celery/dvc-exp-worker-{n}.json" for n in (1, 2)]
    if not all_exited(infos, timeout_s):
        # The idle check starts its 10 s before the worker it watches: a worker slower than that to
        # start (two cores busy with other tests) is not yet listening when its shutdown is sent,
        # and runs on (dvc-task's TemporaryWorker). Stopping it as a user would gives the same state.
        dvc(ws, "queue", "stop")
        assert all_exited(infos, timeout_s), "queue workers did not exit after `dvc queue stop`"
    dvc(ws, "queue", "stop")


def all_exited(infos: list[Path], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not all(exited(i) for i in infos):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def test_more_queued_experiments_than_workers_all_run_after_a_stopped_queue(tmp_path):
    # One part: an experiment is then two short stages and the report, so that three experiments
    # on two workers fit the test's budget.
    ws = tiny_workspace(tmp_path / "ws")
    used_and_stopped(ws)
    for lr in (*GOOD, BAD):
        assert "Queued experiment" in dvc(ws, "exp", "run", "--queue", "-S", f"lr={lr}")

    cmd = [sys.executable, "-m", "tlstudy", "queue", "-j", "2"]
    try:
        r = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env=env(), timeout=360)
    except subprocess.TimeoutExpired:
        dvc(ws, "queue", "stop", "--kill")  # the workers are daemons: do not leave them training
        raise
    out = r.stdout + r.stderr
    # Exit 1: one experiment failed, and the command says which and how to look into it.
    assert r.returncode == 1, out
    assert "3 of 4 succeeded" in out, out
    assert sorted(statuses(ws)) == ["Failed", "Success", "Success", "Success"], out
    failed = re.search(r"did not succeed: (\S+)", out).group(1)
    assert f"dvc queue logs {failed}" in out, out
    # ... and the log it points to names the bad value.
    log = dvc(ws, "queue", "logs", failed)
    assert "'lr'" in log and str(BAD) in log, log

    shown = json.loads(dvc(ws, "exp", "show", "--json"))
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    done = [r for e in exps if e["executor"]["state"] == "success" for r in e["revs"]]
    results = {
        r["data"]["params"]["params.yaml"]["data"]["lr"]: at_rev(ws, r["rev"], "metrics/scratch.json")["sgd"]
        for r in done
    }
    # Each experiment's metrics come from its own params.
    assert set(results) == set(GOOD), results
    assert all(m["lr"] == lr and 0 <= m["test_acc"] <= 1 for lr, m in results.items()), results
    # Each ran in a workspace of its own: the main one is untouched.
    assert yaml.safe_load((ws / "params.yaml").read_text())["lr"] == [0.03]
    assert json.loads((ws / "metrics/scratch.json").read_text())["sgd"]["lr"] == 0.03


def test_an_experiment_whose_worker_was_killed_ends_the_queue_named_instead_of_waiting_forever(tmp_path):
    """A worker killed with -9 (the OOM killer, a reboot) leaves its experiment Running in DVC's
    queue for good; the command names it and ends with status 3 once no process has run it for
    its grace period (30 s)."""
    import psutil

    # What the stage computes is not the point: one that sleeps is killed mid-way as training would be.
    ws = one_stage_workspace(tmp_path, "sleep 600 && echo hello > out.txt")
    dvc(ws, "exp", "run", "--queue", "-S", "x=2", "-n", "long-one")
    cmd = [sys.executable, "-m", "tlstudy", "queue", "-j", "1"]
    proc = subprocess.Popen(cmd, cwd=ws, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        runs = []
        while not runs:  # DVC's record of the process running the experiment
            assert time.monotonic() < deadline and proc.poll() is None, "the experiment never started"
            runs = [p for p in (ws / ".dvc/tmp/exps/run").glob("*/*.json") if not exited(p)]
            time.sleep(0.5)
        time.sleep(3)  # well into its stage
        victims = [json.loads(p.read_text())["pid"] for p in [*runs, ws / ".dvc/tmp/exps/celery/dvc-exp-worker-1.json"]]
        # The whole tree is listed before anything dies: a process killed first (the run) is also
        # the worker's child, and one reaped between listing and kill is gone already, not a failure.
        tree = {p.pid: p for pid in victims for p in [psutil.Process(pid), *psutil.Process(pid).children(True)]}
        for p in tree.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 3, out
        assert "queue: long-one is Running in DVC's queue, but no process has run it for 30 s" in out, out
        assert "`dvc queue kill long-one`" in out, out
        # What it says to do ends the entry.
        dvc(ws, "queue", "kill", "long-one")
        assert statuses(ws) == ["Failed"]
    finally:
        if proc.poll() is None:
            proc.kill()
        dvc(ws, "queue", "stop", "--kill")


def test_workers_that_never_take_a_queued_experiment_are_restarted_a_bounded_number_of_times(tmp_path, monkeypatch):
    """An entry no worker takes (here the workers' start is a call that does nothing, as when
    every worker dies at start) ends the command after MAX_RESTARTS restarts, naming it."""
    from tlstudy.tools import exp_queue

    ws = one_stage_workspace(tmp_path, "echo hello > out.txt")
    dvc(ws, "exp", "run", "--queue", "-S", "x=2", "-n", "never-taken")
    real = exp_queue.dvc
    starts = []

    def without_workers(root, *args):
        if args[:2] == ("queue", "start"):
            starts.append(args)
            return "Started 0 new experiment task queue workers."
        return real(root, *args)

    monkeypatch.setattr(exp_queue, "dvc", without_workers)
    lines = []
    assert exp_queue.serve(1, root=ws, poll_s=0.05, grace_s=0.3, log=lines.append) == exp_queue.STUCK
    assert len(starts) == 1 + exp_queue.MAX_RESTARTS
    said = "\n".join(lines)
    assert f"({exp_queue.MAX_RESTARTS} of {exp_queue.MAX_RESTARTS})" in said
    assert f"still queued (never-taken) after {exp_queue.MAX_RESTARTS} restarts" in said
