"""Faults: a train stage killed with SIGKILL mid-grid resumes, and ends as an uninterrupted one."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tlstudy import fetch, stats

TIMING = {"seconds", "sec_per_epoch", "ms_per_example"}


def prepare(folder, params):
    folder.mkdir()
    os.chdir(folder)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    fetch.run(params)
    stats.run(params)


def train(folder, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "tlstudy", "train", "--part", "scratch"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )  # fmt: skip


def without_timing(folder):
    runs = json.loads((folder / "models/scratch/runs.json").read_text())
    for r in runs["runs"]:
        for k in TIMING:
            r.pop(k, None)
    with open(folder / "plots/train/scratch.csv") as f:
        curves = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    root = folder / "models/scratch"
    models = {
        p.relative_to(root).as_posix(): torch.load(p, weights_only=True)["state"] for p in sorted(root.rglob("*.pt"))
    }
    return runs, curves, models


@pytest.mark.slow
def test_killed_mid_grid_then_rerun_equals_an_uninterrupted_run(tmp_path, params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params.update(lr=[0.03, 0.01, 0.003], optimizer=["sgd", "adam"], epochs=2)
    prepare(tmp_path / "straight", params)
    prepare(tmp_path / "killed", params)

    straight = train(tmp_path / "straight")
    out, _ = straight.communicate(timeout=600)  # read, not wait: a full pipe would block the child
    assert straight.returncode == 0, out

    proc = train(tmp_path / "killed")
    runs_dir = tmp_path / "killed/work/runs/scratch"
    deadline = time.monotonic() + 300
    while len(list(runs_dir.rglob("*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the stage finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(runs_dir.rglob("*.json")))
    assert 2 <= finished < 6
    assert not (tmp_path / "killed/models/scratch/runs.json").exists()

    again = train(tmp_path / "killed")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert out.count("finished before the stage was interrupted; kept") == finished
    assert not runs_dir.exists()  # the resume store is removed once the stage is done

    straight, killed = without_timing(tmp_path / "straight"), without_timing(tmp_path / "killed")
    assert killed[0] == straight[0] and killed[1] == straight[1]
    assert killed[2].keys() == straight[2].keys() == {"seed0/sgd.pt", "seed0/adam.pt"}
    for name, state in straight[2].items():
        assert all(torch.equal(state[k], killed[2][name][k]) for k in state)


def test_stored_runs_are_keyed_by_every_setting_that_decides_their_results(params, in_tmp):
    from tlstudy import resume

    (in_tmp / "images.pt").write_bytes(b"images")
    spec = params["parts"]["scratch"]
    base = resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train")
    assert resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train") == base
    for key, value in [("precision", "bf16"), ("batch_size", 8), ("epochs", 3), ("seed", 1)]:
        changed = dict(params, **{key: value})
        assert resume.fingerprint(changed, spec, [in_tmp / "images.pt"], "train") != base, key
