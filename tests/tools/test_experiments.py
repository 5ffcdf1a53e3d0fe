"""tlstudy.tools.experiments, what both sweeps share beyond running experiments (their end-to-end
tests in tests/scripts run those): a workspace prepared without its baseline, and an experiment
carried out of it into a folder that a failed write leaves as it was."""

import json

import pytest
import yaml
from conftest import PROJECT

from tlstudy.tools import experiments as X
from tlstudy.tools import profile


def test_a_missing_workspace_is_prepared_as_the_offline_profiles_without_running_it(tmp_path, capsys):
    ws = tmp_path / "ws"
    X.prepared(ws, PROJECT, None, tmp_path, "sweep")
    assert f"sweep: no workspace at {ws}; preparing" in capsys.readouterr().out
    head = profile.profile_params(PROJECT, "offline")
    assert yaml.safe_load(X.sh(ws, "git", "show", "HEAD:params.yaml")) == head
    assert not (ws / "dvc.lock").exists(), "its baseline is not run"
    assert (ws / head["pretrain"]["pacs_sources"]["path"]).resolve() == tmp_path
    # A workspace that is there is left alone.
    (ws / "params.yaml").write_text("touched\n")
    X.prepared(ws, PROJECT, None, None, "sweep")
    assert (ws / "params.yaml").read_text() == "touched\n" and capsys.readouterr().out == ""


def test_carry_writes_files_and_record_and_a_failed_carry_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "carried" / "exp-1"
    sittings = [{"wall_s": 3.0, "cpu_s": 5.5, "stages_run_s": {"train@scratch": 3.0}, "finished": True}]
    X.carry(folder, {"params.yaml": "lr: 0.1\n", "details/predictions/a.csv": "path,label\n"}, "exp-1",
            ["lr=0.1"], sittings)  # fmt: skip
    first = {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}
    assert set(first) == {"params.yaml", "details/predictions/a.csv", "overrides.json", X.SITTINGS}
    assert X.carried(folder) == {"experiment": "exp-1", "sittings": sittings, "overrides": ["lr=0.1"]}
    assert X.carried(tmp_path / "carried" / "exp-2") is None

    # A file that cannot be written (a text that is not one) fails the carry midway: the folder
    # carried before stays whole, and the next carry replaces it.
    with pytest.raises(TypeError):
        X.carry(folder, {"params.yaml": "lr: 0.01\n", "dvc.lock": None}, "exp-1", ["lr=0.01"], [])
    assert {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()} == first
    X.carry(folder, {"params.yaml": "lr: 0.01\n"}, "exp-1", ["lr=0.01"], [])
    assert sorted(p.name for p in folder.iterdir()) == ["overrides.json", "params.yaml", X.SITTINGS]
    assert json.loads((folder / "overrides.json").read_text()) == ["lr=0.01"]
    assert [p.name for p in folder.parent.iterdir()] == ["exp-1"], "no staging folder stays behind"


def test_recorded_is_empty_without_a_timing_file_and_reads_it_otherwise(tmp_path):
    assert X.recorded(tmp_path / "timing.json") == {}
    (tmp_path / "timing.json").write_text(json.dumps({"exp-1": {"sittings": [], "overrides": ["a=1"]}}))
    assert X.recorded(tmp_path / "timing.json") == {"exp-1": {"sittings": [], "overrides": ["a=1"]}}
    assert X.folder_text(tmp_path)("timing.json").startswith("{") and X.folder_text(tmp_path)("none") is None


def test_a_record_gives_its_overrides_and_only_a_run_without_one_reads_the_default():
    asked = []

    def default():
        asked.append(1)
        return ["data.domain=photo"]

    sittings = [{"wall_s": 1.0, "cpu_s": 2.0, "stages_run_s": {}, "finished": True}]
    assert X.record({"overrides": ["lr=0.1"], "sittings": sittings}, default) == (["lr=0.1"], sittings)
    assert asked == [], "the default is a `git show`: not read where the record has the overrides"
    assert X.record({}, default) == (["data.domain=photo"], []) and asked == [1]


# A stage as DVC runs it: a child of a child, busy for 0.6 s of CPU, then still alive.
BUSY = """import time
t = time.process_time()
while time.process_time() - t < 0.6:
    pass
print("busy", flush=True)
time.sleep(60)
"""


def test_tree_cpu_counts_a_running_grandchild_that_nobody_has_reaped_yet():
    """The stage DVC is running is a grandchild of the sweep: its CPU counts before it ends, so
    that a sitting killed mid-stage keeps it."""
    import os
    import signal
    import subprocess
    import sys

    middle = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY!r}])"
    dvc = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert dvc.stdout.readline() == "busy\n"
        assert X.tree_cpu_s(dvc.pid) >= 0.5, "the grandchild's CPU, reaped by nobody yet"
    finally:
        os.killpg(dvc.pid, signal.SIGKILL)
        dvc.wait()
    assert X.tree_cpu_s(dvc.pid) == 0.0, "a process that is gone has none"


def test_an_experiment_stopped_midway_runs_before_the_others(tmp_path):
    """Its finished stages live only in the workspace's dvc.lock (no run-cache entry), so it goes first."""
    timing = tmp_path / "timing.json"
    assert X.unfinished_first(["a", "b", "c"], X.recorded(timing)) == ["a", "b", "c"], "no record: the plan's order"
    sitting = {"wall_s": 1.0, "cpu_s": 1.0, "stages_run_s": {}}
    timing.write_text(json.dumps({
        "a": {"sittings": [{**sitting, "finished": True}]},
        "c": {"sittings": [{**sitting, "finished": False}]},
        "b": {"sittings": [{**sitting, "finished": False}, {**sitting, "finished": True}]},
    }))  # fmt: skip
    assert X.unfinished_first(["a", "b", "c"], X.recorded(timing)) == ["c", "a", "b"]
