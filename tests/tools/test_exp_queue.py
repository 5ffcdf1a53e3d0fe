"""`python -m tlstudy queue`: what it says to bad input, before it starts anything. The queue served
by real workers is tests/tools/test_queue.py."""

import subprocess

import pytest
from conftest import one_stage_workspace

from tlstudy import cli
from tlstudy.tools import exp_queue, profile


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_jobs_must_be_a_whole_number_from_one(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["queue", "-j", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"'{bad}' is not a number of workers" in err and "whole number, 1 or more" in err, err


def test_outside_a_dvc_repository_it_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["queue", "-j", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not in a DVC repository" in err and "dvc exp run --queue" in err, err


def test_with_nothing_queued_it_starts_no_worker(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*profile.tool_argv("dvc"), "init", "-q"], cwd=tmp_path, check=True)
    lines = []
    assert exp_queue.serve(2, root=tmp_path, log=lines.append) == 0
    assert lines == ["queue: nothing queued; queue experiments first, e.g. `dvc exp run --queue -S lr=0.01`"]
    assert not list((tmp_path / ".dvc").rglob("dvc-exp-worker-*"))


@pytest.mark.slow
def test_an_experiment_whose_worker_still_cleans_up_is_waited_for_not_called_orphaned(tmp_path):
    """DVC keeps an entry Running while its worker collects the results and cleans up after the
    experiment's process exited. A slow clean-up (here the real worker paused with SIGSTOP while
    the experiment runs, so that its process ends and waits for the worker) outlasts the grace
    period; the command waits for it and never advises `dvc queue kill` for it."""
    import json
    import signal
    import threading
    import time

    import psutil

    ws = one_stage_workspace(tmp_path, "sleep 1 && echo hello > out.txt")
    exp_queue.dvc(ws, "exp", "run", "--queue", "-S", "x=2", "-n", "slow-cleanup")
    grace_s, paused = 2.0, {}

    def pause_the_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "worker" not in paused:
            for record in (ws / ".dvc/tmp/exps/run").glob("*/*.json"):
                try:
                    run = psutil.Process(json.loads(record.read_text())["pid"])
                    worker = run.parent()
                    worker.send_signal(signal.SIGSTOP)
                except (OSError, ValueError, KeyError, AttributeError, psutil.Error):
                    continue  # not written yet, or being written
                paused.update(worker=worker, run=run)
                break
            time.sleep(0.05)
        if "worker" not in paused:
            return
        while paused["run"].status() != psutil.STATUS_ZOMBIE:  # it ended; its worker has yet to collect it
            time.sleep(0.05)
        paused["ended"] = time.monotonic()
        time.sleep(3 * grace_s)  # well beyond the grace period
        paused["worker"].send_signal(signal.SIGCONT)

    watcher = threading.Thread(target=pause_the_worker, daemon=True)
    watcher.start()
    lines = []
    try:
        code = exp_queue.serve(1, root=ws, poll_s=0.3, grace_s=grace_s, log=lines.append)
    finally:
        watcher.join(timeout=150)
        if "worker" in paused:
            paused["worker"].send_signal(signal.SIGCONT)
        exp_queue.dvc(ws, "queue", "stop", "--kill")
    said = "\n".join(lines)
    assert "ended" in paused, said  # the experiment's process did end while its worker was paused
    assert code == 0 and "queue: slow-cleanup Success" in said, said
    assert "dvc queue kill" not in said and "no process has run it" not in said, said
